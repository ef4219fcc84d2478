"""How far back does the loss reach? ‖∂L_T/∂h_{T−d}‖ and ‖∂L_T/∂e_{T−d}‖ as functions of the distance d.

L_T is the cross-entropy at the last position of a chunk. For an RNN, ∂L_T/∂h_{T−d} is a product of d
Jacobians diag(tanh′) W_hh, so it shrinks (or grows) exponentially with d: the seed's vanishing-gradient
claim, measured. g_x, the gradient with respect to the input embedding d steps back, is defined for every
model: unigram 0 everywhere, mlp_window 0 beyond its window, mlp_padded nonzero over the whole prefix.

`grad_profile.jsonl` (one line per measurement, appended in the run dir) holds:
    {"step": int, "model": str, "T": int, "d": [0, 1, ..., T-1],
     "g_h_mean": [T floats] | null, "g_h_p10": ..., "g_h_p90": ...,   # null for models without recurrence
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
from torch import nn


def gradient_profile(
    model: nn.Module, idx: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """g_h (B, T) or None, g_x (B, T): per-sequence gradient norms of the last position's loss, by distance d.

    Recurrent models (those with `unroll`) are run as an explicit loop over their own weights, so each h_t
    is an autograd node and its gradient is the *total* derivative through the recurrence; the gradient
    stored for a fused nn.RNN's output holds only the direct term from each position's own head.
    The losses of the sequences are summed, so each row's gradient is its own. Parameters' .grad is untouched.
    """
    e = model.embed(idx).detach().requires_grad_()  # (B, T, E): a leaf, so autograd computes only what we ask
    if hasattr(model, "unroll"):
        hs = model.unroll(e)  # T tensors (B, H)
        logits = model.head(hs[-1])  # (B, V)
    else:
        hs = []
        logits = model.forward_embedded(e)[:, -1]  # (B, V)
    loss = F.cross_entropy(logits, targets[:, -1], reduction="sum")
    # unigram's embedding feeds nothing: allow_unused + materialize_grads make that an honest 0
    grads = torch.autograd.grad(loss, [e, *hs], allow_unused=True, materialize_grads=True)
    g_x = grads[0].norm(dim=-1).flip(1)  # (B, T), column d = position T-1-d
    g_h = torch.stack([g.norm(dim=-1) for g in grads[1:]], dim=1).flip(1) if hs else None  # (B, T)
    return g_h, g_x


def log_spaced_distances(T: int) -> list[int]:
    """1, 4, 16, 64, ... below T: even steps on a log axis, the shape of an exponential decay."""
    return [4**k for k in range(math.ceil(math.log(T, 4)) + 1) if 4**k < T]


class GradientProfile(L.Callback):
    """Measures `gradient_profile` on a fixed probe batch (the first `probe_size` val chunks) every
    `every_n_steps` training steps, at step 0 and at the end; logs scalars, a figure, and a JSONL line.
    A scheduled measurement is skipped while the scheduled ones have already taken more than `max_share`
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
    ) -> None:
        super().__init__()
        if every_n_steps < 1 or probe_size < 1:
            raise ValueError(f"every_n_steps={every_n_steps}, probe_size={probe_size}: both must be positive")
        self.every_n_steps, self.probe_size, self.max_share = every_n_steps, probe_size, max_share
        self.dirpath = dirpath
        self.seconds_spent, self._started = 0.0, time.perf_counter()
        self.history: list[dict[str, Any]] = []  # every measurement of this run, for the figure
        self._probe: tuple[torch.Tensor, torch.Tensor] | None = None
        self._last_step = -1

    def _probe_batch(self, trainer: L.Trainer) -> tuple[torch.Tensor, torch.Tensor]:
        if self._probe is None:
            xs, ys, n = [], [], 0
            for x, y in trainer.datamodule.chunks("val"):
                xs.append(x)
                ys.append(y)
                n += len(x)
                if n >= self.probe_size:
                    break
            self._probe = torch.cat(xs)[: self.probe_size], torch.cat(ys)[: self.probe_size]
        return self._probe

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        x, y = (t.to(pl_module.device) for t in self._probe_batch(trainer))
        model = pl_module.model
        was_training = model.training
        model.eval()  # no dropout in the measurement
        try:
            with torch.enable_grad():
                g_h, g_x = gradient_profile(model, x, y)
        finally:
            model.train(was_training)
        record: dict[str, Any] = {"step": trainer.global_step, "model": type(model).__name__, "T": x.shape[1]}
        record["d"] = list(range(x.shape[1]))
        for name, g in (("g_h", g_h), ("g_x", g_x)):
            if g is None:
                record.update({f"{name}_mean": None, f"{name}_p10": None, f"{name}_p90": None})
                continue
            g = g.double()
            q = torch.tensor([0.1, 0.9], dtype=g.dtype, device=g.device)
            spread = torch.quantile(g, q, dim=0)  # (2, T)
            record[f"{name}_mean"] = g.mean(0).tolist()
            record[f"{name}_p10"], record[f"{name}_p90"] = spread.tolist()
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
        scalars = {}
        for kind in ("h", "x"):
            mean = record[f"g_{kind}_mean"]
            if mean is None:
                continue
            for d in log_spaced_distances(T):
                scalars[f"grad/{kind}/d={d:03d}"] = mean[d]
            # g(T-1)/g(0): how much of the loss's gradient survives the whole chunk
            scalars[f"grad/{kind}/ratio"] = mean[-1] / mean[0] if mean[0] > 0 else 0.0
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

    kinds = [k for k in ("h", "x") if history[-1][f"g_{k}_mean"] is not None]
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
        symbol = "h" if kind == "h" else "e"
        ax.set_xlim(0, last["T"] - 1)  # the whole chunk, so a curve that stops early shows where it hit 0
        ax.set_xlabel("distance d (steps back from the last position)")
        ax.set_ylabel("mean over the probe batch (band: 10-90 %)")
        ax.set_title(f"{last['model']}: g_{kind}(d) = ‖∂L_T/∂{symbol}_(T−d)‖", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    colours = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(colours, ax=axes[0].tolist(), label="training step")
    return fig
