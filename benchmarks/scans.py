"""Which scan trains ssm and mingru fastest here? One training step (forward + backward) per scan, in one process.

    python benchmarks/scans.py --contexts 64 256 1024 --repeats 5

Runs alternate between the scans and report the median ms per step (timings on a shared machine swing).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from seqlab.models import SSM, MinGRU

SCANS = {"ssm": ["loop", "chunked"], "mingru": ["loop", "chunked", "log"]}


def step_ms(model: torch.nn.Module, idx: torch.Tensor, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        logits = model(idx[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten()).backward()
    return (time.perf_counter() - started) / n * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--tokens", type=int, default=8192, help="batch × context per step")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| model | context | " + " | ".join(f"{s} ms" for s in ("loop", "chunked", "log")) + " |")
    print("|---|---:|---:|---:|---:|")
    for name, scans in SCANS.items():
        for T in args.contexts:
            torch.manual_seed(0)
            models = {s: (SSM if name == "ssm" else MinGRU)(66, T, scan=s) for s in scans}
            for m in models.values():
                m.load_state_dict(models[scans[0]].state_dict())
            idx = torch.randint(66, (max(1, args.tokens // T), T + 1))
            times = {s: [] for s in scans}
            for _ in range(args.repeats):
                for s, m in models.items():
                    times[s].append(step_ms(m, idx, args.steps))
            cells = [f"{statistics.median(times[s]):.1f}" if s in times else "" for s in ("loop", "chunked", "log")]
            print(f"| {name} | {T} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
