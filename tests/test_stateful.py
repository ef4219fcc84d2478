"""A carried state: stream batches, truncated BPTT in training, and the stateful evaluation, against plain loops."""

from __future__ import annotations

import json
import math
import signal
import subprocess
from pathlib import Path

import helpers
import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, compose_config
from helpers import STATEFUL_V as V
from helpers import TINY, TinyLSTM, scalars
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqlab.data import TextDataModule
from seqlab.data.batches import IGNORE, StreamBatches
from seqlab.errors import ConfigError
from seqlab.models.catalog import model_class
from seqlab.training.run import check_config, train
from seqlab.training.system import LanguageModel


def system(stateful: bool = False, **kwargs) -> LanguageModel:
    optim = {"_target_": "torch.optim.SGD", "lr": 0.5}
    return LanguageModel(TINY, optim, vocab_size=V, context_length=5, stateful=stateful, **kwargs)


def test_stream_batches_continue_every_stream():
    ids = torch.arange(1003)
    batches = StreamBatches(ids, context_length=7, batch_size=4)  # 4 streams of 250; 3 tokens dropped
    xs, ys = zip(*batches, strict=True)
    assert len(xs) == len(batches) == 36  # 249 targets per stream, 7 at a time
    assert [x.shape for x in xs[-2:]] == [(4, 7), (4, 4)]  # the last batch is shorter
    streams = torch.arange(1000).view(4, 250)
    torch.testing.assert_close(torch.cat(xs, 1), streams[:, :-1])  # row b of each batch continues row b
    torch.testing.assert_close(torch.cat(ys, 1), streams[:, 1:])  # every token but a stream's first, once


def test_stream_batches_resume_from_their_state():
    def loader() -> StreamBatches:
        return StreamBatches(torch.arange(500), context_length=6, batch_size=4)

    expected = [x for _ in range(2) for x, _ in loader()]
    first = loader()
    seen = [x for _, (x, _) in zip(range(9), first, strict=False)]  # 9 batches, then the "kill"
    assert first.state_dict() == {"epoch": 0, "batch": 9}
    resumed = loader()
    resumed.load_state_dict(first.state_dict())
    seen += [x for x, _ in resumed] + [x for x, _ in resumed]  # the rest of pass 0, then pass 1
    assert len(seen) == len(expected) == 42
    assert all(torch.equal(a, b) for a, b in zip(seen, expected, strict=True))


def test_stateful_training_is_truncated_bptt_of_a_plain_loop():
    """Two epochs through the system equal a plain loop: carry, detach, restart the streams at each epoch."""
    torch.manual_seed(0)
    ids = torch.randint(V, (400,))
    sys_ = system(stateful=True)
    reference = TinyLSTM(V, 5)
    reference.load_state_dict(sys_.model.state_dict())

    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    for _ in range(2):
        state = None
        for x, y in StreamBatches(ids, context_length=5, batch_size=4):
            logits, state = reference.forward_with_state(x, state)
            state = tuple(s.detach() for s in state)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    loader = StreamBatches(ids, context_length=5, batch_size=4)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(sys_, train_dataloaders=loader)
    for (name, a), b in zip(sys_.model.state_dict().items(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_a_stream_batch_scores_only_its_targets_and_nothing_is_zero_not_nan():
    """Episodic sources (recall, induction) leave most targets IGNORE: the stream loss is the mean over the scored
    ones, weighted by their count, and a batch with none scores 0 rather than NaN (which would read as divergence)."""
    torch.manual_seed(0)
    sys_ = system(stateful=True)
    x, y = torch.randint(V, (3, 5)), torch.randint(V, (3, 5))
    y[:, :3] = IGNORE
    loss, n, state = sys_._stream_loss((x, y), None)
    logits, _ = sys_.model.forward_with_state(x, None)
    expected = F.cross_entropy(logits[:, 3:].flatten(0, 1), y[:, 3:].flatten())
    assert int(n) == 6 and torch.allclose(loss, expected) and all(not s.requires_grad for s in state)
    loss, n, _ = sys_._stream_loss((x, torch.full_like(y, IGNORE)), state)
    assert int(n) == 0 and loss.item() == 0.0


@pytest.fixture
def datamodule(tiny_text: Path) -> TextDataModule:
    dm = TextDataModule(corpus="text_file", path=str(tiny_text), context_length=16, batch_size=6)
    dm.setup()
    dm.stream_eval = True
    return dm


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)  # the model and the metrics' running sums alike
    yield
    torch.set_default_dtype(torch.float32)


def recurrent_configs() -> list[Path]:
    configs = sorted((ROOT / "conf" / "model").glob("*.yaml"))
    return [p for p in configs if model_class(p.stem).recurrent]


@pytest.mark.parametrize("config", recurrent_configs(), ids=lambda p: p.stem)
def test_stateful_eval_equals_one_long_pass_per_stream(config: Path, datamodule: TextDataModule, float64: None):
    torch.manual_seed(0)
    model = OmegaConf.to_container(OmegaConf.load(config))
    model |= {k: v for k, v in {"hidden_size": 16, "emb_dim": 8, "num_layers": 2}.items() if k in model}
    sys_ = LanguageModel(model, {"_target_": "torch.optim.SGD", "lr": 0.1}, datamodule.vocab_size, context_length=16)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    results = trainer.validate(sys_, datamodule=datamodule, verbose=False)
    metrics = {k: v for r in results for k, v in r.items()}

    ids = datamodule.ids["val"]
    streams = ids[: len(ids) // 6 * 6].view(6, -1)  # (6, L): the split as 6 contiguous streams
    with torch.no_grad():
        logits = torch.cat([sys_.model(row[None, :-1]) for row in streams])  # each stream in one long pass
    expected = F.cross_entropy(logits.flatten(0, 1), streams[:, 1:].flatten(), reduction="mean")
    assert metrics["val/loss_stateful"] == pytest.approx(expected.item(), rel=1e-12)
    assert metrics["val/ppl_stateful"] == pytest.approx(expected.exp().item(), rel=1e-12)
    assert {"val/loss", "val/ppl", "val/bpc_stateful"} <= metrics.keys()


def test_stateful_needs_a_recurrent_model():
    optim = {"_target_": "torch.optim.SGD", "lr": 0.1}
    with pytest.raises(ConfigError, match=r"data.stateful=true: Unigram carries no state"):
        LanguageModel({"_target_": "seqlab.models.Unigram"}, optim, vocab_size=V, context_length=5, stateful=True)


def test_stateful_needs_enough_train_text_for_the_streams(tiny_text: Path):
    dm = TextDataModule(corpus="text_file", path=str(tiny_text), context_length=64, batch_size=500, stateful=True)
    with pytest.raises(ConfigError, match=r"data.batch_size=500: data.stateful=true splits the train split"):
        dm.setup()


# --- end to end, through train.py's config (a recurrent model from conf/model) ------------------------------
RESULTS = ("steps", "train_tokens", "best_val_loss", "test_loss", "test_ppl", "val_loss_stateful")
RESULTS += ("test_loss_stateful", "test_ppl_stateful")


@pytest.fixture
def short_text(tmp_path: Path, sample_text: str) -> Path:
    path = tmp_path / "short.txt"
    path.write_text(sample_text[:9000])  # 16 stream batches of 16 x 32 a pass
    return path


def lstm_command(short_text: Path, run_dir: Path, *extra: str) -> list[str]:
    """test_resume's run, as a stateful 2-layer LSTM with Zaremba's step decay (1 epoch kept, then halved)."""
    cmd = [arg if arg != "model=rnn" else "model=lstm" for arg in helpers.command(short_text, run_dir)]
    return [
        *cmd,
        "model.num_layers=2",
        "data.stateful=true",
        "optim=sgd",
        "schedule=step_decay",
        "schedule.scheduler.constant_epochs=1",
        *extra,
    ]


def stateful_results(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok", metrics
    return {key: metrics[key] for key in RESULTS}


@pytest.mark.slow
def test_sigkill_then_resume_a_stateful_run_matches_unbroken(short_text: Path, tmp_path: Path) -> None:
    """The carried state, the streams' position and the schedule all come back: the same numbers, bitwise."""
    unbroken_dir = tmp_path / "unbroken"
    subprocess.run(lstm_command(short_text, unbroken_dir), env=helpers.run_env(), check=True, capture_output=True)
    unbroken = stateful_results(unbroken_dir)

    run_dir = tmp_path / "run"
    cmd = lstm_command(short_text, run_dir)
    proc = helpers.start_and_stop(cmd, run_dir, signal.SIGKILL, after_step=20)  # mid-epoch 1 (16 a pass)
    assert proc.returncode == -signal.SIGKILL
    killed_at = helpers.checkpoint_step(run_dir / "checkpoints" / "last.ckpt")
    assert 20 <= killed_at < helpers.MAX_STEPS and killed_at % 16 != 0
    resumed = subprocess.run([*cmd, f"resume={run_dir}"], env=helpers.run_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert stateful_results(run_dir) == unbroken


def accumulators(run_dir: Path) -> list[EventAccumulator]:
    return [EventAccumulator(str(f)).Reload() for f in sorted(run_dir.glob("events.out.tfevents.*"))]


@pytest.mark.slow
@pytest.mark.parametrize("stateful", [False, True])
def test_every_recurrent_run_reports_the_stateful_metrics(stateful: bool, tiny_text: Path, tmp_path: Path) -> None:
    overrides = [
        "data=text_file",
        f"data.path={tiny_text}",
        "model=lstm",
        "model.hidden_size=32",
        "trainer.accelerator=cpu",
    ]
    overrides += [f"data.stateful={str(stateful).lower()}", "trainer.max_steps=6", "trainer.val_check_interval=3"]
    overrides += ["schedule=cosine", "schedule.scheduler.warmup_steps=2", "trainer.log_every_n_steps=1"]
    metrics = train(compose_config(overrides, tmp_path))
    assert metrics["status"] == "ok"
    assert metrics["test_ppl_stateful"] == pytest.approx(math.exp(metrics["test_loss_stateful"]))
    assert metrics["val_ppl_stateful"] == pytest.approx(math.exp(metrics["val_loss_stateful"]))
    tags = scalars(tmp_path)
    assert tags["val/ppl_stateful"] == tags["val/ppl"] == [2, 5]
    assert {"val/loss_stateful", "val/bpc_stateful", "test/ppl_stateful", "test/ppl"} <= tags.keys()
    assert tags["train/lr"] == list(range(6))
    lrs = [
        e.value
        for acc in accumulators(tmp_path)
        if "train/lr" in acc.Tags()["scalars"]
        for e in acc.Scalars("train/lr")
    ]
    assert lrs[0] == pytest.approx(1.5e-3) and lrs[1] == pytest.approx(3e-3) and lrs[-1] < lrs[1]  # warmup, decay


def test_zaremba_preset_is_the_papers_recipe(tmp_path: Path) -> None:
    cfg = compose_config(["experiment=ptb_zaremba_small"], tmp_path)
    assert (cfg.data.corpus, cfg.data.context_length, cfg.data.batch_size, cfg.data.stateful) == ("ptb", 20, 20, True)
    model = cfg.model
    assert (model.num_layers, model.hidden_size, model.emb_dim, model.dropout, model.init_range) == (
        2,
        200,
        200,
        0,
        0.1,
    )
    assert cfg.trainer.max_epochs == 13 and cfg.schedule.scheduler.constant_epochs == 4
    # lr 1 and clip 5 on a loss summed over the 20 steps = lr 20 and clip 0.25 on seqlab's mean over tokens
    T = cfg.data.context_length
    assert cfg.optim.lr == 1.0 * T and cfg.trainer.gradient_clip_val == 5.0 / T
    check_config(cfg)
