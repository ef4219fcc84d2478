"""Induction heads (Olsson et al. 2022; the synthetic task of H3, Fu et al. 2023 §3.1, and Mamba, Gu & Dao 2023
§4.1.2): random symbols, a trigger token once followed by a target, and the trigger again as the last input. The
answer, the next token, is the target. Mamba trains at 256 tokens and tests up to a million: a model that keeps
the target in a fixed-size state answers at any length, attention with learned positions cannot run past the
window it was trained on.

    s s s s T a s s s s s s … s s T -> a        (T the trigger, a the target, s fillers: every symbol random)

Only the answer is scored (every other target is IGNORE, as in Mamba): the fillers are unpredictable noise.
"""

from __future__ import annotations

import numpy as np

from seqlab.data import IGNORE


class InductionSource:
    """Sequences of `length` inputs over `num_symbols` symbols (ids 0 .. S−1) plus the trigger (id S).

    The trigger's first place p is uniform over 0 .. length−3 (the target at p + 1, before the final trigger at
    length − 1), so the distance to recall is uniform too: half the stream on average.
    """

    def __init__(self, num_symbols: int = 16) -> None:
        self.num_symbols = num_symbols
        self.trigger = num_symbols
        self.vocab_size = num_symbols + 1

    def sample(self, n: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """n sequences -> inputs (n, length), answers (n,) (the target), and the trigger's first place (n,)."""
        if length < 3:
            raise ValueError(f"length={length}: an induction sequence needs at least 3 tokens (T a … T)")
        rng = np.random.default_rng(seed)
        dtype = np.int16 if self.vocab_size < 2**15 else np.int64  # a 2^16-token stream per row: keep it small
        inputs = rng.integers(0, self.num_symbols, (n, length), dtype=dtype)  # fillers everywhere
        first = rng.integers(0, length - 2, n)  # 0 .. length−3
        rows = np.arange(n)
        answers = inputs[rows, first + 1].astype(np.int64)  # the filler drawn there is the target
        inputs[rows, first] = self.trigger
        inputs[:, -1] = self.trigger
        return inputs, answers, first

    def episodes(self, n: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Training rows: inputs (n, length) and next-token targets (n, length), IGNORE except the last."""
        inputs, answers, _ = self.sample(n, length, seed)
        targets = np.full(inputs.shape, IGNORE, dtype=np.int64)
        targets[:, -1] = answers
        return inputs.astype(np.int64), targets
