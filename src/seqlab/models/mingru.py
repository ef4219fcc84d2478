from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.models.scan import ScannedStack, chunked_scan, log_space_scan, sequential_scan


def g(x: torch.Tensor) -> torch.Tensor:
    """Positive everywhere and continuous (Feng et al.'s g), so h_t > 0 and the scan can run in log space."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


class MinGRULayer(nn.Module):
    """x + GLU(h_t), h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ g(W_h u_t), z_t = σ(W_z u_t), u = LayerNorm(x).
    The gate and the candidate read the input only, never h_{t-1}: the recurrence is linear in h."""

    def __init__(self, dim: int, hidden_size: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.gate_and_candidate = nn.Linear(dim, 2 * hidden_size)
        self.glu = nn.Linear(hidden_size, 2 * dim)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None, scan: str) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), h0 (B, H) or None -> x (B, T, D), h_T (B, H)."""
        k, pre = self.gate_and_candidate(self.norm(x)).chunk(2, dim=-1)  # (B, T, H) each
        log_a = -F.softplus(k)  # log(1 − z), computed without forming 1 − σ(k)
        if scan == "log":
            h = log_space_scan(log_a, -F.softplus(-k) + log_g(pre), h0)  # log z + log g(pre)
        else:
            h = (chunked_scan if scan == "chunked" else sequential_scan)(log_a, torch.sigmoid(k) * g(pre), h0)
        return x + F.glu(self.glu(h), dim=-1), h[:, -1]

    def step(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, D), h (B, H): the recurrence as written in the paper, one step."""
        k, pre = self.gate_and_candidate(self.norm(x)).chunk(2, dim=-1)
        z = torch.sigmoid(k)
        h = (1 - z) * h + z * g(pre)
        return x + F.glu(self.glu(h), dim=-1), h


class MinGRU(ScannedStack):
    """minGRU (Feng et al. 2024, "Were RNNs All We Needed?"): a GRU whose gate and candidate depend on x_t only,
    so h_1..h_T follow from a scan that is parallel in T; stacked in pre-LayerNorm residual blocks with a GLU.
    state_names = ("h",), the per-layer h_t (num_layers, B, hidden_size).

    `scan`: "log" is Heinsen's log-space parallel scan (the paper's), "chunked" the chunked scan, "loop" the
    plain loop; all three give the same h_t (tests/test_scans.py). On a 2-core CPU the loop measured fastest
    (log 2.5-4×, chunked 15-23× slower per training step at contexts 64-1024; benchmarks/scans.py), so it is the
    default; `scan=log` is for accelerators. `step_embedded` is the same recurrence, one step.
    """

    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        hidden_size: int = 192,
        emb_dim: int = 64,
        num_layers: int = 2,
        scan: Literal["loop", "log", "chunked"] = "loop",
    ) -> None:
        super().__init__(vocab_size, emb_dim, hidden_size, num_layers, lambda: MinGRULayer(emb_dim, hidden_size), scan)
