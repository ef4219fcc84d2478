"""Seconds from the command to the first training step of `python train.py`, with and without the encoded-corpus
cache (seqlab.data.encoded), alternating; and what the time goes to.

    python benchmarks/startup.py                      # Shakespeare and PTB, 3 alternating repeats
    python benchmarks/startup.py --quick              # one corpus, one repeat

`cold`: an empty cache dir (the text is tokenized and encoded, as before the cache); `warm`: the cache filled by a
previous run. The first step is marked by a callback added on the command line (`+callbacks.first_step=...`).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def first_step():  # `_target_` of the callback added in the child; lightning is imported there only
    import lightning as L

    class FirstStep(L.Callback):
        def on_train_start(self, *args) -> None:
            print(f"FIRST_STEP_AT {time.time()}", flush=True)

    return FirstStep()


def one_run(data: str, cache: str, out: str) -> float:
    out = tempfile.mkdtemp(dir=out)  # a fresh run dir each time
    env = {
        **os.environ,
        "SEQLAB_CACHE_DIR": cache,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks")]),
    }
    cmd = [sys.executable, str(ROOT / "train.py"), f"data={data}", "model=rnn", "trainer.max_steps=1", "~logger"]
    cmd += ["+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1", "callbacks.gradient_profile=null"]
    cmd += ["+callbacks.first_step._target_=startup.first_step", f"hydra.run.dir={out}"]
    started = time.time()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    marks = re.findall(r"FIRST_STEP_AT ([0-9.]+)", done.stdout)  # mid-line: the progress bar shares stdout
    if done.returncode or not marks:
        sys.exit(f"train.py failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return float(marks[0]) - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["shakespeare", "ptb"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.data, args.repeats = args.data[:1], 1
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs, {args.repeats} alternating repeats")
    print("| data | cold cache s (median) | warm cache s | warm / cold |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for data in args.data:
            warm = f"{tmp}/warm_{data}"
            one_run(data, warm, tmp)  # fills the warm cache
            times: dict[str, list[float]] = {"cold": [], "warm": []}
            for r in range(args.repeats):
                times["cold"].append(one_run(data, f"{tmp}/cold_{data}_{r}", tmp))
                times["warm"].append(one_run(data, warm, tmp))
            cold, hot = statistics.median(times["cold"]), statistics.median(times["warm"])
            print(f"| {data} | {cold:.2f} | {hot:.2f} | {hot / cold:.2f} |", flush=True)


if __name__ == "__main__":
    main()
