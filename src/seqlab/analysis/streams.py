"""The streams table: recall accuracy, seconds and state bytes at each stream length, one row per model.

    python -m seqlab.analysis.streams evaluate RUN_DIR [RUN_DIR ...] [--lengths 1024 65536] [--streams 128]
    python -m seqlab.analysis.streams table SWEEP_DIR [SWEEP_DIR ...] --study streams   # docs/results/streams/
    python -m seqlab.analysis.streams table --regenerate docs/results/streams

`evaluate` reads the streams with a finished run's best checkpoint (seqlab.data.stream_recall; the run's own
induction source) and writes RUN_DIR/streams.json, which the table prefers to what the run measured itself.
`table` makes the study with `python -m seqlab.report` (runs.csv, manifest.json, results.md: recall at the
training length) and adds streams.csv (one row per job and length) and streams.md, computed from streams.csv
alone: per model (and width, if the sweep varies it) the lr with the lowest best_val_loss on the first seed,
then every seed at that lr, mean ± sd.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqlab.analysis import tables
from seqlab.analysis.compare import named_job_dirs
from seqlab.analysis.report import RESULTS, cell, values
from seqlab.analysis.report import report as make_study
from seqlab.errors import ConfigError
from seqlab.launch.sweep import read_job
from seqlab.models.catalog import display_order

COLUMNS = ["job", "model", "hidden_size", "lr", "seed", "status", "best_val_loss", "recall_acc", "read", "limit"]
COLUMNS += ["length", "accuracy", "seconds", "state_bytes"]


def streams_of(job_dir: Path, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The job's streams: RUN_DIR/streams.json (from `evaluate`) if there is one, else its metrics.json's."""
    try:
        return json.loads((job_dir / "streams.json").read_text())
    except (OSError, ValueError):
        return metrics.get("streams")


def collect(dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """One row per job and stream length (a job without streams: one row without them, so it is counted)."""
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
            "recall_acc": m.get("recall_acc"),
        }
        streams = streams_of(job_dir, m) or {}
        base |= {"read": streams.get("read"), "limit": streams.get("limit")}
        rows += [base | {k: r[k] for k in COLUMNS[-4:]} for r in streams.get("rows", [])] or [base]
    return rows


def chosen(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[tuple, list[dict[str, Any]]]:
    """{(model, width …): the rows at the lr whose job has the lowest best_val_loss on the first seed}."""
    out: dict[tuple, list] = {}
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    for key, found in groups.items():
        ok = [r for r in found if r["status"] == "ok" and isinstance(r["best_val_loss"], float | int)]
        if not ok:
            out[key] = []
            continue
        first = min(r["seed"] for r in ok)
        lr = min((r for r in ok if r["seed"] == first), key=lambda r: r["best_val_loss"])["lr"]
        out[key] = [r for r in found if r["lr"] == lr]
    return out


def render(rows: Sequence[dict[str, Any]]) -> str:
    """streams.md from streams.csv's rows."""
    widths = len({r["hidden_size"] for r in rows}) > 1
    keys = ["model", "hidden_size"] if widths else ["model"]
    lengths = sorted({r["length"] for r in rows if isinstance(r["length"], int)})
    table, notes = [], []
    groups = chosen(rows, keys)
    for key in sorted(groups, key=lambda k: (display_order(str(k[0])), k[1:])):
        found = groups[key]
        ok = [r for r in found if r["status"] == "ok"]
        seeds = sorted({r["seed"] for r in ok})
        row = dict(zip(keys, key, strict=True)) | {"lr": found[0]["lr"] if found else "", "n": len(seeds)}
        row["read"] = next((r["read"] for r in ok if r["read"]), "")
        row["recall at train length"] = cell(values(list({r["job"]: r for r in ok}.values()), "recall_acc"))
        for n in lengths:
            row[f"acc {n:,}"] = cell(values([r for r in ok if r["length"] == n], "accuracy"))
        at = {n: [r for r in ok if r["length"] == n] for n in lengths}
        row["seconds"] = " / ".join(cell(values(at[n], "seconds")) for n in lengths)
        held = [sorted({r["state_bytes"] for r in at[n]}) for n in lengths]
        flat = {b for bs in held for b in bs}
        row["state bytes"] = (
            f"{flat.pop():,} at every length"
            if len(flat) == 1
            else " / ".join("–".join(f"{b:,}" for b in bs) for bs in held)
        )
        limit = next((r["limit"] for r in ok if r["limit"]), None)
        if limit:
            notes.append(f"- **{key[0]}**: {limit}.")
        if not ok:
            notes.append(f"- **{key[0]}**: no job ended ok ({', '.join(sorted({str(r['status']) for r in found}))}).")
        table.append(row)
    header = [
        "# Recall over streams (induction heads, trained at the context length, read at each stream length)",
        "",
        "Accuracy on the answer at each stream length (mean ± sd over seeds at the lr chosen on the first seed by "
        "best_val_loss); seconds to read the streams at each length ("
        + " / ".join(f"{n:,}" for n in lengths)
        + "); bytes the model holds per stream at the end. Made from [streams.csv](streams.csv) by "
        "`python -m seqlab.analysis.streams table --regenerate <this dir>`.",
        "",
        tables.markdown_table(table, fmt=str),
        "",
    ]
    return "\n".join(header + (["Why a row stops:", "", *notes, ""] if notes else []))


def headline(rows: Sequence[dict[str, Any]]) -> str:
    """The README's line: recall at the longest stream per model (and width), at the lr the table chose."""
    lengths = sorted({r.get("length") for r in rows if isinstance(r.get("length"), int)})
    if not lengths:
        return ""
    last, keys = lengths[-1], ["model", "hidden_size"] if len({r["hidden_size"] for r in rows}) > 1 else ["model"]
    read, unread, seeds = [], [], set()
    for key, found in sorted(chosen(rows, keys).items(), key=lambda kv: (display_order(str(kv[0][0])), kv[0][1:])):
        at = [
            r
            for r in found
            if r["status"] == "ok" and r.get("length") == last and isinstance(r.get("accuracy"), int | float)
        ]
        name = " ".join(str(k) for k in key)
        if at:
            read.append(f"{name} {statistics.fmean(r['accuracy'] for r in at):.2f}")
            seeds.add(len({r["seed"] for r in at}))
        else:
            unread.append(name)
    n = "–".join(str(k) for k in sorted(seeds)) if seeds else "0"
    text = f"Recall of the answer at the end of streams of {last:,} tokens (mean of {n} seeds at each model's lr): "
    text += ", ".join(read) + (f"; not read at {last:,}: {', '.join(unread)} (the table says why)" if unread else "")
    return text + ". Every length, the seconds and the state bytes: [streams.md](streams.md)."


def number(text: str) -> Any:
    """A csv cell back to what it was: int, float, or text (empty: None)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text or None


def read_csv(path: Path) -> list[dict[str, Any]]:
    return [{k: number(v) for k, v in r.items()} for r in tables.read_csv(path)]


def write_table(rows: list[dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tables.write_csv(rows, out / "streams.csv", COLUMNS)
    (out / "streams.md").write_text(render(read_csv(out / "streams.csv")))  # from what was written, as --regenerate


def evaluate_run(run_dir: Path, lengths: Sequence[int] | None, n_streams: int | None, chunk: int | None) -> dict:
    from seqlab.analysis.probe import load  # torch, Lightning: only for this subcommand
    from seqlab.data.induction import InductionDataModule
    from seqlab.data.stream_recall import evaluate, limit, reading

    system, run_dir, dm = load(run_dir)
    if not isinstance(dm, InductionDataModule):
        raise ConfigError(f"{run_dir}: trained on data={dm.corpus}, not data=induction: no streams to read")
    recall = dm.stream_recall
    lengths = list(lengths or recall.lengths)
    n_streams, chunk = n_streams or recall.n_streams, chunk or recall.chunk
    rows = evaluate(system.model, dm.source, dm.context_length, lengths, n_streams, recall.seed, chunk=chunk)
    model = system.model
    result = {"read": reading(model, dm.context_length), "limit": limit(model, dm.context_length)}
    result |= {"streams": n_streams, "rows": rows}
    (run_dir / "streams.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqlab.analysis.streams", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="read the streams with finished runs' best checkpoints")
    ev.add_argument("runs", nargs="+", type=Path)
    ev.add_argument("--lengths", nargs="+", type=int, default=None, help="default: the run's data.stream_lengths")
    ev.add_argument("--streams", type=int, default=None, help="streams per length (default: the run's)")
    ev.add_argument("--chunk", type=int, default=None, help="tokens per forward_with_state call")
    tb = sub.add_parser("table", help="streams.csv and streams.md from sweep dirs (with --study: the whole study)")
    tb.add_argument("dirs", nargs="*", type=Path)
    tb.add_argument("--study", help="docs/results/<study>/ through python -m seqlab.report, and the streams table")
    tb.add_argument("--out", type=Path, help="where streams.csv and streams.md go (default: the study's dir)")
    tb.add_argument("--notes", default="", help="for the study's manifest: what was cut")
    tb.add_argument("--regenerate", type=Path, metavar="DIR", help="streams.md again from DIR/streams.csv")
    args = parser.parse_args(argv)
    try:
        if args.command == "evaluate":
            for run in args.runs:
                result = evaluate_run(run, args.lengths, args.streams, args.chunk)
                print(f"{run} ({result['read']}):")
                print(tables.markdown_table(result["rows"], fmt=tables.readable))
            return 0
        if args.regenerate:
            (args.regenerate / "streams.md").write_text(render(read_csv(args.regenerate / "streams.csv")))
            print(f"regenerated {args.regenerate / 'streams.md'}")
            return 0
        if not args.dirs or not (args.study or args.out):
            parser.error("table: give sweep dirs and --study NAME or --out DIR (or --regenerate DIR)")
        out = args.out or RESULTS / args.study
        rows = collect(args.dirs)
        if args.study:
            make_study(args.dirs, args.study, out, metric="recall_acc", notes=args.notes, headline=headline(rows))
        write_table(rows, out)
        print(f"wrote {out / 'streams.md'}")
        return 0
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
