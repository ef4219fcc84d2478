from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.errors import ConfigError
from seqlab.models.scan import SIGNED_RADIUS, ScannedStack, chunked_scan, log_space_scan, sequential_scan, signed_decay


def g(x: torch.Tensor) -> torch.Tensor:
    """Positive everywhere and continuous (Feng et al.'s g), so h_t > 0 and the scan can run in log space."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


class MinGRULayer(nn.Module):
    """x + GLU(h_t), h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ g(W_h u_t), z_t = σ(W_z u_t), u = LayerNorm(x).
    The gate and the candidate read the input only, never h_{t-1}: the recurrence is linear in h."""

    def __init__(self, dim: int, hidden_size: int, signed: bool = False) -> None:
        super().__init__()
        self.signed = signed
        self.norm = nn.LayerNorm(dim)
        self.gate_and_candidate = nn.Linear(dim, 2 * hidden_size)
        self.glu = nn.Linear(hidden_size, 2 * dim)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None, scan: str) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), h0 (B, H) or None -> x (B, T, D), h_T (B, H)."""
        k, pre = self.gate_and_candidate(self.norm(x)).chunk(2, dim=-1)  # (B, T, H) each
        log_a = -F.softplus(k)  # log(1 − z), computed without forming 1 − σ(k)
        if self.signed:  # the constructor refused scan=log
            log_a, sign = signed_decay(self.decay(k))
            h = (chunked_scan if scan == "chunked" else sequential_scan)(log_a, torch.sigmoid(k) * g(pre), h0, sign)
        elif scan == "log":
            h = log_space_scan(log_a, -F.softplus(-k) + log_g(pre), h0)  # log z + log g(pre)
        else:
            h = (chunked_scan if scan == "chunked" else sequential_scan)(log_a, torch.sigmoid(k) * g(pre), h0)
        return x + F.glu(self.glu(h), dim=-1), h[:, -1]

    def step(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, D), h (B, H): the recurrence as written in the paper, one step."""
        k, pre = self.gate_and_candidate(self.norm(x)).chunk(2, dim=-1)
        z = torch.sigmoid(k)
        h = (self.decay(k) if self.signed else 1 - z) * h + z * g(pre)
        return x + F.glu(self.glu(h), dim=-1), h

    def decay(self, k: torch.Tensor) -> torch.Tensor:
        """The signed decay: Grazzi et al.'s 2(1 − z) − 1 = −tanh(k/2), × 0.9999 so that |a| < 1 for any input."""
        return -SIGNED_RADIUS * torch.tanh(k / 2)


class MinGRU(ScannedStack):
    """minGRU (Feng et al. 2024, "Were RNNs All We Needed?"): a GRU whose gate and candidate depend on x_t only,
    so h_1..h_T follow from a scan that is parallel in T; stacked in pre-LayerNorm residual blocks with a GLU.
    state_names = ("h",), the per-layer h_t (num_layers, B, hidden_size).

    `scan`: "log" is Heinsen's log-space parallel scan (the paper's), "chunked" the chunked scan, "loop" the
    plain loop; all three give the same h_t (tests/test_scans.py). On a 2-core CPU the loop measured fastest
    (log 2.5-4×, chunked 15-23× slower per training step at contexts 64-1024; benchmarks/scans.py), so it is the
    default; `scan=log` is for accelerators. `step_embedded` is the same recurrence, one step.

    `signed`: the decay 1 − z_t in (0, 1) becomes 2(1 − z_t) − 1 in (−1, 1), still input-dependent: with both,
    a diagonal linear recurrence can track parity (Grazzi et al. 2025; Khavari et al. 2025). Log space needs
    a > 0, so it runs on the loop or the chunked scan.
    """

    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        hidden_size: int = 192,
        emb_dim: int = 64,
        num_layers: int = 2,
        scan: Literal["loop", "log", "chunked"] = "loop",
        signed: bool = False,
    ) -> None:
        if signed and scan == "log":
            raise ConfigError(
                "model.scan=log with model.signed=true: the log-space scan needs decays > 0; use loop or chunked"
            )
        make_layer = lambda: MinGRULayer(emb_dim, hidden_size, signed)  # noqa: E731
        super().__init__(vocab_size, emb_dim, hidden_size, num_layers, make_layer, scan)
