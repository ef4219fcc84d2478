import torch
from torch import nn

from seqlab.models.recurrent import Recurrent, State


class IndRNNLayer(nn.Module):
    """One layer's parameters: the input map W, b and the recurrent weight u, one number per unit."""

    def __init__(self, input_size: int, hidden_size: int, recurrent_max: float) -> None:
        super().__init__()
        self.input = nn.Linear(input_size, hidden_size)
        self.u = nn.Parameter(torch.empty(hidden_size).uniform_(0, recurrent_max))


class IndRNN(Recurrent):
    """Independently recurrent network (Li et al. 2018, "Independently Recurrent Neural Network (IndRNN)"):
    h_t = relu(W x_t + u ⊙ h_{t-1} + b). Each unit sees only its own past, through a scalar u_i, so
    ∂h_T/∂h_t is diagonal with entries Π u_i · relu'(·): a unit with u_i ≈ 1 carries its gradient unchanged, and
    |u_i| ≤ recurrent_max bounds how fast it can grow, the paper's fix for vanishing and exploding gradients.
    Units mix only between layers (stack 2 or more). PyTorch has no fused kernel: the cell loop is the fast path.
    """

    def __init__(self, vocab_size: int, context_length: int, recurrent_max: float = 1.0, **kwargs) -> None:
        self.recurrent_max = recurrent_max  # read by make_layer during the base's __init__
        super().__init__(vocab_size, context_length, **kwargs)

    def make_layer(self, input_size: int) -> IndRNNLayer:
        return IndRNNLayer(input_size, self.hidden_size, self.recurrent_max)

    def recurrent_weights(self) -> dict[str, torch.Tensor]:
        return {f"weight_hh_l{i}": layer.u for i, layer in enumerate(self.layers)}  # a diagonal

    def cell(self, layer: IndRNNLayer, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        (h,) = state
        h = torch.relu(layer.input(x) + layer.u.clamp(-self.recurrent_max, self.recurrent_max) * h)
        return h, (h,)
