from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.models.recurrent import Recurrent, State


class RNN(Recurrent):
    """The Elman RNN (Elman 1990): h_t = tanh(W_ih x_t + W_hh h_{t-1} + b), h_0 = 0, the same weights at every step.

    `init` sets every layer's W_hh: `default` is PyTorch's U(±1/√H), or, when `recurrent_radius` is given,
    orthogonal × recurrent_radius; `orthogonal` is an orthogonal matrix × (recurrent_radius or 1), whose
    spectral radius is exactly that number: the knob of the textbook "eigenvalue < 1 vanishes, > 1 explodes";
    `identity` is the IRNN (Le et al. 2015, with `nonlinearity=relu`): W_hh = I × (recurrent_radius or 1),
    biases 0, so at init the state is copied forward and the gradient neither vanishes nor explodes.
    """

    fused = nn.RNN

    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        hidden_size: int = 256,
        emb_dim: int = 64,
        recurrent_radius: float | None = None,
        nonlinearity: Literal["tanh", "relu"] = "tanh",
        init: Literal["default", "orthogonal", "identity"] = "default",
        **kwargs,
    ) -> None:
        fused_kwargs = {"nonlinearity": nonlinearity}
        super().__init__(vocab_size, context_length, hidden_size, emb_dim, fused_kwargs=fused_kwargs, **kwargs)
        self.activation = torch.tanh if nonlinearity == "tanh" else torch.relu
        scale = 1.0 if recurrent_radius is None else recurrent_radius
        with torch.no_grad():
            for layer in self.layers:
                if init == "orthogonal" or (init == "default" and recurrent_radius is not None):
                    nn.init.orthogonal_(layer.weight_hh_l0).mul_(scale)
                elif init == "identity":
                    layer.weight_hh_l0.copy_(torch.eye(hidden_size) * scale)
                    layer.bias_ih_l0.zero_()
                    layer.bias_hh_l0.zero_()

    def cell(self, layer: nn.Module, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        (h,) = state
        h = self.activation(
            F.linear(x, layer.weight_ih_l0, layer.bias_ih_l0) + F.linear(h, layer.weight_hh_l0, layer.bias_hh_l0)
        )
        return h, (h,)
