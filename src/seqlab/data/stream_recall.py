"""Recall over long streams in constant memory: a model trained on 256-token induction sequences
(seqlab.data.induction) reads streams of 2^10 .. 2^16 tokens and must still give the target it saw once,
anywhere in the stream, when the trigger comes again at the end (Mamba's extrapolation test, Gu & Dao 2023).

A model that carries a state (`model.recurrent`) reads the stream through it, `chunk` tokens at a time with
`forward_with_state`: memory stays that of one chunk, and the state it holds is the same size at every length.
Any other model reads what it can: the last window of its context (`max_context`, at most the trained
context_length) re-read, which cannot see a trigger farther back. The Transformer's KV cache cannot run past
context_length at all (its learned positions end there), so its row is the window, and says so.

`StreamRecall` is the callback the induction source contributes to a run: after the test (on the best
checkpoint's weights) it reads the streams, logs `streams/accuracy`, `streams/seconds` and `streams/state_bytes`
to TensorBoard with the stream length as the step, and keeps the rows for metrics.json (the source's `summary`).
`python -m seqlab.analysis.streams` does the same on a finished run and makes the table of a sweep.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch

from seqlab.models.base import SequenceModel

log = logging.getLogger(__name__)
LENGTHS = (2**10, 2**12, 2**14, 2**16)


def window(model: SequenceModel, context_length: int) -> int:
    """The tokens a non-recurrent model re-reads: its reach, at most the context it was trained on."""
    return context_length if model.max_context is None else min(model.max_context, context_length)


def reading(model: SequenceModel, context_length: int) -> str:
    """How the model reads a stream longer than its training context, in the table's words."""
    return "carried state" if model.recurrent else f"last {window(model, context_length)} tokens re-read"


def limit(model: SequenceModel, context_length: int) -> str | None:
    """Why a model cannot use a whole stream, or None where it can."""
    if model.recurrent:
        return None
    if model.incremental:  # a KV cache, which ends where the learned positions do
        return (
            f"its KV cache cannot run past {context_length} tokens (learned positions end at context_length); "
            f"a trigger more than {window(model, context_length)} tokens back is out of sight"
        )
    return f"reads only its last {window(model, context_length)} tokens; a trigger farther back is out of sight"


@torch.inference_mode()
def last_logits(
    model: SequenceModel, inputs: torch.Tensor, context_length: int, chunk: int = 1024
) -> tuple[torch.Tensor, int]:
    """inputs (B, L) -> the logits after the last token (B, V) and the bytes held per stream at the end.

    A recurrent model carries its state through the whole stream, `chunk` tokens at a time; any other model
    reads only its last window."""
    device = next(model.parameters()).device
    if not model.recurrent:
        w = max(window(model, context_length), 1)  # the unigram reads none, but takes one token in
        return model(inputs[:, -w:].to(device).long())[:, -1], model.state_bytes(1, inputs.shape[1])
    state = model.initial_state(inputs.shape[0], device)
    for piece in inputs.split(chunk, dim=1):
        logits, state = model.forward_with_state(piece.to(device).long(), state)  # (B, chunk, V)
    held = sum(s.nelement() * s.element_size() for s in state) // inputs.shape[0]
    return logits[:, -1], held


def evaluate(
    model: SequenceModel,
    source: Any,
    context_length: int,
    lengths: Sequence[int] = LENGTHS,
    n_streams: int = 128,
    seed: int = 0,
    batch_size: int = 64,
    chunk: int = 1024,
) -> list[dict[str, Any]]:
    """One row per length: accuracy on the answer, seconds to read the streams, bytes held per stream.

    `source` is an InductionSource (anything with `sample(n, length, seed) -> inputs, answers, first`); each
    length draws its own streams from (seed, length)."""
    was_training = model.training
    model.eval()
    rows = []
    for length in lengths:
        inputs, answers, _ = source.sample(n_streams, length, seed=seed * 1_000_003 + length)
        inputs = torch.from_numpy(inputs)  # int16 for long streams: widened a chunk at a time
        correct, held, started = 0, 0, time.perf_counter()
        for b in range(0, n_streams, batch_size):
            logits, held = last_logits(model, inputs[b : b + batch_size], context_length, chunk)
            correct += int((logits.argmax(-1).cpu() == torch.from_numpy(answers[b : b + batch_size])).sum())
        seconds = time.perf_counter() - started
        rows.append(
            {"length": length, "accuracy": correct / n_streams, "seconds": round(seconds, 3), "state_bytes": held}
        )
    model.train(was_training)
    return rows


class StreamRecall(L.Callback):
    """Contributed by the induction source (`InductionDataModule.callbacks`): the streams after the test."""

    def __init__(
        self, source: Any, context_length: int, lengths: Sequence[int], n_streams: int, chunk: int, seed: int
    ) -> None:
        super().__init__()
        self.source, self.context_length, self.lengths = source, context_length, tuple(lengths)
        self.n_streams, self.chunk, self.seed = n_streams, chunk, seed
        self.results: dict[str, Any] = {}  # metrics.json "streams": how it read, its limit, one row per length

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.lengths:  # one rank reads the streams; DDP adds nothing here
            return
        model = pl_module.model
        rows = evaluate(
            model, self.source, self.context_length, self.lengths, self.n_streams, self.seed, chunk=self.chunk
        )
        self.results = {
            "read": reading(model, self.context_length),
            "limit": limit(model, self.context_length),
            "streams": self.n_streams,
            "rows": rows,
        }
        for row in rows:  # the length as the step: TensorBoard draws accuracy (and bytes) against it
            values = {f"streams/{k}": row[k] for k in ("accuracy", "seconds", "state_bytes")}
            for logger in trainer.loggers:
                logger.log_metrics(values, step=row["length"])
        log.info(
            "streams (%s): %s",
            self.results["read"],
            ", ".join(
                f"{r['length']}: {r['accuracy']:.3f} in {r['seconds']:.1f} s, {r['state_bytes']} B" for r in rows
            ),
        )
