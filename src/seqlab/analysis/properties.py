"""The properties table often drawn for RNNs, Transformers and state-space models, measured on this machine.

Every model in conf/model/, at a matched parameter count:

    python -m seqlab.properties                      # contexts 64..2048, positions 1..2048 (≈7 min on 2 cores)
    python -m seqlab.properties --quick --out DIR    # small and fast, for CI: the numbers mean little
    python -m seqlab.properties --report docs/results/properties   # also a results page (runs.csv, manifest.json)

Writes into --out: training.csv (time per sequence, training-step memory, by context), generation.csv (per-token
decode latency, prefill time and state/cache bytes, by position), properties.md (the properties table with measured
cells beside its claims, and the tables behind it), properties.png, and the same as TensorBoard scalars, figure
and text. Inputs are random token ids (speed and memory do not depend on the text). Timings are the median of
repeats that alternate between the models, with the interquartile range beside them (`_q25`, `_q75` columns), on
`--threads` threads (1 by default: steadier on a shared machine).
Memory on CPU is counted, not sampled: the bytes of the tensors autograd keeps for the backward pass
(activations), plus 16 bytes per parameter (weights, gradients and AdamW's two moments, float32).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seqlab.analysis import report, tables
from seqlab.analysis.properties_trained import TRAINED_CLAIMS, TRAINED_NOTES, runs_table, train_cells
from seqlab.launch.provenance import code_version
from seqlab.models.base import SequenceModel
from seqlab.models.catalog import build_model, model_class, model_config, model_names
from seqlab.training.callbacks.gradient_profile import gradient_profile

VOCAB = 66  # Tiny Shakespeare's
# the usual table's columns, each filled by the models whose class declares that `family` (models/base.py)
COLUMNS = {"RNN": "RNN", "Transformer": "Transformer", "State-Space": "State-Space"}
COLUMNS["feedforward"] = "feedforward (not in the usual table)"
CLAIMS = {  # the usual table's cells, RNN / Transformer / State-Space
    "Compute (training)": ("O(T)", "O(T²)", "O(T log T)"),
    "Compute (inference)": ("O(1)/step", "O(T)/step", "O(1)/step"),
    "Streaming inference": ("✓✓", "✗ (needs cache)", "✓✓"),
    "Parallel training": ("Limited", "✓✓", "✓"),
    "Long-range deps": ("Challenging", "✓✓", "✓✓"),
    "Parameter efficiency": ("✓✓", "✓", "✓✓"),
}


def build(name: str, context_length: int, size: int | None = None) -> SequenceModel:
    return build_model(name, VOCAB, context_length, **({} if size is None else {"hidden_size": size}))


def cached(name: str) -> bool:
    """Whether the model generates from a cache that grows with the position (a Transformer's keys and values)."""
    cls = model_class(name)
    return cls.incremental and not cls.recurrent


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_size(name: str, target: int, context_length: int) -> int | None:
    """The width (hidden_size, in steps of num_heads where there are heads) whose parameter count at
    `context_length` is closest to `target`; None where the count does not depend on it (unigram)."""
    step = model_config(name).get("num_heads", 1)
    count = lambda s: n_params(build(name, context_length, s * step))  # noqa: E731
    if count(1) == count(2):
        return None
    lo, hi = 1, 2
    while count(hi) < target:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # the count grows with the width
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    return step * min((lo, hi), key=lambda s: abs(count(s) - target))


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor) -> None:
    loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def activation_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves for backward in one training forward (parameters excluded)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
    return sum(saved.values())


def measure_training(names, sizes, contexts, B, repeats, steps, max_step_s) -> list[dict]:
    rows, active = [], list(names)
    for T in contexts:
        # a fixed batch: with fixed tokens per step, a recurrence's per-step overhead would grow like T²/tokens
        x = torch.randint(VOCAB, (B, T + 1))
        setups = {}
        for name in active:
            torch.manual_seed(0)
            model = build(name, T, sizes[name])
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            train_step(model, opt, x)  # warm-up: allocations, lazy init
            setups[name] = (model, opt)
        times = {name: [] for name in active}
        for _ in range(repeats):
            for name, (model, opt) in setups.items():  # alternate: each model sees the same load
                started = time.perf_counter()
                for _ in range(steps):
                    train_step(model, opt, x)
                times[name].append((time.perf_counter() - started) / steps)
        for name, (model, _) in setups.items():
            step_s, q25, q75 = np.percentile(times[name], [50, 25, 75]).tolist()
            act = activation_bytes(model, x[:1])
            row = {"model": name, "context": T, "batch": B, "params": n_params(model), "step_s": step_s}
            row |= {"step_s_q25": q25, "step_s_q75": q75}
            row |= {"s_per_seq": step_s / B, "activation_bytes_per_seq": act}
            rows.append(row | {"step_memory_bytes_per_seq": act + 16 * row["params"]})
            print(
                f"train  {name:12s} T={T:5d}  {row['s_per_seq'] * 1e3:9.3f} ms/seq  {act / 2**20:8.2f} MiB", flush=True
            )
        active = [n for n in active if float(np.median(times[n])) <= max_step_s]  # too slow: stop growing T
    return rows


@torch.no_grad()
def measure_generation(names, sizes, positions, repeats, context_length: int) -> list[dict]:
    """Per-token latency at each position: `step` for incremental models (the Transformer with its cache),
    a full forward over the prefix for the Transformer without it, and over the cropped window otherwise."""
    max_pos = max(positions)
    ids = torch.randint(VOCAB, (1, max_pos))
    models = {}
    for name in names:
        torch.manual_seed(0)
        # learned positions: the Transformer gets enough of them (the latency does not depend on the table)
        models[name] = build(name, max_pos if cached(name) else context_length, sizes[name]).eval()
    decode = {name: [] for name in models}  # per repeat: per-position seconds
    rows = []
    for _ in range(repeats):
        for name, model in models.items():
            if not model.incremental:
                continue
            state, seconds = model.initial_state(1), []
            for p in range(max_pos):
                started = time.perf_counter()
                _, state = model.step(ids[:, p], state)
                seconds.append(time.perf_counter() - started)
                if p + 1 in positions and len(decode[name]) == 0:
                    rows.append({"model": name, "position": p + 1, "state_bytes": state_bytes(state)})
            decode[name].append(seconds)
    for row in rows:
        name, p = row["model"], row["position"]
        # per repeat, the median step over the last eighth of positions up to p; then median and IQR over repeats
        last_eighth = [float(np.median(r[p - max(1, p // 8) : p])) for r in decode[name]]
        row |= spread("decode_s", last_eighth)
        row["steps_s"] = float(np.median([sum(r[:p]) for r in decode[name]]))  # the first p tokens, step by step
        prefill = models[name].prefill
        row |= spread("prefill_s", timings(lambda: prefill(ids[:, :p]), repeats))  # noqa: B023
    for name, model in models.items():  # no step: each token is a forward over what the model can see
        label = name + " (no cache)" if cached(name) else name
        if model.incremental and not cached(name):
            continue
        for p in positions:
            window = ids[:, :p] if cached(name) else ids[:, max(0, p - context_length) : p]
            seconds = spread("decode_s", timings(lambda: model(window), repeats))  # noqa: B023
            rows.append({"model": label, "position": p, "state_bytes": window.numel() * 8, **seconds})
    for row in sorted(rows, key=lambda r: (r["model"], r["position"])):
        print(
            f"decode {row['model']:22s} p={row['position']:5d}  {row['decode_s'] * 1e6:9.1f} µs  "
            f"{row['state_bytes']:9d} B",
            flush=True,
        )
    return rows


def state_bytes(state: Sequence[torch.Tensor]) -> int:
    return sum(s.numel() * s.element_size() for s in state)


def timings(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def spread(key: str, seconds: Sequence[float]) -> dict[str, float]:
    """{key: median, key_q25, key_q75}: the interquartile range says how far one reading may be off."""
    median, q25, q75 = np.percentile(seconds, [50, 25, 75]).tolist()
    return {key: median, f"{key}_q25": q25, f"{key}_q75": q75}


def reach_at_init(names, sizes, T: int) -> dict[str, float]:
    """g_x(T−1)/g_x(0): the last position's loss gradient at the first input over that at the last, at init."""
    out = {}
    for name in names:
        torch.manual_seed(0)
        model = build(name, T, sizes[name]).double()
        g = gradient_profile(model, torch.randint(VOCAB, (4, T)), torch.randint(VOCAB, (4, T)))["x"].mean(0)
        out[name] = float(g[-1] / g[0]) if g[0] > 0 else 0.0
    return out


FIT_FROM = 256  # below it, fixed per-step costs hide how the cost grows


def exponent(xs, ys) -> float:
    """The log-log slope over x ≥ FIT_FROM (over every point when fewer than two are that large)."""
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if x >= FIT_FROM]
    return slope(*zip(*pts, strict=True)) if len(pts) > 1 else slope(xs, ys)


def slope(xs, ys) -> float:
    """The fitted exponent k of y ∝ x^k (least squares on log-log)."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0]) if len(xs) > 1 else float("nan")


def measured_cells(train, gen, reach, sizes_params) -> dict[str, dict[str, str]]:
    """{property: {model: cell}} from the measurements."""
    cells: dict[str, dict[str, str]] = {k: {} for k in CLAIMS}
    cells["Training memory"] = {}
    by = lambda rows, name, key: [r for r in rows if r["model"] == name and r.get(key) is not None]  # noqa: E731
    for name in {r["model"] for r in train}:
        rows = by(train, name, "s_per_seq")
        cells["Compute (training)"][name] = (
            f"T^{exponent([r['context'] for r in rows], [r['s_per_seq'] for r in rows]):.2f}"
        )
        mem = [r["activation_bytes_per_seq"] for r in rows]
        cells["Training memory"][name] = f"T^{exponent([r['context'] for r in rows], mem):.2f}"
    for name in {r["model"] for r in gen}:
        rows = by(gen, name, "decode_s")
        late = [r for r in rows if r["position"] >= 64] or rows
        first, last = late[0], late[-1]
        k = exponent([r["position"] for r in late], [r["decode_s"] for r in late])
        growth = f", p^{k:.2f}" if len(late) > 1 else ""
        cells["Compute (inference)"][name] = f"{first['decode_s'] * 1e6:.0f}→{last['decode_s'] * 1e6:.0f} µs{growth}"
        cells["Streaming inference"][name] = f"{last['state_bytes']:,} B at p={last['position']}"
        if last.get("prefill_s"):
            cells["Parallel training"][name] = f"prefill ×{last['steps_s'] / last['prefill_s']:.1f}"
    for name, ratio in reach.items():
        cells["Long-range deps"][name] = f"{ratio:.1e}"
    for name, count in sizes_params.items():
        cells["Parameter efficiency"][name] = f"{count:,}"
    return cells


NOTES = {
    "Compute (training)": "fitted exponent of training time per sequence vs context T",
    "Training memory": "exponent of the activations a training step keeps, per sequence, vs T",
    "Compute (inference)": "per-token decode latency at p=64 → the last position, and its exponent (p ≥ 256)",
    "Streaming inference": "what generation must keep (state, KV cache, or token window) at the last position",
    "Parallel training": "p tokens one step at a time / one chunk pass (prefill) over them",
    "Long-range deps": "g_x(T−1)/g_x(0) at init: gradient reaching the first input (trained: see the sweeps)",
    "Parameter efficiency": "parameters (matched; perplexity per parameter: see docs/results/)",
}


def seed_table(cells: dict[str, dict[str, str]]) -> str:
    families, notes = list(COLUMNS), {**NOTES, **TRAINED_NOTES}
    header = ["property", *(h for f in families for h in (f"{COLUMNS[f]}: claim", "measured")), "measured as"]
    rows = []
    for prop, per_model in cells.items():
        claims = (*{**CLAIMS, **TRAINED_CLAIMS}.get(prop, ("—", "—", "—")), "—")  # the feedforward column: none
        row = {"property": prop, "measured as": notes[prop]}
        for claim, family in zip(claims, families, strict=True):
            names = [n for n in per_model if model_class(n.split(" ")[0]).family == family]
            row[f"{family}: claim"] = claim
            row[f"{family}: measured"] = "<br>".join(f"{n}: {per_model[n]}" for n in sorted(names)) or "—"
        rows.append(row)
    columns = ["property", *(f"{f}: {part}" for f in families for part in ("claim", "measured")), "measured as"]
    return tables.markdown_table(rows, columns, str, header)


def markdown_table(rows: list[dict], keys: list[str]) -> str:
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else f"{v}"  # noqa: E731
    return tables.markdown_table(rows, keys, fmt, missing="")


# --- the measurements as one table, and the pages made from it (python -m seqlab.report --regenerate) -----------

TEXT_COLUMNS = ["part", "property", "cell"]  # runs.csv's columns read back as text (model is text already)


def measurement_rows(train, gen, reach, sizes, params, trained) -> list[dict]:
    """Every number the pages show, one row each: `part` says which table (model, training, generation) or,
    for the cells that need training ({property: {model: cell}}), `trained` with the cell's text."""
    rows = [
        {"part": "model", "model": n, "hidden_size": sizes[n], "params": params[n], "reach_at_init": reach.get(n)}
        for n in params
    ]
    rows += [{"part": "training", **r} for r in train] + [{"part": "generation", **r} for r in gen]
    rows += [
        {"part": "trained", "property": prop, "model": m, "cell": c}
        for prop, per_model in trained.items()
        for m, c in per_model.items()
    ]
    return rows


def parts(rows: list[dict]) -> dict[str, list[dict]]:
    """rows by part, each without its empty cells and without `part`."""
    out: dict[str, list[dict]] = {"model": [], "training": [], "generation": [], "trained": []}
    for r in rows:
        out[r["part"]].append({k: v for k, v in r.items() if k != "part" and v is not None and v != ""})
    return out


def cells_of(rows: list[dict]) -> dict[str, dict[str, str]]:
    p = parts(rows)
    reach = {r["model"]: r["reach_at_init"] for r in p["model"] if "reach_at_init" in r}
    cells = measured_cells(p["training"], p["generation"], reach, {r["model"]: r["params"] for r in p["model"]})
    for r in p["trained"]:
        cells.setdefault(r["property"], {})[r["model"]] = r["cell"]
    return cells


def body(rows: list[dict], setup: str) -> str:
    """The properties table with the measured cells, and the tables behind it."""
    p = parts(rows)
    return "\n\n".join(
        [
            setup,
            seed_table(cells_of(rows)),
            "## Training, by context",
            markdown_table(p["training"], tables.columns_of(p["training"])),
            "## Generation, by position",
            markdown_table(
                p["generation"],
                [
                    "model",
                    "position",
                    "decode_s",
                    "decode_s_q25",
                    "decode_s_q75",
                    "prefill_s",
                    "steps_s",
                    "state_bytes",
                ],
            ),
        ]
    )


def pages(rows: list[dict], manifest: dict) -> dict[str, str]:
    """results.md and summary.md of a properties study, from its runs.csv rows and manifest alone."""
    cells = cells_of(rows)
    commit = (manifest.get("git_commit") or "unknown")[:12]
    results = [
        f"# {manifest['study']}",
        f"Made by `{manifest['commands'][0]}` at commit {commit}. Versions, machine and wall time: "
        "[manifest.json](manifest.json); every measurement: [runs.csv](runs.csv).",
        *([f"Notes: {manifest['notes']}"] if manifest.get("notes") else []),
        body(rows, manifest["setup"]),
        "![training time and memory against the context; decode latency and state against the position](results.png)",
        f"Rebuild this page from runs.csv: `python -m seqlab.report --regenerate docs/results/{manifest['study']}`",
    ]
    by_model = lambda prop: ", ".join(f"{m} {c}" for m, c in sorted(cells[prop].items()))  # noqa: E731
    flat, grows = latency_trend(parts(rows)["generation"])
    summary = [
        f"Training time per sequence against the context T (fitted exponent): {by_model('Compute (training)')}.",
        "Per-token decode latency from position 64 to the last: within its interquartile range (flat) for "
        f"{', '.join(flat) or 'none'}; beyond it for "
        + (", ".join(f"{m} {cells['Compute (inference)'][m]}" for m in grows) or "none")
        + ".",
    ]
    return {"results.md": "\n\n".join(results) + "\n", "summary.md": "\n\n".join(summary) + "\n"}


def latency_trend(gen: list[dict]) -> tuple[list[str], list[str]]:
    """(models whose decode latency at position 64 and at the last position have overlapping interquartile
    ranges, models whose ranges are apart): a difference inside the spread is not a trend."""
    flat, grows = [], []
    for name in sorted({r["model"] for r in gen}):
        rows = sorted((r for r in gen if r["model"] == name and r["position"] >= 64), key=lambda r: r["position"])
        if len(rows) < 2 or "decode_s_q25" not in rows[0]:
            continue
        first, last = rows[0], rows[-1]
        apart = first["decode_s_q75"] < last["decode_s_q25"] or last["decode_s_q75"] < first["decode_s_q25"]
        (grows if apart else flat).append(name)
    return flat, grows


def plot_study(rows: list[dict], path: Path) -> None:
    p = parts(rows)
    tables.save_figure(plot(p["training"], p["generation"]), path, dpi=80)


def write_study(study_dir: Path, rows: list[dict], setup: str, argv: list[str], code: dict, wall_s: float) -> None:
    """runs.csv, manifest.json and the pages, as seqlab.report writes a sweep's (its --check covers them)."""
    study_dir.mkdir(parents=True, exist_ok=True)
    tables.write_csv(rows, study_dir / "runs.csv")
    manifest = {
        "study": study_dir.name,
        "made_by": "seqlab.properties",
        "commands": [shlex.join(["python", "-m", "seqlab.properties", *argv])],
        "git_commit": code["commit"],
        "git_dirty": code["dirty"],
        "git_commit_of": "the measurement",
        "seeds": [],
        "versions": report.versions(),
        "machine": report.machine() | {"measured_on": "the machine that measured"},
        "threads": [torch.get_num_threads()],
        "wall_s": {"sweep": round(wall_s, 1)},
        "date": report.iso(time.time()),
        "setup": setup,
        "settings": [],
        "text_columns": TEXT_COLUMNS,
        "figures": {"results.png": "training time and memory by context; decode latency and state by position"},
        "notes": "Timings are medians of alternating repeats with their interquartile range (the _q25/_q75 "
        "columns of runs.csv): random inputs, so there are no seeds; the repeats are the spread.",
        "order": 90,
    }
    (study_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    report.regenerate(study_dir)
    print("wrote", study_dir)


def plot(train: list[dict], gen: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), dpi=80)
    panels = [
        (axes[0, 0], train, "context", "s_per_seq", "training time per sequence (s)"),
        (axes[0, 1], train, "context", "activation_bytes_per_seq", "activations kept for backward, per sequence (B)"),
        (axes[1, 0], gen, "position", "decode_s", "decode latency per token (s)"),
        (axes[1, 1], gen, "position", "state_bytes", "state / cache / window kept (B)"),
    ]
    names = sorted({r["model"].split(" ")[0] for r in train + gen})
    for ax, rows, x_key, y_key, label in panels:
        for name in sorted({r["model"] for r in rows}):
            pts = [(r[x_key], r[y_key]) for r in rows if r["model"] == name and r.get(y_key)]
            if pts:
                xs, ys = zip(*pts, strict=True)
                k = f" (^{exponent(xs, ys):.2f})" if x_key == "context" else ""
                color = plt.cm.tab20(names.index(name.split(" ")[0]) % 20)  # one colour per model, in every panel
                ax.plot(xs, ys, marker="o", ms=3, label=name + k, ls="--" if "no cache" in name else "-", color=color)
        ax.set(xscale="log", yscale="log", xlabel=x_key, ylabel=label)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqlab.properties", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="default: outputs/properties/<date>_<time>")
    parser.add_argument("--models", nargs="+", default=model_names(), choices=model_names(), metavar="MODEL")
    parser.add_argument("--params", type=int, default=100_000, help="matched parameter count (at context 64)")
    parser.add_argument("--contexts", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048])
    parser.add_argument("--positions", type=int, nargs="+", default=[2**k for k in range(12)])
    parser.add_argument("--batch", type=int, default=8, help="sequences per training step, at every context")
    parser.add_argument("--repeats", type=int, default=5, help="alternating repeats: median and IQR")
    parser.add_argument("--steps", type=int, default=2, help="training steps per timing")
    parser.add_argument("--max-step-s", type=float, default=5.0, help="a model slower than this stops growing T")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats, for CI")
    parser.add_argument("--train-budget", type=int, default=0, help="seconds per text run (0: skip training)")
    parser.add_argument("--train-data", default="shakespeare", help="conf/data choice of the text runs")
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-3, 1e-2], help="lr grid of the trained cells")
    parser.add_argument("--recall-gaps", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--recall-steps", type=int, default=600)
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="STUDY_DIR",
        help="also write a results page, e.g. docs/results/properties",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every trained run, e.g. data.batch_size=32")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.quick:
        args.contexts, args.positions, args.batch = [16, 32, 64], [1, 4, 16, 64], 2
        args.repeats, args.steps, args.params = 1, 1, 10_000
    torch.set_num_threads(args.threads)
    t0, started = time.time(), code_version()  # the commit that measured, read before the long measurement
    out = args.out or Path("outputs/properties") / time.strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)

    sizes = {name: matched_size(name, args.params, 64) for name in args.models}
    params = {name: n_params(build(name, 64, sizes[name])) for name in args.models}
    print("matched sizes:", ", ".join(f"{n} {sizes[n]} ({params[n]:,} params)" for n in args.models), flush=True)
    train = measure_training(args.models, sizes, args.contexts, args.batch, args.repeats, args.steps, args.max_step_s)
    gen = sorted(
        measure_generation(args.models, sizes, set(args.positions), args.repeats, 64),
        key=lambda r: (r["model"], r["position"]),
    )
    reach = reach_at_init(args.models, sizes, max(args.contexts[:3]))
    cells = measured_cells(train, gen, reach, params)
    runs: list[dict] = []
    trained: dict[str, dict[str, str]] = {}
    if args.train_budget:
        widths = {n: ("hidden_size", sizes[n]) if sizes[n] else None for n in args.models}
        runs, trained = train_cells(
            args.models,
            widths,
            out / "runs",
            args.train_budget,
            args.lrs,
            args.recall_gaps,
            args.recall_steps,
            extra=args.overrides,
            data=args.train_data,
        )
        cells |= trained

    for name, rows in (("training", train), ("generation", gen)):
        tables.write_csv(rows, out / f"{name}.csv")  # every column, first seen first
    setup = (
        f"{args.threads} thread(s), batch {args.batch} at every context, exponents fitted over T ≥ {FIT_FROM}, "
        f"{args.repeats} repeats × {args.steps} steps, models matched to ≈{args.params:,} parameters at context 64: "
        + ", ".join(f"{n} {params[n]:,}" for n in args.models)
    )
    rows = measurement_rows(train, gen, reach, sizes, params, trained)
    table = seed_table(cells)
    trained_runs = ["## Trained runs", markdown_table(runs_table(runs), list(runs_table(runs)[0]))] if runs else []
    (out / "properties.md").write_text("\n\n".join(["# Properties, measured", body(rows, setup), *trained_runs]) + "\n")
    if args.report:
        write_study(args.report, rows, setup, argv, started, time.time() - t0)
    figure = plot(train, gen)
    tables.save_figure(figure, out / "properties.png", close=False)  # TensorBoard gets it next

    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(out)) as tb:
        for r in train:
            tb.add_scalar(f"properties/train_s_per_seq/{r['model']}", r["s_per_seq"], r["context"])
            tb.add_scalar(f"properties/step_memory_per_seq/{r['model']}", r["step_memory_bytes_per_seq"], r["context"])
        for r in gen:
            tb.add_scalar(f"properties/decode_s/{r['model']}", r["decode_s"], r["position"])
            tb.add_scalar(f"properties/state_bytes/{r['model']}", r["state_bytes"], r["position"])
        tb.add_figure("properties", figure)
        tb.add_text("properties", setup + "\n\n" + table)
    print("\n" + table + "\n\nwrote", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
