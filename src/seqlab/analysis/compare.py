"""Sweep dirs -> one table and four plots: python -m seqlab.compare DIR [DIR ...] [--out OUTDIR]

Reads every job's metrics.json (jobs without one are listed as `missing`) and the last line of its
grad_profile.jsonl, and writes comparison.csv, comparison.md, ppl_vs_hidden.png, ppl_vs_context.png,
params_vs_context.png and grad_profiles.png. Failed and diverged jobs stay in the table with their reason.
One row per job: for seeds grouped into mean ± sd, and a study's page under docs/results/, see seqlab.report.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt

from seqlab.analysis import tables
from seqlab.launch.sweep import Job, find_job_dirs, read_job
from seqlab.models.catalog import display_order

COLUMNS = [
    "job",
    "model",
    "hidden_size",
    "context_length",
    "window",
    "recurrent_radius",
    "gradient_clip_val",
    "lr",
    "params",
    "steps",
    "best_val_ppl",
    "test_ppl",
    "optimal_ppl",  # the next four: data with a known optimum only (seqlab.data.synthetic)
    "excess_loss",
    "excess_over_source",  # markov: the excess over the true chain on the same test tokens
    "recall_acc",
    "grad_ratio_init",
    "grad_ratio",
    "train_tokens_per_s",
    "wall_s",
    "status",
    "reason",
]
NUMERIC = [c for c in COLUMNS if c not in ("job", "model", "status", "reason")]


def read_grad_profiles(job_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """Every readable line of a job's grad_profile.jsonl, in training order, and how many lines were not
    (a job killed mid-write leaves half a line; a disk error can leave anything)."""
    try:
        lines = (job_dir / "grad_profile.jsonl").read_text(errors="replace").splitlines()
    except OSError:  # none (most models' first steps), or not a file
        return [], 0
    profiles = []
    for line in filter(str.strip, lines):
        try:
            profile = json.loads(line)
        except ValueError:
            continue
        if isinstance(profile, dict) and all(_numbers_or_none(profile.get(k)) for k in ("g_h_mean", "g_x_mean")):
            profiles.append(profile)
    return profiles, len(list(filter(str.strip, lines))) - len(profiles)


def _numbers_or_none(values: Any) -> bool:
    return values is None or (isinstance(values, list) and all(_is_number(v) for v in values))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def grad_profiles(job_dir: Path) -> list[dict[str, Any]]:
    """Every readable line of a job's grad_profile.jsonl, in training order ([] if it has none)."""
    return read_grad_profiles(job_dir)[0]


def last_grad_profile(job_dir: Path) -> dict[str, Any] | None:
    """The profile at the end of training, or None."""
    profiles = grad_profiles(job_dir)
    return profiles[-1] if profiles else None


def grad_ratio(profile: dict[str, Any] | None) -> float | None:
    """g(T−1)/g(0) of a profile: the share of the last loss's gradient that reaches the chunk's first
    position (through h for recurrent models, else through the inputs). The seed's (0.9)^100 number."""
    g = (profile or {}).get("g_h_mean") or (profile or {}).get("g_x_mean")
    return g[-1] / g[0] if g and g[0] else None


def row_for(job: Job, name: str) -> dict[str, Any]:
    m, hp = job.metrics, job.metrics.get("hparams")
    hp = hp if isinstance(hp, dict) else {}
    row = {key: hp.get(key) for key in COLUMNS if key in hp}
    row.update(
        job=name,
        model=hp.get("model") or m.get("model"),
        params=m.get("params") or hp.get("params"),
        steps=m.get("steps"),
        best_val_ppl=m.get("best_val_ppl"),
        test_ppl=m.get("test_ppl"),
        optimal_ppl=m.get("optimal_ppl"),
        excess_loss=m.get("excess_loss"),
        excess_over_source=m.get("excess_over_source"),
        recall_acc=m.get("recall_acc"),
        train_tokens_per_s=m.get("train_tokens_per_s"),
        wall_s=m.get("wall_s"),
        status=job.status,
        reason=job.reason,
    )
    # a hand-edited or damaged metrics.json: a value that is not a number is dropped and said so
    wrong = [k for k in NUMERIC if row.get(k) is not None and not _is_number(row[k])]
    notes = [row["reason"]] if row["reason"] else []
    notes += [f"metrics.json: {k}={row[k]!r} is not a number" for k in wrong]
    row.update(dict.fromkeys(wrong), reason="; ".join(notes), model=None if row["model"] is None else str(row["model"]))
    return {key: row.get(key) for key in COLUMNS}


def named_job_dirs(dirs: Sequence[Path]) -> dict[str, Path]:
    """Every job dir under `dirs` by its name in the tables: its path in the sweep dir, and the sweep dir's
    name too when several sweeps are read, so job names stay unique."""
    named = {}
    for root in dirs:
        for job_dir in find_job_dirs(root):
            rel = job_dir.relative_to(root).as_posix()
            named[f"{root.name}/{rel}" if len(dirs) > 1 else rel] = job_dir
    return named


def collect(dirs: Sequence[Path]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Rows for every job under `dirs`, and each job's last gradient profile (by job name)."""
    rows, profiles = [], {}
    for name, job_dir in named_job_dirs(dirs).items():
        measured, unreadable = read_grad_profiles(job_dir)  # at step 0 (init) ... at the end
        first, last = (measured[0], measured[-1]) if measured else (None, None)
        row = row_for(read_job(job_dir), name)
        if unreadable:
            note = f"grad_profile.jsonl: {unreadable} unreadable line(s) skipped"
            row["reason"] = f"{row['reason']}; {note}" if row["reason"] else note
        rows.append(row | {"grad_ratio_init": grad_ratio(first), "grad_ratio": grad_ratio(last)})
        if last is not None:
            profiles[name] = last
    rows.sort(key=_sort_key)
    return rows, profiles


def _sort_key(row: dict[str, Any]) -> tuple:
    def num(value: Any) -> float:
        return math.inf if value is None else float(value)

    return (
        display_order(str(row["model"])),
        num(row["hidden_size"]),
        num(row["context_length"]),
        num(row["recurrent_radius"]),
        num(row["gradient_clip_val"]),
        num(row["lr"]),
        row["job"],
    )


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    tables.write_csv(rows, path, COLUMNS)


def write_markdown(rows: list[dict[str, Any]], path: Path) -> None:
    # columns that are empty for every job (e.g. no RNN in the sweep) only widen the table
    shown = [c for c in COLUMNS if c in ("job", "status", "reason") or any(r[c] is not None for r in rows)]
    bad = sum(r["status"] != "ok" for r in rows)
    footer = f"{len(rows)} jobs, {len(rows) - bad} ok, {bad} not ok."
    path.write_text(tables.markdown_table(rows, shown, tables.readable) + f"\n\n{footer}\n")


def _ok(rows: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["status"] == "ok" and all(r[k] is not None for k in keys)]


# the settings a sweep may vary, in the order figures group by: the model first
VARIED = ("model", "hidden_size", "context_length", "window", "recurrent_radius", "gradient_clip_val", "lr")


def varied_keys(rows: list[dict[str, Any]], keys: Sequence[str] = VARIED) -> list[str]:
    return [k for k in keys if len({json.dumps(r.get(k)) for r in rows}) > 1]


def plot_lines(
    rows: list[dict[str, Any]],
    x: str,
    y: str,
    path: Path,
    *,
    title: str,
    ylabel: str,
    per_hidden: bool = False,
) -> None:
    """One line per model (per model and hidden size if `per_hidden`) of y against x; when other settings
    vary too, each point shows the lowest y among them, and the figure says so."""
    several_hidden = len({r["hidden_size"] for r in rows}) > 1
    best: dict[str, dict[float, float]] = defaultdict(dict)
    pooled: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for r in _ok(rows, x, y):
        label = f"{r['model']} h={r['hidden_size']}" if per_hidden and several_hidden else r["model"]
        line = best[label]
        line[r[x]] = min(line.get(r[x], math.inf), r[y])
        pooled[label, r[x]].append(r)
    hidden = sorted({k for group in pooled.values() for k in varied_keys(group)} - {"model", x})
    fig, ax = plt.subplots(figsize=(6, 4))
    for model in sorted(best, key=lambda m: (display_order(m)[:2], len(m), m)):
        xs = sorted(best[model])
        ax.plot(xs, [best[model][v] for v in xs], marker="o", label=model)
    ax.set_xscale("log", base=2)
    ticks = sorted({v for line in best.values() for v in line})
    if ticks:
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if best:
        ax.legend(fontsize=9)
    else:
        ax.text(0.5, 0.5, "no finished jobs with these values", ha="center", transform=ax.transAxes)
    if hidden:  # several jobs behind one point: the plot keeps the lowest, which the reader must know
        fig.text(0.01, 0.01, f"each point: the lowest {ylabel} over {', '.join(hidden)}", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout(rect=(0, 0.04 if hidden else 0, 1, 1))
    tables.save_figure(fig, path, dpi=120)


def job_styles(rows: list[dict[str, Any]]) -> dict[str, tuple[Any, str]]:
    """Colour and legend label per job: one hue per value of the first setting that varies (the model, where
    it does), shades of that hue along the others, so the curves of one model read as a group. Labels name
    only the settings that vary."""
    keys = varied_keys(rows)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:  # rows come sorted by model, sizes, context, ...
        groups[json.dumps(r.get(keys[0])) if keys else ""].append(r)
    families = ["Blues", "Oranges", "Greens", "Reds", "Purples", "Greys", "YlOrBr", "PuRd", "BuGn", "RdPu"]
    styles = {}
    for i, members in enumerate(groups.values()):
        cmap = plt.get_cmap(families[i % len(families)])
        for j, r in enumerate(members):
            shade = 0.75 if len(members) == 1 else 0.4 + 0.55 * j / (len(members) - 1)
            label = ", ".join(
                str(r.get(k)) if k == "model" else f"{k}={tables.readable(r.get(k)) or None}" for k in keys
            )
            styles[r["job"]] = (cmap(shade), label or r["job"])
    return styles


def plot_grad_profiles(
    profiles: dict[str, dict[str, Any]], path: Path, rows: list[dict[str, Any]] | None = None
) -> None:
    """‖∂L_T/∂x_{T−d}‖ for every job (left) and ‖∂L_T/∂h_{T−d}‖ for the recurrent ones (right), log y."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    rows = [r for r in rows or [] if r["job"] in profiles] or [{"job": name} for name in profiles]
    styles = job_styles(rows)  # one colour per job in both panels, grouped by model
    order = [r["job"] for r in rows]
    dashed = set()
    for r in rows:  # a diverged or failed job's last profile is an early one: say so, and dash it
        if r.get("status", "ok") != "ok":
            colour, legend = styles[r["job"]]
            styles[r["job"]] = (colour, f"{legend} ({r['status']}; profile of step {profiles[r['job']].get('step')})")
            dashed.add(r["job"])
    all_zero = []
    for ax, key, label in ((axes[0], "g_x_mean", "input x"), (axes[1], "g_h_mean", "hidden state h")):
        for name in order:
            values = profiles[name].get(key)
            if not values:
                continue
            points = [(d, v) for d, v in enumerate(values) if v is not None and v > 0]  # log axis: 0 is -inf
            colour, legend = styles[name]
            if points:
                ax.plot(
                    *zip(*points, strict=True),
                    label=legend,
                    color=colour,
                    linewidth=1.3,
                    linestyle="--" if name in dashed else "-",
                    marker="." if len(points) < 4 else None,
                )
            elif key == "g_x_mean":
                all_zero.append(legend)
        ax.set_yscale("log")
        ax.set_xlabel("distance d = T − t (steps back from the scored position)")
        ax.set_title(f"gradient of the last loss w.r.t. {label}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("mean gradient norm")
    if all_zero:  # e.g. the unigram: no curve on a log axis, so say it
        note = textwrap.fill("0 at every d: " + "; ".join(all_zero), width=90)
        axes[0].text(0.01, 0.01, note, transform=axes[0].transAxes, fontsize=7, va="bottom")
    handles, labels = axes[0].get_legend_handles_labels()
    if labels:  # beside the panels, one job a line, in the table's order
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9, frameon=False)
    else:
        axes[0].text(0.5, 0.5, "no grad_profile.jsonl found", ha="center", transform=axes[0].transAxes)
    fig.tight_layout()
    tables.save_figure(fig, path, dpi=120, bbox_inches="tight")


def write_all(rows: list[dict[str, Any]], profiles: dict[str, dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "comparison.csv")
    write_markdown(rows, out / "comparison.md")
    plot_lines(
        rows,
        "hidden_size",
        "best_val_ppl",
        out / "ppl_vs_hidden.png",
        title="val perplexity vs hidden size",
        ylabel="best val ppl",
    )
    plot_lines(
        rows,
        "context_length",
        "best_val_ppl",
        out / "ppl_vs_context.png",
        title="val perplexity vs context length",
        ylabel="best val ppl",
    )
    plot_lines(
        rows,
        "context_length",
        "params",
        out / "params_vs_context.png",
        title="parameters vs context length",
        ylabel="parameters",
        per_hidden=True,
    )
    plot_grad_profiles(profiles, out / "grad_profiles.png", rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqlab.compare", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep dirs (or any dirs holding job dirs)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the first dir)")
    args = parser.parse_args(argv)
    missing = [d for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"error: not a directory: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    out = args.out or args.dirs[0]
    if out.exists() and not out.is_dir():
        print(f"error: --out {out}: exists and is not a directory", file=sys.stderr)
        return 2
    rows, profiles = collect(args.dirs)
    if not rows:
        print(
            f"error: no jobs (metrics.json or .hydra/) under {', '.join(map(str, args.dirs))}",
            file=sys.stderr,
        )
        return 2
    try:
        write_all(rows, profiles, out)
    except OSError as err:  # read-only, full, or a path through a file
        print(f"error: --out {out}: cannot write there ({err.strerror}: {err.filename})", file=sys.stderr)
        return 2
    bad = [r for r in rows if r["status"] != "ok"]
    print(f"{len(rows)} jobs ({len(bad)} not ok) -> {out}/comparison.md, comparison.csv and 4 plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
