"""seqlab.analysis.probe on constructed cases where the right answer is known."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, ROOT, SHAKESPEARE, compose_config
from helpers import scalar_tags
from omegaconf import OmegaConf
from torch import nn

from seqlab.analysis.probe import (
    chunk_loss,
    hidden_states,
    linear_probe,
    main,
    one_hot_last,
    picture_start,
    run_data_dir,
    saturation,
    shuffle_before_last,
    text_properties,
    window_losses,
)
from seqlab.models import RNN, PaddedMLP, Unigram, WindowMLP


class BagOfEmbeddings(nn.Module):
    """Position t predicts from the mean of the embeddings of x_1..x_t: blind to their order."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.emb, self.head = nn.Embedding(vocab_size, 16), nn.Linear(16, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        counts = torch.arange(1, idx.shape[1] + 1)[:, None]
        return self.head(self.emb(idx).cumsum(1) / counts)


def ids_and_ends(T: int, n: int = 400, vocab: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(vocab, (n + T + 1,), generator=torch.Generator().manual_seed(0))
    return ids, torch.arange(T - 1, T - 1 + n)


@pytest.mark.parametrize("model", [Unigram(11, 16), BagOfEmbeddings(11)])
def test_order_blind_models_lose_nothing_to_shuffling(model: nn.Module):
    torch.manual_seed(0)
    nn.init.normal_(next(model.parameters()))  # a non-uniform unigram, so a change would show
    ids, ends = ids_and_ends(16)
    intact = window_losses(model, ids, ends, 16)
    for m in (1, 4):
        torch.testing.assert_close(window_losses(model, ids, ends, 16, shuffle_before_last(m)), intact)


def test_order_aware_model_notices_shuffling():
    torch.manual_seed(0)
    model = WindowMLP(11, 16, hidden_size=32, emb_dim=8, window=4)
    ids, ends = ids_and_ends(16)
    intact = window_losses(model, ids, ends, 16)
    assert not torch.allclose(window_losses(model, ids, ends, 16, shuffle_before_last(1)), intact)
    # tokens before the last 4 are outside its window: shuffling them changes nothing
    torch.testing.assert_close(window_losses(model, ids, ends, 16, shuffle_before_last(4)), intact)


def test_window_mlp_context_use_is_flat_beyond_its_window():
    torch.manual_seed(0)
    model = WindowMLP(11, 32, hidden_size=32, emb_dim=8, window=4)
    ids, ends = ids_and_ends(32)
    losses = {k: window_losses(model, ids, ends, k).mean() for k in (1, 2, 4, 8, 16, 32)}
    for k in (8, 16, 32):
        torch.testing.assert_close(losses[k], losses[4])
    assert losses[1] != losses[4] and losses[2] != losses[4]  # inside the window, more context changes the loss


def test_window_losses_agree_with_a_plain_forward():
    """The last position of each window scored alone equals the model's own loss at that position."""
    torch.manual_seed(0)
    model = RNN(11, 8, hidden_size=16, emb_dim=8)
    ids, ends = ids_and_ends(8, n=5)
    losses = window_losses(model, ids, ends, 8)
    for i, t in enumerate(ends.tolist()):
        logits = model(ids[t - 7 : t + 1][None])[0, -1]
        torch.testing.assert_close(losses[i], nn.functional.cross_entropy(logits, ids[t + 1]))


def test_saturation_is_the_first_k_within_tolerance_of_the_best():
    rows = [{"k": 1, "loss": 2.0}, {"k": 2, "loss": 1.5}, {"k": 4, "loss": 1.305}, {"k": 8, "loss": 1.3}]
    assert saturation(rows) == (4, 1.3)
    assert saturation([*rows, {"k": "all", "loss": 1.2}]) == ("all", 1.2)  # the carried state still gains


def test_padded_mlp_cannot_go_past_t_max():
    model = PaddedMLP(11, 8, hidden_size=8, emb_dim=4)
    ids, _ = ids_and_ends(8)
    assert chunk_loss(model, ids, 8, 8)[1] is None  # no position past T at 1×
    with pytest.raises(ValueError, match="sees at most 8 tokens"):
        chunk_loss(model, ids, 16, 8)


def test_probe_recovers_a_planted_property_and_fails_on_noise():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(3, (3000,), generator=g)
    noise = torch.randn(3000, 32, generator=g)
    planted = noise.clone()
    planted[:, 5] += 4.0 * labels  # one unit carries the property, among 31 that do not
    assert linear_probe(planted, labels) > 0.9
    assert linear_probe(noise, labels) < 0.4  # chance: 1/3


def test_balanced_probe_finds_a_rare_property_that_plain_accuracy_hides():
    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(6000, generator=g) < 0.02).long()  # 2 % positives, like "inside quotes"
    noise = torch.randn(6000, 32, generator=g)
    planted = noise.clone()
    planted[:, 5] += 3.0 * labels
    assert linear_probe(noise, labels) > 0.97  # plain accuracy: "never" is right 98 % of the time
    assert linear_probe(planted, labels, balanced=True) > 0.9
    assert 0.35 < linear_probe(noise, labels, balanced=True) < 0.65  # chance: 1/2


def test_text_properties():
    p = text_properties('ab "c d" (e)\nxy')
    assert p["in_quotes"].tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert p["in_brackets"].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    assert p["since_space"].tolist()[:4] == [1, 2, 0, 1]
    assert p["line_position"].tolist()[-3:] == [0, 0, 0]  # the newline, then a new line starts at column 0


def test_the_unit_picture_starts_before_a_rare_property_first_appears():
    inside = np.zeros(5000, dtype=int)
    inside[3000:3040] = 1  # one quoted stretch, far into the text
    assert picture_start(inside) == 2920
    inside[4990:] = 1  # near the end: the picture still has its full length
    assert picture_start(inside[3100:]) == 5000 - 3100 - 640
    assert picture_start(np.zeros(100, dtype=int)) == 0  # never varies


def test_hidden_states_and_one_hot_shapes():
    torch.manual_seed(0)
    model = RNN(11, 8, hidden_size=16, emb_dim=8)
    ids, _ = ids_and_ends(8, n=20)
    states, names = hidden_states(model, ids)
    assert states.shape == (len(ids), len(names))
    _, final = model.forward_with_state(ids[None])  # the fused path's last state
    torch.testing.assert_close(states[-1], torch.cat([s[:, 0].flatten() for s in final]))
    onehot = one_hot_last(ids, 3, 11)
    assert onehot.shape == (len(ids), 33) and (onehot[2:].sum(1) == 3).all() and onehot[0].sum() == 1


@pytest.mark.slow
def test_probe_cli_on_a_trained_run(tmp_path: Path, tiny_text: Path, capsys: pytest.CaptureFixture):
    """Train a tiny char rnn and a tiny mlp_padded, probe both: tables, plots, TensorBoard, one-line notes."""
    env = {"PYTHONPATH": str(ROOT / "src"), "SEQLAB_DATA_DIR": str(DATA_DIR), "PATH": "/usr/bin:/bin"}
    quick = ["trainer.max_steps=4", "trainer.val_check_interval=2", "model.hidden_size=16", "data.context_length=16"]
    for model in ("rnn", "mlp_padded"):
        run = tmp_path / model
        cmd = [sys.executable, "train.py", f"model={model}", "data=text_file", f"data.path={tiny_text}", *quick]
        subprocess.run([*cmd, f"hydra.run.dir={run}"], cwd=ROOT, env=env, check=True, capture_output=True)
        assert main([str(run), "--tokens", "256", "--chars", "600", "--ks", "1", "3", "99"]) == 0  # in-process
        ks = [line.split(",")[0] for line in (run / "probe" / "probe_context_use.csv").read_text().splitlines()[1:]]
        assert ks[:3] == ["1", "3", "16"]  # the asked ks within 1..T, and T itself
        files = {p.name for p in (run / "probe").iterdir()}
        assert {"probe.md", "probe_context_use.csv", "probe_order.csv", "probe_length.csv", "probe_params.csv"} <= files
        assert "probe/context_use/loss" in scalar_tags(run)
        out = capsys.readouterr().out
        assert "context use: within 0.01 nats of its best" in out
        if model == "rnn":
            assert "probe_hidden_state.csv" in files and "probe_unit_since_space.png" in files
            assert "all" in (run / "probe" / "probe_context_use.csv").read_text()  # the unbounded-history point
        else:  # one line, no traceback
            assert "cannot run: mlp_padded sees at most 16 tokens" in out
    assert main([str(tmp_path / "nope")]) == 2


@pytest.mark.parametrize("content", ["garbage", "foreign", "truncated"])
def test_a_corrupt_checkpoint_is_one_line(content: str, tmp_path: Path, capsys: pytest.CaptureFixture):
    """torch's UnpicklingError used to end in a traceback advising weights_only=False."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(compose_config(["data=text_file", "data.path=any.txt"], run), run / ".hydra" / "config.yaml")
    ckpt = run / "checkpoints" / "best-4.ckpt"
    ckpt.parent.mkdir()
    if content == "garbage":
        ckpt.write_bytes(bytes(range(256)) * 8)
    else:
        torch.save({"state_dict": {"w": torch.zeros(64, 64)}}, ckpt)  # another program's checkpoint
        if content == "truncated":
            ckpt.write_bytes(ckpt.read_bytes()[:1000])
    assert main([str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {ckpt}: not a seqlab checkpoint (loading it raised ") and err.count("\n") == 1
    assert "weights_only" not in err
    assert sorted(p.name for p in run.iterdir()) == [".hydra", "checkpoints"]  # no probe/ left behind


def test_the_cli_on_a_corrupt_checkpoint_prints_one_line(tmp_path: Path):
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"not a checkpoint")
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("data: {corpus: text_file}\npaths: {data_dir: data}\n")
    done = subprocess.run([sys.executable, "-m", "seqlab.probe", str(ckpt)], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr == f"error: {ckpt}: not a seqlab checkpoint (loading it raised UnpicklingError)\n"


def test_the_probe_reads_the_corpus_from_the_runs_own_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A run trained with paths.data_dir=X is probed from X, whatever SEQLAB_DATA_DIR says; the environment's
    dir only when X lacks the corpus (moved to another machine), or when the run used the default."""
    own, env, empty = tmp_path / "own", tmp_path / "env", tmp_path / "empty"
    for root in (own, env):
        (root / "tinyshakespeare").mkdir(parents=True)
        (root / "tinyshakespeare" / "input.txt").write_text("a file where the corpus goes")
    empty.mkdir()

    def run(data_dir: str, corpus: str = "shakespeare") -> OmegaConf:
        return OmegaConf.create({"paths": {"data_dir": data_dir}, "data": {"corpus": corpus}})

    monkeypatch.setenv("SEQLAB_DATA_DIR", str(env))
    assert run_data_dir(run(str(own))) == str(own)
    assert run_data_dir(run(str(empty))) == str(env)  # X lacks it, the environment has it
    assert run_data_dir(run("${oc.env:SEQLAB_DATA_DIR,${hydra:runtime.cwd}/data}")) == str(env)  # the default
    assert run_data_dir(run(str(empty), corpus="text_file")) == str(empty)  # data.path names the file
    monkeypatch.setenv("SEQLAB_DATA_DIR", str(empty))
    assert run_data_dir(run(str(own))) == str(own)
    assert run_data_dir(run(str(tmp_path / "gone"))) == str(tmp_path / "gone")  # neither: the run's, as trained


@pytest.mark.slow
def test_probe_cli_on_a_run_trained_with_its_own_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """train.py paths.data_dir=X, then the probe with SEQLAB_DATA_DIR naming a dir without the corpus: it used to
    ignore X and try to download the corpus into the environment's dir."""
    if not SHAKESPEARE.is_file():
        pytest.skip(f"Tiny Shakespeare not found under {DATA_DIR}")
    own, empty, run = tmp_path / "own", tmp_path / "empty", tmp_path / "run"
    (own / "tinyshakespeare").mkdir(parents=True)
    (own / "tinyshakespeare" / "input.txt").symlink_to(SHAKESPEARE)
    empty.mkdir()
    env = {"PYTHONPATH": str(ROOT / "src"), "SEQLAB_DATA_DIR": str(empty), "PATH": "/usr/bin:/bin"}
    quick = ["trainer.max_steps=2", "trainer.val_check_interval=2", "model.hidden_size=16", "data.context_length=16"]
    cmd = [sys.executable, "train.py", "model=rnn", "data=shakespeare", f"paths.data_dir={own}", *quick]
    subprocess.run([*cmd, f"hydra.run.dir={run}"], cwd=ROOT, env=env, check=True, capture_output=True)
    monkeypatch.setenv("SEQLAB_DATA_DIR", str(empty))
    assert main([str(run), "--tokens", "64", "--chars", "200", "--ks", "1"]) == 0
    assert list(empty.iterdir()) == []  # nothing fetched into the environment's dir
