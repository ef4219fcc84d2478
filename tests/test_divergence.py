"""A blown-up loss or gradient stops the run at once, says where and why, and a sweep goes on."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_config

from seqlab.errors import DivergedError
from seqlab.training.run import train
from seqlab.training.system import LanguageModel

TINY = ["data.context_length=32", "data.batch_size=16", "model.hidden_size=32", "model.emb_dim=16"]
TINY += ["trainer.accelerator=cpu", "trainer.max_steps=20", "trainer.val_check_interval=10", "callbacks.progress=null"]


@pytest.mark.parametrize("optim", ["adamw", "sgd"])
def test_lr_1000_on_the_rnn_without_clipping_diverges(optim: str, tiny_text: Path, tmp_path: Path, capsys):
    overrides = ["data=text_file", f"data.path={tiny_text}", "model=rnn", f"optim={optim}", "optim.lr=1000", *TINY]
    with pytest.raises(SystemExit) as stop:
        train(compose_config([*overrides, "trainer.gradient_clip_val=null"], tmp_path))
    assert stop.value.code == 3

    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("diverged: loss is ")
    assert "at step 1" in message  # Adam and SGD both leave the sane range after one update of size ~1000
    assert "gradient_clip_val" in message and "optim.lr" in message

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "diverged"
    assert metrics["steps"] == 1
    assert metrics["reason"] in message
    assert not (tmp_path / "checkpoints").exists()  # stopped before any validation or periodic save


def test_a_non_finite_gradient_names_the_step():
    system = LanguageModel(
        model={"_target_": "seqlab.models.RNN", "hidden_size": 8, "emb_dim": 4},
        optim={"_target_": "torch.optim.SGD", "lr": 0.1},
        vocab_size=5,
        context_length=4,
    )
    for p in system.parameters():
        p.grad = torch.zeros_like(p)
    system.model.layers[0].weight_hh_l0.grad[0, 0] = float("nan")
    with pytest.raises(DivergedError, match="gradient norm is nan at step 0"):
        system.on_before_optimizer_step(torch.optim.SGD(system.parameters(), lr=0.1))


@pytest.mark.slow
def test_a_diverged_job_does_not_stop_the_sweep(tiny_text: Path, tmp_path: Path):
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, "train.py", "-m", "data=text_file", f"data.path={tiny_text}", *TINY]
    cmd += ["optim.lr=1000,0.003", f"hydra.sweep.dir={sweep_dir}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)

    statuses = {}
    for metrics_file in sweep_dir.glob("*/metrics.json"):
        metrics = json.loads(metrics_file.read_text())
        statuses[metrics["hparams"]["lr"]] = metrics["status"]
    assert statuses == {1000: "diverged", 0.003: "ok"}, done.stderr[-2000:]
    assert "diverged: loss is " in done.stderr
