"""Every wrong value a user can type gives one line naming it, exit code 2, and no training.

Most cases run in-process on a composed config; a few run `train.py` as a subprocess to check what the
user sees: the exit code and a last line on stderr that is the message, with no traceback.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, compose_config

from seqlab.run import train

TINY = ["data.context_length=32", "data.batch_size=16", "model.hidden_size=32", "model.emb_dim=16"]
TINY += ["trainer.accelerator=cpu", "trainer.max_steps=4", "trainer.val_check_interval=2", "callbacks.progress=null"]


def text_file(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


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


# (overrides, what the message must say); each runs on the tiny text file with the tiny model
BAD_VALUES = {
    "hidden_size 0": (["model.hidden_size=0"], "model.hidden_size=0: must be a positive integer"),
    "emb_dim < 0": (["model.emb_dim=-3"], "model.emb_dim=-3: must be a positive integer"),
    "window 0": (["model=mlp_window", "model.window=0"], "model.window=0: must be a positive integer"),
    "batch_size 0": (["data.batch_size=0"], "data.batch_size=0: must be at least 1"),
    "context_length 0": (["data.context_length=0"], "data.context_length=0: must be at least 1"),
    "context_length > split": (["data.context_length=5000"], "the val split of"),
    "window > context": (
        ["model=mlp_window", "model.window=33"],
        "model.window=33: larger than data.context_length=32",
    ),
    "lr 0": (["optim.lr=0"], "optim.lr=0: must be positive"),
    "lr < 0": (["optim=sgd", "optim.lr=-0.1"], "optim.lr=-0.1: must be positive"),
    "max_steps 0": (["trainer.max_steps=0"], "trainer.max_steps=0: must be positive"),
    "clip 0": (["trainer.gradient_clip_val=0"], "trainer.gradient_clip_val=0: must be positive"),
    "every_n_steps 0": (["callbacks.resume.every_n_steps=0"], "callbacks.resume.every_n_steps=0"),
    "tie_weights, emb != hidden": (
        ["model=lstm", "model.tie_weights=true"],
        "model.tie_weights=true needs model.emb_dim (16) == model.hidden_size (32)",
    ),
    "num_layers 0": (["model=gru", "model.num_layers=0"], "model.num_layers=0: must be a positive integer"),
    "init unknown": (["model.init=eye"], "model.init=eye: must be one of default, orthogonal, identity"),
    "stateful feedforward": (
        ["model=mlp_window", "data.stateful=true"],
        "data.stateful=true: WindowMLP carries no state",
    ),
    "stateful, too few streams": (["data.stateful=true", "data.batch_size=900"], "data.batch_size=900: data.stateful"),
    "cosine floor > 1": (["schedule=cosine", "schedule.scheduler.floor=1.5"], "schedule.scheduler.floor=1.5"),
    "plateau at steps": (
        ["schedule=plateau", "trainer.check_val_every_n_epoch=null", "trainer.val_check_interval=2"],
        "schedule=plateau steps at epoch ends on val/loss",
    ),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_bad_value(case: str, tiny_text: Path, tmp_path: Path, capsys):
    overrides, expected = BAD_VALUES[case]
    message = expect_config_error(["data=text_file", f"data.path={tiny_text}", *TINY, *overrides], tmp_path, capsys)
    assert expected in message


BAD_FILES = {
    "missing": (lambda d: d / "nowhere.txt", "no such file"),
    "directory": (lambda d: d, "is a directory, not a file"),
    "empty": (lambda d: text_file(d, "empty.txt", b"  \n"), "the file is empty"),
    "not utf-8": (lambda d: text_file(d, "latin1.txt", "café au lait\n".encode("latin-1") * 100), "not UTF-8 text"),
    "one token": (lambda d: text_file(d, "aaa.txt", b"a" * 5000), "fewer than two distinct tokens"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file(case: str, tmp_path: Path, capsys):
    make, expected = BAD_FILES[case]
    path = make(tmp_path)
    message = expect_config_error(["data=text_file", f"data.path={path}", *TINY], tmp_path / "run", capsys)
    assert str(path) in message and expected in message


@pytest.fixture
def rnn_run(tiny_text: Path, tmp_path: Path) -> Path:
    """A finished tiny rnn run: its dir holds checkpoints/last.ckpt."""
    run_dir = tmp_path / "rnn_run"
    assert train(compose_config(["data=text_file", f"data.path={tiny_text}", *TINY], run_dir))["status"] == "ok"
    return run_dir


def test_resuming_with_another_model(rnn_run: Path, tiny_text: Path, tmp_path: Path, capsys):
    overrides = ["data=text_file", f"data.path={tiny_text}", *TINY, "model=mlp_window", f"resume={rnn_run}"]
    message = expect_config_error(overrides, tmp_path / "run", capsys)
    assert str(rnn_run / "checkpoints" / "last.ckpt") in message
    assert "seqlab.models.RNN" in message and "seqlab.models.WindowMLP" in message


def test_a_checkpoint_trained_on_other_text(rnn_run: Path, tiny_text: Path, tmp_path: Path, capsys):
    other = text_file(tmp_path, "other.txt", tiny_text.read_bytes().swapcase())  # same size, another vocabulary
    ckpt = rnn_run / "checkpoints" / "last.ckpt"
    overrides = ["data=text_file", f"data.path={other}", *TINY, f"ckpt_path={ckpt}"]
    message = expect_config_error(overrides, tmp_path / "run", capsys)
    assert str(ckpt) in message and ("vocab" in message)


def test_resume_without_a_checkpoint(tiny_text: Path, tmp_path: Path, capsys):
    overrides = ["data=text_file", f"data.path={tiny_text}", *TINY, f"resume={tmp_path}"]
    message = expect_config_error(overrides, tmp_path / "run", capsys)
    assert f"no checkpoint at {tmp_path / 'checkpoints' / 'last.ckpt'}" in message


def test_resume_in_a_sweep(rnn_run: Path, tiny_text: Path, tmp_path: Path, capsys):
    overrides = ["data=text_file", f"data.path={tiny_text}", *TINY, f"resume={rnn_run}", "hydra.mode=MULTIRUN"]
    metrics = train(compose_config(overrides, tmp_path / "run"))  # a sweep's job records its status, no exit
    assert metrics["status"] == "bad_config"
    assert "resume one job at a time, without -m" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_checkpoint_path_that_is_not_a_checkpoint(tiny_text: Path, tmp_path: Path, capsys):
    overrides = ["data=text_file", f"data.path={tiny_text}", *TINY, f"ckpt_path={tiny_text}"]
    message = expect_config_error(overrides, tmp_path / "run", capsys)
    assert f"{tiny_text} is not a seqlab checkpoint" in message


def run_cli(*overrides: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("group", ["model", "data", "optim"])
def test_an_unknown_choice_lists_the_available_ones(group: str, tmp_path: Path):
    done = run_cli(f"{group}=nonesuch", f"hydra.run.dir={tmp_path}")
    assert done.returncode != 0
    assert f"Could not find '{group}/nonesuch'" in done.stderr
    assert "Available options" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_the_cli_prints_one_line_and_exits_2(tmp_path: Path):
    done = run_cli("data=text_file", f"data.path={tmp_path / 'nowhere.txt'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == f"error: data.path={tmp_path / 'nowhere.txt'}: no such file"
    assert "Traceback" not in done.stderr
