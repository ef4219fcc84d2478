from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.errors import ConfigError
from seqlab.models.scan import SIGNED_RADIUS, ScannedStack, chunked_scan, sequential_scan, signed_decay

SCANS = {"loop": sequential_scan, "chunked": chunked_scan}


class LRULayer(nn.Module):
    """x + GLU(GELU(C h_t + d ⊙ u_t)), u = LayerNorm(x), h_t = λ ⊙ h_{t-1} + γ ⊙ (B u_t): a residual block."""

    def __init__(self, dim: int, state_size: int, r_min: float, r_max: float, signed: bool = False) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.in_proj, self.out_proj = nn.Linear(dim, state_size, bias=False), nn.Linear(state_size, dim, bias=False)
        self.skip = nn.Parameter(torch.randn(dim))
        self.glu = nn.Linear(dim, 2 * dim)
        # λ = exp(-exp(ν)) lies in (0, 1) for every ν: stable by construction. |λ|² uniform in [r_min², r_max²].
        u = torch.rand(state_size)
        self.signed = signed
        if signed:  # λ = R·tanh(w) in (−1, 1), still time-invariant (Khavari et al. 2025); signs half and half
            radius = torch.sqrt(u * (r_max**2 - r_min**2) + r_min**2)
            sign = torch.where(torch.rand(state_size) < 0.5, -1.0, 1.0)
            self.lambda_raw = nn.Parameter(torch.atanh(sign * radius / SIGNED_RADIUS))
            self.gamma_log = nn.Parameter(0.5 * torch.log(1 - radius**2))
            return
        self.nu_log = nn.Parameter(torch.log(-0.5 * torch.log(u * (r_max**2 - r_min**2) + r_min**2)))
        self.gamma_log = nn.Parameter(0.5 * torch.log(1 - torch.exp(-2 * self.nu_log.exp())))  # γ = √(1 − λ²)

    def log_lambda(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """log|λ| (N,) and its sign (N,), None when λ > 0 by construction."""
        if self.signed:
            return signed_decay(SIGNED_RADIUS * torch.tanh(self.lambda_raw))
        return -self.nu_log.exp(), None

    def eigenvalues(self) -> torch.Tensor:
        """λ (N,): the diagonal transition."""
        log_abs, sign = self.log_lambda()
        return log_abs.exp() if sign is None else sign * log_abs.exp()

    def mix(self, x: torch.Tensor, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.out_proj(h) + self.skip * u)  # (..., D)
        return x + F.glu(self.glu(y), dim=-1)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None, scan) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), h0 (B, N) or None -> x (B, T, D), h_T (B, N)."""
        u = self.norm(x)
        b = self.gamma_log.exp() * self.in_proj(u)  # (B, T, N): input normalised by γ
        log_a, sign = self.log_lambda()
        h = scan(log_a, b, h0, sign)  # (B, T, N)
        return self.mix(x, u, h), h[:, -1]

    def step(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, D), h (B, N): the same recurrence, one step."""
        u = self.norm(x)
        h = self.eigenvalues() * h + self.gamma_log.exp() * self.in_proj(u)
        return self.mix(x, u, h), h


class SSM(ScannedStack):
    """A stack of Linear Recurrent Units (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long
    Sequences"): a diagonal linear recurrence with the exp-parametrised stable decay λ = exp(−exp(ν)) and the
    normalised input γ = √(1 − λ²), each followed by a GELU + GLU mixing layer with a pre-LayerNorm residual.
    λ is real here (the paper's is complex), so it shares one scan with minGRU; state_names = ("h",), the
    per-layer h_t (num_layers, B, hidden_size).

    Training runs the recurrence over the whole chunk with `scan`: "loop" (`sequential_scan`) or "chunked"
    (`chunked_scan`, parallel inside chunks). On a 2-core CPU the loop measured fastest (2× faster than the chunked
    scan at contexts 64-256, on par at 1024; benchmarks/scans.py, docs/guide/benchmarks.md), so it is the default.
    `step_embedded` is the same recurrence, one step.

    `signed`: λ = 0.9999·tanh(w) in (−1, 1), negative for half the channels at init. Theory says it still cannot
    track parity, because λ does not depend on the input (Khavari et al. 2025); experiment=state_tracking tests it.
    """

    family = "State-Space"

    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        hidden_size: int = 256,
        emb_dim: int = 64,
        num_layers: int = 2,
        r_min: float = 0.5,
        r_max: float = 0.999,
        scan: Literal["loop", "chunked"] = "loop",
        signed: bool = False,
    ) -> None:
        if not r_min < r_max:  # each in [0, 1): seqlab.config's RULES
            raise ConfigError(f"model.r_min={r_min}, model.r_max={r_max}: need r_min < r_max")
        make_layer = lambda: LRULayer(emb_dim, hidden_size, r_min, r_max, signed)  # noqa: E731
        super().__init__(vocab_size, emb_dim, hidden_size, num_layers, make_layer, SCANS[scan])
