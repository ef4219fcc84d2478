from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.models.base import State
from seqlab.models.scan import ScannedStack

T_ = torch.Tensor


class DeltaLayer(nn.Module):
    """x + GLU(W_o o_t), u = LayerNorm(x); per head a d×d fast-weight memory M_t (the paper's S_t = M_tᵀ):

        M_t = α_t (I − β_t k_t k_tᵀ) M_{t−1} + β_t k_t v_tᵀ,   o_t = M_tᵀ q_t,

    k_t, q_t L2-normalised, α_t = σ(·) in (0, 1), β_t = σ(·) in (0, 1), or 2σ(·) in (0, 2) when signed: the
    eigenvalue 1 − β_t of I − β_t k_t k_tᵀ then reaches −1 (a reflection), which parity needs."""

    def __init__(self, dim: int, num_heads: int, signed: bool, chunk_size: int) -> None:
        super().__init__()
        self.heads, self.head_dim, self.signed, self.chunk = num_heads, dim // num_heads, signed, chunk_size
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.gates = nn.Linear(dim, 2 * num_heads)  # β and α per head
        nn.init.constant_(self.gates.bias[num_heads:], 3.0)  # α ≈ 0.95 at init: the memory starts long
        self.out = nn.Linear(dim, 2 * dim)

    def inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x (..., D) -> q, k, v (..., H, d), β, log α (..., H)."""
        u = self.norm(x)
        q, k, v = self.qkv(u).unflatten(-1, (3, self.heads, self.head_dim)).unbind(-3)
        b, a = self.gates(u).chunk(2, dim=-1)
        beta = torch.sigmoid(b) * (2 if self.signed else 1)
        return F.normalize(q, dim=-1), F.normalize(k, dim=-1), v, beta, F.logsigmoid(a)

    def mix(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        return x + F.glu(self.out(o.flatten(-2)), dim=-1)  # o (..., H, d) -> (..., D)

    def step(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, D), m (B, H·d·d) -> x, m: the recurrence as written, one token (the reference)."""
        q, k, v, beta, log_alpha = self.inputs(x)
        M = m.unflatten(-1, (self.heads, self.head_dim, self.head_dim))  # (B, H, d_k, d_v)
        beta, alpha = beta[..., None, None], log_alpha.exp()[..., None, None]
        kM = k.unsqueeze(-2) @ M  # (B, H, 1, d_v): what the memory holds under k_t
        m = (alpha * (M - beta * k.unsqueeze(-1) @ kM) + beta * k.unsqueeze(-1) @ v.unsqueeze(-2)).flatten(1)
        # o read from the flat m: the gradient profile takes the state's gradient there, so it counts this use
        o = (q.unsqueeze(-2) @ m.view_as(M)).squeeze(-2)  # (B, H, d_v)
        return self.mix(x, o), m

    def forward(self, x: torch.Tensor, m0: torch.Tensor | None, scan: str) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), m0 (B, H·d·d) or None -> x (B, T, D), m_T."""
        m = x.new_zeros(x.shape[0], self.heads * self.head_dim**2) if m0 is None else m0
        if scan == "loop":
            outs = []
            for x_t in x.unbind(1):
                out, m = self.step(x_t, m)
                outs.append(out)
            return torch.stack(outs, 1), m
        o, m = self.chunked(*self.inputs(x), m.unflatten(-1, (self.heads, self.head_dim, self.head_dim)))
        return self.mix(x, o), m.flatten(1)

    def chunked(self, q: T_, k: T_, v: T_, beta: T_, log_alpha: T_, M: T_) -> tuple[T_, T_]:
        """The same recurrence C tokens at a time (Yang et al. 2024, the WY/UT representation). Inside a chunk
        from M_0, with γ_t = α_1⋯α_t and u_t = β_t (v_t − α_t M_{t−1}ᵀ k_t) the value each step writes,
        M_t = γ_t M_0 + Σ_{s≤t} (γ_t/γ_s) k_s u_sᵀ, so the u_t solve one unit-lower-triangular system
        (I + A) U = βV − βγ K M_0, A_ts = β_t (γ_t/γ_s) k_t·k_s (s < t): U = U_0 − W M_0 with U_0, W free of M_0.
        Then O = γ Q M_0 + (Q Kᵀ ⊙ Γ) U and M_C = γ_C M_0 + (K γ_C/γ)ᵀ U. q, k, v (B, T, H, d), β, log α
        (B, T, H), M (B, H, d, d) -> o (B, T, H, d), M_T."""
        T, d = q.shape[1], q.shape[-1]
        n_chunks = -(-T // self.chunk)
        C = -(-T // n_chunks)  # chunks of at most chunk_size, as even as can be: little padding to compute
        pad = n_chunks * C - T
        # padded steps write nothing (β = 0) and keep M (α = 1): M after them is M_T
        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)).transpose(1, 2).unflatten(2, (-1, C)) for t in (q, k, v))
        beta, g = (F.pad(t, (0, 0, 0, pad)).transpose(1, 2).unflatten(2, (-1, C)) for t in (beta, log_alpha))
        g = g.cumsum(-1)  # (B, H, N, C): log γ_t inside each chunk
        causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
        decay = (g[..., :, None] - g[..., None, :]).masked_fill(~causal, float("-inf")).exp()  # Γ_ts = γ_t/γ_s
        A = (beta[..., None] * (k @ k.transpose(-1, -2)) * decay).tril(-1)  # (B, H, N, C, C)
        eye = torch.eye(C, dtype=q.dtype, device=q.device)
        rhs = torch.cat([beta[..., None] * v, (beta * g.exp())[..., None] * k], dim=-1)
        U0, W = torch.linalg.solve_triangular(eye + A, rhs, upper=False, unitriangular=True).split(d, dim=-1)
        attn = (q @ k.transpose(-1, -2)) * decay  # (B, H, N, C, C), zero above the diagonal
        outs = []
        for n in range(q.shape[2]):  # the inter-chunk loop carries M
            U = U0[:, :, n] - W[:, :, n] @ M  # (B, H, C, d)
            outs.append(g[:, :, n, :, None].exp() * (q[:, :, n] @ M) + attn[:, :, n] @ U)
            to_end = (g[:, :, n, -1:] - g[:, :, n]).exp()[..., None]  # (B, H, C, 1): γ_C/γ_s
            M = g[:, :, n, -1, None, None].exp() * M + (to_end * k[:, :, n]).transpose(-1, -2) @ U
        return torch.cat(outs, dim=2)[:, :, :T].transpose(1, 2), M


class DeltaNet(ScannedStack):
    """Gated DeltaNet (Yang et al. 2024, "Gated Delta Networks"; the delta rule of Schlag et al. 2021, "Linear
    transformers are secretly fast weight programmers"): linear attention whose memory is corrected, not only
    added to: each step writes v_t under k_t after erasing what k_t held. `hidden_size` is the model width D,
    split into `num_heads` heads of d = D / num_heads; the state is each layer's H memories of d × d,
    state_names = ("h",), one tensor (num_layers, B, H·d·d). No short convolution (the paper has one).

    `signed`: β in (0, 2) (Grazzi et al. 2025), so I − β k kᵀ has an eigenvalue in (−1, 1): parity becomes
    reachable. `scan`: "chunked" (the WY/UT form, `chunk_size` tokens at a time) or "loop" (the step, the
    reference); both equal `step` in float64 (tests/test_deltanet.py).
    """

    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        hidden_size: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        signed: bool = False,
        scan: Literal["loop", "chunked"] = "chunked",
        chunk_size: int = 32,
    ) -> None:
        if hidden_size % num_heads:
            raise ValueError(f"model.hidden_size={hidden_size}: must be a multiple of model.num_heads={num_heads}")
        layer = lambda: DeltaLayer(hidden_size, num_heads, signed, chunk_size)  # noqa: E731
        super().__init__(vocab_size, hidden_size, hidden_size, num_layers, layer, scan)
        self.state_size = num_heads * (hidden_size // num_heads) ** 2

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> State:
        w = self.head.weight
        return (torch.zeros(self.num_layers, batch_size, self.state_size, device=device or w.device, dtype=w.dtype),)
