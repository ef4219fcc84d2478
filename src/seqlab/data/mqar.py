"""Multi-query associative recall, MQAR (Arora et al. 2023, "Zoology: measuring and improving recall in efficient
language models", §3 and their `multiquery_ar`): K key–value pairs, then the keys asked again, each once, at
random places among random tokens; after each query the model must predict its value.

    k_1 v_1 k_2 v_2 … k_K v_K | r r k_3 r r r r k_1 r … r        targets: v_3 after k_3, v_1 after k_1, else IGNORE

Keys are drawn without replacement from the lower half of the vocabulary (id 0 excepted), values without
replacement from the upper half; the gap before each query (in slots of two tokens) is drawn without replacement
with P(gap = g) ∝ g^(a−1), a = 0.01 (Zoology's power law: most queries come soon after the pairs, a few late);
every other token after the pairs is uniform over the whole vocabulary. Attention recalls every pair at any
width (its KV cache grows with the sequence); a fixed-size state can hold only so many pairs (Arora et al. 2024).
"""

from __future__ import annotations

import numpy as np

from seqlab.data import IGNORE


def mqar(
    n: int, length: int, pairs: int, vocab_size: int, seed: int, power_a: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """n sequences -> inputs (n, length) and targets (n, length): IGNORE except a value after each query."""
    if length % 2 or 4 * pairs > length:
        raise ValueError(f"length={length}, pairs={pairs}: need an even length ≥ 4 × pairs (pairs, then queries)")
    if vocab_size <= length or vocab_size // 2 - 1 < pairs:
        raise ValueError(f"vocab_size={vocab_size}: must exceed the length {length} and hold {pairs} keys")
    rng = np.random.default_rng(seed)
    half = vocab_size // 2
    # K distinct keys from 1 .. half−1 and K distinct values from half .. V−1: argsort of noise draws without replacement
    keys = 1 + np.argsort(rng.random((n, half - 1)), axis=1)[:, :pairs]  # (n, K)
    values = half + np.argsort(rng.random((n, vocab_size - half)), axis=1)[:, :pairs]  # (n, K)
    context = 2 * pairs
    space = (length - context) // 2  # two-token slots after the pairs; a query starts a slot
    # weighted sampling without replacement: the top K of log p + Gumbel noise (Gumbel-top-k, Kool et al. 2019)
    log_p = (power_a - 1) * np.log(np.arange(1, space + 1))
    gaps = np.argsort(-(log_p + rng.gumbel(size=(n, space))), axis=1)[:, :pairs]  # (n, K): key i's slot
    inputs = rng.integers(0, vocab_size, (n, length))  # the random tokens, then the pairs and queries over them
    inputs[:, 0:context:2], inputs[:, 1:context:2] = keys, values
    rows = np.arange(n)[:, None]
    query_at = context + 2 * gaps  # (n, K)
    inputs[rows, query_at] = keys
    targets = np.full((n, length), IGNORE, dtype=np.int64)
    targets[rows, query_at] = values  # the next token after a query is its value
    return inputs, targets


def chance(vocab_size: int, pairs: int) -> dict[str, float]:
    """Accuracy without recall: guessing blind (one of the vocab_size − vocab_size // 2 values), and knowing
    which K values the sequence holds but not which key each belongs to (1/K)."""
    return {"blind": 1.0 / (vocab_size - vocab_size // 2), "values_unbound": 1.0 / pairs}
