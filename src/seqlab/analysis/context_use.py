"""Where each model stops gaining from context, over seeds: the probe's context-use curve (val loss given only the
last k tokens, and for recurrent models the unbounded history) of every job of a sweep, mean ± sd per data and model.

    python -m seqlab.analysis.context_use SWEEP_DIR --probe --study context_use   # probes the jobs that lack one
    python -m seqlab.analysis.context_use SWEEP_DIR --out DIR
    python -m seqlab.analysis.context_use --regenerate docs/results/context_use

Reads each job's probe/probe_context_use.csv (`python -m seqlab.probe JOB`; `--probe` runs it on the jobs without
one, with `--ks` and `--tokens`). Writes context_use.csv (one row per job and k), and from it alone
context_use.md and context_use.png; with --study, first the study itself through `python -m seqlab.report`
(runs.csv, manifest.json, results.md: best val perplexity), whose page then shows the figure.
"""

from __future__ import annotations

import argparse
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
from seqlab.analysis.streams import read_csv
from seqlab.launch.sweep import read_job
from seqlab.models.catalog import display_order

COLUMNS = ["job", "data", "model", "seed", "context_length", "status", "best_val_loss", "k", "loss"]
FIGURE = "context_use.png"
# the figure is on the study's results.md too (its manifest lists it; --regenerate keeps it)
SHOWN = {FIGURE: "val loss against the tokens of context each model may see (context_use.md)"}
ALL = "all"  # the probe's k for the unbounded history (the split read as streams through the carried state)
TOLERANCE = 0.01  # nats: "within 1 % of perplexity of its best", as the probe's report says


def probe_csv(job_dir: Path) -> Path:
    return job_dir / "probe" / "probe_context_use.csv"


def collect(dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """One row per job and k (a job without a probe: one row without k, so it is counted)."""
    rows = []
    for name, job_dir in named_job_dirs(dirs).items():
        m = read_job(job_dir).metrics
        hp = m.get("hparams") or {}
        base = {
            "job": name,
            "data": hp.get("data"),
            "model": m.get("model"),
            "seed": hp.get("seed"),
            "context_length": hp.get("context_length"),
            "status": m.get("status"),
            "best_val_loss": m.get("best_val_loss"),
        }
        curve = read_csv(probe_csv(job_dir)) if probe_csv(job_dir).is_file() else []
        rows += [base | {"k": r["k"], "loss": r["loss"]} for r in curve] or [base | {"k": None, "loss": None}]
    return rows


def saturation(curve: dict[Any, float]) -> Any:
    """The fewest tokens of context whose loss is within TOLERANCE of the best over the curve (ks, then "all")."""
    from seqlab.analysis.probe import saturation as probe_saturation  # the probe's own rule; torch: only here

    return probe_saturation([{"k": k, "loss": curve[k]} for k in sorted(curve, key=order_of_k)], TOLERANCE)[0]


def order_of_k(k: Any) -> float:
    return float("inf") if k == ALL else float(k)


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (data, model): each k's losses over seeds, each seed's saturation k, and the gain of the
    unbounded history over the full window (the loss with every token before minus the loss at k = T)."""
    out = []
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["data"], r["model"]), []).append(r)
    for (data, model), found in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), display_order(str(kv[0][1])))):
        ok = [r for r in found if r["status"] == "ok" and isinstance(r["loss"], int | float)]
        seeds = sorted({r["seed"] for r in ok})
        curves = {s: {r["k"]: r["loss"] for r in ok if r["seed"] == s} for s in seeds}
        ks = sorted({r["k"] for r in ok}, key=order_of_k)
        T = max((r["context_length"] for r in found if isinstance(r["context_length"], int)), default=None)
        gain = [c[ALL] - c[T] for c in curves.values() if T in c and ALL in c]
        out.append(
            {
                "data": data,
                "model": model,
                "T": T,
                "n": len(seeds),
                "ks": ks,
                "loss": {k: values([r for r in ok if r["k"] == k], "loss") for k in ks},
                "best_val_loss": values(list({r["job"]: r for r in ok}.values()), "best_val_loss"),
                "saturation": [saturation(c) for c in curves.values()],
                "gain": gain,
                "missing": len({r["job"] for r in found}) - len({r["job"] for r in ok}),
            }
        )
    return out


def gain_text(gain: list[float]) -> str:
    """The unbounded history's loss minus the window's, in nats (to 4 places: the differences are small), "≈ 0"
    where its sd band holds zero."""
    if not gain:
        return ""
    mean, sd = mean_sd(gain)
    if sd is None:
        return f"{mean:+.4f}"
    return f"{mean:+.4f} ± {sd:.4f}" + (" (≈ 0)" if abs(mean) <= sd else "")


def render(rows: Sequence[dict[str, Any]]) -> str:
    """context_use.md from context_use.csv's rows."""
    entries = summarise(rows)
    lines = [
        "# Context use: val loss given only the last k tokens",
        "",
        f"Val loss (nats per token) of each trained model when it sees only the last k tokens of its val split, k = 1 "
        f"… T (its training context), and for the recurrent models with the unbounded history (`{ALL}`: the split "
        "read as streams through the carried state), on the same targets at every k; mean ± sd over seeds. "
        f"*Saturates at*: per seed, the fewest tokens within {TOLERANCE} nats of that seed's best over the curve. "
        f"*{ALL} − T*: the unbounded history's loss minus the full window's (negative: the state carries more than "
        "T tokens of use; ≈ 0 where the sd band holds zero). Made from [context_use.csv](context_use.csv) by "
        "`python -m seqlab.analysis.context_use --regenerate <this dir>`.",
    ]
    for data in dict.fromkeys(e["data"] for e in entries):
        mine = [e for e in entries if e["data"] == data]
        ks = sorted({k for e in mine for k in e["ks"]}, key=order_of_k)
        table = []
        for e in mine:
            row = {"model": e["model"], "T": e["T"], "n": e["n"]}
            row |= {f"k={k}": cell(e["loss"].get(k, [])) for k in ks}
            row["saturates at"] = ", ".join(str(k) for k in e["saturation"])
            row[f"{ALL} − T"] = gain_text(e["gain"])
            if e["missing"]:
                row["no probe or not ok"] = e["missing"]
            table.append(row)
        lines += ["", f"## {data}", "", tables.markdown_table(table, fmt=str)]
    lines += ["", f"![val loss against the context the model may see, one line per model]({FIGURE})", ""]
    return "\n".join(lines)


def headline(rows: Sequence[dict[str, Any]]) -> str:
    """The README's line: where each model saturates, per data, and what the unbounded history adds."""
    parts = []
    entries = [e for e in summarise(rows) if e["n"]]
    for data in dict.fromkeys(e["data"] for e in entries):
        mine = [e for e in entries if e["data"] == data]
        said = []
        for e in mine:
            text = f"{e['model']} k = {'/'.join(str(k) for k in e['saturation'])}"
            if e["gain"]:
                text += f" (unbounded history − k = {e['T']}: {gain_text(e['gain'])} nats)"
            said.append(text)
        parts.append(f"{data}: " + "; ".join(said))
    if not parts:
        return ""
    return (
        f"Fewest tokens of context within {TOLERANCE} nats of each model's best val loss (per seed) — "
        + " · ".join(parts)
        + ". The curves: [context_use.md](context_use.md)."
    )


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """One panel per data: loss (mean ± sd) against k, one line per model; the unbounded history as a star at 2T."""
    entries = summarise(rows)
    datas = list(dict.fromkeys(e["data"] for e in entries if e["n"]))
    if not datas:
        return
    fig, axes = plt.subplots(1, len(datas), figsize=(5.5 * len(datas), 3.8), squeeze=False)
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(dict.fromkeys(e["model"] for e in entries))}
    for ax, data in zip(axes[0], datas, strict=True):
        for e in (e for e in entries if e["data"] == data and e["n"]):
            points = [(k, *mean_sd(e["loss"][k])) for k in e["ks"] if k != ALL and e["loss"][k]]
            x, y, sd = zip(*points, strict=True)
            colour = colours[e["model"]]
            ax.errorbar(x, y, yerr=[s or 0 for s in sd], marker="o", ms=3, capsize=2, color=colour, label=e["model"])
            if e["loss"].get(ALL):
                mean, s = mean_sd(e["loss"][ALL])
                ax.errorbar([2 * e["T"]], [mean], yerr=[s or 0], marker="*", ms=9, color=colours[e["model"]])
        T = max(e["T"] for e in entries if e["data"] == data)
        ax.axvline(T, color="grey", lw=0.5, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_title(f"{data} (★ at 2T: the unbounded history)")
        ax.set_xlabel("k, tokens of context the model may see")
        ax.set_ylabel("val loss (nats per token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tables.save_figure(fig, path, dpi=120)


def write_pages(out: Path) -> None:
    rows = read_csv(out / "context_use.csv")  # the pages come from what was written, as --regenerate's will
    (out / "context_use.md").write_text(render(rows))
    plot(rows, out / FIGURE)


def probe_missing(dirs: Sequence[Path], ks: list[int] | None, tokens: int) -> None:
    from seqlab.analysis.probe import probe  # torch, Lightning: only when probing

    for name, job_dir in named_job_dirs(dirs).items():
        if probe_csv(job_dir).is_file() or read_job(job_dir).metrics.get("status") != "ok":
            continue
        print(f"probing {name}")
        probe(job_dir, tokens=tokens, ks=ks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqlab.analysis.context_use", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="*", type=Path, help="sweep dirs (e.g. of experiment=context_use)")
    parser.add_argument("--probe", action="store_true", help="first run seqlab.probe on each ok job without one")
    parser.add_argument("--ks", type=int, nargs="+", default=None, help="for --probe: the k's (default 1, 2, 4 … T)")
    parser.add_argument("--tokens", type=int, default=4096, help="for --probe: val targets scored at each k")
    parser.add_argument("--study", help="docs/results/<study>/ through python -m seqlab.report, and these pages")
    parser.add_argument("--out", type=Path, help="where context_use.csv, context_use.md and the figure go")
    parser.add_argument("--notes", default="", help="for the study's manifest: what was cut")
    parser.add_argument("--regenerate", type=Path, metavar="DIR", help="the pages from DIR/context_use.csv")
    args = parser.parse_args(argv)
    if args.regenerate:
        write_pages(args.regenerate)
        print(f"regenerated {args.regenerate / 'context_use.md'} and {FIGURE}")
        return 0
    if not args.dirs or not (args.study or args.out):
        parser.error("give sweep dirs and --study NAME or --out DIR (or --regenerate DIR)")
    if args.probe:
        probe_missing(args.dirs, args.ks, args.tokens)
    out = args.out or RESULTS / args.study
    rows = collect(args.dirs)
    if args.study:
        make_study(args.dirs, args.study, out, notes=args.notes, headline=headline(rows), more_figures=SHOWN)
    out.mkdir(parents=True, exist_ok=True)
    tables.write_csv(rows, out / "context_use.csv", COLUMNS)
    write_pages(out)
    print(f"wrote {out / 'context_use.md'} and {out / FIGURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
