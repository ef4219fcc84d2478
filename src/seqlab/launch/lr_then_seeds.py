"""The best learning rate on one seed, then more seeds at it (Zoology's lr grid, cut to fit a CPU budget):

    python train.py -m experiment=streams                                   # stage 1: the lr grid, one seed
    python -m seqlab.launch.lr_then_seeds outputs/multirun/<time> --seeds 1,2   # stage 2: the other seeds

Stage 2 reads stage 1's jobs, groups them by their overrides other than `optim.lr` and `seed` (a model, a
width), picks each group's lr by `--metric` (default best_val_loss, lowest wins: validation, never test), and
runs `python train.py -m <that group's overrides> optim.lr=<best> seed=<seeds>` into <sweep>/seeds/<group>/, one
multirun per group (extra arguments after `--` go to each, e.g. `-- hydra/launcher=joblib`). A group none of
whose jobs ended ok is skipped and named. `--dry-run` prints the commands. The tables (seqlab.analysis.streams,
seqlab.analysis.recall_capacity) and `python -m seqlab.report` read both stages from the stage-1 dir.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from seqlab.launch.sweep import find_job_dirs, read_job
from seqlab.paths import ROOT

VARIED_APART = ("optim.lr", "seed")  # what stage 1 picks from, and what stage 2 adds


def overrides_of(job_dir: Path) -> dict[str, str] | None:
    """A job's command-line overrides {key: value}, as Hydra saved them (None without .hydra/overrides.yaml)."""
    try:
        items = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return dict(str(item).split("=", 1) for item in items if "=" in str(item)) if isinstance(items, list) else None


def group_key(overrides: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in overrides.items() if k.lstrip("+~") not in VARIED_APART))


def best_lr(jobs: Sequence[tuple[dict[str, str], dict[str, Any]]], metric: str, higher: bool = False) -> str | None:
    """The lr (as typed) of the job with the best `metric` among those that ended ok; ties: the first."""
    scored = [
        (o.get("optim.lr"), m.get(metric))
        for o, m in jobs
        if m.get("status") == "ok" and isinstance(m.get(metric), int | float) and math.isfinite(m[metric])
    ]
    if not scored:
        return None
    return (max if higher else min)(scored, key=lambda pair: pair[1])[0]


def plan(
    sweep_dir: Path, metric: str = "best_val_loss", higher: bool = False
) -> tuple[list[dict[str, str]], list[str]]:
    """Stage 1's groups -> (each group's overrides with its best lr, the groups skipped and why)."""
    groups: dict[tuple, list] = {}
    for job_dir in find_job_dirs(sweep_dir):
        if "seeds" in job_dir.relative_to(sweep_dir).parts:
            continue  # stage 2's own jobs
        overrides = overrides_of(job_dir)
        if overrides is not None and "optim.lr" in overrides:
            groups.setdefault(group_key(overrides), []).append((overrides, read_job(job_dir).metrics))
    chosen, skipped = [], []
    for key, jobs in groups.items():
        lr = best_lr(jobs, metric, higher)
        name = ",".join(f"{k}={v}" for k, v in key if k != "experiment")
        if lr is None:
            skipped.append(f"{name}: no job ended ok with a {metric}")
        else:
            chosen.append(dict(key) | {"optim.lr": lr})
    return chosen, skipped


def commands(
    sweep_dir: Path, seeds: str, extra: Sequence[str] = (), **kwargs: Any
) -> tuple[list[list[str]], list[str]]:
    chosen, skipped = plan(sweep_dir, **kwargs)
    out = []
    for group in chosen:
        name = ",".join(f"{k}={v}" for k, v in group.items() if k not in ("experiment", "optim.lr")) or "all"
        overrides = [f"{k}={v}" for k, v in group.items()]
        run_dir = sweep_dir / "seeds" / re.sub(r"[^A-Za-z0-9._-]+", "_", name)  # a path the override grammar takes
        out.append(
            [
                sys.executable,
                str(ROOT / "train.py"),
                "-m",
                *overrides,
                f"seed={seeds}",
                f"hydra.sweep.dir={run_dir}",
                *extra,
            ]
        )
    return out, skipped


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqlab.launch.lr_then_seeds", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="stage 1: the lr grid's sweep dir")
    parser.add_argument("--seeds", default="1,2", help="seeds to add at each group's best lr (default 1,2)")
    parser.add_argument("--metric", default="best_val_loss", help="metrics.json key that picks the lr")
    parser.add_argument("--higher", action="store_true", help="a higher --metric is better (e.g. recall_acc)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir}: no such sweep dir", file=sys.stderr)
        return 2
    cmds, skipped = commands(args.sweep_dir, args.seeds, extra, metric=args.metric, higher=args.higher)
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    if not cmds:
        print(f"error: {args.sweep_dir}: no stage-1 job with optim.lr ended ok", file=sys.stderr)
        return 2
    failed = 0
    for cmd in cmds:
        print(" ".join(cmd[1:]), flush=True)
        if not args.dry_run:
            failed += subprocess.run(cmd, cwd=ROOT).returncode != 0
    return 1 if failed or skipped else 0


if __name__ == "__main__":
    sys.exit(main())
