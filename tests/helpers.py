"""What several test modules share (no test module imports another): tiny models and configs, the resume
tests' subprocess commands, and readers of what a run wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from seqlab.models.base import RecurrentModel, SequenceModel
from seqlab.models.catalog import build_model, model_config
from seqlab.training.run import train

MAX_STEPS = 40  # ~4 epochs of 10 batches on the tiny file: the kill lands mid-epoch, the run crosses epochs


# every number metrics.json reports about the trained model
RESULTS = ("steps", "train_tokens", "best_val_loss", "best_val_ppl", "test_loss", "test_ppl")


def command(short_text: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "data=text_file",
        f"data.path={short_text}",
        "data.context_length=32",
        "data.batch_size=16",
        "model=rnn",
        "model.hidden_size=32",
        "model.emb_dim=16",
        "trainer.accelerator=cpu",
        f"trainer.max_steps={MAX_STEPS}",
        "trainer.val_check_interval=10",
        "callbacks.resume.every_n_steps=3",
        "callbacks.progress=null",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def run_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    return env


def results(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok", metrics
    # the checkpoint files too: a resume that forgot the best so far would leave an old best-*.ckpt behind
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if not p.name.startswith("."))
    return {"checkpoints": checkpoints} | {key: metrics[key] for key in RESULTS}


def checkpoint_step(path: Path) -> int:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)["global_step"]
    except FileNotFoundError:
        return -1


def start_and_stop(cmd: list[str], run_dir: Path, sig: signal.Signals, after_step: int) -> subprocess.Popen:
    """Start a slowed-down run and send `sig` once its last.ckpt is at `after_step` or later."""
    slow = ["+callbacks.slow._target_=slow_steps.SlowSteps", "+callbacks.slow.seconds=0.15"]
    proc = subprocess.Popen([*cmd, *slow], env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while checkpoint_step(last) < after_step:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never reached the step to stop at"
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    return proc


def scalars(run_dir: Path) -> dict[str, list[int]]:
    """Every scalar tag in a run dir's event files, with the steps it was logged at."""
    steps: dict[str, list[int]] = {}
    for events in sorted(run_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            steps.setdefault(tag, []).extend(event.step for event in acc.Scalars(tag))
    return steps


def scalar_tags(run_dir: Path) -> set[str]:
    return set(scalars(run_dir))


def expect_config_error(overrides: list[str], out_dir: Path, capsys: pytest.CaptureFixture) -> str:
    """Run in-process; return the one-line message after checking the exit code and that nothing trained."""
    with pytest.raises(SystemExit) as stop:
        train(compose_config(overrides, out_dir))
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ")
    assert "Traceback" not in "\n".join(lines)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["status"] == "bad_config" and metrics.get("steps") is None
    assert not (out_dir / "checkpoints").exists()
    return lines[-1]


STATEFUL_V = 40  # the vocabulary of TinyLSTM's tests


class TinyLSTM(RecurrentModel):
    """The recurrent interface in a few lines (the test does not depend on any conf/model choice)."""

    def __init__(self, vocab_size: int, context_length: int, hidden_size: int = 16) -> None:
        super().__init__()
        self.num_layers, self.hidden_size = 2, hidden_size
        self.tok_emb = nn.Embedding(vocab_size, 8)
        self.lstm = nn.LSTM(8, hidden_size, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward_with_state(self, idx, state=None):
        out, state = self.lstm(self.tok_emb(idx), state)
        return self.head(out), state

    def forward(self, idx):
        return self.forward_with_state(idx)[0]


TINY = {"_target_": f"{__name__}.TinyLSTM", "hidden_size": 16}


V, T = 30, 12  # the model tests' vocabulary and context


def build(name: str, **overrides) -> SequenceModel:
    """The model `python train.py model=<name>` would build, at a tiny size; overrides only where it has the key."""
    cfg = model_config(name)
    sizes = {"hidden_size": 32, "emb_dim": 16}
    overrides = {k: v for k, v in {**sizes, **overrides}.items() if k in cfg}
    return build_model(name, V, T, **overrides)
