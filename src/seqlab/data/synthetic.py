"""Sources whose best possible loss is known exactly: a random order-k Markov chain, and associative recall.

On real text nobody knows the floor, so "the RNN reached 5.1" says little. Here the floor is computed, and a
run reports `excess_loss = loss − optimal_loss` (nats/token). Everything is generated from `source_seed`
(nothing is downloaded); train, val and test are drawn independently from the same source.

Both datamodules are token sources (seqlab.data.base.TokenDataModule) that say where their tokens come from
(`_split_tokens`) and declare what they know (`known_optimum`, `optimal_loss`, …); vocabulary, batching and the
evaluation callbacks (seqlab.data.known_source) come from the base. Tokens are single characters (level "char"):
samples stay readable in TensorBoard.
"""

from __future__ import annotations

import bisect
import math
import string
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from seqlab.data.base import SPLITS, TokenDataModule
from seqlab.data.batches import EpisodeBatches
from seqlab.errors import ConfigError

SYMBOLS = string.ascii_lowercase + string.ascii_uppercase + string.digits  # sorted within each group


def entropy(p: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Shannon entropy in nats, 0 ln 0 = 0."""
    logp = np.log(np.where(p > 0, p, 1.0))
    return -(p * logp).sum(axis=axis)


class MarkovSource:
    """x_t ~ P(· | x_{t−k..t−1}): one Dirichlet(α) row per k-gram context, drawn from `seed`.

    The k-gram process is itself a first-order chain on V^k states, s = (x_1..x_k) -> (x_2..x_k, x). Its
    stationary distribution π gives the entropy rate H = Σ_s π(s) H(P(·|s)) exactly (the best loss with
    unbounded history), and its marginals give H(X_t | the last n symbols) for n < k (the best loss of a model
    that sees only n tokens; n = 0 is the stationary unigram entropy, the best context-free loss).
    """

    def __init__(self, num_symbols: int, order: int, alpha: float, seed: int) -> None:
        self.V, self.k = num_symbols, order
        rng = np.random.default_rng(seed)
        self.table = rng.dirichlet(np.full(num_symbols, alpha), size=num_symbols**order)  # (V^k, V)
        self.table = np.maximum(self.table, 1e-300)  # tiny α can underflow a row entry to 0: keep the chain ergodic
        self.table /= self.table.sum(1, keepdims=True)
        self.stationary = self._stationary()  # (V^k,)

    def _stationary(self, tol: float = 1e-14, max_iter: int = 100_000) -> np.ndarray:
        V, k = self.V, self.k
        pi = np.full(V**k, 1.0 / V**k)
        for _ in range(max_iter):
            # π'(x_2..x_k, x) = Σ_{x_1} π(x_1..x_k) P(x | x_1..x_k)
            joint = (pi[:, None] * self.table).reshape(V, V ** (k - 1) * V)  # (x_1, (x_2..x_k, x))
            new = joint.sum(0)
            if np.abs(new - pi).sum() < tol:
                return new
            pi = new
        raise RuntimeError("the Markov chain's stationary distribution did not converge")

    def joint_last(self, n: int) -> np.ndarray:
        """P(x_{t−n..t−1}, x_t) under the stationary distribution, n ≤ k, as (V^n, V): history code, next."""
        V, k = self.V, self.k
        joint = (self.stationary[:, None] * self.table).reshape((V,) * (k + 1))  # (x_1..x_k, x)
        return joint.sum(axis=tuple(range(k - n))).reshape(V**n, V)

    def conditional_entropy(self, n: int) -> float:
        """H(X_t | X_{t−n..t−1}) under the stationary distribution, exactly (n ≥ k: the entropy rate)."""
        last = self.joint_last(min(n, self.k))
        return float(entropy(last.ravel()) - entropy(last.sum(-1)))

    @property
    def entropy_rate(self) -> float:
        return float(self.stationary @ entropy(self.table, axis=1))

    def loss_on(self, tokens: np.ndarray, context_length: int) -> float:
        """The source's own mean loss on these tokens, scored as EvalBatches scores a model (the target at
        position i of a chunk sees i + 1 tokens): what the best possible model gets on this very sample. It
        differs from `chunked_optimum` (its expectation) by the sample's noise, ≈ 0.003 nats on 100k tokens."""
        V, k = self.V, self.k
        t = np.arange(1, len(tokens))  # target positions
        seen = np.minimum((t - 1) % context_length + 1, k)
        logp = np.empty(len(t))
        for n in range(1, k + 1):
            last = self.joint_last(n)
            where = t[seen == n]
            state = np.zeros(len(where), dtype=np.int64)
            for j in range(n, 0, -1):
                state = state * V + tokens[where - j]
            logp[seen == n] = np.log(last[state, tokens[where]] / last[state].sum(-1))
        return float(-logp.mean())

    def sample(self, n: int, seed: int) -> np.ndarray:
        """n symbols of one chain started from the stationary distribution (so every position is stationary)."""
        rng = np.random.default_rng(seed)
        V, k = self.V, self.k
        s = int(rng.choice(V**k, p=self.stationary))
        out = np.empty(n, dtype=np.int64)
        head = [(s // V ** (k - 1 - i)) % V for i in range(k)]  # the first k symbols are the start state
        out[: min(k, n)] = head[:n]
        cumulative = np.cumsum(self.table, axis=1).tolist()  # plain lists: bisect on them is fast
        u = rng.random(n).tolist()
        wrap = V**k
        for t in range(k, n):
            x = min(bisect.bisect(cumulative[s], u[t]), V - 1)
            out[t] = x
            s = (s * V + x) % wrap
        return out


def chunked_optimum(best_given: Sequence[float], n_tokens: int, context_length: int) -> float:
    """Mean best loss over the targets scored by consecutive chunks (EvalBatches): the target at position i
    of a chunk sees i + 1 tokens, so the first few of each chunk cannot reach the entropy rate.
    `best_given[n]` is the best loss given n tokens of history (the last entry for every longer one)."""
    n_targets = n_tokens - 1
    seen = np.arange(n_targets) % context_length + 1  # tokens of history each target gets
    best = np.asarray(best_given)[np.minimum(seen, len(best_given) - 1)]
    return float(best.mean())


class MarkovDataModule(TokenDataModule):
    """`data=markov`: an order-k Markov chain over V symbols with Dirichlet(α) transition rows."""

    def __init__(
        self,
        order: int = 3,
        num_symbols: int = 16,
        alpha: float = 0.2,
        lengths: tuple[int, int, int] = (2_000_000, 100_000, 100_000),
        source_seed: int = 0,
        context_length: int = 64,
        batch_size: int = 64,
        seed: int = 0,
        stateful: bool = False,
        corpus: Literal["markov"] = "markov",  # the yaml names it for the run's summary
    ) -> None:
        if not 1 <= int(order) <= 6:
            raise ConfigError(f"data.order={order}: must be between 1 and 6 (the table has V^order rows)")
        if not 2 <= int(num_symbols) <= len(SYMBOLS):
            raise ConfigError(f"data.num_symbols={num_symbols}: must be between 2 and {len(SYMBOLS)}")
        if float(alpha) <= 0:
            raise ConfigError(f"data.alpha={alpha}: the Dirichlet concentration must be positive")
        if min(int(n) for n in lengths) <= int(context_length):
            raise ConfigError(f"data.lengths={list(lengths)}: each split must be longer than data.context_length")
        super().__init__(corpus, "char", context_length, batch_size, seed, stateful)
        self.lengths = [int(n) for n in lengths]
        self.source_seed = int(source_seed)
        self.source = MarkovSource(int(num_symbols), int(order), float(alpha), int(source_seed))

    def _split_tokens(self) -> dict[str, list[str]]:
        return {
            split: [SYMBOLS[i] for i in self.source.sample(n, seed=self.source_seed * 1000 + 1 + i)]
            for i, (split, n) in enumerate(zip(SPLITS, self.lengths, strict=True))
        }

    def best_loss_given(self, n: int) -> float:
        """The best loss of a model that sees the last n tokens (n = 0: none)."""
        return self.source.conditional_entropy(n)

    def optimal_loss(self, split: str = "val") -> float:
        """The best loss over a split as val/test score it (consecutive chunks of context_length)."""
        best = [self.best_loss_given(n) for n in range(self.source.k + 1)]
        return chunked_optimum(best, self.lengths[SPLITS.index(split)], self.context_length)

    def source_loss(self, split: str = "val") -> float:
        """The source's own loss on this split's tokens (`MarkovSource.loss_on`): the optimum without the split's
        sampling noise, so `loss − source_loss` compares a model and the source on the same tokens."""
        symbol_of = np.array([SYMBOLS.find(tok) if len(tok) == 1 else -1 for tok in self.vocab.tokens])
        tokens = symbol_of[self.ids[split].numpy()]
        if (tokens < 0).any():  # <unk>: a symbol too rare to occur in a tiny train split has no id
            return math.nan
        return self.source.loss_on(tokens, self.context_length)

    def known_optimum(self) -> dict[str, float]:
        return {
            "entropy_rate": self.source.entropy_rate,  # unbounded history (a stateful stream reaches it)
            "unigram_entropy": self.best_loss_given(0),  # the best context-free loss
        }


class RecallSource:
    """Multi-query associative recall (in the manner of Zoology's MQAR, Arora et al. 2023), one episode a row:

        k_1 v_1 … k_N v_N | f_1 … f_d | q_1 a_1 … q_N a_N

    N distinct keys (of K), values drawn with replacement (of V), d filler tokens drawn uniformly (of F), then N
    queries drawn with replacement from the episode's keys, each followed by its value a_j. Every token is
    random except the answers a_j: they cost 0 to a model that recalls, ln V to one that does not.
    Why MQAR rather than the copy task: one answer is one fact held over ≈d steps, so recall_acc measures
    reach over a distance; a copy task also asks for capacity (the whole pattern at once).
    """

    def __init__(self, keys: int, values: int, pairs: int, gap: int, fillers: int) -> None:
        self.K, self.V, self.N, self.d, self.F = keys, values, pairs, gap, fillers
        self.length = 4 * pairs + gap  # tokens per episode
        self.alphabet = SYMBOLS[26 : 26 + keys] + SYMBOLS[:values] + ".,:;-_!?"[:fillers]
        self.answer_positions = torch.arange(2 * pairs + gap + 1, self.length, 2)  # indices into the episode

    def sample(self, n_episodes: int, seed: int, min_gap: int | None = None) -> np.ndarray:
        """(n_episodes, length) token ids into `alphabet`. With `min_gap`, each episode's gap is drawn from
        min_gap .. d and the rest of the d fillers go before the pairs (same length, same answer positions):
        short gaps give a learner a signal that long ones alone do not (their gradient has vanished)."""
        rng = np.random.default_rng(seed)
        n, N, K, d = n_episodes, self.N, self.K, self.d
        keys = np.argsort(rng.random((n, K)), axis=1)[:, :N]  # N distinct keys per episode
        values = rng.integers(0, self.V, (n, N))
        which = rng.integers(0, N, (n, N))  # which pair each query asks for
        queries = np.take_along_axis(keys, which, 1)
        answers = np.take_along_axis(values, which, 1)
        ep = K + self.V + rng.integers(0, self.F, (n, self.length))  # fillers everywhere, then overwritten
        lead = d - rng.integers(min_gap, d + 1, n) if min_gap is not None else np.zeros(n, dtype=np.int64)
        pair_pos = lead[:, None] + np.arange(0, 2 * N, 2)  # (n, N) where each key goes
        np.put_along_axis(ep, pair_pos, keys, 1)
        np.put_along_axis(ep, pair_pos + 1, K + values, 1)
        q0 = 2 * N + d
        ep[:, q0::2], ep[:, q0 + 1 :: 2] = queries, K + answers
        return ep

    def target_costs(self) -> np.ndarray:
        """The best loss at each target position (targets are episode tokens 1 .. length−1), in closed form:
        a random token costs ln(#equally likely choices), an answer 0."""
        N, K = self.N, self.K
        costs = [math.log(self.V)]  # v_1 (k_1 is never a target)
        for i in range(1, N):
            costs += [math.log(K - i), math.log(self.V)]  # k_{i+1}: a key not used yet; its value
        costs += [math.log(self.F)] * self.d
        costs += [math.log(N), 0.0] * N  # a query (one of the N keys), its answer
        return np.asarray(costs)


class RecallDataModule(TokenDataModule):
    """`data=recall`: associative recall with a gap of d filler tokens. context_length = one episode − 1.

    `train_min_gap`: train episodes draw their gap from train_min_gap .. d (val and test stay at d). With only
    gap-d examples a model gets no gradient until it already remembers (a plateau of thousands of steps, as in
    the copy task); shorter gaps in training are the curriculum that lets a gated model find the mechanism.
    """

    episodic = True  # one episode a row, each from scratch

    def __init__(
        self,
        keys: int = 16,
        values: int = 16,
        pairs: int = 2,
        gap: int = 16,
        fillers: int = 4,
        train_min_gap: int | None = None,
        episodes: tuple[int, int, int] = (20_000, 1_000, 1_000),
        source_seed: int = 0,
        batch_size: int = 32,
        seed: int = 0,
        context_length: int | None = None,
        corpus: Literal["recall"] = "recall",  # the yaml names it for the run's summary
    ) -> None:
        if not 1 <= int(pairs) <= int(keys) <= 26 or not 2 <= int(values) <= 26:
            raise ConfigError(
                f"data.pairs={pairs}, keys={keys}, values={values}: need 1 ≤ pairs ≤ keys ≤ 26, 2 ≤ values ≤ 26"
            )
        if int(gap) < 0 or not 2 <= int(fillers) <= 8:
            raise ConfigError(f"data.gap={gap}, fillers={fillers}: need gap ≥ 0 and 2 ≤ fillers ≤ 8")
        if train_min_gap is not None and not 0 <= int(train_min_gap) <= int(gap):
            raise ConfigError(f"data.train_min_gap={train_min_gap}: must be between 0 and data.gap={gap} (or null)")
        self.recall = RecallSource(int(keys), int(values), int(pairs), int(gap), int(fillers))
        if context_length is not None and int(context_length) != self.recall.length - 1:
            raise ConfigError(
                f"data.context_length={context_length}: an episode here has {self.recall.length} tokens, so it must "
                f"be {self.recall.length - 1} (or null)"
            )
        super().__init__(corpus, "char", self.recall.length - 1, batch_size, seed)
        self.n_episodes = [int(n) for n in episodes]
        self.train_min_gap = None if train_min_gap is None else int(train_min_gap)
        self.source_seed = int(source_seed)
        self.episodes: dict[str, torch.Tensor] = {}

    def _split_tokens(self) -> dict[str, list[str]]:
        tokens = {}
        for i, (split, n) in enumerate(zip(SPLITS, self.n_episodes, strict=True)):
            # val and test always at gap d: the closed-form optimum and recall_acc are about that distance
            min_gap = self.train_min_gap if split == "train" else None
            ep = self.recall.sample(n, seed=self.source_seed * 1000 + 1 + i, min_gap=min_gap)
            tokens[split] = [self.recall.alphabet[j] for j in ep.ravel()]
        return tokens

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        for split in SPLITS:  # the vocabulary's ids, one episode a row
            self.episodes[split] = self.ids[split].view(-1, self.recall.length)

    @property
    def answer_positions(self) -> torch.Tensor:
        """Target indices (within a batch row) whose token is determined by the past: recall_acc scores these."""
        return self.recall.answer_positions - 1

    def optimal_loss(self, split: str = "val") -> float:
        return float(self.recall.target_costs().mean())

    def known_optimum(self) -> dict[str, float]:
        return {"chance_recall_acc": 1.0 / self.recall.V}

    def train_dataloader(self) -> EpisodeBatches:
        return EpisodeBatches(self.episodes["train"], self.batch_size, shuffle=True, seed=self.seed)

    def val_dataloader(self) -> EpisodeBatches:
        return EpisodeBatches(self.episodes["val"], self.batch_size, shuffle=False)

    def test_dataloader(self) -> EpisodeBatches:
        return EpisodeBatches(self.episodes["test"], self.batch_size, shuffle=False)
