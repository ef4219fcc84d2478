import torch
import torch.nn.functional as F
from torch import nn

from seqlab.models.recurrent import Recurrent, State


class LSTM(Recurrent):
    """Long short-term memory (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).

    c_t = f ⊙ c_{t-1} + i ⊙ g,  h_t = o ⊙ tanh(c_t): the cell c_t is updated additively, through a gate
    rather than a matrix, so ∂c_t/∂c_{t-1} = f can stay near 1 over many steps: the "gradient highway".
    Training uses the fused nn.LSTM; `cell` is the same step written out (PyTorch's gate order i, f, g, o).
    """

    fused = nn.LSTM
    state_names = ("h", "c")
    gate_names = ("i", "f", "g", "o")  # PyTorch's order of the blocks of weight_ih and weight_hh
    sigmoid_gates = ("i", "f", "o")  # the gates proper, in (0, 1); the other block is the tanh candidate

    def gates(self, layer: nn.LSTM, x: torch.Tensor, h: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (..., in), h (..., H) -> the four gate activations (..., H): input, forget, candidate, output."""
        pre = F.linear(x, layer.weight_ih_l0, layer.bias_ih_l0) + F.linear(h, layer.weight_hh_l0, layer.bias_hh_l0)
        i, f, g, o = pre.chunk(4, dim=-1)
        return {"i": i.sigmoid(), "f": f.sigmoid(), "g": g.tanh(), "o": o.sigmoid()}

    def cell(self, layer: nn.LSTM, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h, c = state
        a = self.gates(layer, x, h)
        c = a["f"] * c + a["i"] * a["g"]
        h = a["o"] * c.tanh()
        return h, (h, c)
