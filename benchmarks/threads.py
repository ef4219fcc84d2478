"""Training tokens/s of a plain PyTorch RNN/LSTM loop under different thread settings, alternating in one command.

    python benchmarks/threads.py                      # as the machine is now
    python benchmarks/threads.py --busy 1             # plus one process spinning on a core (a shared machine)
    python benchmarks/threads.py --quick              # seconds: checks that it works, the numbers mean little

Each setting runs in a fresh subprocess because OpenMP reads OMP_WAIT_POLICY / GOMP_SPINCOUNT once, when the
runtime starts (at `import torch`). torch's CPU wheel uses GNU OpenMP (libgomp): by default its idle worker
threads spin ~300k iterations before sleeping, so with 2 threads on 2 cores and another process holding one
core, every parallel region waits for a partner that is descheduled. Settings alternate round by round and the
medians are reported, with the load average before and after, since this machine's timings swing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SETTINGS = {  # name: (threads, extra environment)
    "1 thread": (1, {}),
    "2 threads": (2, {}),
    "2 threads, OMP_WAIT_POLICY=PASSIVE": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "2 threads, GOMP_SPINCOUNT=10000": (2, {"GOMP_SPINCOUNT": "10000"}),
}


def worker(model: str, threads: int, batch: int, context: int, hidden: int, steps: int, warmup: int) -> None:
    """One training loop (embedding -> fused nn.RNN/nn.LSTM -> linear head, AdamW) on random char ids."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    vocab = 65
    layers = torch.nn.ModuleDict(
        {
            "emb": torch.nn.Embedding(vocab, 64),
            "rnn": torch.nn.RNN(64, hidden, batch_first=True)
            if model == "rnn"
            else torch.nn.LSTM(64, hidden, batch_first=True),
            "head": torch.nn.Linear(hidden, vocab),
        }
    )
    opt = torch.optim.AdamW(layers.parameters(), lr=1e-3)
    x, y = torch.randint(vocab, (batch, context)), torch.randint(vocab, (batch, context))
    for step in range(steps):
        if step == warmup:
            started = time.perf_counter()
        out, _ = layers["rnn"](layers["emb"](x))
        loss = F.cross_entropy(layers["head"](out).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    print(json.dumps({"tokens_per_s": (steps - warmup) * batch * context / (time.perf_counter() - started)}))


def run_setting(name: str, args: argparse.Namespace) -> float:
    threads, extra = SETTINGS[name]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env.update(extra)
    cmd = [sys.executable, __file__, "--worker", "--model", args.model, "--threads", str(threads)]
    cmd += ["--batch", str(args.batch), "--context", str(args.context), "--hidden", str(args.hidden)]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["tokens_per_s"]


def spin() -> None:
    while True:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["rnn", "lstm"], default="rnn")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--busy", type=int, default=0, help="processes spinning on a core meanwhile (a shared machine)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat: checks the script still works")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.model, args.threads, args.batch, args.context, args.hidden, args.steps, args.warmup)
    if args.quick:
        args.batch, args.context, args.hidden, args.steps, args.warmup, args.repeats = 4, 16, 32, 4, 1, 1

    import multiprocessing

    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    load_before = os.getloadavg()[0]
    results: dict[str, list[float]] = {name: [] for name in args.settings}
    try:
        for _ in range(args.repeats):  # alternate: every setting sees the same drift in load
            for name in args.settings:
                results[name].append(run_setting(name, args))
    finally:
        for p in spinners:
            p.terminate()
    print(
        f"{args.model}, batch {args.batch} x {args.context}, hidden {args.hidden}, {args.steps - args.warmup} timed "
        f"steps, {args.repeats} alternating repeats, {args.busy} spinning process(es), {os.cpu_count()} CPUs, "
        f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    print("| setting | tokens/s (median) | runs | vs 1 thread |")
    print("|---|---:|---|---:|")
    base = statistics.median(results[args.settings[0]])
    for name, values in results.items():
        median = statistics.median(values)
        runs = ", ".join(f"{v / 1000:.1f}k" for v in values)
        print(f"| {name} | {median:,.0f} | {runs} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
