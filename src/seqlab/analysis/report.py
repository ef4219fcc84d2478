"""Sweep dirs -> docs/results/<study>/: a study's tables, figures, raw numbers and provenance, made from its runs.

    python -m seqlab.report SWEEP_DIR [SWEEP_DIR ...] --study NAME [--notes TEXT] [--headline TEXT]
    python -m seqlab.report --regenerate docs/results/NAME   # results.md, summary.md, results.png from runs.csv
    python -m seqlab.report --check                          # every docs/results/*/: exit 1 if a page differs
    python -m seqlab.report --readme README.md               # the block between the results markers

Writes into docs/results/<study>/ (or --out):
  runs.csv       one row per job: its settings, seed, status and every number; the tables are computed from it
  manifest.json  the command that made each sweep (from its multirun.yaml), git commit, seeds, torch / Lightning
                 versions, CPU and GPU of the machine running this command (run it where the sweep ran), threads,
                 wall time, date, free-text notes, and how the tables are made (metric, settings, what is ranked)
  results.md     the tables; summary.md: the few lines the README shows; results.png; grad_profiles.png where
                 the jobs measured gradient profiles
results.md and summary.md depend on runs.csv and manifest.json alone, so `--regenerate` rebuilds them and
`--check` (and tests/test_report.py) catches a hand-edited number.

Seeds are an axis: jobs whose settings are equal form one configuration, reported as mean ± sd over its seeds
(sample sd, n − 1) with n. The settings are the overrides that differ between the jobs (from each job's
.hydra/overrides.yaml), `seed` aside. A ranking orders the configurations by the study's metric within each
value of the other settings; neighbours are separated ("<") only when both have ≥ 2 seeds and their mean ± sd
bands do not overlap, else they are "≈" (not separated). Sd bands rather than a bootstrap 95 % CI: with 3 seeds
a bootstrap has 10 distinct resamples, and its interval is no better founded.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt
import yaml

from seqlab.analysis import compare, tables
from seqlab.launch.provenance import code_version
from seqlab.launch.sweep import find_job_dirs, read_job
from seqlab.models.catalog import display_order
from seqlab.paths import ROOT

RESULTS = ROOT / "docs" / "results"
MARKERS = ("<!-- results:start -->", "<!-- results:end -->")
STUDY_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# the numbers a job reports, in the order the tables show them (those no job has are left out)
METRICS = [
    "best_val_loss",
    "best_val_ppl",
    "test_ppl",
    "test_ppl_stateful",
    "optimal_ppl",
    "excess_loss",
    "excess_over_source",
    "recall_acc",
    "grad_ratio_init",
    "grad_ratio",
    "params",
    "steps",
    "train_tokens_per_s",
    "wall_s",
]
HIGHER_IS_BETTER = {"recall_acc", "train_tokens_per_s"}
EVERY = "*"  # --rank-across '*': rank every configuration against every other, whatever its settings
TEXT_COLUMNS = {"job", "model", "data", "status", "reason"}
Row = dict[str, Any]


# --- reading a sweep ------------------------------------------------------------------------------------------


def job_overrides(job_dir: Path) -> dict[str, str] | None:
    """The job's command-line overrides as {key: value} (both as typed), or None without .hydra/overrides.yaml."""
    try:
        items = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    pairs = (str(item).split("=", 1) for item in items if "=" in str(item)) if isinstance(items, list) else ()
    return {key.lstrip("+~"): value for key, value in pairs}


def collect_runs(dirs: Sequence[Path]) -> tuple[list[Row], list[str], dict[str, dict[str, Any]]]:
    """(one row per job, the settings that tell configurations apart, each job's last gradient profile)."""
    rows, profiles = compare.collect(dirs)
    job_dirs = compare.named_job_dirs(dirs)
    overrides: dict[str, dict[str, str]] = {}
    for row in rows:
        job = read_job(job_dirs[row["job"]])
        hparams = job.metrics.get("hparams") if isinstance(job.metrics.get("hparams"), dict) else {}
        found = job_overrides(job_dirs[row["job"]])
        if found is None:  # a dir Hydra did not set up: what metrics.json says the job was
            found = {k: "" if row[k] is None else str(row[k]) for k in compare.VARIED}
        seed = found.pop("seed", hparams.get("seed"))
        row["seed"] = int(seed) if str(seed).lstrip("-").isdigit() else seed
        row["data"] = hparams.get("data")
        row["test_ppl_stateful"] = job.metrics.get("test_ppl_stateful")
        row["best_val_loss"] = job.metrics.get("best_val_loss")
        overrides[row["job"]] = found
    keys = list(dict.fromkeys(k for found in overrides.values() for k in found))
    settings = [k for k in keys if len({overrides[r["job"]].get(k, "") for r in rows}) > 1]
    settings.sort(key=lambda k: k != "model")  # the model first, the rest as typed
    for row in rows:
        row.update({k: overrides[row["job"]].get(k, "") for k in settings})
    rows.sort(key=lambda r: (*(setting_order(k, r[k]) for k in settings), setting_order("seed", str(r["seed"]))))
    return rows, settings, profiles


def setting_order(key: str, value: str) -> tuple:
    if key == "model":
        return display_order(value)
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def run_columns(settings: list[str]) -> list[str]:
    """runs.csv's columns: the job, what tells it apart (settings, seed), what it was, what it measured."""
    described = ["model", "data"] + [c for c in compare.COLUMNS if c not in ("job", "model", "status", "reason")]
    described.insert(described.index("test_ppl") + 1, "test_ppl_stateful")
    described.insert(described.index("best_val_ppl"), "best_val_loss")
    return ["job", *settings, "seed", *(c for c in described if c not in settings), "status", "reason"]


def read_runs(path: Path, settings: list[str]) -> list[Row]:
    """runs.csv back as rows: settings and names as text, the rest as numbers (empty: None)."""
    text = TEXT_COLUMNS | set(settings)
    return [{k: v if k in text else _number(v) for k, v in r.items()} for r in tables.read_csv(path)]


def _number(value: str) -> Any:
    if value == "":
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


# --- statistics and ranking -------------------------------------------------------------------------------------


def configurations(runs: list[Row], settings: list[str]) -> list[tuple[tuple[str, ...], list[Row]]]:
    """Jobs grouped by their settings, in the order runs.csv lists them."""
    groups: dict[tuple[str, ...], list[Row]] = {}
    for r in runs:
        groups.setdefault(tuple(r[k] for k in settings), []).append(r)
    return list(groups.items())


def values(jobs: list[Row], metric: str) -> list[float]:
    """The metric of every job that ended ok and has it (NaN included: a NaN mean says something broke)."""
    return [float(r[metric]) for r in jobs if r["status"] == "ok" and isinstance(r.get(metric), int | float)]


def mean_sd(xs: list[float]) -> tuple[float, float | None]:
    """Mean and sample sd (n − 1); sd None for one value."""
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None


def number(x: float) -> str:
    if float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    return f"{x:,.0f}" if abs(x) >= 1e4 else f"{x:.4g}"


def cell(xs: list[float]) -> str:
    """mean ± sd; one number where there is one value or every seed gave the same."""
    if not xs:
        return ""
    mean, sd = mean_sd(xs)
    if sd is None or len(set(xs)) == 1:
        return number(xs[0])
    return f"{number(mean)} ± {f'{sd:,.0f}' if sd >= 100 else f'{sd:.2g}'}"


def separated(a: list[float], b: list[float]) -> bool:
    """Whether two configurations' mean ± sd bands are disjoint (both need ≥ 2 seeds to have a band)."""
    if len(a) < 2 or len(b) < 2:
        return False
    (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
    return ma + sa < mb - sb or mb + sb < ma - sa


def not_ok(jobs: list[Row]) -> str:
    counts: dict[str, int] = {}
    for r in jobs:
        if r["status"] != "ok":
            counts[r["status"]] = counts.get(r["status"], 0) + 1
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def rankings(runs: list[Row], manifest: dict[str, Any]) -> list[str]:
    """One chain per value of the other settings, e.g. `data.gap=16: gru 0.99 ± 0.01 > lstm 0.97 ± 0.02 ≈ rnn …`."""
    settings, metric, across = manifest["settings"], manifest["metric"], manifest.get("rank_across")
    if across not in settings and not (across == EVERY and settings):
        return []
    higher = metric in HIGHER_IS_BETTER
    others = [] if across == EVERY else [k for k in settings if k != across]
    groups: dict[tuple[str, ...], list[tuple[str, list[Row]]]] = {}
    for key, jobs in configurations(runs, settings):
        named = dict(zip(settings, key, strict=True))
        if across == EVERY:  # every configuration against every other: e.g. a tuned recipe against the defaults
            label = ", ".join(f"{k.rsplit('.', 1)[-1]}={v or '(default)'}" for k, v in named.items())
        else:
            label = named[across] or "(default)"
            label = label if across == "model" else f"{across.rsplit('.', 1)[-1]}={label}"  # radius=0.9, not 0.9
        groups.setdefault(tuple(named[k] for k in others), []).append((label, jobs))
    lines = []
    for key, members in groups.items():
        if len(members) < 2:  # nothing to order
            continue
        scored = [(label, values(jobs, metric)) for label, jobs in members]
        ranked = sorted((m for m in scored if m[1]), key=lambda m: statistics.fmean(m[1]), reverse=higher)
        chain = f"{ranked[0][0]} {cell(ranked[0][1])}" if ranked else ""
        for (_, before), (label, xs) in itertools.pairwise(ranked):
            chain += f" {('>' if higher else '<') if separated(before, xs) else '≈'} {label} {cell(xs)}"
        failed = [f"{label} ({not_ok(jobs)})" for label, jobs in members if not values(jobs, metric)]
        if failed:
            chain += ("; " if chain else "") + "not ranked: " + ", ".join(failed)
        where = ", ".join(f"{k}={v}" for k, v in zip(others, key, strict=True))
        lines.append(f"- {where + ': ' if where else ''}{chain}")
    return lines


PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w]*)(?:@([^{}]*))?\}")


def fill(text: str, runs: list[Row]) -> str:
    """A headline's numbers from the runs: `{metric@key=value,key=value}` becomes that configuration's mean ± sd
    (`{metric}` alone: over every job), so a sentence quoting numbers is regenerated and checked like a table."""

    def number_for(match: re.Match[str]) -> str:
        metric, where = match.group(1), match.group(2) or ""
        wanted = dict(item.split("=", 1) for item in where.split(",") if "=" in item)
        plain = {k: v.replace("\\", "") for k, v in wanted.items()}  # Hydra escapes ':' as '\:' in overrides
        jobs = [r for r in runs if all(str(r.get(k, "")).replace("\\", "") == v for k, v in plain.items())]
        xs = values(jobs, metric)
        if not xs:
            raise ValueError(f"headline placeholder {match.group(0)}: no job that ended ok has {metric} there")
        return cell(xs)

    return PLACEHOLDER.sub(number_for, text)


# --- the pages ------------------------------------------------------------------------------------------------


def render_results(runs: list[Row], manifest: dict[str, Any]) -> str:
    """results.md from runs.csv's rows and manifest.json alone."""
    settings, metric = manifest["settings"], manifest["metric"]
    shown = [m for m in METRICS if any(isinstance(r.get(m), int | float) for r in runs)]
    rows = []
    for key, jobs in configurations(runs, settings):
        row = dict(zip(settings, key, strict=True)) | {"n": sum(r["status"] == "ok" for r in jobs)}
        row |= {m: cell(values(jobs, m)) for m in shown}
        row["not ok"] = not_ok(jobs)
        rows.append(row)
    columns = [*settings, "n", *shown] + (["not ok"] if any(r["not ok"] for r in rows) else [])
    seeds = ", ".join(map(str, manifest.get("seeds", []))) or "none recorded"
    commands = "\n".join(manifest.get("commands", [])) or "(not recorded)"
    commit = ", ".join(c[:12] for c in (manifest.get("git_commit") or "unknown").split(", "))
    of = manifest.get("git_commit_of", "the jobs")
    commit += {"the jobs": "", "the report": " when reported; the jobs recorded none"}.get(of, f", recorded by {of}")
    lines = [
        f"# {manifest['study']}",
        "",
        f"Made by `python -m seqlab.report` from the runs of (commit {commit}, seeds {seeds}):",
        "",
        "```",
        commands,
        "```",
        "",
    ]
    if manifest.get("headline"):
        lines += [fill(manifest["headline"], runs), ""]
    if manifest.get("notes"):
        lines += [f"Notes: {manifest['notes']}", ""]
    lines += [
        "Each cell: mean ± sd over the seeds that ended ok (sample sd, n − 1); a single number is one seed, or the "
        "same in every seed. Versions, machine, threads and wall time: [manifest.json](manifest.json); one row "
        "per job: [runs.csv](runs.csv).",
        "",
        tables.markdown_table(rows, columns, str),
        "",
    ]
    ranked = rankings(runs, manifest)
    if ranked:
        better = "higher" if metric in HIGHER_IS_BETTER else "lower"
        lines += [
            f"## {metric} by {'configuration' if manifest['rank_across'] == EVERY else manifest['rank_across']} "
            f"({better} is better)",
            "",
            f"`{'>' if better == 'higher' else '<'}`: the neighbours' mean ± sd bands do not overlap; `≈`: they "
            "overlap, or a side has fewer than 2 seeds, so the two are not separated.",
            "",
            *ranked,
            "",
        ]
    for name, caption in manifest.get("figures", {}).items():
        lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
    lines.append(
        f"Rebuild this page from runs.csv: `python -m seqlab.report --regenerate docs/results/{manifest['study']}`"
    )
    return "\n".join(lines) + "\n"


def render_summary(runs: list[Row], manifest: dict[str, Any]) -> str:
    """summary.md: the study's headline and its rankings, a few lines for the README."""
    n = sorted({sum(r["status"] == "ok" for r in jobs) for _, jobs in configurations(runs, manifest["settings"])})
    seeds = f"{n[0]}–{n[-1]}" if len(n) > 1 and n[0] != n[-1] else str(n[0] if n else 0)
    lines = [fill(manifest["headline"], runs), ""] if manifest.get("headline") else []
    ranked = rankings(runs, manifest)
    if ranked:
        better = "higher" if manifest["metric"] in HIGHER_IS_BETTER else "lower"
        over = "one seed" if seeds == "1" else f"mean ± sd over {seeds} seeds"
        lines += [f"{manifest['metric']} ({better} is better), {over}; `≈`: not separated:", ""]
        lines += ranked
    elif not manifest.get("headline"):  # a headline says what the table shows
        lines.append(f"{len(runs)} runs, {seeds} seeds per configuration: see the table.")
    return "\n".join(lines) + "\n"


def plot_results(runs: list[Row], manifest: dict[str, Any], path: Path) -> None:
    """The metric (mean ± sd, each seed a dot) against the first numeric setting, one line per value of the
    others; without a numeric setting, one point per configuration."""
    settings, metric, across = manifest["settings"], manifest["metric"], manifest.get("rank_across")
    groups = configurations(runs, settings)
    # with EVERY, configurations side by side, not a line through one of their settings
    varied = [k for k in settings if across != EVERY and k != across]
    numeric = [k for k in varied if len({key[settings.index(k)] for key, _ in groups}) > 1]
    numeric = [k for k in numeric if all(_is_float(key[settings.index(k)]) for key, _ in groups)]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if numeric:
        x = numeric[0]
        lines: dict[str, list[tuple[float, list[float]]]] = {}
        for key, jobs in groups:
            label = ", ".join(f"{k}={v}" if k != "model" else v for k, v in zip(settings, key, strict=True) if k != x)
            lines.setdefault(label or metric, []).append((float(key[settings.index(x)]), values(jobs, metric)))
        for label, points in lines.items():
            points = sorted(p for p in points if p[1])
            if not points:
                continue
            means = [statistics.fmean(v) for _, v in points]
            sds = [mean_sd(v)[1] or 0.0 for _, v in points]
            line = ax.errorbar([p[0] for p in points], means, yerr=sds, marker="o", capsize=3, label=label)
            for xv, vs in points:
                ax.plot([xv] * len(vs), vs, ".", color=line[0].get_color(), alpha=0.4)
        xs = sorted({float(key[settings.index(x)]) for key, _ in groups})
        if min(xs) > 0 and max(xs) / min(xs) >= 8:
            ax.set_xscale("log", base=2)
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xticks(xs, [f"{v:g}" for v in xs])  # the values the sweep ran
        ax.set_xlabel(x)
        ax.legend(fontsize=8)
    else:
        for i, (_, jobs) in enumerate(groups):
            vs = values(jobs, metric)
            if vs:
                ax.errorbar(
                    [i], [statistics.fmean(vs)], yerr=[mean_sd(vs)[1] or 0.0], marker="o", capsize=3, color="C0"
                )
                ax.plot([i] * len(vs), vs, ".", color="C0", alpha=0.4)
        labels = [", ".join(key) or manifest["study"] for key, _ in groups]
        ax.set_xticks(range(len(groups)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(groups) - 0.5)
    measured = [v for _, jobs in groups for v in values(jobs, metric)]
    if measured and min(measured) > 0 and max(measured) / min(measured) > 10:
        ax.set_yscale("log")
    ax.set_ylabel(f"{metric} (mean ± sd; dots: seeds)")
    ax.set_title(manifest["study"])
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    tables.save_figure(fig, path, dpi=120)


def _is_float(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


# --- provenance -------------------------------------------------------------------------------------------------


def sweep_command(sweep_dir: Path) -> str:
    """`python train.py -m <overrides>` as the sweep was launched, from its multirun.yaml (read as plain YAML:
    its interpolations, e.g. ${now:...}, stay as written); for a dir holding one single run (no -m), that run's
    command from its .hydra/hydra.yaml."""
    runs = [p for p in (sweep_dir / ".hydra", *sweep_dir.glob("*/.hydra")) if (p / "hydra.yaml").is_file()]
    multirun = (sweep_dir / "multirun.yaml").is_file()
    source = sweep_dir / "multirun.yaml" if multirun or len(runs) != 1 else runs[0] / "hydra.yaml"
    try:
        hydra = yaml.safe_load(source.read_text())["hydra"]
        task = [str(o) for o in hydra["overrides"]["task"]]
        extra = [str(o) for o in hydra["overrides"]["hydra"] if not o.startswith("hydra.mode=")]
        script = f"{hydra['job']['name']}.py"
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return f"(no readable multirun.yaml in {sweep_dir})"
    return shlex.join(["python", script, *(["-m"] if source.name == "multirun.yaml" else []), *task, *extra])


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
    except OSError:  # not Linux
        pass
    import torch  # late: the other commands of this module do not need it

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cpus": os.cpu_count(), "gpu": gpu, "measured_on": "the machine that ran seqlab.report"}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("torch", "lightning", "hydra-core", "torchmetrics", "seqlab"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def make_manifest(dirs: Sequence[Path], study: str, runs: list[Row], settings: list[str], **choices: Any) -> dict:
    job_dirs = [d for root in dirs for d in find_job_dirs(root)]
    metrics = [read_job(d).metrics for d in job_dirs]
    finished = [(d / "metrics.json").stat().st_mtime for d in job_dirs if (d / "metrics.json").is_file()]
    started = [(d / ".hydra").stat().st_mtime for d in job_dirs if (d / ".hydra").is_dir()]
    wall = [m["wall_s"] for m in metrics if isinstance(m.get("wall_s"), int | float)]
    return {
        "study": study,
        "commands": [sweep_command(Path(d)) for d in dirs],
        "sweep_dirs": [str(d) for d in dirs],
        **jobs_code(metrics),
        "seeds": sorted({r["seed"] for r in runs if r["seed"] not in (None, "")}, key=str),
        "jobs": len(runs),
        "versions": versions(),
        "machine": machine(),
        "threads": sorted({m["threads"] for m in metrics if isinstance(m.get("threads"), int)}),
        "wall_s": {
            "jobs_total": round(sum(wall), 1),
            "sweep": round(max(finished) - min(started), 1) if finished and started else None,
        },
        "date": iso(max(finished)) if finished else None,
        "reported": iso(time.time()),
        "settings": settings,
    } | choices


def jobs_code(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """The commit the jobs ran (from their metrics.json); HEAD now for jobs that recorded none, said as such."""
    recorded = [m["code"] for m in metrics if isinstance(m.get("code"), dict) and m["code"].get("commit")]
    now = code_version()
    if not recorded:
        return {
            "git_commit": now["commit"],
            "git_dirty": now["dirty"],
            "git_commit_of": "the report",
        }
    commits = sorted({c["commit"] for c in recorded})
    return {
        "git_commit": commits[0] if len(commits) == 1 else ", ".join(commits),
        "git_dirty": any(c.get("dirty") for c in recorded),
        "git_commit_of": "the jobs" if len(recorded) == len(metrics) else f"{len(recorded)} of {len(metrics)} jobs",
        "reported_at_commit": now["commit"],
    }


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


# --- writing, regenerating, checking ----------------------------------------------------------------------------


def default_metric(runs: list[Row]) -> str:
    for metric in ("recall_acc", "excess_loss", "best_val_ppl"):
        if any(isinstance(r.get(metric), int | float) for r in runs):
            return metric
    return "best_val_ppl"


def report(
    dirs: Sequence[Path],
    study: str,
    out: Path,
    metric: str | None = None,
    rank_across: str | None = "model",
    notes: str = "",
    headline: str = "",
    order: int = 100,
    more_figures: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Write runs.csv, manifest.json, the pages and the figures of one study into `out`; return the manifest.
    `more_figures`: {file: caption} of figures a study's own module draws into `out`, shown on its page too."""
    rows, settings, profiles = collect_runs(dirs)
    out.mkdir(parents=True, exist_ok=True)
    tables.write_csv(rows, out / "runs.csv", run_columns(settings))
    runs = read_runs(out / "runs.csv", settings)  # the pages come from what was written, as --regenerate's will
    fill(headline, runs)  # a placeholder that names no configuration fails here, before any page is written
    if rank_across == "model" and "model" not in settings:
        rank_across = settings[0] if settings else None
    figures = {"results.png": f"{metric or default_metric(runs)} by configuration"}
    first_seeds = {}  # one curve per configuration: its first seed's
    for r in rows:
        first_seeds.setdefault(tuple(r[k] for k in settings), r)
    shown = [r for r in first_seeds.values() if r["job"] in profiles]
    if shown:
        compare.plot_grad_profiles({r["job"]: profiles[r["job"]] for r in shown}, out / "grad_profiles.png", shown)
        figures["grad_profiles.png"] = (
            "gradient of the last position's loss by distance, the first seed of each configuration"
        )
    figures |= more_figures or {}
    manifest = make_manifest(
        dirs,
        study,
        runs,
        settings,
        metric=metric or default_metric(runs),
        rank_across=rank_across,
        figures=figures,
        notes=notes,
        headline=headline,
        order=order,
    )
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    regenerate(out)
    return manifest


def load_study(study_dir: Path) -> tuple[list[Row], dict[str, Any]]:
    manifest = json.loads((study_dir / "manifest.json").read_text())
    text = manifest["settings"] + manifest.get("text_columns", [])
    return read_runs(study_dir / "runs.csv", text), manifest


def measured_by_tool(manifest: dict[str, Any]) -> Any:
    """The module whose pages a study has when its rows are measurements, not jobs (seqlab.properties), else None."""
    if manifest.get("made_by") == "seqlab.properties":
        from seqlab.analysis import properties  # torch: only for that study

        return properties
    return None


def pages(study_dir: Path) -> dict[str, str]:
    return render_pages(*load_study(study_dir))


def render_pages(runs: list[Row], manifest: dict[str, Any]) -> dict[str, str]:
    tool = measured_by_tool(manifest)
    if tool is not None:
        return tool.pages(runs, manifest)
    return {"results.md": render_results(runs, manifest), "summary.md": render_summary(runs, manifest)}


def regenerate(study_dir: Path) -> None:
    """results.md, summary.md and results.png again from runs.csv and manifest.json."""
    runs, manifest = load_study(study_dir)
    for name, text in render_pages(runs, manifest).items():
        (study_dir / name).write_text(text)
    tool = measured_by_tool(manifest)
    if tool is not None:
        tool.plot_study(runs, study_dir / "results.png")
    else:
        plot_results(runs, manifest, study_dir / "results.png")


def differences(study_dir: Path) -> list[str]:
    """The pages of a study that differ from what its runs.csv and manifest.json give (e.g. a hand-edited number)."""
    found = []
    for name, text in pages(study_dir).items():
        path = study_dir / name
        if not path.is_file() or path.read_text() != text:
            found.append(name)
    return found


def studies(root: Path = RESULTS) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/manifest.json"))


def readme_block(readme: Path, root: Path = RESULTS) -> str:
    """The README's results block, regenerated from each study's runs.csv, with a link to its page: the study's
    headline where it has one (its rankings stay on its page, so the README stays short), else its summary."""
    found = studies(root)
    order = {d: json.loads((d / "manifest.json").read_text()).get("order", 100) for d in found}
    parts = [MARKERS[0], "<!-- made by `python -m seqlab.report --readme README.md` from docs/results/*/runs.csv -->"]
    for study_dir in sorted(found, key=lambda d: (order[d], d.name)):
        link = os.path.relpath(study_dir / "results.md", readme.resolve().parent)
        summary = relink(readme_summary(study_dir), study_dir, readme.resolve().parent)
        parts += ["", f"**{study_dir.name}** ([table and figures]({link})): {summary}"]
    return "\n".join([*parts, MARKERS[1]])


def readme_summary(study_dir: Path) -> str:
    runs, manifest = load_study(study_dir)
    return fill(manifest["headline"], runs) if manifest.get("headline") else pages(study_dir)["summary.md"].rstrip()


def relink(text: str, study_dir: Path, to: Path) -> str:
    """A summary's relative links (written from its study dir) made relative to the page that includes it."""
    return re.sub(
        r"\]\((?![a-z]+:|#|/)([^)\s]+)\)", lambda m: f"]({os.path.relpath(study_dir / m.group(1), to)})", text
    )


def current_readme_block(text: str) -> str | None:
    """The block between the markers (markers included) as it stands, or None when the README has none."""
    start, end = text.find(MARKERS[0]), text.find(MARKERS[1])
    return text[start : end + len(MARKERS[1])] if start != -1 and end > start else None


def update_readme(readme: Path, root: Path = RESULTS) -> bool:
    """Rewrite the README's results block; False when it has no markers."""
    text = readme.read_text()
    block = current_readme_block(text)
    if block is None:
        return False
    readme.write_text(text.replace(block, readme_block(readme, root)))
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqlab.report", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="*", type=Path, help="sweep dirs of one study")
    parser.add_argument("--study", help="the study's name: docs/results/<study>/")
    parser.add_argument("--out", type=Path, default=None, help="default: docs/results/<study>")
    parser.add_argument(
        "--metric", default=None, help="ranked metric (default recall_acc, excess_loss or best_val_ppl)"
    )
    parser.add_argument(
        "--rank-across",
        default="model",
        help="the setting to rank within each value of the others (default model; '*': every configuration; none)",
    )
    parser.add_argument("--notes", default="", help='free text for the manifest, e.g. "one seed: ~2 h per run"')
    parser.add_argument(
        "--headline",
        default="",
        help="a sentence above the study's summary; {metric@key=value,...} is replaced by that configuration's mean ± sd",
    )
    parser.add_argument("--order", type=int, default=100, help="place in the README's results (then by name)")
    parser.add_argument("--regenerate", nargs="+", type=Path, metavar="STUDY_DIR", help="rebuild pages from runs.csv")
    parser.add_argument(
        "--check", nargs="?", const=RESULTS, type=Path, metavar="RESULTS_DIR", help="exit 1 on a stale page"
    )
    parser.add_argument("--readme", type=Path, help="rewrite this README's results block")
    args = parser.parse_args(argv)
    if args.regenerate:
        for study_dir in args.regenerate:
            if not (study_dir / "runs.csv").is_file() or not (study_dir / "manifest.json").is_file():
                print(f"error: {study_dir}: no runs.csv and manifest.json", file=sys.stderr)
                return 2
            regenerate(study_dir)
            print(f"regenerated {study_dir}/results.md, summary.md, results.png")
        return 0
    if args.check is not None:
        stale = [f"{d}/{name}" for d in studies(args.check) for name in differences(d)]
        for page in stale:
            print(f"stale: {page} differs from its runs.csv (python -m seqlab.report --regenerate)", file=sys.stderr)
        return 1 if stale else 0
    if args.readme is not None:
        if not args.readme.is_file() or not update_readme(args.readme):
            print(f"error: {args.readme}: no {MARKERS[0]} … {MARKERS[1]} block", file=sys.stderr)
            return 2
        print(f"rewrote the results block of {args.readme}")
        return 0
    if not args.dirs or not args.study:
        parser.error("give sweep dirs and --study NAME (or --regenerate, --check, --readme)")
    if not STUDY_NAME.fullmatch(args.study):
        print(f"error: --study {args.study!r}: letters, digits, '_', '-' and '.' only", file=sys.stderr)
        return 2
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"error: not a directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    if not any(find_job_dirs(d) for d in args.dirs):
        print(f"error: no jobs (metrics.json or .hydra/) under {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 2
    out = args.out or RESULTS / args.study
    rank_across = None if args.rank_across.lower() == "none" else args.rank_across
    try:
        manifest = report(args.dirs, args.study, out, args.metric, rank_across, args.notes, args.headline, args.order)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{manifest['jobs']} jobs, seeds {manifest['seeds']} -> {out}/results.md, runs.csv, manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
