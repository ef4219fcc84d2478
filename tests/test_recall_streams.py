"""The induction-heads and MQAR generators against brute-force references, and the stream evaluation
against one long forward pass."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from conftest import compose_config
from helpers import V, build, scalar_tags
from torch import nn

from seqlab.data import IGNORE
from seqlab.data.induction import InductionDataModule, InductionSource
from seqlab.data.mqar import MQARDataModule, chance, k50, mqar
from seqlab.data.stream_recall import evaluate, last_logits, limit, reading
from seqlab.errors import ConfigError
from seqlab.models.base import RecurrentModel
from seqlab.models.catalog import build_model, model_class, model_names
from seqlab.training.run import train

RECURRENT = [n for n in model_names() if model_class(n).recurrent]


# --- induction heads ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("distance", ["uniform", "log"])
@pytest.mark.parametrize("length", [3, 4, 17, 256])
def test_induction_trigger_appears_exactly_as_specified(length, distance):
    """Brute force, row by row: the trigger twice, at the drawn place and last; the answer is the token after the
    first, so it was given earlier; no other trigger; every place 0 .. length−3 is drawn (uniform)."""
    source = InductionSource(num_symbols=5)
    inputs, answers, first = source.sample(4000, length, seed=length, distance=distance)
    for row, answer, p in zip(inputs.tolist(), answers.tolist(), first.tolist(), strict=True):
        where = [i for i, tok in enumerate(row) if tok == source.trigger]
        assert where == [p, length - 1]
        assert 0 <= row[p + 1] < source.num_symbols and row[p + 1] == answer
    places = set(range(length - 2))
    assert set(first.tolist()) == places if distance == "uniform" else set(first.tolist()) <= places
    assert inputs.max() == source.trigger and set(answers.tolist()) == set(range(5))


def test_induction_log_distances():
    """distance="log": the trigger-to-trigger distance is log-uniform over 2 .. length − 1, so short and long
    recalls are equally common per octave; uniform puts most of them far."""
    source = InductionSource()
    _, _, first = source.sample(20_000, 256, seed=0, distance="log")
    d = 255 - first
    assert d.min() == 2 and d.max() == 255
    assert (d < 16).mean() == pytest.approx(np.log(16 / 2) / np.log(256 / 2), abs=0.02)
    _, _, first = source.sample(20_000, 256, seed=0)
    assert (255 - first < 16).mean() == pytest.approx(14 / 254, abs=0.01)


def test_induction_episodes_score_the_answer_only():
    source = InductionSource(num_symbols=16)
    x, y = source.episodes(50, 64, seed=0)
    inputs, answers, _ = source.sample(50, 64, seed=0)
    assert np.array_equal(x, inputs) and np.array_equal(y[:, -1], answers)
    assert (y[:, :-1] == IGNORE).all()


# --- MQAR ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("length", "pairs"), [(16, 4), (64, 4), (64, 16), (256, 64)])
def test_mqar_every_answer_was_given_earlier(length, pairs):
    """Brute force, row by row: the pairs come first with distinct keys (and values) from their halves of the
    vocabulary; each key is asked once, after the pairs; the target after a query is the value that followed
    that key's first appearance, and nothing else is scored."""
    V = 1024
    inputs, targets = mqar(300, length, pairs, V, seed=pairs)
    for x, y in zip(inputs.tolist(), targets.tolist(), strict=True):
        keys, values = x[0 : 2 * pairs : 2], x[1 : 2 * pairs : 2]
        assert len(set(keys)) == pairs and len(set(values)) == pairs
        assert all(1 <= k < V // 2 for k in keys) and all(V // 2 <= v < V for v in values)
        scored = [t for t, target in enumerate(y) if target != IGNORE]
        assert len(scored) == pairs and min(scored) >= 2 * pairs
        assert sorted(x[t] for t in scored) == sorted(keys)  # every key asked exactly once
        for t in scored:
            s = x.index(x[t])  # the query's first appearance, before it
            assert s < t and s % 2 == 0 and s < 2 * pairs and x[s + 1] == y[t]


def test_mqar_chance_level():
    """A model that does not recall is at chance: the answers are uniform over the vocabulary's upper half, so
    the best context-free guess (the commonest answer) is right ≈ 2/V of the time; knowing the sequence's values
    but not their keys, 1/K."""
    V, K = 64, 4
    _, targets = mqar(20_000, 32, K, V, seed=0)
    answers = targets[targets != IGNORE]
    counts = np.bincount(answers, minlength=V)
    assert counts[: V // 2].sum() == 0
    assert counts.max() / len(answers) == pytest.approx(chance(V, K)["blind"], rel=0.15)
    assert chance(V, K) == {"blind": 2 / V, "values_unbound": 1 / K}


def test_mqar_queries_come_early_more_often():
    """Zoology's power law on the gaps (a = 0.01): the first slot after the pairs is asked far more often than the last."""
    _, targets = mqar(5000, 64, 4, 1024, seed=1)
    scored = targets != IGNORE
    assert scored[:, 8].mean() > 5 * scored[:, 62].mean()


def test_mqar_refuses_sizes_that_do_not_fit():
    with pytest.raises(ValueError, match="pairs"):
        mqar(1, 64, 17, 1024, seed=0)
    with pytest.raises(ValueError, match="vocab_size"):
        mqar(1, 256, 4, 256, seed=0)


# --- the stream evaluation ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", RECURRENT)
def test_stream_equals_one_long_forward(name):
    """Read in chunks through the carried state, the logits after the last token equal one forward pass over
    the whole stream (float64), and the state held is the model's own state_bytes, whatever the length."""
    torch.manual_seed(0)
    model = build(name, hidden_size=8, emb_dim=8).double().eval()
    inputs = torch.randint(V, (3, 301))
    with torch.no_grad():
        whole = model(inputs)[:, -1]
    for chunk in (64, 1000):
        logits, held = last_logits(model, inputs, context_length=12, chunk=chunk)
        torch.testing.assert_close(logits, whole, rtol=1e-10, atol=1e-10)
        assert held == model.state_bytes(1) == model.state_bytes(1, 301)


class Oracle(RecurrentModel):
    """Solves induction heads exactly with a state of one-hot(target) and a flag 'the last token was the trigger'."""

    def __init__(self, source: InductionSource) -> None:
        super().__init__()
        V = source.vocab_size
        self.trigger, self.num_layers, self.hidden_size = source.trigger, 1, V + 1
        self.tok_emb = nn.Embedding.from_pretrained(torch.eye(V))
        self.head = nn.Linear(V + 1, V)

    def step_embedded(self, e_t, state):
        (h,) = state  # (1, B, V + 1): one-hot of the stored target, then the flag
        stored, flag = h[0, :, :-1], h[0, :, -1:]
        stored = flag * e_t + (1 - flag) * stored  # the token right after a trigger is the target
        flag = e_t[:, self.trigger : self.trigger + 1]
        h = torch.cat([stored, flag], dim=1)
        return h, (h[None],)

    def forward_embedded_with_state(self, e, state=None):
        state = self.initial_state(e.shape[0], e.device) if state is None else state
        outs = []
        for e_t in e.unbind(1):
            out, state = self.step_embedded(e_t, state)
            outs.append(out[:, :-1])
        return torch.stack(outs, 1), state  # the stored one-hot as logits


def test_evaluation_scores_an_oracle_and_a_window():
    """An exact solver is right on every stream through the chunked state; read as a window (what a non-recurrent
    model gets) the same solver sees the trigger only when it is inside the window, ≈ window / length."""
    source = InductionSource(num_symbols=8)
    oracle = Oracle(source)
    rows = evaluate(oracle, source, context_length=64, lengths=(256, 1024), n_streams=96, chunk=100)
    assert [r["accuracy"] for r in rows] == [1.0, 1.0]
    assert [r["state_bytes"] for r in rows] == [oracle.state_bytes(1)] * 2 and reading(oracle, 64) == "carried state"

    class Windowed(Oracle):
        recurrent = False
        max_context = 64

        def forward(self, idx):
            return self.forward_embedded_with_state(self.embed(idx))[0]

    windowed = Windowed(source)
    inputs, answers, first = source.sample(400, 1024, seed=5)
    logits, _ = last_logits(windowed, torch.from_numpy(inputs), context_length=64)
    hit = logits.argmax(-1).numpy() == answers
    in_window = first >= 1024 - 64  # trigger and target both within the last 64 tokens
    assert hit[in_window].all()
    assert hit[~in_window].mean() < 0.3  # outside: only an empty store that happens to match (argmax of zeros)


def test_transformer_row_says_why_it_stops():
    model = build_model("transformer", vocab_size=17, context_length=256)
    assert "cannot run past 256" in limit(model, 256)
    assert model.state_bytes(1, 2**16) == model.state_bytes(1, 256) > model.state_bytes(1, 128)
    assert limit(build_model("lstm", vocab_size=17, context_length=256), 256) is None


def test_transformer_state_bytes_is_its_cache():
    """state_bytes(B, n) is what prefill and step leave in the state, up to the window and past it."""
    torch.manual_seed(0)
    model = build_model("transformer", vocab_size=11, context_length=8)
    idx = torch.randint(11, (2, 12))
    _, state = model.prefill(idx[:, :3])
    for n in range(3, 12):
        assert sum(s.nelement() * s.element_size() for s in state) == model.state_bytes(2, n)
        _, state = model.step(idx[:, n], state)


# --- the data modules and their runs ----------------------------------------------------------------------------
def test_induction_module_batches_score_the_answer():
    dm = InductionDataModule(num_symbols=5, context_length=20, episodes=(64, 10, 10), batch_size=8)
    dm.setup()
    assert dm.vocab.tokens[: dm.source.vocab_size] == [*"abcde", "^"]  # the source's ids are the vocabulary's
    for x, y in dm.val_dataloader():
        assert x.shape[1] == 20 and (x[:, -1] == dm.source.trigger).all() and (y[:, :-1] == IGNORE).all()
        first = (x[:, :-1] == dm.source.trigger).float().argmax(1)
        assert torch.equal(y[:, -1], x[torch.arange(len(x)), first + 1])  # the answer is the token after ^
    assert sum(len(x) for x, _ in dm.test_dataloader()) == 10
    assert len(list(dm.train_dataloader())) == 64 // 8
    assert dm.answer_positions.tolist() == [19]
    assert {type(c).__name__ for c in dm.callbacks()} == {"KnownSource", "StreamRecall"}


def test_mqar_module_batches_one_k_at_a_time():
    dm = MQARDataModule(pairs=(2, 4), lengths=(16, 32), num_tokens=64, examples=(40, 10, 6), batch_size=4)
    dm.setup()
    assert dm.context_length == 32 and dm.vocab_size == 65 and dm.vocab.tokens[:2] == ["_", "k1"]
    seen = Counter()
    for x, y in dm.train_dataloader():
        k = int((y != IGNORE).sum(1)[0])
        assert ((y != IGNORE).sum(1) == k).all() and x.shape[1] == {2: 16, 4: 32}[k]
        seen[k] += len(x)
    assert seen == {2: 40, 4: 40}
    assert sum(len(x) for x, _ in dm.test_dataloader()) == 12
    zeros = MQARDataModule(
        pairs=(2,), lengths=(16,), num_tokens=64, examples=(4, 4, 4), random_fillers=False, batch_size=2
    )
    zeros.setup()
    x, y = next(iter(zeros.test_dataloader()))
    assert ((x[:, 4:] == 0) == (y[:, 4:] == IGNORE)).all()  # after the pairs: queries, and `_` between them


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"pairs": (4, 8), "lengths": (64,)}, r"data\.lengths=\[64\]: need one sequence length per entry"),
        ({"pairs": (32,), "lengths": (64,)}, r"data\.lengths=\[64\]: each must be even and ≥ 4 × its pairs"),
        ({"pairs": (4,), "lengths": (64,), "num_tokens": 64}, r"data\.num_tokens=64: must exceed every length"),
        ({"pairs": (4, 4), "lengths": (64, 64)}, r"data\.pairs=\[4, 4\]: need one or more distinct"),
    ],
)
def test_mqar_bad_sizes_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        MQARDataModule(**overrides)


def test_induction_run_reads_the_streams(tmp_path):
    """A tiny run: the streams after the test, in metrics.json (the same state bytes at every length) and in
    TensorBoard against the length."""
    quick = [
        "model=lstm",
        "model.hidden_size=16",
        "model.emb_dim=8",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
    ]
    small = [
        "data.context_length=16",
        "data.episodes=[64,16,16]",
        "data.stream_lengths=[64,256]",
        "data.stream_count=8",
    ]
    metrics = train(compose_config(["data=induction", *quick, *small, "callbacks.samples=null"], tmp_path))
    assert metrics["status"] == "ok" and 0 <= metrics["recall_acc"] <= 1 and metrics["chance_recall_acc"] == 1 / 16
    streams = metrics["streams"]
    assert streams["read"] == "carried state" and streams["limit"] is None
    assert [r["length"] for r in streams["rows"]] == [64, 256]
    assert {r["state_bytes"] for r in streams["rows"]} == {2 * 16 * 4}  # h and c of one layer, float32
    assert {"streams/accuracy", "streams/state_bytes", "val/recall_acc"} <= scalar_tags(tmp_path)


def test_mqar_run_reports_each_k(tmp_path):
    quick = ["model=transformer", "model.hidden_size=16", "trainer.max_steps=3", "trainer.val_check_interval=3"]
    small = [
        "data.pairs=[2,4]",
        "data.lengths=[16,32]",
        "data.num_tokens=64",
        "data.examples=[32,8,8]",
        "data.batch_size=8",
    ]
    metrics = train(compose_config(["data=mqar", *quick, *small, "callbacks.samples=null"], tmp_path))
    assert metrics["status"] == "ok"
    rows = metrics["mqar"]
    assert [(r["pairs"], r["length"]) for r in rows] == [(2, 16), (4, 32)]
    model = build_model("transformer", vocab_size=65, context_length=32, hidden_size=16)
    assert [r["state_bytes"] for r in rows] == [model.state_bytes(1, 16), model.state_bytes(1, 32)]
    assert all(0 <= r["recall_acc"] <= 1 for r in rows) and "k50" in metrics
    assert {"test/recall_acc/K=02", "test/recall_acc/K=04", "val/recall_acc"} <= scalar_tags(tmp_path)


def test_k50_is_the_largest_k_recalled_at_half():
    rows = [{"pairs": 4, "recall_acc": 0.99}, {"pairs": 8, "recall_acc": 0.5}, {"pairs": 16, "recall_acc": 0.1}]
    assert k50(rows) == 8 and k50(rows[2:]) is None


def test_the_streams_headline_is_recall_at_the_longest_length_at_each_models_chosen_lr() -> None:
    from seqlab.analysis.streams import headline

    def row(model, lr, seed, loss, length=None, acc=None):
        base = {"model": model, "hidden_size": 64, "lr": lr, "seed": seed, "status": "ok", "best_val_loss": loss}
        return base | ({"length": length, "accuracy": acc} if length else {})

    rows = [row("lstm", 1e-3, 0, 0.5, 1024, 1.0), row("lstm", 1e-3, 0, 0.5, 65536, 0.2)]  # the worse lr
    rows += [row("lstm", 3e-3, s, 0.1, 65536, acc) for s, acc in enumerate([0.9, 0.8, 1.0])]  # chosen: mean 0.90
    rows += [row("transformer", 3e-3, 0, 0.3)]  # a job without streams
    text = headline(rows)
    assert "streams of 65,536 tokens (mean of 3 seeds" in text and "lstm 0.90" in text
    assert "not read at 65,536: transformer" in text
