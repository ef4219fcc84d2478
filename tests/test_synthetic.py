"""Sources with a known optimum: the exact numbers against independent estimates from long samples."""

import itertools
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config
from helpers import scalar_tags

from seqlab.data.synthetic import (
    MarkovDataModule,
    MarkovSource,
    RecallDataModule,
    RecallSource,
    chunked_optimum,
    entropy,
)
from seqlab.errors import ConfigError
from seqlab.training.run import train


def plug_in_entropy(rows: np.ndarray) -> float:
    """Empirical entropy (nats) of the rows of an (n, m) array of small non-negative ints."""
    base = int(rows.max()) + 1
    codes = rows.astype(np.int64) @ base ** np.arange(rows.shape[1], dtype=np.int64)  # one int per distinct row
    counts = np.bincount(np.unique(codes, return_inverse=True)[1])
    return float(entropy(counts / counts.sum()))


def test_markov_entropies_match_a_long_sample():
    """H(X_t | last n) from the stationary distribution vs the empirical conditional entropy of 500k tokens,
    H(n+1-grams) − H(n-grams) counted in the sample (plug-in bias ≈ cells / 2N, well below the tolerance)."""
    order = 3
    source = MarkovSource(num_symbols=4, order=order, alpha=0.5, seed=3)
    x = source.sample(500_000, seed=7)
    for n in range(order + 2):  # n = order + 1 checks that more history than k buys nothing
        grams = np.lib.stride_tricks.sliding_window_view(x, n + 1)
        empirical = plug_in_entropy(grams) - (plug_in_entropy(grams[:, :-1]) if n else 0.0)
        assert source.conditional_entropy(n) == pytest.approx(empirical, abs=5e-3)
    assert source.entropy_rate == pytest.approx(source.conditional_entropy(order), abs=1e-9)
    freq = np.bincount(x, minlength=4) / len(x)  # the sample is stationary from its first token
    marginal = source.stationary.reshape(-1, 4).sum(0)
    np.testing.assert_allclose(freq, marginal, atol=5e-3)


def test_markov_source_loss_is_the_chains_own_score_of_the_sample():
    """`loss_on` against a step-by-step scoring with P(x | last n) summed out of π and the table by loops; and on
    a long sample it meets its expectation, `chunked_optimum`."""
    V, k, T = 3, 2, 5
    source = MarkovSource(num_symbols=V, order=k, alpha=0.5, seed=4)
    x = source.sample(2000, seed=1)

    def p_next(history: tuple[int, ...], nxt: int) -> float:  # P(x_t = nxt | the last len(history) symbols)
        n = len(history)
        num = den = 0.0
        for earlier in itertools.product(range(V), repeat=k - n):
            s = 0
            for sym in (*earlier, *history):
                s = s * V + sym
            num += source.stationary[s] * source.table[s, nxt]
            den += source.stationary[s]
        return num / den

    losses = [-math.log(p_next(tuple(x[max(0, t - min((t - 1) % T + 1, k)) : t]), x[t])) for t in range(1, len(x))]
    assert source.loss_on(x, T) == pytest.approx(np.mean(losses), rel=1e-12)
    long = source.sample(400_000, seed=2)
    best = [source.conditional_entropy(n) for n in range(k + 1)]
    assert source.loss_on(long, T) == pytest.approx(chunked_optimum(best, len(long), T), abs=0.01)


def test_chunked_optimum_counts_the_short_histories_at_chunk_starts():
    best = [3.0, 2.0, 1.0]  # the best loss given 0, 1, >= 2 tokens
    # 9 tokens -> 8 targets in chunks of 4: each chunk's first target sees 1 token, the rest >= 2
    assert chunked_optimum(best, n_tokens=9, context_length=4) == pytest.approx((2 + 1 + 1 + 1) / 4)


def test_recall_closed_form_matches_the_episode_entropy():
    """Σ of the per-target closed-form costs = H(episode) − H(first token), here estimated by counting the
    distinct episodes of a small task in a large sample (3·2 key orders × 2² values × 2 fillers × 2² queries)."""
    source = RecallSource(keys=3, values=2, pairs=2, gap=1, fillers=2)
    ep = source.sample(400_000, seed=0)
    empirical = plug_in_entropy(ep) - plug_in_entropy(ep[:, :1])
    assert source.target_costs().sum() == pytest.approx(empirical, abs=5e-3)
    assert source.target_costs().sum() == pytest.approx(math.log(6 * 4 * 2 * 4 / 3))
    # the answers are determined: each equals the value stored with the queried key
    for row in ep[:100]:
        stored = dict(zip(row[0:4:2], row[1:4:2], strict=True))
        for pos in source.answer_positions.tolist():
            assert row[pos] == stored[row[pos - 1]]
    assert (source.target_costs()[source.answer_positions - 1] == 0).all()  # target i is episode token i + 1


def test_markov_splits_are_independent_and_reproducible():
    kwargs = dict(order=2, num_symbols=5, alpha=0.5, lengths=(5000, 2000, 2000), context_length=16)
    dm, again = MarkovDataModule(**kwargs), MarkovDataModule(**kwargs, seed=99)  # seed: training only
    dm.setup()
    again.setup()
    assert dm.vocab_size == 6  # five symbols and <unk>
    assert all(torch.equal(dm.ids[s], again.ids[s]) for s in ("train", "val", "test"))
    assert not torch.equal(dm.ids["val"][:2000], dm.ids["test"][:2000])
    other = MarkovDataModule(**kwargs, source_seed=1)
    other.setup()
    assert not torch.equal(dm.ids["train"], other.ids["train"])
    assert dm.optimal_loss("val") > dm.source.entropy_rate  # chunk starts see fewer than k tokens


def test_recall_batches_are_whole_episodes():
    dm = RecallDataModule(keys=5, values=4, pairs=2, gap=3, fillers=2, episodes=(50, 10, 10), batch_size=4)
    dm.setup()
    assert dm.context_length == 4 * 2 + 3 - 1
    key_ids = {dm.vocab.index[c] for c in dm.recall.alphabet[:5]}
    for x, y in dm.val_dataloader():
        assert x.shape[1] == dm.context_length and torch.equal(x[:, 1:], y[:, :-1])
        assert all(int(k) in key_ids for k in x[:, 0])  # every row starts an episode
    assert sum(len(x) for x, _ in dm.val_dataloader()) == 10  # each val episode once
    answers = Counter(int(a) for _, y in dm.train_dataloader() for a in y[:, dm.answer_positions].ravel())
    assert set(answers) <= {dm.vocab.index[c] for c in dm.recall.alphabet[5:9]}  # answers are values


@pytest.mark.parametrize(
    "bad",
    [
        {"order": 0},
        {"num_symbols": 1},
        {"alpha": 0},
        {"lengths": (100, 10, 100)},
    ],
)
def test_markov_bad_config(bad: dict):
    with pytest.raises(ConfigError, match=f"data.{next(iter(bad))}="):
        MarkovDataModule(**{"lengths": (1000, 1000, 1000), "context_length": 16, **bad})


def test_recall_bad_context_length():
    with pytest.raises(ConfigError, match=r"data\.context_length=10: an episode here has 24 tokens"):
        RecallDataModule(pairs=2, gap=16, context_length=10)


@pytest.mark.slow
@pytest.mark.parametrize("data", ["markov", "recall"])
def test_known_source_run_reports_excess(data: str, tmp_path: Path):
    small = (
        ["data.lengths=[20000,5000,5000]", "data.context_length=32"]
        if data == "markov"
        else ["data.episodes=[200,50,50]", "data.gap=4"]
    )
    quick = ["model=rnn", "model.hidden_size=16", "trainer.max_steps=4", "trainer.val_check_interval=2"]
    metrics = train(compose_config([f"data={data}", *quick, *small], tmp_path))
    assert metrics["status"] == "ok"
    assert metrics["excess_loss"] == pytest.approx(metrics["test_loss"] - metrics["optimal_loss"])
    assert metrics["optimal_ppl"] == pytest.approx(math.exp(metrics["optimal_loss"]))
    tags = scalar_tags(tmp_path)
    assert {"val/excess_loss", "val/optimal_loss", "test/excess_loss"} <= tags
    if data == "markov":  # the chain's own score on the test tokens, a few sampling errors from its expectation
        assert metrics["excess_over_source"] == pytest.approx(metrics["test_loss"] - metrics["source_loss"])
        assert metrics["source_loss"] == pytest.approx(metrics["optimal_loss"], abs=0.05)
        assert {"val/source_loss", "val/excess_over_source", "test/excess_over_source"} <= tags
    if data == "recall":  # every random token costs exactly ln(#choices): no sample noise, no source_loss
        assert "source_loss" not in metrics and "val/source_loss" not in tags
        assert 0 <= metrics["recall_acc"] <= 1 and "val/recall_acc" in tags
        assert metrics["hparams"]["context_length"] == 4 * 2 + 4 - 1


@pytest.mark.parametrize("preset", ["markov_limit", "recall_gap", "context_use"])
def test_presets_compose(preset: str, tmp_path: Path):
    cfg = compose_config([f"experiment={preset}"], tmp_path)
    assert cfg.hydra.sweeper.params.model
    if preset == "recall_gap":
        dm = RecallDataModule(**{k: v for k, v in cfg.data.items() if k not in ("_target_", "data_dir")})
        assert dm.context_length == 4 + cfg.data.gap - 1 and dm.train_min_gap == 1
