"""What a trained model uses: python -m seqlab.probe <run dir or checkpoint> [--out DIR] [--tokens N]
(and `python -m seqlab.probe --recall-sweep <sweep dir>`: recall_acc vs gap beside the gradient at that distance)

Measured on the val split, for any model (the classic claims about context, as numbers):
  context use     val loss when the model sees only the last k tokens, k = 1, 2, 4, …, T; for recurrent models
                  (`forward_with_state`) also the unbounded history, the split read as one stream
  order           val loss with each context's tokens before the last m shuffled, vs intact
  length          val loss in chunks of 1×, 2×, 4× the training context (and on the positions past T alone)
  params          parameters vs context length for every model in conf/model/, from the classes (no training)
  hidden state    (recurrent models, char level) linear probes from the state to properties of the text, against
                  a probe on the last k characters' one-hot; the unit most correlated with each property,
                  drawn over the text (Karpathy et al. 2015)
Writes probe_<name>.csv / .md / .png into <run dir>/probe/ (or --out), and the same into the run's TensorBoard.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import seqlab.launch.sweep  # noqa: F401  (registers the resolvers the saved configs use)
from seqlab.analysis.tables import figure_array, markdown_table, write_csv
from seqlab.errors import ConfigError
from seqlab.models.catalog import build_model, model_config, model_names
from seqlab.paths import ROOT


# --- measurements (plain functions of a model and token ids) ------------------------------------------------
@torch.no_grad()
def window_losses(
    model: nn.Module,
    ids: torch.Tensor,
    ends: torch.Tensor,
    k: int,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_tokens: int = 2**21,
) -> torch.Tensor:
    """Loss of predicting ids[t + 1] from the k tokens ids[t − k + 1 .. t] alone, for every t in `ends` (each
    t ≥ k − 1). `transform` may rewrite the (B, k) windows first (e.g. shuffle them)."""
    windows = ids[ends[:, None] - torch.arange(k - 1, -1, -1)]  # (N, k)
    if transform is not None:
        windows = transform(windows)
    targets = ids[ends + 1]
    batch = max(1, batch_tokens // (k * 64))  # keeps the (B, k, V) logits of a 10k-word vocabulary in memory
    losses = [
        F.cross_entropy(model(windows[i : i + batch])[:, -1], targets[i : i + batch], reduction="none")
        for i in range(0, len(windows), batch)
    ]
    return torch.cat(losses)


@torch.no_grad()
def stream_losses(model: nn.Module, ids: torch.Tensor, streams: int = 16) -> torch.Tensor:
    """Per-target losses (len(ids) − 1,) with unbounded history: `streams` consecutive stretches of the split,
    each read in one `forward_with_state` pass from a zero state. Entries of the first few positions of each
    stretch have short history; callers score positions ≥ T only where T is small against a stretch."""
    n = (len(ids) - 1) // streams
    x = ids[: n * streams].view(streams, n)
    y = ids[1 : n * streams + 1].view(streams, n)
    logits, _ = model.forward_with_state(x)  # (S, n, V)
    out = torch.full((len(ids) - 1,), math.nan)
    out[: n * streams] = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
    return out


def shuffle_before_last(m: int, seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """A transform that permutes each window's tokens before its last m, independently per window."""

    def shuffle(windows: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        head = windows[:, : windows.shape[1] - m]
        perm = torch.rand(head.shape, generator=g).argsort(1)
        return torch.cat([head.gather(1, perm), windows[:, head.shape[1] :]], 1)

    return shuffle


@torch.no_grad()
def chunk_loss(model: nn.Module, ids: torch.Tensor, length: int, context_length: int) -> tuple[float, float | None]:
    """Mean loss over consecutive chunks of `length` tokens (as val scores them), and over the positions at
    or past `context_length` alone (None when a chunk has none)."""
    n = (len(ids) - 1) // length
    x, y = ids[: n * length].view(n, length), ids[1 : n * length + 1].view(n, length)
    losses = torch.cat(
        [F.cross_entropy(model(x[i : i + 8]).transpose(1, 2), y[i : i + 8], reduction="none") for i in range(0, n, 8)]
    )  # (n, length)
    beyond = losses[:, context_length:]
    return float(losses.mean()), float(beyond.mean()) if beyond.numel() else None


def linear_probe(
    features: torch.Tensor, labels: torch.Tensor, train_share: float = 0.7, steps: int = 300, balanced: bool = False
) -> float:
    """Held-out accuracy of a multinomial logistic regression from `features` (N, D) to integer `labels` (N,).
    The first `train_share` of the rows train it, the rest test it (contiguous, so nearby positions of the
    text do not leak across); features are standardised on the train rows. `balanced`: each class weighs
    the same in training and the score is the mean recall over the classes of the test rows (chance: 1 / their
    number), for rare properties such as "inside quotes", where always saying "no" is 99 % accurate."""
    n_train = int(len(labels) * train_share)
    x = features.double()
    mean, std = x[:n_train].mean(0), x[:n_train].std(0).clamp_min(1e-6)
    x = (x - mean) / std
    n_classes = int(labels.max()) + 1
    counts = torch.bincount(labels[:n_train], minlength=n_classes).double()
    weight = (counts.sum() / counts.clamp_min(1) / int((counts > 0).sum())) if balanced else None
    w = torch.zeros(x.shape[1], n_classes, dtype=x.dtype, requires_grad=True)
    b = torch.zeros(n_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x[:n_train] @ w + b, labels[:n_train], weight=weight) + 1e-3 * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    predicted, truth = (x[n_train:] @ w + b).argmax(1), labels[n_train:]
    if not balanced:
        return float((predicted == truth).double().mean())
    return float(torch.stack([(predicted[truth == c] == c).double().mean() for c in truth.unique()]).mean())


def text_properties(text: str) -> dict[str, np.ndarray]:
    """Per character (the property *after* reading it): inside "..." quotes, inside (...) or [...] brackets,
    position in the line (bucketed by 10), characters since the last space (capped at 6)."""
    quote, depth, col, since = False, 0, 0, 0
    out: dict[str, list[int]] = {"in_quotes": [], "in_brackets": [], "line_position": [], "since_space": []}
    for ch in text:
        quote = not quote if ch == '"' else quote
        depth = depth + 1 if ch in "([" else max(depth - 1, 0) if ch in ")]" else depth
        col = 0 if ch == "\n" else col + 1
        since = 0 if ch in " \n" else since + 1
        out["in_quotes"].append(int(quote))
        out["in_brackets"].append(int(depth > 0))
        out["line_position"].append(min(col // 10, 7))
        out["since_space"].append(min(since, 6))
    return {name: np.asarray(v) for name, v in out.items()}


@torch.no_grad()
def hidden_states(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """(N, D) every state tensor after each token, all layers concatenated, from the explicit recurrence
    (`step_embedded`, the reference recurrence), and a name for each of the D units, e.g. "c[0,17]"."""
    e = model.embed(ids[None])  # (1, N, E)
    state = model.initial_state(1, ids.device)
    rows = []
    for t in range(e.shape[1]):
        _, state = model.step_embedded(e[:, t], state)
        rows.append(torch.cat([s[:, 0].flatten() for s in state]))  # (D,)
    names = [
        f"{name}[{layer},{i}]"
        for name, s in zip(model.state_names, state, strict=True)
        for layer in range(s.shape[0])
        for i in range(s.shape[-1])
    ]
    return torch.stack(rows), names


def one_hot_last(ids: torch.Tensor, k: int, vocab_size: int) -> torch.Tensor:
    """(N, k·V): the one-hot codes of the last k tokens at every position (zeros before the start)."""
    padded = torch.cat([torch.full((k - 1,), vocab_size, dtype=ids.dtype), ids])
    windows = padded.unfold(0, k, 1)  # (N, k)
    return F.one_hot(windows, vocab_size + 1)[..., :vocab_size].flatten(1).double()


def count_params(name: str, vocab_size: int, context_length: int) -> int | str:
    window = model_config(name).get("window")
    overrides = {"window": context_length} if window is not None and window > context_length else {}
    try:
        model = build_model(name, vocab_size, context_length, **overrides)
    except Exception as err:  # a model that needs something else to build: say so, do not stop the probe
        return f"n/a ({type(err).__name__})"
    return sum(p.numel() for p in model.parameters())


# --- the command ----------------------------------------------------------------------------------------------
def load(target: Path) -> tuple[Any, Path, Any]:
    """A run dir or a checkpoint -> (LanguageModel on CPU in eval mode, run dir, the run's datamodule, set up)."""
    from hydra.utils import instantiate

    from seqlab.training.system import LanguageModel

    target = target.expanduser().resolve()
    if target.is_dir():
        run_dir = target
        found = sorted((run_dir / "checkpoints").glob("best-*.ckpt")) or sorted(run_dir.glob("checkpoints/*.ckpt"))
        if not found:
            raise ConfigError(f"{target}: no checkpoints/*.ckpt in this run dir")
        ckpt = found[-1]
    elif target.is_file():
        ckpt, run_dir = target, target.parent.parent if target.parent.name == "checkpoints" else target.parent
    else:
        raise ConfigError(f"{target}: no such run dir or checkpoint")
    config = run_dir / ".hydra" / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"{run_dir}: no .hydra/config.yaml, so the data cannot be rebuilt")
    try:
        cfg = OmegaConf.load(config)
    except Exception as err:
        raise ConfigError(f"{config}: not a readable config (loading it raised {type(err).__name__})") from None
    cfg.paths.data_dir = run_data_dir(cfg)
    cfg.paths.output_dir = str(run_dir)
    try:  # truncated, garbage, or another program's file: torch's advice to unpickle it anyway is no help here
        system = LanguageModel.load_from_checkpoint(ckpt, map_location="cpu")
    except Exception as err:
        raise ConfigError(f"{ckpt}: not a seqlab checkpoint (loading it raised {type(err).__name__})") from None
    system.eval()
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("validate")
    return system, run_dir, datamodule


def run_data_dir(cfg: Any) -> str:
    """Where the run read its corpus: its own `paths.data_dir` when it was set to a dir (not the default
    interpolation of SEQLAB_DATA_DIR) and that dir still holds the corpus; else this environment's
    SEQLAB_DATA_DIR (or <repo>/data), as train.py would choose today."""
    from seqlab.data.corpora import CORPORA  # (seqlab.data imports Lightning: not at this module's import)

    here = os.environ.get("SEQLAB_DATA_DIR", str(ROOT / "data"))
    recorded = OmegaConf.to_container(cfg.paths, resolve=False).get("data_dir")
    if not isinstance(recorded, str) or "${" in recorded:
        return here
    corpus = CORPORA.get(cfg.data.get("corpus"))
    files = corpus.files.values() if corpus is not None else []  # none for a text file or a generated source
    holds = lambda root: all((Path(root).expanduser() / f.path).is_file() for f in files)  # noqa: E731
    return recorded if holds(recorded) or not holds(here) else here


def params_table(vocab_size: int, lengths: tuple[int, ...] = (16, 32, 64, 128, 256, 512)) -> list[dict[str, Any]]:
    return [
        {"model": m, "context_length": T, "params": count_params(m, vocab_size, T)}
        for m in model_names()
        for T in lengths
    ]


def powers_of_two(T: int) -> list[int]:
    return sorted({2**i for i in range(int(math.log2(T)) + 1)} | {T})


def saturation(rows: list[dict[str, Any]], tolerance: float = 0.01) -> tuple[Any, float]:
    """The fewest tokens of context whose loss is within `tolerance` nats (≈ 1 % of perplexity) of the model's
    best over all the context it can use (the unbounded history where it has one): where it stops gaining."""
    best = min(r["loss"] for r in rows)
    return next(r["k"] for r in rows if r["loss"] <= best + tolerance), best


def probe(
    target: Path,
    out_dir: Path | None = None,
    tokens: int = 4096,
    chars: int = 6000,
    ks: list[int] | None = None,
) -> dict[str, list]:
    """Every measurement of this module on one trained run (its val split); `ks`: the context lengths of the
    context-use curve (default 1, 2, 4, …, T)."""
    system, run_dir, dm = load(target)
    model, T, name = system.model, int(system.hparams.context_length), type(system.model).__name__
    out_dir = out_dir or run_dir / "probe"
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = dm.ids["val"]
    tables: dict[str, list[dict[str, Any]]] = {}
    images: dict[str, np.ndarray] = {}
    notes: list[str] = []
    if dm.episodic:  # windows of a stream of episodes would mix episodes: nothing to learn
        notes.append(f"{dm.describe()}: episodes, not a stream; see `python -m seqlab.probe --recall-sweep SWEEP`")
        tables["params"] = params_table(dm.vocab_size)
        write(out_dir, run_dir, tables, {"params": plot_params(tables["params"])}, notes, name)
        return tables
    # the same targets for every k: each has at least T tokens of history
    ends = torch.arange(T - 1, len(ids) - 1)[:tokens]

    # context use, with the source's optimum where it is known
    best = dm.best_loss_given  # None for every n where the source's optimum is unknown (real text)
    ks = sorted({k for k in ks or powers_of_two(T) if 1 <= k <= T} | {T})
    rows = [{"k": k, "loss": float(window_losses(model, ids, ends, k).mean())} for k in ks]
    for r in rows:
        r["optimal_loss"] = best(r["k"])
    if model.recurrent:
        # same targets, unbounded history; the stretches are long, so these targets sit far from their start
        unbounded = stream_losses(model, ids)[ends]
        ok = ~unbounded.isnan()
        rows.append({"k": "all", "loss": float(unbounded[ok].mean()), "optimal_loss": best(10**9)})
    tables["context_use"] = rows
    images["context_use"] = plot_context_use(rows, name, T)
    k_enough, best_loss = saturation(rows)
    seen = f"k = 1 … {T}" + (" and the unbounded history" if rows[-1]["k"] == "all" else "")
    enough = "only with the unbounded history" if k_enough == "all" else f"from k = {k_enough} tokens on"
    notes.append(f"context use: within 0.01 nats of its best ({best_loss:.4f}, over {seen}) {enough}")

    # order sensitivity: shuffle the tokens before the last m of each T-token context
    intact = float(window_losses(model, ids, ends, T).mean())
    tables["order"] = [
        {"m": m, "intact": intact, "shuffled": float(window_losses(model, ids, ends, T, shuffle_before_last(m)).mean())}
        for m in [m for m in powers_of_two(T) if m < T] or [0]
    ]
    for r in tables["order"]:
        r["difference"] = r["shuffled"] - r["intact"]
    images["order"] = plot_order(tables["order"], name, T)

    # length generalisation
    rows = []
    for factor in (1, 2, 4):
        try:
            loss, beyond = chunk_loss(model, ids[: max(tokens * factor, factor * T * 8) + 1], factor * T, T)
            rows.append({"length": factor * T, "loss": loss, "loss_past_T": beyond, "note": ""})
        except Exception as err:  # mlp_padded has no weights past T_max
            rows.append({"length": factor * T, "loss": None, "loss_past_T": None, "note": str(err).split("\n")[0]})
            notes.append(f"length {factor * T}: {name} cannot run: {err}")
    tables["length"] = rows

    # parameters vs context length, every model in conf/model/
    tables["params"] = params_table(dm.vocab_size)
    images["params"] = plot_params(tables["params"])

    # what the hidden state holds
    if system.hparams.level == "char" and model.recurrent:
        text_ids = ids[:chars]
        text = dm.vocab.decode(text_ids.tolist())
        features, unit_names = hidden_states(model, text_ids)
        props = text_properties(text)
        baseline = one_hot_last(text_ids, 3, dm.vocab_size)
        rows = []
        for prop, values in props.items():
            labels = torch.as_tensor(values)
            n_train = int(0.7 * len(labels))
            if len(set(values[:n_train].tolist())) < 2 or len(set(values[n_train:].tolist())) < 2:
                rows.append({"property": prop, "note": "never varies in this text (e.g. no quotes)"})
                continue
            majority = float((labels[n_train:] == torch.mode(labels[:n_train]).values).double().mean())
            corr = correlations(features, labels.double())
            unit = int(corr.abs().argmax())
            rows.append(
                {
                    "property": prop,
                    "state_probe_acc": linear_probe(features, labels),
                    "last3_onehot_acc": linear_probe(baseline, labels),
                    "majority_acc": majority,
                    "state_probe_balanced": linear_probe(features, labels, balanced=True),
                    "last3_onehot_balanced": linear_probe(baseline, labels, balanced=True),
                    "chance_balanced": 1 / len(set(values[n_train:].tolist())),
                    "best_unit": unit_names[unit],
                    "unit_corr": float(corr[unit]),
                    "note": "",
                }
            )
            shown = slice(start := picture_start(values), start + 640)
            images[f"unit_{prop}"] = plot_unit_text(
                text[shown], features[shown, unit].numpy(), f"{name} {unit_names[unit]} vs {prop}"
            )
        tables["hidden_state"] = rows
    else:
        notes.append(f"hidden state: skipped ({name} has no explicit recurrence, or the data is not char level)")

    write(out_dir, run_dir, tables, images, notes, name)
    return tables


def picture_start(values: np.ndarray, length: int = 640) -> int:
    """Where a `length`-char picture of a property starts: 80 chars before the property first leaves its
    majority value, so a rare one (inside quotes) is in the picture rather than 40 000 chars later."""
    rare = np.flatnonzero(values != np.bincount(values).argmax())
    return max(0, min(int(rare[0]) - 80, len(values) - length)) if len(rare) else 0


def correlations(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of every feature column with `target`."""
    f = features.double() - features.double().mean(0)
    t = target - target.mean()
    return (f * t[:, None]).sum(0) / (f.norm(dim=0) * t.norm()).clamp_min(1e-12)


# --- figures and files ----------------------------------------------------------------------------------------
def plot_context_use(rows: list[dict], name: str, T: int) -> np.ndarray:
    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=90)
    finite = [r for r in rows if r["k"] != "all"]
    ax.plot([r["k"] for r in finite], [r["loss"] for r in finite], "o-", label=name)
    if finite[0]["optimal_loss"] is not None:
        ax.plot([r["k"] for r in finite], [r["optimal_loss"] for r in finite], "k--", label="best possible")
    for r in rows:
        if r["k"] == "all":
            ax.axhline(r["loss"], color="C1", ls=":", label=f"{name}, unbounded history")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"tokens of context the model may see (training context T = {T})")
    ax.set_ylabel("val loss (nats/token)")
    ax.set_title("context use", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_array(fig)


def plot_order(rows: list[dict], name: str, T: int) -> np.ndarray:
    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=90)
    ax.plot([r["m"] for r in rows], [r["shuffled"] for r in rows], "o-", label="tokens before the last m shuffled")
    ax.axhline(rows[0]["intact"], color="k", ls="--", label="intact")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"m (of T = {T})")
    ax.set_ylabel("val loss (nats/token)")
    ax.set_title(f"{name}: order sensitivity", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_array(fig)


def plot_params(rows: list[dict]) -> np.ndarray:
    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=90)
    for model in sorted({r["model"] for r in rows}):
        pts = [(r["context_length"], r["params"]) for r in rows if r["model"] == model and isinstance(r["params"], int)]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", label=model)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context length T")
    ax.set_ylabel("parameters")
    ax.set_title("parameters vs context length (default sizes)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_array(fig)


def plot_unit_text(text: str, activation: np.ndarray, title: str, width: int = 80) -> np.ndarray:
    """The text as a character grid, each character's background coloured by the unit's activation after it."""
    lines, cells, row, col = [], [], 0, 0
    for ch, a in zip(text, activation, strict=False):
        cells.append((row, col, ch, a))
        col += 1
        if ch == "\n" or col >= width:
            row, col = row + 1, 0
    del lines
    rows = row + 1
    fig = plt.figure(figsize=(width * 0.11, rows * 0.22 + 0.5), dpi=90)
    ax = fig.add_axes((0, 0, 1, rows / (rows + 2)))
    scale = max(float(np.abs(activation).max()), 1e-6)
    cmap = matplotlib.colormaps["coolwarm"]
    for r, c, ch, a in cells:
        ax.add_patch(plt.Rectangle((c, rows - r - 1), 1, 1, color=cmap(0.5 + 0.5 * a / scale)))
        ax.text(
            c + 0.5, rows - r - 0.5, "⏎" if ch == "\n" else ch, ha="center", va="center", fontsize=7, family="monospace"
        )
    ax.set_xlim(0, width)
    ax.set_ylim(0, rows)
    ax.axis("off")
    fig.suptitle(title + " (blue −, red +)", fontsize=9, y=0.99)
    return figure_array(fig)


def markdown(rows: list[dict]) -> str:
    return markdown_table(rows) + "\n"


def pivot_params(rows: list[dict]) -> list[dict]:
    models = list(dict.fromkeys(r["model"] for r in rows))
    return [{"model": m} | {f"T={r['context_length']}": r["params"] for r in rows if r["model"] == m} for m in models]


def write(out_dir: Path, run_dir: Path, results: dict, images: dict, notes: list[str], name: str) -> None:
    from torch.utils.tensorboard import SummaryWriter

    for key, rows in results.items():
        write_csv(rows, out_dir / f"probe_{key}.csv")
    report = [f"# probe: {name} ({run_dir})\n"] + [f"- {n}" for n in notes]
    shown = {**results, "params": pivot_params(results["params"])}  # one row per model reads better
    report += [f"\n## {key}\n\n{markdown(rows)}" for key, rows in shown.items()]
    (out_dir / "probe.md").write_text("\n".join(report))
    for key, image in images.items():
        plt.imsave(out_dir / f"probe_{key}.png", image)
    with SummaryWriter(str(run_dir)) as tb:  # a new event file beside the run's own: the same run in TensorBoard
        for r in results.get("context_use", []):
            if r["k"] != "all":
                tb.add_scalar("probe/context_use/loss", r["loss"], r["k"])
        for r in results.get("order", []):
            tb.add_scalar("probe/order/shuffled", r["shuffled"], r["m"])
            tb.add_scalar("probe/order/intact", r["intact"], r["m"])
        for r in results.get("length", []):
            if r["loss"] is not None:
                tb.add_scalar("probe/length/loss", r["loss"], r["length"])
        for key, image in images.items():
            tb.add_image(f"probe/{key}", image, dataformats="HWC")
        tb.add_text("probe", "\n".join(report))
    for n in notes:
        print(n)
    print(f"probe: {out_dir}/probe.md")


def recall_sweep(sweep_dir: Path, out_dir: Path | None = None) -> list[dict[str, Any]]:
    """A data=recall sweep (e.g. experiment=recall_gap) -> recall_acc by model and gap, beside the gradient that
    reaches the stored value from the answer's loss, ‖∂L_T/∂h‖ at distance gap + 1 (the last profile, and the
    first, at init): recall.csv / .md / .png."""
    rows = []
    for metrics_file in sorted(sweep_dir.glob("*/metrics.json")):
        job = metrics_file.parent
        m = json.loads(metrics_file.read_text())
        cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
        gap, pairs = int(cfg.data.gap), int(cfg.data.pairs)
        profiles = [json.loads(line) for line in (job / "grad_profile.jsonl").read_text().splitlines() if line]
        # from the last query (the last input) back to the last pair's value (the queried one when pairs = 1)
        distance = 2 * pairs - 1 + gap
        g = {f"g_h_{when}": p["g_h_mean"][distance] for when, p in (("init", profiles[0]), ("end", profiles[-1]))}
        rows.append(
            {"model": m["model"], "gap": gap, "recall_acc": m.get("recall_acc"), "chance": m.get("chance_recall_acc")}
            | {"excess_loss": m.get("excess_loss"), "steps": m.get("steps"), "distance": distance}
            | g
            | {"status": m["status"]}
        )
    rows.sort(key=lambda r: (r["model"], r["gap"]))
    out_dir = out_dir or sweep_dir
    write_csv(rows, out_dir / "recall.csv")
    (out_dir / "recall.md").write_text(markdown(rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), dpi=90)
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model and r["recall_acc"] is not None]
        left.plot([r["gap"] for r in mine], [r["recall_acc"] for r in mine], "o-", label=model)
        right.plot([r["gap"] for r in mine], [r["g_h_end"] for r in mine], "o-", label=f"{model}, trained")
        right.plot([r["gap"] for r in mine], [r["g_h_init"] for r in mine], "x:", color=right.lines[-1].get_color())
    if rows[0]["chance"]:
        left.axhline(rows[0]["chance"], color="k", ls="--", label="chance")
    left.set_ylabel("recall_acc (test)")
    right.set_ylabel("‖∂L_answer/∂h‖ at the value (x: at init)")
    right.set_yscale("log")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("gap d (filler tokens between the pair and its query)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    plt.imsave(out_dir / "recall.png", figure_array(fig))
    print(f"recall: {out_dir}/recall.md")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target", type=Path, help="a run dir (its best checkpoint) or a .ckpt file")
    parser.add_argument("--recall-sweep", action="store_true", help="target is a data=recall sweep dir: tabulate it")
    parser.add_argument("--out", type=Path, default=None, help="where the tables and plots go (default <run>/probe)")
    parser.add_argument("--tokens", type=int, default=4096, help="val targets scored per measurement")
    parser.add_argument("--chars", type=int, default=6000, help="characters of text for the hidden-state probes")
    parser.add_argument("--ks", type=int, nargs="+", default=None, help="context lengths k (default 1, 2, 4, …, T)")
    args = parser.parse_args(argv)
    from seqlab.data.corpora import DownloadError

    try:
        if args.recall_sweep:
            recall_sweep(args.target, args.out)
            return 0
        probe(args.target, args.out, args.tokens, args.chars, args.ks)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except DownloadError as err:  # the run's corpus is in neither its data dir nor this environment's
        print(f"failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
