"""Is training healthy? Gradient norms before clipping, by parameter group; how often clipping bites;
the largest singular value of every W_hh, the textbook "eigenvalue < 1 vanishes, > 1 explodes"; and for
gated cells (LSTM, GRU) how many gate activations sit saturated near 0 or 1, where they pass no gradient."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from seqlab.models.base import SequenceModel
from seqlab.models.recurrent import Recurrent
from seqlab.training.callbacks.gradient_profile import probe_batch

GROUPS = ("embedding", "recurrent", "head", "input")


def parameter_group(name: str, recurrent: set[str] = frozenset()) -> str:
    """embedding (tok_emb, pad), recurrent (what multiplies the previous state: the names in `recurrent`, from
    the model's recurrent_weights), head, input (the rest: input weights, biases, MLP)."""
    if "tok_emb" in name or name.rsplit(".", 1)[-1] == "pad":
        return "embedding"
    if name in recurrent:
        return "recurrent"
    if ".head." in f".{name}":
        return "head"
    return "input"


def recurrent_names(model: SequenceModel, prefix: str = "") -> set[str]:
    """The parameter names (with `prefix`, e.g. "model.") of the model's recurrent weights."""
    weights = {id(w) for w in model.recurrent_weights().values()}
    return {prefix + n for n, p in model.named_parameters() if id(p) in weights}


def group_norms(norms: dict[str, torch.Tensor], recurrent: set[str] = frozenset()) -> dict[str, torch.Tensor]:
    """{group: 2-norm of all its parameters' gradients}, from per-parameter norms: sqrt(sum of squares)."""
    squares: dict[str, list[torch.Tensor]] = {}
    for name, norm in norms.items():
        squares.setdefault(parameter_group(name, recurrent), []).append(norm.square())
    return {group: torch.stack(s).sum().sqrt() for group, s in squares.items()}


def recurrent_sigma_max(model: SequenceModel) -> dict[str, torch.Tensor]:
    """{label: largest singular value} of every recurrent weight (models/base.py: `recurrent_weights`, e.g.
    `weight_hh_l<layer>`; a diagonal's is its largest |entry|); for a gated cell, of each gate's (H, H) block,
    `weight_hh_l<layer>/<gate>`: each gate has its own recurrence, and the stacked (4H, H) matrix's σ_max mixes
    them."""
    gates = model.gate_names
    sigmas = {}
    for label, w in model.recurrent_weights().items():
        w = w.detach().float()
        if w.dim() == 1:
            sigmas[label] = w.abs().max()
            continue
        blocks = w.chunk(len(gates)) if gates else [w]
        for gate, block in zip(gates or [None], blocks, strict=True):
            sigmas[f"{label}/{gate}" if gate else label] = torch.linalg.matrix_norm(block, ord=2)
    return sigmas


@torch.no_grad()
def gate_saturation(model: Recurrent, idx: torch.Tensor, margin: float = 0.05) -> dict[str, torch.Tensor]:
    """{"l<layer>/<gate>": share of the gate's activations within `margin` of 0 or 1} over a batch idx (B, T),
    for every sigmoid gate of every layer of a gated model (`gated`: its `gates` and `sigmoid_gates`).

    Each layer runs over the batch once (its fast path), and its gates are recomputed from its input and its
    output in one batched call (h_{t-1} is the layer's previous output; the state starts at 0).
    """
    was_training = model.training
    model.eval()
    shares = {}
    try:
        x = model.embed(idx)
        zeros = model.initial_state(idx.shape[0], idx.device)
        for i, layer in enumerate(model.layers):
            out, _ = model.run_layer(i, x, tuple(s[i] for s in zeros))  # (B, T, H)
            h_prev = torch.cat([torch.zeros_like(out[:, :1]), out[:, :-1]], dim=1)  # (B, T, H)
            activations = model.gates(layer, x, h_prev)
            for gate in model.sigmoid_gates:
                a = activations[gate]
                shares[f"l{i}/{gate}"] = ((a < margin) | (a > 1 - margin)).float().mean()
            x = x + out if model.residual and i > 0 else out
    finally:
        model.train(was_training)
    return shares


def clips_by_norm(trainer: L.Trainer) -> bool:
    """Whether the Trainer clips gradients by their norm (algorithm None means norm)."""
    return bool(trainer.gradient_clip_val) and trainer.gradient_clip_algorithm in (None, "norm")


class TrainingHealth(L.Callback):
    """Logs the norms that `LanguageModel.on_before_optimizer_step` computes anyway (no second pass over the
    gradients), on the logger's steps only: `health/grad_norm`, `health/grad_norm/<group>`,
    `health/clipped_frac` (share of the steps since the last log whose norm exceeded
    `trainer.gradient_clip_val`; 0 without clipping). Every `spectra_every_n_steps` steps and at the last one:
    `health/sigma_max/weight_hh_l<layer>[/<gate>]`, and for LSTM/GRU `health/gate_saturation/l<layer>/<gate>`,
    measured on the first `probe_size` validation chunks. Those cost an SVD per matrix and a forward pass
    (on an H100 more than the training step of a small model), so they keep a slower cadence of their own.
    """

    def __init__(self, probe_size: int = 8, spectra_every_n_steps: int = 100) -> None:
        super().__init__()
        self.probe_size, self.spectra_every_n_steps = probe_size, spectra_every_n_steps
        self._clipped = self._steps = 0
        self._seen = 0  # the global step last seen (0: before the first optimizer step)
        self._probe: torch.Tensor | None = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == self._seen:  # no optimizer step in this batch (gradient accumulation)
            return
        self._seen = step
        norm = pl_module.grad_norm  # None on a step that did not need it (no clipping, not a logging step)
        clip, clipping_norm = trainer.gradient_clip_val, clips_by_norm(trainer)
        if clipping_norm and norm is not None:
            self._clipped = self._clipped + (norm > clip)  # a tensor: no device sync on every step
        self._steps += 1
        log_now = step % trainer.log_every_n_steps == 0
        spectra_now = step % self.spectra_every_n_steps == 0 or step == trainer.max_steps
        if not (log_now or spectra_now):
            return
        metrics: dict[str, Any] = {}
        if log_now and norm is not None:
            metrics["health/grad_norm"] = norm
            groups = group_norms(pl_module.grad_norms, recurrent_names(pl_module.model, "model."))
            metrics.update({f"health/grad_norm/{g}": n for g, n in groups.items()})
            if clipping_norm or not clip:
                metrics["health/clipped_frac"] = torch.as_tensor(self._clipped, dtype=torch.float) / self._steps
            self._clipped = self._steps = 0
        if spectra_now:
            metrics.update({f"health/sigma_max/{n}": s for n, s in recurrent_sigma_max(pl_module.model).items()})
        if spectra_now and pl_module.model.gated and trainer.datamodule is not None:
            if self._probe is None:
                self._probe = probe_batch(trainer, self.probe_size)[0]
            saturation = gate_saturation(pl_module.model, self._probe.to(pl_module.device))
            metrics.update({f"health/gate_saturation/{n}": s for n, s in saturation.items()})
        metrics = {k: float(v) for k, v in metrics.items()}
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
