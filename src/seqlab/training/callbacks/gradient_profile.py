"""How far back does the loss reach? ‖∂L_T/∂s‖ for the recurrent state s and ‖∂L_T/∂e‖ for the input embedding,
as functions of the distance d.

L_T is the cross-entropy at the last position of a chunk; column d is position T−1−d. For an RNN,
∂L_T/∂h_{T−1−d} is a product of d Jacobians diag(tanh′) W_hh, so it shrinks (or grows) exponentially with d:
the vanishing-gradient claim, measured. Every tensor of the state is measured, in every layer: for
an LSTM both h and the cell c, its "gradient highway". Each is the total derivative: through the
recurrence, and inside its own step (an LSTM's c_t -> h_t, layer i -> layer i + 1, the head).
g_x, for the input embedding e_{T−1−d}, is defined for every model: unigram 0 everywhere, mlp_window 0
beyond its window, mlp_padded nonzero over the whole prefix.

Norms are taken in float64: a float32 norm squares components below ~1e-23 to 0, hiding the far tail.

`grad_profile.jsonl` (one line per measurement, appended in the run dir) holds:
    {"step": int, "model": str, "T": int, "d": [0, 1, ..., T-1], "state_names": ["h", "c"] | [],
     "num_layers": int,
     "g_h_mean": [T floats] | null, "g_h_p10": ..., "g_h_p90": ...,   # the top layer; null without recurrence
     "g_c_mean": ..., ...                                              # one such triple per state name
     "g_h_by_layer": [[T floats] per layer, bottom first], ...        # the mean, for every layer
     "g_x_mean": [T floats], "g_x_p10": ..., "g_x_p90": ...}
Every list is indexed by the distance d (d = 0 is the last position); mean and percentiles are over the
probe batch.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch.autograd.graph import GradientEdge

from seqlab.models.base import SequenceModel


def gradient_profile(model: SequenceModel, idx: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sequence gradient norms (float64) of the last position's loss, by distance d:
    {"x": (B, T)} for every model, and {name: (B, num_layers, T)} for every state tensor of a recurrent one.

    Recurrent models (`model.recurrent`) run their explicit one-step recurrence over the chunk, so
    each state h_t is an autograd node of its own; the gradient a fused module's outputs receive holds only
    the direct term from each position's own head. The losses of the sequences are summed, so each row's
    gradient is its own. Parameters' .grad is untouched.
    """
    e = model.embed(idx).detach().requires_grad_()  # (B, T, E): a leaf, so autograd computes only what we ask
    B, T = idx.shape
    states: list[tuple[torch.Tensor, ...]] = []  # the state after each step
    if model.recurrent:
        state = model.initial_state(B, e.device)
        for t in range(T):
            out, state = model.step_embedded(e[:, t], state)  # out (B, H)
            states.append(state)
        logits = model.head(out)  # (B, V)
    else:
        logits = model.forward_embedded(e)[:, -1]  # (B, V)
    loss = F.cross_entropy(logits, targets[:, -1], reduction="sum")
    pieces = [per_layer(s) for st in states for s in st]  # step-major: (t=0: h, c), (t=1: h, c), ...
    # unigram's embedding feeds nothing: allow_unused + materialize_grads make that an honest 0
    grads = torch.autograd.grad(loss, [e, *(p for ps in pieces for p in ps)], allow_unused=True, materialize_grads=True)
    # norms in float64: squaring a float32 entry below ~4e-23 gives 0, so float32 norms read 0 below ~1e-21
    profile = {"x": grads[0].double().norm(dim=-1).flip(1)}  # (B, T), column d = position T-1-d
    grads, by_state = list(grads[1:]), []
    for p in pieces:  # regroup into one (L, B) norm per state tensor
        g, grads = grads[: len(p)], grads[len(p) :]
        by_state.append(torch.stack([x.double().norm(dim=-1) for x in g]).reshape(-1, B))
    names = model.state_names if states else ()
    for k, name in enumerate(names):
        profile[name] = torch.stack(by_state[k :: len(names)], dim=-1).transpose(0, 1).flip(-1)  # (B, L, T)
    return profile


def per_layer(state: torch.Tensor) -> list[torch.Tensor | GradientEdge]:
    """Where to take a state tensor's gradient so that it is the total derivative.

    A state that step_embedded built with torch.stack (or unsqueeze) from per-layer tensors is a copy: its
    own gradient counts only the next step's use of it, not the uses inside the step that made it (an
    LSTM's c_t -> h_t, layer i -> layer i + 1, the head). So the gradient is taken at the stacked pieces
    themselves (autograd's edges into `stack`). A state built otherwise is measured as it is.
    """
    fn = state.grad_fn
    stacked = fn is not None and fn.name() in ("StackBackward0", "UnsqueezeBackward0")
    if stacked and all(node is not None for node, _ in fn.next_functions):
        return [GradientEdge(node, nr) for node, nr in fn.next_functions]
    return [state]


def probe_batch(trainer: L.Trainer, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `size` validation chunks (inputs, targets): a fixed batch, the same at every measurement."""
    xs, ys, n = [], [], 0
    for x, y in trainer.datamodule.chunks("val"):  # val_dataloader() adds the streams for recurrent models
        xs.append(x)
        ys.append(y)
        n += len(x)
        if n >= size:
            break
    return torch.cat(xs)[:size], torch.cat(ys)[:size]


def profile_kinds(record: dict[str, Any]) -> list[str]:
    """The measured quantities of a record: its state names (top layer), then x."""
    return [*record.get("state_names", ["h"] if record.get("g_h_mean") is not None else []), "x"]


def log_spaced_distances(T: int) -> list[int]:
    """1, 4, 16, 64, ... below T: even steps on a log axis, the shape of an exponential decay."""
    return [4**k for k in range(math.ceil(math.log(T, 4)) + 1) if 4**k < T]


class GradientProfile(L.Callback):
    """Measures `gradient_profile` on a fixed probe batch (the first `probe_size` val chunks) every
    `every_n_steps` training steps, at step 0 and at the end; logs scalars, a figure, and a JSONL line.
    With `all_layers`, every layer's curves are logged as scalars too (`grad/h/l0/d=001`, ...); the JSONL holds
    them always. A scheduled measurement is skipped while the scheduled ones have already taken more than `max_share`
    of the training time (1: no limit), so the cost stays bounded even where a step is far faster than
    drawing a figure (a GPU). The first and last measurements are always taken.

    It runs from training-time hooks because Lightning validates under torch.inference_mode(), where no
    gradient can be taken.
    """

    def __init__(
        self,
        every_n_steps: int = 250,
        probe_size: int = 32,
        max_share: float = 0.05,
        dirpath: str | None = None,
        all_layers: bool = False,
    ) -> None:
        super().__init__()
        self.every_n_steps, self.probe_size, self.max_share = every_n_steps, probe_size, max_share
        self.dirpath, self.all_layers = dirpath, all_layers
        self.seconds_spent, self._started = 0.0, time.perf_counter()
        self.history: list[dict[str, Any]] = []  # every measurement of this run, for the figure
        self._probe: tuple[torch.Tensor, torch.Tensor] | None = None
        self._last_step = -1

    def _probe_batch(self, trainer: L.Trainer) -> tuple[torch.Tensor, torch.Tensor]:
        if self._probe is None:
            self._probe = probe_batch(trainer, self.probe_size)
        return self._probe

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        x, y = (t.to(pl_module.device) for t in self._probe_batch(trainer))
        model = pl_module.model
        was_training = model.training
        model.eval()  # no dropout in the measurement
        try:
            with torch.enable_grad():
                profile = gradient_profile(model, x, y)
        finally:
            model.train(was_training)
        names = list(model.state_names) if len(profile) > 1 else []
        record: dict[str, Any] = {"step": trainer.global_step, "model": type(model).__name__, "T": x.shape[1]}
        record.update(
            d=list(range(x.shape[1])), state_names=names, num_layers=model.num_layers if model.recurrent else 0
        )
        if not names:  # no recurrence: the readers of the file find null
            record.update({"g_h_mean": None, "g_h_p10": None, "g_h_p90": None})
        for name in [*names, "x"]:
            g = profile[name]  # (B, T) or (B, L, T)
            if g.dim() == 3:
                record[f"g_{name}_by_layer"] = g.mean(0).tolist()
                g = g[:, -1]  # the top layer's in the scalars and the figure
            q = torch.tensor([0.1, 0.9], dtype=g.dtype, device=g.device)
            spread = torch.quantile(g, q, dim=0)  # (2, T)
            record[f"g_{name}_mean"] = g.mean(0).tolist()
            record[f"g_{name}_p10"], record[f"g_{name}_p90"] = spread.tolist()
        return record

    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == self._last_step or trainer.sanity_checking:
            return
        self._last_step = trainer.global_step
        started = time.perf_counter()
        record = self.measure(trainer, pl_module)
        self.history.append(record)
        if trainer.is_global_zero:
            self._write(trainer, record)
        self.seconds_spent += time.perf_counter() - started

    def _write(self, trainer: L.Trainer, record: dict[str, Any]) -> None:
        step, T = record["step"], record["T"]
        curves = {kind: record[f"g_{kind}_mean"] for kind in profile_kinds(record)}  # the top layer's
        if self.all_layers:
            for kind in record.get("state_names", []):
                curves.update({f"{kind}/l{i}": g for i, g in enumerate(record[f"g_{kind}_by_layer"])})
        scalars = {}
        for kind, mean in curves.items():
            for d in log_spaced_distances(T):
                scalars[f"grad/{kind}/d={d:03d}"] = mean[d]
            # g(T-1)/g(0): how much of the loss's gradient survives the whole chunk
            scalars[f"grad/{kind}/ratio"] = mean[-1] / mean[0] if mean[0] > 0 else 0.0
            # the values span decades and TensorBoard charts linearly: log10 copies read well (none for 0)
            for name in [n for n in scalars if n.startswith(f"grad/{kind}/")]:
                if scalars[name] > 0:
                    scalars[name.replace(f"grad/{kind}/", f"grad/{kind}/log10/")] = math.log10(scalars[name])
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)

        out_dir = Path(self.dirpath or trainer.default_root_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "grad_profile.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        image = render(plot_profiles(self.history))  # rendered once, for the file and for TensorBoard
        import matplotlib.pyplot as plt

        plt.imsave(out_dir / "grad_profile.png", image)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("grad/profile", image, global_step=step, dataformats="HWC")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._run(trainer, pl_module)  # step 0: the untrained model; a one-off cost, outside the budget
        self.seconds_spent, self._started = 0.0, time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            within_budget = self.seconds_spent < self.max_share * (time.perf_counter() - self._started)
            if within_budget:
                self._run(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._run(trainer, pl_module)


def render(figure) -> np.ndarray:
    """Figure -> RGB array (H, W, 3), closing the figure."""
    import matplotlib.pyplot as plt

    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return image


def plot_profiles(history: list[dict[str, Any]], max_curves: int = 12):
    """One curve per measurement on a log y axis, coloured by training step; g_h and g_x side by side.

    At most `max_curves` measurements, evenly spread, the latest included: drawing costs the same all run.
    Exact zeros (beyond mlp_window's window; unigram everywhere) cannot sit on a log axis: curves stop there.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    def positive(values: list[float]) -> np.ndarray:
        v = np.asarray(values, dtype=float)
        return np.where(v > 0, v, np.nan)

    kinds = profile_kinds(history[-1])
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 3.8), dpi=80, squeeze=False)
    # fixed margins: a layout engine would cost another draw
    fig.subplots_adjust(left=0.9 / (5.5 * len(kinds)), right=0.95, bottom=0.14, top=0.9, wspace=0.25)
    steps = [r["step"] for r in history]
    keep = sorted({round(i * (len(history) - 1) / (max_curves - 1)) for i in range(max_curves)})
    history = [history[i] for i in keep]
    norm = matplotlib.colors.Normalize(vmin=min(steps), vmax=max(max(steps), 1))
    cmap = matplotlib.colormaps["viridis"]
    last = history[-1]
    for ax, kind in zip(axes[0], kinds, strict=True):
        for r in history:
            ax.plot(r["d"], positive(r[f"g_{kind}_mean"]), color=cmap(norm(r["step"])), lw=1.2)
        # the spread (10th-90th percentile over the probe batch) of the latest measurement
        low, high = positive(last[f"g_{kind}_p10"]), positive(last[f"g_{kind}_p90"])
        ax.fill_between(last["d"], low, high, color=cmap(norm(last["step"])), alpha=0.2, lw=0)
        if np.isfinite(positive(last[f"g_{kind}_mean"])).any():
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "0 at every distance", transform=ax.transAxes, ha="center")
        symbol = "e" if kind == "x" else kind
        layer = f", layer {last['num_layers']}" if kind != "x" and last.get("num_layers", 1) > 1 else ""
        ax.set_xlim(0, last["T"] - 1)  # the whole chunk, so a curve that stops early shows where it hit 0
        ax.set_xlabel("distance d (steps back from the last position)")
        ax.set_ylabel("mean over the probe batch (band: 10-90 %)")
        ax.set_title(f"{last['model']}: g_{kind}(d) = ‖∂L_T/∂{symbol}_(T−1−d)‖{layer}", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    colours = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(colours, ax=axes[0].tolist(), label="training step")
    return fig
