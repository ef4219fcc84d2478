"""The state-tracking table: accuracy per length bucket beside the theory's prediction, per model and task.

    python -m seqlab.analysis.state_tracking lrs STAGE1_SWEEP            # the lr per model: prints +st_lr={...}
    python -m seqlab.analysis.state_tracking table SWEEP [SWEEP ...] --study state_tracking [--lr-sweep STAGE1_SWEEP]
    python -m seqlab.analysis.state_tracking table --regenerate docs/results/state_tracking
    python -m seqlab.analysis.state_tracking why SWEEP [--out DIR]       # why the failures fail (issue item 5)

`lrs`: per st_model, the lr with the lowest best val loss (lengths 3-40 only: the long buckets never choose).
`table` makes the study with `python -m seqlab.report` (runs.csv, manifest.json, results.md) and adds st.csv (one
row per job), st.md (mean ± sd over seeds per bucket, the prediction, and whether they agree) and st.png
(accuracy against length), computed from st.csv (and lrs.csv) alone. `why` takes, per task, the recurrent model
that generalises best and the one that fails worst (seed 0) and measures on sequences of 256 symbols the
gradient of the final label's loss by distance and a linear probe of the state for the running answer, trained
on positions ≤ 40 and tested past them: why.md, why.csv, why.png.

Verdicts: a model generalises on a task when its mean accuracy at 128-256 is ≥ 0.9, and fails when it is within a
fifth of the way from chance to 1 (parity: ≤ 0.6); a cell below 0.9 in distribution (3-40) says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from seqlab.analysis import tables
from seqlab.analysis.report import RESULTS, cell, job_overrides
from seqlab.analysis.report import report as make_study
from seqlab.launch.sweep import find_job_dirs, read_job

MODELS = ["rnn", "lstm", "gru", "transformer", "ssm", "ssm_signed", "mingru", "mingru_signed", "deltanet"]
MODELS += ["deltanet_signed"]
TASKS = ["parity", "mod3", "mod5", "dyck4", "s3", "s5"]
BUCKETS = ["3-40", "40-64", "64-128", "128-256", "stream-1024"]
MIDPOINTS = {"3-40": 21.5, "40-64": 52, "64-128": 96, "128-256": 192, "stream-1024": 1024}
G, F_, Q = "✓", "✗", "?"  # generalises, fails, not settled by the theory cited
# The theory's prediction per model, tasks in TASKS order (reasons: `reason`).
PREDICTED = {
    **dict.fromkeys(["rnn", "lstm", "gru"], "✓✓✓✓✓✓"),
    "transformer": "✗✗✗✗✗✗",
    **dict.fromkeys(["ssm", "ssm_signed", "mingru", "deltanet"], "✗✗✗✓✗✗"),
    "mingru_signed": "✓✗✗✓✗✗",
    "deltanet_signed": "✓??✓??",
}


def predicted(model: str, task: str) -> str:
    marks = PREDICTED.get(model)
    return marks[TASKS.index(task)] if marks and task in TASKS else ""


def reason(model: str, task: str) -> str:
    """Why the theory predicts that cell: Delétang et al. 2023 (nonlinear RNNs learn regular languages, Transformers
    fail in length); Grazzi et al. 2025 (eigenvalues in [0, 1]: no parity; [−1, 1] fixes it; counting mod k needs
    non-triangular transitions); Khavari et al. 2025 (a diagonal recurrence needs negative AND input-dependent
    eigenvalues); Merrill et al. 2024 (diagonal transitions commute: no non-abelian word problem)."""
    if model in ("rnn", "lstm", "gru"):
        return "a nonlinear RNN can run any finite automaton (Delétang et al. 2023); s5 may still be hard to learn"
    if model == "transformer":
        return "fails in length, even on regular tasks (Delétang et al. 2023)"
    if task.startswith("dyck"):
        return "the depth is a running sum: a recurrence with λ ≈ 1 holds it (bounded Dyck is star-free)"
    signed = model.endswith("_signed")
    if task == "parity":
        if model.startswith("ssm"):
            return "time-invariant λ: no parity, whatever its sign (Khavari et al. 2025)"
        if signed:
            return "negative, input-dependent eigenvalues: parity (Grazzi et al. 2025; Khavari et al. 2025)"
        return "eigenvalues in [0, 1]: no parity at any length (Grazzi et al. 2025)"
    if model == "deltanet_signed":
        if task == "s5":
            return "not solvable: no linear recurrence of this kind is expected to track it"
        return "one reflection per token and head: a rotation (a 3-cycle) takes two; layers may compose them"
    if model == "deltanet":
        return "eigenvalues in [0, 1]: no periodic state (Grazzi et al. 2025)"
    if task.startswith("mod"):
        return "real diagonal transitions give periods 1 or 2 at most: mod k needs rotations (Grazzi et al. 2025)"
    return "diagonal transitions commute: no word problem of a non-abelian group (Merrill et al. 2024)"


def chance_of(task: str) -> float:
    from seqlab.data.state_tracking import Task

    return Task.parse(task).chance


def verdict(acc: float | None, task: str) -> str:
    """✓ generalises (≥ 0.9 at 128-256), ✗ fails (within a fifth of the way from chance to 1), ~ in between."""
    if acc is None:
        return ""
    chance = chance_of(task)
    return G if acc >= 0.9 else F_ if acc <= chance + (1 - chance) / 5 else "~"


# --- reading the sweeps ---------------------------------------------------------------------------------------
def collect(dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """One row per job: its study model, task, lr, seed, status, best val loss and accuracy per bucket."""
    rows = []
    for root in dirs:
        for job_dir in find_job_dirs(root):
            job, over = read_job(job_dir), job_overrides(job_dir) or {}
            hp, st = job.metrics.get("hparams") or {}, job.metrics.get("state_tracking") or {}
            row = {
                "job": str(job_dir.relative_to(root.parent)),
                "st_model": over.get("st_model", "lstm"),  # the preset's default
                "task": st.get("task") or over.get("data.task", "parity"),
                "lr": hp.get("lr"),
                "seed": hp.get("seed"),
                "status": job.status,
                "best_val_loss": job.metrics.get("best_val_loss"),
                "params": job.metrics.get("params"),
            }
            acc = st.get("acc") or {}
            row |= {b: acc.get(next((k for k in acc if k.startswith("stream")), "")) if b.startswith("stream")
                    else acc.get(b) for b in BUCKETS}  # fmt: skip
            rows.append(row)
    order = {m: i for i, m in enumerate(MODELS)}
    rows.sort(key=lambda r: (order.get(r["st_model"], 99), TASKS.index(r["task"]) if r["task"] in TASKS else 99,
                             str(r["seed"])))  # fmt: skip
    return rows


def choose_lrs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per st_model, every lr tried with its best val loss, and the one chosen (the lowest)."""
    out = []
    for model in dict.fromkeys(r["st_model"] for r in rows):
        tried = [r for r in rows if r["st_model"] == model and r["status"] == "ok" and r["best_val_loss"] is not None]
        best = min(tried, key=lambda r: r["best_val_loss"], default=None)
        for r in sorted(tried, key=lambda r: r["lr"]):
            out.append({"st_model": model, "lr": r["lr"], "best_val_loss": r["best_val_loss"], "chosen": r is best})
    return out


def st_lr_override(lrs: list[dict[str, Any]]) -> str:
    return "+st_lr={" + ",".join(f"{r['st_model']}:{r['lr']:g}" for r in lrs if r["chosen"]) + "}"


# --- the table ------------------------------------------------------------------------------------------------
def _values(jobs: list[dict[str, Any]], bucket: str) -> list[float]:
    return [float(r[bucket]) for r in jobs if r["status"] == "ok" and r.get(bucket) not in (None, "")]


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, task): mean ± sd per bucket, n, the prediction, the measured verdict, agreement."""
    out = []
    for key in dict.fromkeys((r["st_model"], r["task"]) for r in rows):
        jobs = [r for r in rows if (r["st_model"], r["task"]) == key]
        model, task = key
        means = {b: statistics.fmean(v) if (v := _values(jobs, b)) else None for b in BUCKETS}
        expected, why = predicted(model, task), reason(model, task)
        measured = verdict(means["128-256"], task)
        learnt = means["3-40"] is not None and means["3-40"] >= 0.9  # else length is not all that failed
        agree = "" if expected in ("", Q) or not measured else "yes" if measured == expected else "NO"
        agree += "" if learnt or not agree else " (3-40 < 0.9)"
        row = {"model": model, "task": task, "n": sum(r["status"] == "ok" for r in jobs)}
        row |= {b: cell(_values(jobs, b)) for b in BUCKETS}
        if model == "transformer":
            row["stream-1024"] = "cannot run"  # 1,025 tokens do not fit its 257 learned positions
        row |= {"chance": f"{chance_of(task):.3g}", "predicted": expected, "measured": measured, "agree": agree}
        row["why predicted"] = why
        out.append(row)
    return out


def render(rows: list[dict[str, Any]], lrs: list[dict[str, Any]]) -> str:
    summary = summarise(rows)
    agree = [r for r in summary if r["agree"].startswith("yes")]
    disagree = [r for r in summary if r["agree"].startswith("NO")]
    lines = [
        "# State tracking: accuracy by length against the theory's prediction",
        "",
        "Trained on lengths 3-40; a bucket's accuracy counts the positions past 40 of its sequences (3-40: the test "
        "split, every position); stream-1024: one stream of 1,024 symbols read 257 tokens at a time through the "
        "carried state. Cells: mean ± sd over seeds (n). predicted / measured: ✓ generalises (≥ 0.9 at 128-256), "
        "✗ fails (within a fifth of the way from chance to 1; parity ≤ 0.6), ~ between, ? the cited theory does not "
        "settle it; (3-40 < 0.9): the model did not learn the task in distribution either, so length is not all "
        "that failed. Made from st.csv by "
        "`python -m seqlab.analysis.state_tracking`.",
        "",
        f"{len(agree)} cells agree with the prediction, {len(disagree)} disagree"
        + (": " + ", ".join(f"{r['model']} on {r['task']}" for r in disagree) if disagree else "")
        + ". Where a cell disagrees, what was tried is in the notes below the table.",
        "",
        tables.markdown_table(summary, ["model", "task", "n", *BUCKETS, "chance", "predicted", "measured", "agree"]),
        "",
        "![accuracy against length](st.png)",
        "",
        "## Why each cell was predicted",
        "",
        tables.markdown_table(
            [r for r in summary if r["why predicted"]], ["model", "task", "predicted", "why predicted"]
        ),
        "",
    ]
    if lrs:
        lines += [
            "## Learning rates (stage 1: seed 0 on parity, chosen by best val loss on lengths 3-40)",
            "",
            tables.markdown_table(
                lrs,
                ["st_model", "lr", "best_val_loss", "chosen"],
                lambda v: ("✓" if v else "") if isinstance(v, bool) else tables.plain(v),
            ),
            "",
        ]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against length: one panel per task, one line per model (mean over seeds), chance dashed."""
    tasks = [t for t in TASKS if any(r["task"] == t for r in rows)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.4), squeeze=False, sharey=True)
    models = list(dict.fromkeys(r["st_model"] for r in rows))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    for ax, task in zip(axes[0], tasks, strict=True):
        for model in models:
            jobs = [r for r in rows if (r["st_model"], r["task"]) == (model, task)]
            xs, ys = [], []
            for b in BUCKETS:
                if v := _values(jobs, b):
                    xs.append(MIDPOINTS[b])
                    ys.append(statistics.fmean(v))
            style = "--" if model.endswith("_signed") else "-"
            ax.plot(xs, ys, style, marker="o", ms=3, color=colours[model], label=model)
        ax.axhline(chance_of(task), color="grey", ls=":", lw=1)
        ax.axvline(40, color="grey", lw=0.5)
        ax.set(xscale="log", title=task, xlabel="length (symbols)", ylim=(0, 1.02))
    axes[0][0].set_ylabel("accuracy (positions past 40)")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    tables.save_figure(fig, path, dpi=110)


def write_table(out: Path) -> None:
    """st.md and st.png from st.csv (and lrs.csv) alone."""
    rows = [dict(r) for r in tables.read_csv(out / "st.csv")]
    for r in rows:
        r |= {k: float(r[k]) if r[k] else None for k in ("best_val_loss", *BUCKETS)}
    lrs = []
    if (out / "lrs.csv").is_file():
        lrs = [r | {"lr": float(r["lr"]), "best_val_loss": float(r["best_val_loss"]), "chosen": r["chosen"] == "True"}
               for r in tables.read_csv(out / "lrs.csv")]  # fmt: skip
    (out / "st.md").write_text(render(rows, lrs) + "\n")
    plot(rows, out / "st.png")


def headline(rows: list[dict[str, Any]]) -> str:
    """The study's result in three lines: parity far past training, and how many cells match the theory."""
    summary = summarise(rows)
    seeds = sorted({r["n"] for r in summary})
    parity = []
    for model in dict.fromkeys(r["st_model"] for r in rows if r["task"] == "parity"):
        if v := _values([r for r in rows if (r["st_model"], r["task"]) == (model, "parity")], "128-256"):
            parity.append(f"{model} {statistics.fmean(v):.2f}")
    judged = [r for r in summary if r["agree"]]
    disagree = [f"{r['model']} on {r['task']}" for r in judged if r["agree"] == "NO"]
    unlearnt = [f"{r['model']} on {r['task']}" for r in judged if r["agree"].startswith("NO (")]
    agree = len(judged) - len(disagree) - len(unlearnt)
    return (
        f"Trained on lengths 3-40, parity scored at lengths 128-256 (mean of {'-'.join(map(str, seeds))} seeds; chance "
        f"0.5): {', '.join(parity)}.\n{agree} of {len(judged)} model × task cells that the theory settles agree with "
        "its prediction"
        + (f"; these do not: {', '.join(disagree)}" if disagree else "")
        + (f"; not learnt even at lengths 3-40, so untested in length: {', '.join(unlearnt)}" if unlearnt else "")
        + ".\nEvery task and length beside the prediction: [st.md](st.md); why the failures fail: [why.md](why.md)."
    )


def table(dirs: Sequence[Path], study: str, out: Path, lr_sweep: Path | None, notes: str) -> Path:
    rows = collect(dirs)
    cut = (
        "Cut for a 2-core machine: widths of ≈21k parameters, 1,000 steps of 64 sequences, 3 seeds, lengths to 256 "
        "and one stream of 1,024, the lr grid on parity and one seed only. "
    )
    make_study(dirs, study, out, metric="best_val_ppl", rank_across=None, notes=cut + notes, headline=headline(rows))
    tables.write_csv(rows, out / "st.csv")
    if lr_sweep is not None:
        tables.write_csv(choose_lrs(collect([lr_sweep])), out / "lrs.csv")
    write_table(out)
    return out


# --- why the failures fail ----------------------------------------------------------------------------------
@torch.no_grad()
def states(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, T, D): every state tensor after each token (all layers, flattened), from the step recurrence."""
    e, state, out = model.embed(x), model.initial_state(x.shape[0], x.device), []
    for t in range(x.shape[1]):
        _, state = model.step_embedded(e[:, t], state)
        out.append(torch.cat([s.transpose(0, 1).flatten(1) for s in state], dim=1))
    return torch.stack(out, dim=1)


def why(run_dir: Path, length: int = 256, n: int = 96) -> dict[str, Any]:
    """The final label's gradient by distance and the state's linear probe for the running answer, on sequences
    of `length` symbols drawn afresh (seed 99) from the run's own task."""
    from seqlab.analysis.probe import linear_probe, load
    from seqlab.data.state_tracking import encode
    from seqlab.training.callbacks.gradient_profile import gradient_profile

    system, _, dm = load(run_dir)
    model, task = system.model.double(), dm.task
    symbols, answers, sizes = task.sample(n, (length, length), seed=99)
    x, y = (torch.from_numpy(a) for a in encode(task, symbols, answers, sizes, -100))
    out: dict[str, Any] = {"task": task.label, "chance": task.chance}
    with torch.enable_grad():
        profile = gradient_profile(model, x[:16], y[:16])
    kind = model.state_names[0] if model.recurrent else "x"
    g = profile[kind][:, -1] if model.recurrent else profile["x"]  # (B, T): top layer's state, or the input
    out["gradient_of"] = f"{kind} (top layer)" if model.recurrent else "the input embedding"
    for d in (0, 16, 64, 128, length):
        out[f"g d={d}"] = float(g[:, min(d, g.shape[1] - 1)].mean())
    if model.recurrent:
        feats = states(model, x).float()  # (n, T, D)
        train_rows, test = n // 2, slice(n // 2, n)
        train_x, train_y = feats[:train_rows, 1:41].flatten(0, 1), answers[:train_rows, 1:41].ravel()
        for name, (a, b) in {"probe 3-40": (1, 40), "probe 40-64": (41, 64), "probe 64-128": (65, 128),
                             "probe 128-256": (129, 256)}.items():  # fmt: skip
            if a > length:
                continue
            fx, fy = feats[test, a : b + 1].flatten(0, 1), answers[test, a : b + 1].ravel()
            labels = torch.from_numpy(np.concatenate([train_y, fy]))
            out[name] = linear_probe(torch.cat([train_x, fx]), labels, train_share=len(train_y) / len(labels))
        out["model_acc 128-256"] = float(
            (model(x).argmax(-1)[:, 129:] == y[:, 129:]).double().mean()
        )  # the model's own head on the same rows
    out["profile"] = g.mean(0).tolist()
    return out


def pick_pairs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task, seed 0: the recurrent model with the highest and the one with the lowest accuracy at 128-256."""
    picked = []
    for task in TASKS:
        ok = [r for r in rows if r["task"] == task and str(r["seed"]) == "0" and r["status"] == "ok"]
        ok = [r for r in ok if r["st_model"] != "transformer" and r["128-256"] is not None]
        if len(ok) >= 2:
            ranked = sorted(ok, key=lambda r: r["128-256"])
            picked += [ranked[-1] | {"role": "generalises"}, ranked[0] | {"role": "fails"}]
    return picked


def write_why(sweeps: Sequence[Path], out: Path) -> None:
    rows, results = collect(sweeps), []
    roots = {str(p.relative_to(root.parent)): p for root in sweeps for p in find_job_dirs(root)}
    for r in pick_pairs(rows):
        found = why(roots[r["job"]])
        results.append({"task": r["task"], "role": r["role"], "model": r["st_model"], **found, "job": r["job"]})
    out.mkdir(parents=True, exist_ok=True)
    columns = ["task", "role", "model", "gradient_of", *(k for k in results[0] if k.startswith(("g d=", "probe"))),
               "model_acc 128-256", "chance", "job"] if results else []  # fmt: skip
    tables.write_csv([{k: v for k, v in r.items() if k != "profile"} for r in results], out / "why.csv", columns)
    (out / "why.json").write_text(json.dumps(results, indent=1) + "\n")
    text = [
        "# Why the failures fail",
        "",
        "Per task, seed 0, the recurrent model that generalises best and the one that fails worst, on 96 fresh "
        "sequences of 256 symbols. g d=k: ‖∂L/∂h‖ of the final label's loss at the state k steps before it (top "
        "layer). probe a-b: a linear probe of the whole state for the running answer, fitted on positions 1-40 of "
        "48 sequences, scored on positions a-b of the other 48. A state that still holds the answer (probe high) "
        "while the head misses it fails in the readout; a probe at chance says the state lost it.",
        "",
        tables.markdown_table(results, columns[:-1]),
        "",
        "![gradient of the final label by distance](why.png)",
    ]
    (out / "why.md").write_text("\n".join(text) + "\n")
    fig, axes = plt.subplots(1, max(1, len(results) // 2), figsize=(3.6 * max(1, len(results) // 2), 3.2),
                             squeeze=False)  # fmt: skip
    for i, r in enumerate(results):
        ax = axes[0][i // 2]
        ax.plot(r["profile"], label=f"{r['model']} ({r['role']})")  # index d: the distance from the final label
        ax.set(yscale="log", title=r["task"], xlabel="distance d")
        ax.legend(fontsize=7)
    fig.tight_layout()
    tables.save_figure(fig, out / "why.png", dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seqlab.analysis.state_tracking", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    lr = sub.add_parser("lrs", help="the lr per model from stage 1")
    lr.add_argument("sweep", type=Path)
    tb = sub.add_parser("table", help="the study, st.md and st.png")
    tb.add_argument("dirs", nargs="*", type=Path)
    tb.add_argument("--study", default="state_tracking")
    tb.add_argument("--out", type=Path, default=None)
    tb.add_argument("--lr-sweep", type=Path, default=None, help="stage 1's sweep: its lr table goes into st.md")
    tb.add_argument("--notes", default="", help="what was tried where a cell disagrees")
    tb.add_argument("--regenerate", type=Path, default=None, metavar="STUDY_DIR", help="st.md, st.png from st.csv")
    wy = sub.add_parser("why", help="gradient profiles and state probes for a generalising and a failing model")
    wy.add_argument("dirs", nargs="+", type=Path)
    wy.add_argument("--out", type=Path, default=RESULTS / "state_tracking")
    args = parser.parse_args(argv)
    if args.command == "lrs":
        lrs = choose_lrs(collect([args.sweep]))
        print(tables.markdown_table(lrs, ["st_model", "lr", "best_val_loss", "chosen"]))
        print(st_lr_override(lrs))
    elif args.command == "table" and args.regenerate is not None:
        write_table(args.regenerate)
        print(f"regenerated {args.regenerate}/st.md, st.png")
    elif args.command == "table":
        if not args.dirs:
            parser.error("table: give sweep dirs (or --regenerate STUDY_DIR)")
        out = table(args.dirs, args.study, args.out or RESULTS / args.study, args.lr_sweep, args.notes)
        print(f"-> {out}/st.md, st.png, st.csv and the study's results.md, runs.csv, manifest.json")
    else:
        write_why(args.dirs, args.out)
        print(f"-> {args.out}/why.md, why.csv, why.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
