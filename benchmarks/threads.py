"""seqlab's training tokens/s beside other work on the machine, against the plain loop's idle one-thread speed.

    python benchmarks/threads.py                              # rnn, lstm, gru at batch 64 × 128, hidden 256, emb 64
    python benchmarks/threads.py --out docs/threads_table.md  # the table into a file as well
    python benchmarks/threads.py --quick                      # tiny sizes, one model, ~30 s: checks that it works

The cases, each a fresh `python train.py` as a user runs it (its thread choice happens there:
seqlab.launch.threads), with metrics.json's `train_tokens_per_s` as its speed:
- idle: nothing else running;
- busy Python: one pure-Python process spinning on a core beside it;
- 2-thread torch: another training beside it, the plain loop with torch's defaults (2 threads, spinning waiters);
- two seqlab jobs: a real sweep, `python train.py -m hydra/launcher=joblib hydra.launcher.n_jobs=2 seed=0,1 ...`;
  the slower job's speed counts (each should reach the bar).
The reference is the plain loop (embedding, fused nn.RNN/LSTM/GRU, linear head, AdamW on random char ids) on one
thread with nothing beside it, each run in its own process; the same loop on torch's default threads shows what
a user's own script gets on the idle machine. Within a repeat the cases alternate (the machine's load drifts);
medians over repeats. Every process starts without OMP_WAIT_POLICY, GOMP_SPINCOUNT or OMP_NUM_THREADS, so the
numbers are seqlab's own choice. Run it alone on the machine: other work is what it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("rnn", "lstm", "gru")
CASES = {  # name: what runs beside seqlab (None for the plain-loop rows, which run alone)
    "plain loop, 1 thread, idle (reference)": None,
    "plain loop, torch's default threads, idle": None,
    "seqlab, idle": "nothing",
    "seqlab, one busy Python process beside it": "python",
    "seqlab, one 2-thread torch training beside it": "torch",
    "seqlab, two jobs at once (joblib n_jobs=2), the slower": "sweep",
}
REFERENCE = "plain loop, 1 thread, idle (reference)"
OPENMP_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in OPENMP_KEYS}


def plain_loop(model: str, threads: int, sizes: argparse.Namespace, seconds: float, forever: bool) -> None:
    """The plain loop: warm up, then time `seconds` of steps and print tokens/s (or, as a neighbour, print
    "ready" and train until killed)."""
    import torch
    import torch.nn.functional as F

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    vocab = 65
    cell = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[model]
    emb, rnn = torch.nn.Embedding(vocab, sizes.emb), cell(sizes.emb, sizes.hidden, batch_first=True)
    head = torch.nn.Linear(sizes.hidden, vocab)
    params = [*emb.parameters(), *rnn.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    x, y = torch.randint(vocab, (sizes.batch, sizes.context)), torch.randint(vocab, (sizes.batch, sizes.context))

    def step() -> None:
        out, _ = rnn(emb(x))  # (B, T, H)
        loss = F.cross_entropy(head(out).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    if forever:
        print("ready", flush=True)
        while True:
            step()
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        steps += 1
    print(json.dumps({"tokens_per_s": steps * sizes.batch * sizes.context / (time.perf_counter() - started)}))


def worker_cmd(model: str, threads: int, args: argparse.Namespace, forever: bool = False) -> list[str]:
    cmd = [sys.executable, __file__, "--worker", "--model", model, "--threads", str(threads)]
    cmd += ["--batch", str(args.batch), "--context", str(args.context), "--hidden", str(args.hidden)]
    cmd += ["--emb", str(args.emb), "--seconds", str(args.seconds)]
    return cmd + (["--forever"] if forever else [])


def run_plain(model: str, threads: int, args: argparse.Namespace) -> float:
    done = subprocess.run(worker_cmd(model, threads, args), env=clean_env(), capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["tokens_per_s"]


def train_cmd(model: str, args: argparse.Namespace) -> list[str]:
    """`python train.py` at the benchmark's sizes, everything else at train.py's defaults."""
    cmd = [sys.executable, str(ROOT / "train.py"), f"model={model}", f"data.batch_size={args.batch}"]
    cmd += [f"data.context_length={args.context}", f"model.hidden_size={args.hidden}", f"model.emb_dim={args.emb}"]
    # one validation, at the end (train_tokens_per_s counts training steps only); no progress bar in a pipe
    cmd += [f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps}"]
    if args.quick:  # hundreds of tiny eval batches would take longer than the training
        cmd += ["+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2"]
    return [*cmd, "callbacks.progress=null"]


def run_seqlab(model: str, case: str, args: argparse.Namespace, out: Path) -> float:
    """tokens/s of one seqlab run (the slower job's, for a sweep), with `case` running beside it."""
    neighbour = None
    if case == "python":
        neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"], env=clean_env())
    elif case == "torch":  # with torch's defaults, and already training when seqlab starts
        cmd = worker_cmd(model, 0, args, forever=True)
        neighbour = subprocess.Popen(cmd, env=clean_env(), stdout=subprocess.PIPE, text=True)
        assert neighbour.stdout is not None and neighbour.stdout.readline().strip() == "ready"
    try:
        cmd = train_cmd(model, args)
        if case == "sweep":  # -m before the overrides: Hydra's parser takes them as one list
            cmd[2:2] = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1", f"hydra.sweep.dir={out}"]
        else:
            cmd += [f"hydra.run.dir={out}"]
        done = subprocess.run(cmd, cwd=ROOT, env=clean_env(), capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    speeds = [json.loads(p.read_text())["train_tokens_per_s"] for p in sorted(out.rglob("metrics.json"))]
    assert len(speeds) == (2 if case == "sweep" else 1), speeds
    return min(speeds)


def table(results: dict[str, dict[str, list[float]]], models: list[str]) -> str:
    ref = {m: statistics.median(results[REFERENCE][m]) for m in models}
    head = "| case | " + " | ".join(f"{m} tokens/s | {m} × ref" for m in models) + " |"
    rows = [head, "|---|" + "---:|---:|" * len(models)]
    for case, by_model in results.items():
        cells = []
        for m in models:
            median = statistics.median(by_model[m])
            cells.append(f"{median / 1000:,.1f}k | {median / ref[m]:.2f}")
        rows.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--emb", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200, help="training steps of each seqlab run")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds of each plain-loop run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, rnn only, 1 repeat: checks that it works")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="rnn", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--forever", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return plain_loop(args.model, args.threads, args, args.seconds, args.forever)
    if args.quick:
        args.models, args.batch, args.context, args.hidden, args.emb = ["rnn"], 8, 16, 16, 8
        args.steps, args.seconds, args.repeats = 5, 0.5, 1

    load_before = os.getloadavg()[0]
    results: dict[str, dict[str, list[float]]] = {case: {m: [] for m in args.models} for case in CASES}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for model in args.models:
                for i, (case, beside) in enumerate(CASES.items()):  # alternate: every case sees the same drift
                    if beside is None:
                        speed = run_plain(model, 1 if case == REFERENCE else 0, args)
                    else:
                        speed = run_seqlab(model, beside, args, Path(tmp) / f"{r}_{model}_{i}")
                    results[case][model].append(speed)
                    print(f"repeat {r + 1}, {model}, {case}: {speed:,.0f} tokens/s", file=sys.stderr, flush=True)
    note = (
        f"batch {args.batch} × {args.context}, hidden {args.hidden}, emb {args.emb}; seqlab {args.steps} steps "
        f"(metrics.json train_tokens_per_s), plain loop {args.seconds:g} s; median of {args.repeats} alternating "
        f"repeats; {os.cpu_count()} CPUs, load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    text = f"{note}\n\n{table(results, args.models)}\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
