"""Recall against state size: MQAR accuracy per number of pairs K against the bytes of state each model
holds, one line per model through its widths, and K₅₀ (the largest K recalled at ≥ 0.5) per model and width.

    python -m seqlab.analysis.recall_capacity SWEEP_DIR [SWEEP_DIR ...] --study recall_capacity
    python -m seqlab.analysis.recall_capacity SWEEP_DIR [...] --out DIR
    python -m seqlab.analysis.recall_capacity --regenerate docs/results/recall_capacity

Reads each job's metrics.json "mqar" rows (seqlab.data.mqar: recall_acc and state_bytes at each K's length; the
Transformer's state is its KV cache at that length, so it moves right as K grows). Per model and width, the lr
with the lowest best_val_loss on the first seed, then every seed at that lr (mean ± sd). Writes capacity.csv
(one row per job and K), and from it alone capacity.md and recall_capacity.png; with --study, first the study
itself through `python -m seqlab.report` (runs.csv, manifest.json, results.md), whose page then shows the figure.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt

from seqlab.analysis import tables
from seqlab.analysis.compare import named_job_dirs
from seqlab.analysis.report import RESULTS, cell, mean_sd, values
from seqlab.analysis.report import report as make_study
from seqlab.analysis.streams import chosen, read_csv
from seqlab.data.mqar import k50
from seqlab.launch.sweep import read_job
from seqlab.models.catalog import display_order

COLUMNS = ["job", "model", "hidden_size", "lr", "seed", "status", "best_val_loss", "k50"]
COLUMNS += ["pairs", "length", "recall_acc", "state_bytes"]
FIGURE = "recall_capacity.png"
# the figure is on the study's results.md too (its manifest lists it; --regenerate keeps it)
SHOWN = {FIGURE: "recall accuracy against state bytes per K, one line per model (capacity.md)"}


def collect(dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """One row per job and K (a job without results: one row without them, so it is counted)."""
    rows = []
    for name, job_dir in named_job_dirs(dirs).items():
        m = read_job(job_dir).metrics
        hp = m.get("hparams") or {}
        base = {
            "job": name,
            "model": m.get("model"),
            "hidden_size": hp.get("hidden_size"),
            "lr": hp.get("lr"),
            "seed": hp.get("seed"),
            "status": m.get("status"),
            "best_val_loss": m.get("best_val_loss"),
            "k50": m.get("k50"),
        }
        rows += [base | {k: r[k] for k in COLUMNS[-4:]} for r in m.get("mqar") or []] or [base]
    return rows


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (model, width) at its chosen lr: the mean accuracy and the state bytes at every K."""
    out = []
    groups = chosen(rows, ["model", "hidden_size"])
    for model, width in sorted(groups, key=lambda k: (display_order(str(k[0])), k[1] or 0)):
        found = groups[(model, width)]
        ok = [r for r in found if r["status"] == "ok" and isinstance(r.get("pairs"), int)]
        pairs = sorted({r["pairs"] for r in ok})
        by_k = {k: [r for r in ok if r["pairs"] == k] for k in pairs}
        acc = {k: values(by_k[k], "recall_acc") for k in pairs}
        mean = [{"pairs": k, "recall_acc": mean_sd(acc[k])[0]} for k in pairs if acc[k]]
        seeds = sorted({r["seed"] for r in ok})
        per_seed = [k50([r for r in ok if r["seed"] == s]) for s in seeds]
        out.append(
            {
                "model": model,
                "hidden_size": width,
                "lr": found[0]["lr"] if found else None,
                "n": len(seeds),
                "pairs": pairs,
                "acc": acc,
                "state_bytes": {k: by_k[k][0]["state_bytes"] for k in pairs},
                "k50": k50(mean),
                "k50_seeds": per_seed,
                "not_ok": len({r["job"] for r in found if r["status"] != "ok"}),
            }
        )
    return out


def render(rows: Sequence[dict[str, Any]]) -> str:
    """capacity.md from capacity.csv's rows."""
    entries = summarise(rows)
    pairs = sorted({k for e in entries for k in e["pairs"]})
    table = []
    for e in entries:
        held = sorted(set(e["state_bytes"].values()))
        row = {"model": e["model"], "width": e["hidden_size"], "lr": e["lr"], "n": e["n"]}
        row["state bytes"] = f"{held[0]:,}" if len(held) == 1 else f"{held[0]:,}–{held[-1]:,}"
        row |= {f"K={k}": cell(e["acc"].get(k, [])) for k in pairs}
        row["K₅₀"] = "–" if e["k50"] is None else e["k50"]
        row["K₅₀ per seed"] = ", ".join("–" if k is None else str(k) for k in e["k50_seeds"])
        if e["not_ok"]:
            row["not ok"] = e["not_ok"]
        table.append(row)
    trend = []
    for model in dict.fromkeys(e["model"] for e in entries):
        mine = [e for e in entries if e["model"] == model and e["n"]]
        if len(mine) < 2:
            continue
        ks = [(min(e["state_bytes"].values()), -1 if e["k50"] is None else e["k50"]) for e in mine]
        ks.sort()
        steady = all(a[1] <= b[1] for a, b in itertools.pairwise(ks))
        shown = ", ".join(f"{e['hidden_size']} → {'–' if e['k50'] is None else e['k50']}" for e in mine)
        trend.append(f"- **{model}**: K₅₀ by width {shown}: {'never falls' if steady else 'falls'} as the state grows.")
    lines = [
        "# Recall against state size (MQAR)",
        "",
        "Recall accuracy on the answers at each number of key–value pairs K (mean ± sd over seeds at the lr "
        "chosen on the first seed by best_val_loss); state bytes per sequence from each model's own "
        "`state_bytes(1, length)` (for the Transformer its KV cache at each K's length: a range); K₅₀: the largest "
        "K recalled at ≥ 0.5 by the mean accuracy. Made from [capacity.csv](capacity.csv) by "
        "`python -m seqlab.analysis.recall_capacity --regenerate <this dir>`.",
        "",
        tables.markdown_table(table, fmt=str),
        "",
        *trend,
        "",
        f"![recall accuracy against state bytes, one line per model]({FIGURE})",
        "",
    ]
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """One panel per K: accuracy (mean ± sd) against state bytes, one line per model through its widths."""
    entries = summarise(rows)
    pairs = sorted({k for e in entries for k in e["pairs"]})
    if not pairs:
        return
    fig, axes = plt.subplots(1, len(pairs), figsize=(3.2 * len(pairs), 3.4), sharey=True, squeeze=False)
    models = list(dict.fromkeys(e["model"] for e in entries))
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}
    for ax, k in zip(axes[0], pairs, strict=True):
        for model in models:
            points = sorted(
                (e["state_bytes"][k], *mean_sd(e["acc"][k])) for e in entries if e["model"] == model and e["acc"].get(k)
            )
            if points:
                x, y, sd = zip(*points, strict=True)
                err = [s or 0 for s in sd]
                ax.errorbar(x, y, yerr=err, marker="o", ms=3, capsize=2, color=colours[model], label=model)
        ax.set_xscale("log", base=2)
        ax.set_title(f"K = {k}")
        ax.set_xlabel("state bytes per sequence")
        ax.axhline(0.5, color="grey", lw=0.5, ls=":")
    axes[0][0].set_ylabel("recall accuracy")
    axes[0][0].set_ylim(-0.02, 1.02)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    tables.save_figure(fig, path, dpi=120)


def write_pages(out: Path) -> None:
    rows = read_csv(out / "capacity.csv")  # the pages come from what was written, as --regenerate's will
    (out / "capacity.md").write_text(render(rows))
    plot(rows, out / FIGURE)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seqlab.analysis.recall_capacity", description=__doc__.splitlines()[0]
    )
    parser.add_argument("dirs", nargs="*", type=Path, help="sweep dirs (both stages of seqlab.launch.lr_then_seeds)")
    parser.add_argument("--study", help="docs/results/<study>/ through python -m seqlab.report, and these pages")
    parser.add_argument("--out", type=Path, help="where capacity.csv, capacity.md and the figure go")
    parser.add_argument("--notes", default="", help="for the study's manifest: what was cut")
    parser.add_argument(
        "--regenerate", type=Path, metavar="DIR", help="capacity.md and the figure from DIR/capacity.csv"
    )
    args = parser.parse_args(argv)
    if args.regenerate:
        write_pages(args.regenerate)
        print(f"regenerated {args.regenerate / 'capacity.md'} and {FIGURE}")
        return 0
    if not args.dirs or not (args.study or args.out):
        parser.error("give sweep dirs and --study NAME or --out DIR (or --regenerate DIR)")
    out = args.out or RESULTS / args.study
    if args.study:
        make_study(args.dirs, args.study, out, metric="recall_acc", notes=args.notes, more_figures=SHOWN)
    out.mkdir(parents=True, exist_ok=True)
    tables.write_csv(collect(args.dirs), out / "capacity.csv", COLUMNS)
    write_pages(out)
    print(f"wrote {out / 'capacity.md'} and {out / FIGURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
