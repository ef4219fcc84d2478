"""State-tracking tasks: every generator against a plain-Python reference, and the chance levels."""

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config
from helpers import scalar_tags

from seqlab.data.batches import IGNORE
from seqlab.data.state_tracking import TASKS, StateTrackingDataModule, Task, encode
from seqlab.errors import ConfigError
from seqlab.training.run import train


def reference(task: Task, symbols: list[int]) -> list[int]:
    """The running answer, one symbol at a time, the obvious way; a_0 first."""
    out = [0]
    if task.name == "parity":
        for s in symbols:
            out.append((out[-1] + s) % 2)
    elif task.name == "mod_count":
        for s in symbols:
            out.append((out[-1] + s) % task.modulus)
    elif task.name == "dyck_depth":
        stack = []
        for s in symbols:
            if s == 0:
                stack.append("(")
            else:
                assert stack, "a closing bracket at depth 0: not a Dyck word"
                stack.pop()
            assert len(stack) <= task.max_depth
            out.append(len(stack))
    else:  # the word problem: apply each permutation to the arrangement so far
        perms = list(itertools.permutations(range(3 if task.name == "s3" else 5)))
        p = perms[0]
        for s in symbols:
            p = tuple(perms[s][i] for i in p)  # p, then x: (x ∘ p)(i) = x(p(i))
            out.append(perms.index(p))
    return out


@pytest.mark.parametrize(
    "task", [Task(n) for n in TASKS] + [Task("mod_count", modulus=5), Task("dyck_depth", max_depth=2)]
)
def test_generator_matches_the_reference(task):
    symbols, answers, sizes = task.sample(50, (3, 40), seed=1)
    assert sizes.min() >= 3 and sizes.max() <= 40 and len(set(sizes.tolist())) > 10
    assert symbols.min() >= 0 and symbols.max() < task.num_symbols
    for row, ans in zip(symbols, answers, strict=True):
        assert ans.tolist() == reference(task, row.tolist())
    again = task.sample(50, (3, 40), seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(again, (symbols, answers, sizes), strict=True))
    assert not np.array_equal(task.sample(50, (3, 40), seed=2)[0], symbols)


def test_s3_is_not_commutative_and_the_word_problem_knows_it():
    """The order matters: two transpositions in either order give different products (a cyclic group would not)."""
    task = Task("s3")
    a, b = task.group.index((1, 0, 2)), task.group.index((0, 2, 1))
    ab, ba = task.run(np.array([[a, b], [b, a]]))[:, -1]
    assert ab != ba


def test_encode_puts_start_first_answers_after_the_inputs_and_ignores_padding():
    task = Task("mod_count", modulus=3)
    symbols, answers, sizes = task.sample(8, (3, 10), seed=0)
    x, y = encode(task, symbols, answers, sizes, IGNORE)
    assert x.shape == y.shape == (8, 11) and (x[:, 0] == 0).all()
    vocab = task.vocab
    for row in range(8):
        n = sizes[row]
        assert [vocab[i] for i in x[row, 1 : n + 1]] == [f"x{s}" for s in symbols[row, :n]]
        assert [vocab[i] for i in y[row, : n + 1]] == [f"y{a}" for a in answers[row, : n + 1]]
        assert (y[row, n + 1 :] == IGNORE).all() and (x[row, n + 1 :] == 0).all()


@pytest.mark.parametrize(
    ("task", "chance"),
    [
        (Task("parity"), 1 / 2),
        (Task("mod_count", modulus=3), 1 / 3),
        (Task("mod_count", modulus=5), 1 / 5),
        (Task("dyck_depth", max_depth=4), 1 / 4),
        (Task("dyck_depth", max_depth=2), 1 / 2),
        (Task("s3"), 1 / 6),
        (Task("s5"), 1 / 120),
    ],
)
def test_chance_is_the_best_constant_guess(task, chance):
    """The stated chance level = the most frequent answer's share past the training lengths (long sequences,
    positions 41..256), by counting."""
    assert task.chance == pytest.approx(chance)
    _, answers, _ = task.sample(400, (256, 256), seed=3)
    counts = np.bincount(answers[:, 41:].ravel(), minlength=task.num_answers)
    assert counts.max() / counts.sum() == pytest.approx(chance, abs=0.01)


@pytest.mark.parametrize("label", ["parity", "mod3", "mod5", "dyck4", "dyck2", "s3", "s5"])
def test_labels_name_the_tasks(label):
    assert Task.parse(label).label == label


def test_unknown_task_and_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="unknown task"):
        Task("copy")
    with pytest.raises(ValueError, match="modulus=1"):
        Task("mod_count", modulus=1)


SMALL = {"sequences": (300, 60, 60), "bucket_sequences": 40, "stream_sequences": 6, "stream_length": 300}


def module(task: str = "parity", **kwargs) -> StateTrackingDataModule:
    dm = StateTrackingDataModule(task=task, **{**SMALL, **kwargs})
    dm.setup("fit")
    return dm


class Oracle(torch.nn.Module):
    """The right answer from the inputs seen so far, as one-hot logits; `recurrent`: the running answer is a state
    that forward_with_state carries (so a stream read in chunks is right only if the state really is carried)."""

    def __init__(self, task: Task, recurrent: bool) -> None:
        super().__init__()
        self.task, self.recurrent, self.V = task, recurrent, len(task.vocab) + 1

    def forward_with_state(self, x, state=None):
        state = torch.zeros(len(x), dtype=torch.long) if state is None else state
        logits = torch.zeros(*x.shape, self.V)
        for t in range(x.shape[1]):  # START (id 0) resets; parity: x1 (id 2) flips
            state = torch.where(x[:, t] == 0, 0, (state + (x[:, t] == 2).long()) % 2)
            logits[torch.arange(len(x)), t, 1 + self.task.num_symbols + state] = 1
        return logits, state

    def forward(self, x):
        return self.forward_with_state(x)[0]


def test_rows_are_the_generators_batched_by_length_without_padding():
    dm = module(train_lengths=(3, 12), buckets=((12, 20), (20, 30)))
    assert dm.vocab.tokens == [*dm.task.vocab, "<unk>"] and dm.context_length == 31  # START + the longest bucket
    lengths = set()
    for x, y in dm.train_dataloader():
        assert x.shape == y.shape and (y != IGNORE).all() and (x[:, 0] == 0).all()
        lengths.add(x.shape[1])
        answers = y - 1 - dm.task.num_symbols
        for row_x, row_a in zip(x, answers, strict=True):
            assert row_a.tolist() == reference(dm.task, (row_x[1:] - 1).tolist())
    assert lengths == set(range(4, 14))  # 3..12 symbols after START
    x, y = dm.long["20-30"]
    assert x.shape == (40, 31) and ((y != IGNORE).sum(1) - 1).min() >= 20


def test_evaluation_scores_past_the_training_lengths_and_carries_the_state_through_streams():
    """An oracle scores 1 everywhere, on the streams only if their chunks continue the state; a constant guess
    scores about the chance level; a model without a state skips the streams."""
    dm = module(context_length=None, buckets=((40, 64), (64, 128)))
    assert dm.context_length == 129 and dm.stream_length > dm.context_length  # the stream takes 3 chunks
    right = dm.evaluate(Oracle(dm.task, recurrent=True))
    assert right == {"3-40": 1.0, "40-64": 1.0, "64-128": 1.0, "stream-300": 1.0}
    assert "stream-300" not in dm.evaluate(Oracle(dm.task, recurrent=False))

    class Constant(Oracle):
        def forward_with_state(self, x, state=None):
            logits = torch.zeros(*x.shape, self.V)
            logits[..., 1 + self.task.num_symbols] = 1  # always "even"
            return logits, state

    guess = dm.evaluate(Constant(dm.task, recurrent=True))
    assert all(abs(acc - 0.5) < 0.1 for acc in guess.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_lengths": (10, 5)}, "data.train_lengths"),
        ({"buckets": ((30, 64),)}, "data.buckets"),
        ({"context_length": 100}, "data.context_length=100"),
        ({"task": "mod1"}, r"data\.task=mod1: one of parity, mod<k>"),
        ({"task": "mod_count"}, "data.task=mod_count"),
    ],
)
def test_bad_settings_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        StateTrackingDataModule(**kwargs)


@pytest.mark.slow
def test_a_run_reports_accuracy_per_bucket_and_chance(tmp_path: Path):
    data = [f"data.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in SMALL.items()]
    cfg = ["data=state_tracking", "data.task=mod3", "model=gru", "model.hidden_size=16", "model.emb_dim=8"]
    quick = ["trainer.max_steps=4", "trainer.val_check_interval=2", "callbacks.samples=null"]
    metrics = train(compose_config([*cfg, *data, *quick], tmp_path))
    assert metrics["status"] == "ok", metrics.get("reason")
    st = metrics["state_tracking"]
    assert st["task"] == "mod3" and st["chance"] == pytest.approx(1 / 3)
    assert set(st["acc"]) == {"3-40", "40-64", "64-128", "128-256", "stream-300"}
    assert all(0 <= acc <= 1 for acc in st["acc"].values())
    assert {"st/acc/128-256", "st/acc/stream-300", "st/chance"} <= scalar_tags(tmp_path)


def test_the_preset_sweeps_every_study_model_at_matched_sizes(tmp_path: Path):
    """experiment=state_tracking: each conf/st_model/ entry composes, builds at ≈21k parameters (the Transformer
    with its 257 learned positions at most 35k), and the sweep lists every one of them and the tasks."""
    from hydra.utils import instantiate

    names = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "st_model").glob("*.yaml"))
    cfg = compose_config(["experiment=state_tracking"], tmp_path)
    assert sorted(cfg.hydra.sweeper.params.st_model.split(",")) == names
    assert cfg.hydra.sweeper.params["data.task"] == "parity,mod3,mod5,dyck4,s3,s5"
    for name in names:
        cfg = compose_config(["experiment=state_tracking", f"st_model={name}", "+st_lr={" + name + ": 0.02}"], tmp_path)
        assert cfg.optim.lr == 0.02 and cfg.optim.weight_decay == 0
        model = instantiate(cfg.model, vocab_size=14, context_length=257)
        n = sum(p.numel() for p in model.parameters())
        assert 19_000 <= n <= (35_000 if name == "transformer" else 23_000), (name, n)
        assert cfg.model.get("signed", False) == name.endswith("_signed")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.bucket_sequences=0", "data.bucket_sequences=0: must be a positive integer"),
        ("data.sequences=[100,0,10]", "data.sequences=[100, 0, 10]: must be a positive integer"),
        ("data.train_lengths=[0,40]", "data.train_lengths=[0, 40]: must be a positive integer"),
        ("data.task=mod1", "data.task=mod1: one of parity, mod<k> (k ≥ 2), dyck<D> (D ≥ 2), s3, s5"),
    ],
)
def test_bad_values_are_one_line_before_training(override, message, tmp_path, capsys):
    from helpers import expect_config_error

    line = expect_config_error(["data=state_tracking", override], tmp_path, capsys)
    assert line == f"error: {message}"
