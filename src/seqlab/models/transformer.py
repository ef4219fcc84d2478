import torch
import torch.nn.functional as F
from torch import nn

from seqlab.errors import ConfigError
from seqlab.models.base import SequenceModel

State = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # ids (B, n), keys and values (L, B, heads, n, D/heads)


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor):
        """x (B, T, D) after n cached positions (past_k/v (B, heads, n, D/heads)) -> x, k, v (all n + T)."""
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)  # (B, heads, n + T, D/heads)
        # is_causal aligns the mask top-left, right only when nothing is cached; one new query sees the whole cache
        y = F.scaled_dot_product_attention(q, k, v, is_causal=past_k.shape[2] == 0)  # (B, heads, T, D/heads)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, D))
        return x + self.mlp(self.ln2(x)), k, v


class Transformer(SequenceModel):
    """A small causal decoder-only Transformer (Vaswani et al. 2017; pre-LayerNorm as in GPT-2, Radford et al.
    2019; the manner of nanoGPT), with learned positions 0..context_length-1.

    Generation keeps a key/value cache: `prefill(idx)` runs the prompt once, then `step` adds one token at a
    cost that grows with the position (attention over the cache). Learned positions end at context_length:
    once the cache is full, each step re-prefills the last context_length tokens (which the state keeps), so
    the logits equal the uncached forward over that cropped window (what `generate` does for any model), at
    the cost of a full forward per token. `hidden_size` is the model's width D (embeddings, residual stream).
    """

    family = "Transformer"
    incremental = True
    state_names = ("ids", "k", "v")

    def __init__(
        self, vocab_size: int, context_length: int, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4
    ) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ConfigError(f"model.num_heads={num_heads}: must divide model.hidden_size={hidden_size}")
        self.context_length, self.num_layers, self.hidden_size = context_length, num_layers, hidden_size
        self.tok_emb, self.pos_emb = nn.Embedding(vocab_size, hidden_size), nn.Embedding(context_length, hidden_size)
        self.blocks = nn.ModuleList(Block(hidden_size, num_heads) for _ in range(num_layers))
        self.ln_f, self.head = nn.LayerNorm(hidden_size), nn.Linear(hidden_size, vocab_size)
        for m in self.modules():  # GPT-2's init: small weights, so the loss starts at ≈ ln V
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @property
    def max_context(self) -> int:
        return self.context_length

    def _run(self, e: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        ids, past_k, past_v = state
        n, T = past_k.shape[3], e.shape[1]
        if n + T > self.context_length:
            raise ValueError(f"{n + T} positions: learned positions end at context_length={self.context_length}")
        x = e + self.pos_emb(torch.arange(n, n + T, device=e.device))  # (B, T, E)
        ks, vs = [], []
        for block, pk, pv in zip(self.blocks, past_k, past_v, strict=True):
            x, k, v = block(x, pk, pv)
            ks.append(k)
            vs.append(v)
        return self.head(self.ln_f(x)), (ids, torch.stack(ks), torch.stack(vs))  # logits (B, T, V)

    def forward_embedded(self, e: torch.Tensor) -> torch.Tensor:
        return self._run(e, self.initial_state(e.shape[0], e.device))[0]

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> State:
        block = self.blocks[0]
        shape = (len(self.blocks), batch_size, block.num_heads, 0, self.tok_emb.embedding_dim // block.num_heads)
        device = device or self.head.weight.device
        empty = torch.zeros(shape, device=device, dtype=self.head.weight.dtype)
        return torch.zeros(batch_size, 0, dtype=torch.long, device=device), empty, empty

    def state_bytes(self, batch_size: int = 1, length: int | None = None) -> int:
        """The state after `length` tokens (None: a full window), from initial_state's shapes: every layer's keys
        and values and the ids kept to re-prefill, growing with the length up to context_length (then the window
        slides: positions end there)."""
        ids, k, _ = self.initial_state(batch_size, torch.device("cpu"))
        layers, _, heads, _, head_dim = k.shape  # (L, B, heads, 0, D/heads)
        per_position = batch_size * (ids.element_size() + 2 * layers * heads * head_dim * k.element_size())
        return per_position * (self.context_length if length is None else min(length, self.context_length))

    def prefill(self, idx: torch.Tensor) -> tuple[torch.Tensor, State]:
        """idx (B, P), P <= context_length -> logits (B, P, V) and the cache after it."""
        logits, (_, k, v) = self._run(self.embed(idx), self.initial_state(idx.shape[0], idx.device))
        return logits, (idx, k, v)

    def step(self, idx_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """idx_t (B,) -> logits (B, V), the state with it appended."""
        ids = torch.cat([state[0], idx_t[:, None]], dim=1)  # (B, n + 1)
        if ids.shape[1] > self.context_length:  # positions exhausted: re-prefill the window
            logits, state = self.prefill(ids[:, -self.context_length :])
            return logits[:, -1], state
        logits, (_, k, v) = self._run(self.embed(idx_t[:, None]), state)
        return logits[:, -1], (ids, k, v)
