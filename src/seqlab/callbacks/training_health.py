"""Is training healthy? Gradient norms before clipping, by parameter group; how often clipping bites;
and the largest singular value of W_hh, the seed's "eigenvalue < 1 vanishes, > 1 explodes"."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

GROUPS = ("embedding", "recurrent", "head", "input")


def parameter_group(name: str) -> str:
    """embedding (tok_emb, pad), recurrent (weight_hh), head, input (the rest: input weights, biases, MLP)."""
    if "tok_emb" in name or name.rsplit(".", 1)[-1] == "pad":
        return "embedding"
    if "weight_hh" in name:
        return "recurrent"
    if ".head." in f".{name}":
        return "head"
    return "input"


def group_norms(norms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{group: 2-norm of all its parameters' gradients}, from per-parameter norms: sqrt(sum of squares)."""
    squares: dict[str, list[torch.Tensor]] = {}
    for name, norm in norms.items():
        squares.setdefault(parameter_group(name), []).append(norm.square())
    return {group: torch.stack(s).sum().sqrt() for group, s in squares.items()}


def recurrent_sigma_max(module: nn.Module) -> dict[str, torch.Tensor]:
    """{parameter name: largest singular value} of every W_hh (for an LSTM/GRU: of its stacked gates)."""
    return {
        name.rsplit(".", 1)[-1]: torch.linalg.matrix_norm(p.detach().float(), ord=2)
        for name, p in module.named_parameters()
        if "weight_hh" in name
    }


class TrainingHealth(L.Callback):
    """Logs the norms that `LanguageModel.on_before_optimizer_step` computes anyway (no second pass over the
    gradients), on the logger's steps only: `health/grad_norm`, `health/grad_norm/<group>`,
    `health/clipped_frac` (share of the steps since the last log whose norm exceeded
    `trainer.gradient_clip_val`; 0 without clipping) and `health/sigma_max/weight_hh_l*`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._clipped = self._steps = 0
        self._seen: torch.Tensor | None = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        norm = pl_module.grad_norm
        if norm is None or norm is self._seen:  # no optimizer step in this batch (gradient accumulation)
            return
        self._seen = norm
        clip = trainer.gradient_clip_val
        clipping_norm = bool(clip) and trainer.gradient_clip_algorithm in (None, "norm")  # None: norm
        if clipping_norm:
            self._clipped = self._clipped + (norm > clip)  # a tensor: no device sync on every step
        self._steps += 1
        if trainer.global_step % trainer.log_every_n_steps != 0:
            return
        metrics = {"health/grad_norm": norm}
        metrics.update({f"health/grad_norm/{g}": n for g, n in group_norms(pl_module.grad_norms).items()})
        if clipping_norm or not clip:
            metrics["health/clipped_frac"] = torch.as_tensor(self._clipped, dtype=torch.float) / self._steps
        # an SVD per W_hh: only on logging steps
        metrics.update({f"health/sigma_max/{n}": s for n, s in recurrent_sigma_max(pl_module.model).items()})
        metrics = {k: float(v) for k, v in metrics.items()}
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
        self._clipped = self._steps = 0
