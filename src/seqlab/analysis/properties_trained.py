"""The cells of the properties table that need trained models (`python -m seqlab.properties --train-budget S`).

Every model at its matched width is trained by `train.py` itself (a subprocess: real run dirs, metrics.json,
TensorBoard), once per learning rate of a small grid so that no architecture loses to a bad lr:
- Tiny Shakespeare (or `--train-data`) for a wall-clock budget (`trainer.max_time`): best val ppl over the grid ("Parameter
  efficiency"), how many lrs of the grid trained without diverging and their spread ("Stable training"), and,
  probing the best run (seqlab.analysis.probe), order sensitivity and length generalisation; its gradient profile's
  reach g(T−1)/g(0) after training;
- associative recall (`data=recall`, one pair, a gap of d fillers) for a number of steps: best test recall_acc
  over the grid at each gap ("Long-range deps").
A run that fails or diverges is a row with its status; the table goes on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from seqlab.analysis.compare import grad_ratio, last_grad_profile
from seqlab.paths import ROOT

RECALL = ["data=recall", "data.keys=8", "data.values=8", "data.pairs=1", "data.fillers=4", "data.train_min_gap=1"]
QUIET = ["callbacks.samples=null", "callbacks.progress=null"]


def train_run(run_dir: Path, name: str, width: tuple[str, int] | None, lr: float, overrides: list[str]) -> dict:
    """`python train.py model=<name> ...` into run_dir; its metrics.json, or the failure's last line."""
    cmd = [sys.executable, str(ROOT / "train.py"), f"model={name}", f"optim.lr={lr}", f"hydra.run.dir={run_dir}"]
    cmd += [f"model.{width[0]}={width[1]}"] if width else []
    done = subprocess.run([*cmd, *QUIET, *overrides], capture_output=True, text=True, cwd=ROOT)
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.exists():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"model": name, "lr": lr, "status": "failed", "reason": last, "run_dir": str(run_dir)}
    m = json.loads(metrics_file.read_text())
    return {"model": name, "lr": lr, "run_dir": str(run_dir)} | {
        k: m.get(k) for k in ("status", "steps", "best_val_ppl", "test_ppl", "recall_acc", "params")
    }


def ok(rows: list[dict], key: str) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok" and r.get(key) is not None]


def train_cells(
    names: list[str],
    widths: dict[str, tuple[str, int] | None],
    out: Path,
    budget_s: int,
    lrs: list[float],
    gaps: list[int],
    recall_steps: int,
    probe_tokens: int = 1024,
    extra: list[str] | None = None,
    data: str = "shakespeare",
) -> tuple[list[dict], dict[str, dict[str, str]]]:
    """Train every model (each lr of the grid) and return (the runs, {property: {model: cell}}). `data` is the
    text's conf/data choice (with `extra`, e.g. data=text_file data.path=...)."""
    from seqlab.analysis.probe import probe

    budget = f"00:00:{budget_s // 60:02d}:{budget_s % 60:02d}"
    text = [f"data={data}", "trainer.max_steps=-1", f"trainer.max_time={budget}", *(extra or [])]
    runs: list[dict] = []
    cells: dict[str, dict[str, str]] = {p: {} for p in TRAINED_NOTES}
    for name in names:
        mine = [train_run(out / data / f"{name}-lr{lr:g}", name, widths[name], lr, text) for lr in lrs]
        for r in mine:
            r["task"] = data
        runs += mine
        good = ok(mine, "best_val_ppl")
        stable = f"{len(good)}/{len(mine)} lrs ok"
        if good:
            best = min(good, key=lambda r: r["best_val_ppl"])
            ppls = sorted(r["best_val_ppl"] for r in good)
            cells["Parameter efficiency (trained)"][name] = f"val ppl {best['best_val_ppl']:.2f} (lr {best['lr']:g})"
            cells["Stable training"][name] = stable + (f", ppl {ppls[0]:.2f}–{ppls[-1]:.2f}" if len(ppls) > 1 else "")
            reach = grad_ratio(last_grad_profile(Path(best["run_dir"])))
            tables = probe(Path(best["run_dir"]), tokens=probe_tokens, chars=2000)
            order = {r["m"]: r["difference"] for r in tables["order"] if r["m"]}
            if order:  # all but the last token shuffled, and only what lies past the last half of the context
                lo, hi = min(order), max(order)
                cells["Order sensitivity"][name] = f"{order[lo]:+.3f} (last {lo} kept), {order[hi]:+.3f} (last {hi})"
            length = {r["length"]: r["loss"] for r in tables["length"]}
            first, last = min(length), max(length)
            cells["Variable length"][name] = (
                f"{length[last] - length[first]:+.3f} nats at {last // first}×T"
                if length[last] is not None
                else f"cannot run past T={first}"
            )
            cells["Long-range deps (trained)"][name] = f"reach {reach:.1e}" if reach is not None else "reach —"
        else:
            cells["Stable training"][name] = stable
        for gap in gaps:
            recall = [
                train_run(
                    out / "recall" / f"{name}-gap{gap}-lr{lr:g}",
                    name,
                    widths[name],
                    lr,
                    [
                        *RECALL,
                        f"data.gap={gap}",
                        f"trainer.max_steps={recall_steps}",
                        f"trainer.val_check_interval={recall_steps}",
                        "trainer.gradient_clip_val=1.0",
                    ],
                )
                for lr in lrs
            ]
            for r in recall:
                r["task"], r["gap"] = "recall", gap
            runs += recall
            accs = [r["recall_acc"] for r in ok(recall, "recall_acc")]
            cell = f"d={gap}: {max(accs):.2f}" if accs else f"d={gap}: —"
            prev = cells["Long-range deps (trained)"].get(name)
            cells["Long-range deps (trained)"][name] = f"{prev}; {cell}" if prev else cell
    return runs, cells


TRAINED_NOTES = {
    "Parameter efficiency (trained)": "best val ppl on the text (Tiny Shakespeare) at the wall-clock budget, over the lr grid",
    "Stable training": "lrs of the grid that trained without diverging, and the spread of their val ppl",
    "Order sensitivity": "val loss (nats) with all but the last m tokens of each context shuffled, minus intact",
    "Variable length": "val loss at 4× the training context minus at 1× (past the learned context)",
    "Long-range deps (trained)": "g(T−1)/g(0) after training; test recall_acc at gap d (chance 0.125), best lr",
}
TRAINED_CLAIMS: dict[str, tuple[str, str, str]] = {
    "Parameter efficiency (trained)": ("✓✓", "✓", "✓✓"),
    "Stable training": ("Needs tricks", "More stable", "Stable"),
    "Order sensitivity": ("✓", "Needs pos enc", "✓"),
    "Variable length": ("✓", "✓ (with limits)", "✓"),
    "Long-range deps (trained)": ("Challenging", "✓✓", "✓✓"),
}


def runs_table(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = [
        "task",
        "gap",
        "model",
        "params",
        "lr",
        "status",
        "steps",
        "best_val_ppl",
        "test_ppl",
        "recall_acc",
        "run_dir",
        "reason",
    ]
    return [{k: r.get(k) for k in keys} for r in runs]
