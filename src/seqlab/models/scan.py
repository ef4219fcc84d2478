"""Diagonal linear recurrences h_t = a_t ⊙ h_{t-1} + b_t over a whole chunk, given log a_t (a_t in (0, 1]).

Three ways to compute the same h_1..h_T, tested equal in float64 (tests/test_scans.py):
- `sequential_scan`: the plain loop, the reference (and the one to read).
- `chunked_scan`: chunks of C steps; inside a chunk h_t = Σ_{s≤t} exp(Σ_{s<r≤t} log a_r) b_s as one masked
  (C, C) decay matrix per channel (exact and stable, as Mamba-2's "segsum"), then a loop over T/C chunks
  that carries the state across chunk boundaries.
- `log_space_scan`: Heinsen (2023), for positive b: log h_t = a*_t + logcumsumexp_{s≤t}(log b_s − a*_s) with
  a*_t = Σ_{r≤t} log a_r, fully parallel in T. minGRU feeds it log b directly (its g(x) > 0).

An initial state h_0 enters every path (a bug class in public parallel scans is to drop it; tests check it).
A decay of either sign (the `signed` variants: Grazzi et al. 2025, negative eigenvalues for state tracking) is
log|a_t| with `sign` = ±1 beside it; the loop and the chunked scan take it, the log-space scan cannot.

`ScannedStack` is what ssm and mingru share around their layers: embedding, a stack of residual blocks that
each run such a recurrence, a final LayerNorm and the head, with the carried-state interface.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.models.base import RecurrentModel, State

SIGNED_RADIUS = 0.9999  # a signed decay is this × tanh(·): |a| < 1 in any precision, for any input


def signed_decay(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A decay of any sign -> (log|a|, sign ±1) for the scans. |a| is floored at 1e-30 (0 counts as +): the log
    stays finite and so do its gradients."""
    return a.abs().clamp_min(1e-30).log(), torch.where(a < 0, -1.0, 1.0).to(a.dtype)


def sequential_scan(
    log_a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, sign: torch.Tensor | None = None
) -> torch.Tensor:
    """log_a (B, T, N) or (N,), b (B, T, N), h0 (B, N) or None (zeros), sign (as log_a) or None (positive)
    -> h (B, T, N)."""
    a = (log_a.exp() if sign is None else sign * log_a.exp()).expand_as(b)
    h = b.new_zeros(b.shape[0], b.shape[2]) if h0 is None else h0
    hs = []
    for a_t, b_t in zip(a.unbind(1), b.unbind(1), strict=True):  # unbind: one backward node, not T zero-filled
        h = a_t * h + b_t
        hs.append(h)
    return torch.stack(hs, dim=1)


def chunked_scan(
    log_a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    sign: torch.Tensor | None = None,
    chunk: int = 32,
) -> torch.Tensor:
    """log_a (B, T, N) or (N,) (the same decay at every step, as in an LRU), b (B, T, N), h0 (B, N) or None,
    sign (as log_a) or None -> h (B, T, N). The decay matrices take O(C²·N) memory for a fixed decay,
    O(B·T·C·N) otherwise."""
    B, T, N = b.shape
    pad = -T % chunk
    K = (T + pad) // chunk
    b = F.pad(b, (0, 0, 0, pad)).reshape(B, K, chunk, N)  # padded steps come last and are cut off
    if log_a.dim() == 1:  # log of the decay from the chunk start, (C, N)
        cum = log_a * torch.arange(1, chunk + 1, dtype=b.dtype, device=b.device)[:, None]
        signs = None if sign is None else sign.expand(chunk, N).cumprod(0)
    else:  # (B, K, C, N)
        cum = F.pad(log_a, (0, 0, 0, pad)).reshape(B, K, chunk, N).cumsum(2)
        signs = None if sign is None else F.pad(sign, (0, 0, 0, pad), value=1.0).reshape(B, K, chunk, N).cumprod(2)
    diff = cum.unsqueeze(-2) - cum.unsqueeze(-3)  # (..., C_t, C_s, N): log decay from s to t
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=b.device).tril()[:, :, None]
    decay = diff.masked_fill(~causal, float("-inf")).exp()  # mask before exp: s > t would overflow
    if signs is not None:  # the sign of a_{s+1}…a_t is P_t·P_s, P the running product of signs (±1: P_s = 1/P_s)
        decay = decay * signs.unsqueeze(-2) * signs.unsqueeze(-3)
    h_local = torch.einsum("tsn,bksn->bktn" if log_a.dim() == 1 else "bktsn,bksn->bktn", decay, b)  # from h = 0
    from_start = (cum.exp() if signs is None else signs * cum.exp()).expand(B, K, chunk, N)  # × a state at the start
    h = b.new_zeros(B, N) if h0 is None else h0
    out = []
    for h_local_k, from_start_k in zip(h_local.unbind(1), from_start.unbind(1), strict=True):
        hk = h_local_k + from_start_k * h.unsqueeze(1)  # (B, C, N)
        out.append(hk)
        h = hk[:, -1]
    return torch.cat(out, dim=1)[:, :T]


def log_space_scan(log_a: torch.Tensor, log_b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """log_a, log_b (B, T, N), h0 (B, N) of any sign, or None -> h (B, T, N) (Heinsen 2023: b > 0 only)."""
    a_star = log_a.cumsum(1)  # (B, T, N): log of the decay from the start
    h = (a_star + torch.logcumsumexp(log_b - a_star, dim=1)).exp()  # the scan from h_0 = 0
    return h if h0 is None else h + a_star.exp() * h0.unsqueeze(1)  # h_0 enters linearly, whatever its sign


class ScannedStack(RecurrentModel):
    """tok_emb -> num_layers residual blocks -> LayerNorm -> head. Each block, made by `make_layer()`, maps
    `(x (B, T, D), h0 (B, H) or None, scan) -> (x, h_T)` over a chunk and `step(x (B, D), h) -> (x, h)` one token
    at a time; `scan` is whatever the subclass stores and its blocks read. The state is the per-layer h,
    state_names = ("h",), one tensor (num_layers, B, hidden_size)."""

    def __init__(
        self,
        vocab_size: int,
        emb_dim: int,
        hidden_size: int,
        num_layers: int,
        make_layer: Callable[[], nn.Module],
        scan: Any,
    ) -> None:
        super().__init__()
        self.scan, self.hidden_size, self.num_layers = scan, hidden_size, num_layers
        self.tok_emb = nn.Embedding(vocab_size, emb_dim)
        self.layers = nn.ModuleList(make_layer() for _ in range(num_layers))
        self.ln_f, self.head = nn.LayerNorm(emb_dim), nn.Linear(emb_dim, vocab_size)
        nn.init.normal_(self.head.weight, std=0.02)  # logits ≈ 0 at init: the loss starts at ≈ ln V
        nn.init.zeros_(self.head.bias)

    def forward_embedded_with_state(self, e: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        x, last = e, []  # (B, T, D)
        for i, layer in enumerate(self.layers):
            x, h = layer(x, None if state is None else state[0][i], self.scan)
            last.append(h)
        return self.head(self.ln_f(x)), (torch.stack(last),)  # (B, T, V), ((L, B, H),)

    def step_embedded(self, e_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        x, hs = e_t, []
        for layer, h in zip(self.layers, state[0], strict=True):
            x, h = layer.step(x, h)
            hs.append(h)
        return self.ln_f(x), (torch.stack(hs),)  # out (B, D)
