import torch
import torch.nn.functional as F
from torch import nn

from seqlab.models.recurrent import Recurrent, State


class GRU(Recurrent):
    """Gated recurrent unit (Cho et al. 2014): h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}, n = tanh(W_in x + r ⊙ (W_hn h + b_hn)).

    The update gate z interpolates between the old state and a candidate, so ∂h_t/∂h_{t-1} holds a z ⊙ I
    term: where z is near 1 the state, and its gradient, pass through unchanged. Training uses the fused
    nn.GRU; `cell` is the same step written out (PyTorch's gate order r, z, n; r multiplies W_hn h + b_hn).
    """

    fused = nn.GRU
    gate_names = ("r", "z", "n")  # PyTorch's order of the blocks of weight_ih and weight_hh
    sigmoid_gates = ("r", "z")  # the gates proper, in (0, 1); the other block is the tanh candidate

    def gates(self, layer: nn.GRU, x: torch.Tensor, h: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (..., in), h (..., H) -> reset, update and candidate activations (..., H)."""
        xr, xz, xn = F.linear(x, layer.weight_ih_l0, layer.bias_ih_l0).chunk(3, dim=-1)
        hr, hz, hn = F.linear(h, layer.weight_hh_l0, layer.bias_hh_l0).chunk(3, dim=-1)
        r, z = (xr + hr).sigmoid(), (xz + hz).sigmoid()
        return {"r": r, "z": z, "n": (xn + r * hn).tanh()}

    def cell(self, layer: nn.GRU, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        (h,) = state
        a = self.gates(layer, x, h)
        h = (1 - a["z"]) * a["n"] + a["z"] * h
        return h, (h,)
