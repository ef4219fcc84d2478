"""Every wrong value a user can type gives one line naming it, exit code 2, and no training.

Most cases run in-process on a composed config; a few run `train.py` as a subprocess to check what the
user sees: the exit code and a last line on stderr that is the message, with no traceback.
"""

import errno
import importlib.util
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_config
from helpers import expect_config_error

from seqlab.config import check_config
from seqlab.data import TextDataModule
from seqlab.launch.rundir import WritableOutputs
from seqlab.training import run
from seqlab.training.resume import AtomicCheckpointIO
from seqlab.training.run import train

TINY = ["data.context_length=32", "data.batch_size=16", "model.hidden_size=32", "model.emb_dim=16"]
TINY += ["trainer.accelerator=cpu", "trainer.max_steps=4", "trainer.val_check_interval=2", "callbacks.progress=null"]


NO_PROBES = ["callbacks.samples=null", "callbacks.gradient_profile=null", "callbacks.health=null"]


def text_file(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


# (overrides, what the message must say); each runs on the tiny text file with the tiny model
BAD_VALUES = {
    "hidden_size 0": (["model.hidden_size=0"], "model.hidden_size=0: must be a positive integer"),
    "emb_dim < 0": (["model.emb_dim=-3"], "model.emb_dim=-3: must be a positive integer"),
    "hidden_size a word": (["model.hidden_size=big"], "model.hidden_size=big: must be an integer"),
    "hidden_size a bool": (["model.hidden_size=true"], "model.hidden_size=true: must be an integer"),
    "hidden_size too big": (  # W_hh alone would be 4e18 bytes: the allocator refuses it at once
        ["model.hidden_size=1000000000"],
        "model.hidden_size=1000000000: the model's parameters do not fit in memory (the allocator refused ",
    ),
    "radius a word": (["model.recurrent_radius=big"], "model.recurrent_radius=big: must be a number or null"),
    "radius inf": (["model.recurrent_radius=inf"], "model.recurrent_radius=inf: must be a finite number"),
    "unknown model key": (["+model.hiden_size=8"], "model.hiden_size: seqlab.models.rnn.RNN takes no such setting"),
    "window 0": (["model=mlp_window", "model.window=0"], "model.window=0: must be a positive integer"),
    "batch_size 0": (["data.batch_size=0"], "data.batch_size=0: must be a positive integer"),
    "context_length 0": (["data.context_length=0"], "data.context_length=0: must be a positive integer"),
    "context_length 1.5": (["data.context_length=1.5"], "data.context_length=1.5: must be an integer"),
    "context_length > split": (["data.context_length=5000"], "the val split of"),
    "no data.path": (["data.path=???"], "data.path=???: no value given (data=text_file needs it)"),
    "unknown corpus": (["data.corpus=shakespear"], "data.corpus=shakespear: must be one of 'shakespeare', 'names'"),
    "level": (["data.level=chars"], "data.level=chars: must be null or one of 'char', 'word'"),
    "two splits": (["data.splits=[0.9,0.1]"], "data.splits=[0.9, 0.1]: must be a list of 3"),
    "a split of 0": (["data.splits=[0.9,0,0.1]"], "data.splits=[0.9, 0, 0.1]: must be a number in (0, 1]"),
    "splits over 1": (["data.splits=[0.9,0.1,0.1]"], "data.splits=[0.9, 0.1, 0.1]: the three fractions sum to more"),
    "window > context": (
        ["model=mlp_window", "model.window=33"],
        "model.window=33: larger than data.context_length=32",
    ),
    "interpolation": (["data.batch_size=${nowhere}"], "data.batch_size=${nowhere}: cannot compute it"),
    "lr 0": (["optim.lr=0"], "optim.lr=0: must be a positive number"),
    "lr < 0": (["optim=sgd", "optim.lr=-0.1"], "optim.lr=-0.1: must be a positive number"),
    "lr a word": (["optim.lr=fast"], "optim.lr=fast: must be a number"),
    "lr nan": (["optim.lr=nan"], "optim.lr=nan: must be a positive number"),
    "weight_decay < 0": (["optim.weight_decay=-1"], "optim.weight_decay=-1: must be a non-negative number"),
    "betas": (["optim.betas=[0.9]"], "optim.betas=[0.9]: must be a list of 2"),
    "seed < 0": (["seed=-1"], "seed=-1: must be an integer from 0 to 4294967295"),
    "seed a word": (["seed=lucky"], "seed=lucky: must be an integer"),
    "threads 0": (["threads=0"], "threads=0: must be a positive integer"),
    "matmul_precision": (["matmul_precision=low"], "matmul_precision=low: must be one of highest, high, medium"),
    "max_steps 0": (["trainer.max_steps=0"], "trainer.max_steps=0: must be a positive integer or -1"),
    "max_steps 2.5": (["trainer.max_steps=2.5"], "trainer.max_steps=2.5: must be an integer"),
    "val interval 0": (["trainer.val_check_interval=0"], "trainer.val_check_interval=0: must be a positive integer"),
    "never validates": (
        ["trainer.val_check_interval=null"],
        "trainer.val_check_interval=null with trainer.check_val_every_n_epoch=null: the run would never validate",
    ),
    "val interval 0.5": (["trainer.val_check_interval=0.5"], "trainer.val_check_interval=0.5: must be a positive"),
    "clip < 0": (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1: must be a non-negative number"),
    "precision": (["trainer.precision=99"], "trainer.precision=99: must be null or one of 64, 32, 16, "),
    "every_n_steps 0": (["callbacks.resume.every_n_steps=0"], "callbacks.resume.every_n_steps=0: must be a positive"),
    "every_n_seconds 0": (
        ["callbacks.resume.every_n_seconds=0"],
        "callbacks.resume.every_n_seconds=0: must be a positive number",
    ),
    "profile every_n_steps 0": (
        ["callbacks.gradient_profile.every_n_steps=0"],
        "callbacks.gradient_profile.every_n_steps=0: must be a positive integer",
    ),
    "probe_size 1.5": (["callbacks.gradient_profile.probe_size=1.5"], "probe_size=1.5: must be an integer"),
    "max_share 2": (["callbacks.gradient_profile.max_share=2"], "max_share=2: must be a number in (0, 1]"),
    "temperature 0": (["callbacks.samples.temperature=0"], "callbacks.samples.temperature=0: must be a positive"),
    "temperature nan": (["callbacks.samples.temperature=nan"], "callbacks.samples.temperature=nan: must be a positive"),
    "sample length < 0": (
        ["callbacks.samples.length=-1"],
        "callbacks.samples.length=-1: must be a non-negative integer",
    ),
    "prompt a number": (["callbacks.samples.prompt=12"], "callbacks.samples.prompt=12: must be a string"),
    "tie_weights, emb != hidden": (
        ["model=lstm", "model.tie_weights=true"],
        "model.tie_weights=true needs model.emb_dim (16) == model.hidden_size (32)",
    ),
    "num_layers 0": (["model=gru", "model.num_layers=0"], "model.num_layers=0: must be a positive integer"),
    "init unknown": (["model.init=eye"], "model.init=eye: must be one of 'default', 'orthogonal', 'identity'"),
    "nonlinearity unknown": (
        ["model.nonlinearity=sigmoid"],
        "model.nonlinearity=sigmoid: must be one of 'tanh', 'relu'",
    ),
    "dropout 1": (["model=lstm", "model.dropout=1.0"], "model.dropout=1.0: must be a number in [0, 1)"),
    "stateful feedforward": (
        ["model=mlp_window", "data.stateful=true"],
        "data.stateful=true: WindowMLP carries no state",
    ),
    "stateful, too few streams": (["data.stateful=true", "data.batch_size=900"], "data.batch_size=900: data.stateful"),
    "cosine floor > 1": (["schedule=cosine", "schedule.scheduler.floor=1.5"], "schedule.scheduler.floor=1.5"),
    "warmup longer than the run": (
        ["schedule=cosine", "schedule.scheduler.warmup_steps=80"],
        "schedule.scheduler.warmup_steps=80: longer than trainer.max_steps=4, so the run would end in the warmup "
        "at 0.05 × optim.lr",
    ),
    "warmup < 0": (
        ["schedule=cosine", "schedule.scheduler.warmup_steps=-1"],
        "warmup_steps=-1: must be a non-negative integer",
    ),
    "plateau factor 1": (["schedule=plateau", "schedule.scheduler.factor=1"], "factor=1: must be a number in [0, 1)"),
    "spectra every 0 steps": (
        ["callbacks.health.spectra_every_n_steps=0"],
        "callbacks.health.spectra_every_n_steps=0: must be a positive integer",
    ),
    "init_range 0": (["model.init_range=0"], "model.init_range=0: must be a positive number, or null"),
    "resume and ckpt_path": (["resume=/a/run", "ckpt_path=/a/run/x.ckpt"], "resume=/a/run and ckpt_path=/a/run/x"),
    "plateau at steps": (
        ["schedule=plateau", "trainer.check_val_every_n_epoch=null", "trainer.val_check_interval=2"],
        "schedule=plateau steps at epoch ends on val/loss",
    ),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_bad_value(case: str, tiny_text: Path, tmp_path: Path, capsys):
    overrides, expected = BAD_VALUES[case]
    message = expect_config_error(
        ["data=text_file", f"data.path={tiny_text}", *TINY, *overrides], tmp_path / "run", capsys
    )
    assert expected in message
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["metrics.json"]  # nothing built, nothing else written


def test_the_corpus_choices_are_the_corpora_and_text_file():
    from typing import get_args

    from seqlab.data.corpora import CORPORA
    from seqlab.data.datamodule import Corpus

    assert set(get_args(Corpus)) == {*CORPORA, "text_file"}


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["data.lengths=[5000,1000]"], "data.lengths=[5000, 1000]: must be a list of 3"),
        (["data.lengths=[5000,1000,64]"], "data.lengths=[5000, 1000, 64]: each split must be longer than data.context"),
    ],
)
def test_bad_markov_values(overrides: list[str], expected: str, tmp_path: Path, capsys):
    message = expect_config_error(["data=markov", *TINY[1:], *NO_PROBES, *overrides], tmp_path / "run", capsys)
    assert expected in message


def test_gradient_clip_val_0_means_no_clipping(tiny_text: Path, tmp_path: Path):
    """Lightning's convention, and what users write: 0 is off, as null is (Lightning skips clipping at <= 0)."""
    check_config(
        compose_config(["data=text_file", f"data.path={tiny_text}", *TINY, "trainer.gradient_clip_val=0"], tmp_path)
    )


def test_a_bad_value_in_a_sweep_is_recorded_and_the_sweep_goes_on(tiny_text: Path, tmp_path: Path, capsys):
    """threads=0 used to crash before metrics.json, so the sweep's summary missed the job."""
    overrides = ["data=text_file", f"data.path={tiny_text}", *TINY, "threads=0", "hydra.mode=MULTIRUN"]
    metrics = train(compose_config(overrides, tmp_path / "job"))  # no SystemExit: the next job runs
    assert metrics["status"] == "bad_config" and "threads=0" in metrics["reason"]
    assert json.loads((tmp_path / "job" / "metrics.json").read_text())["status"] == "bad_config"


def test_a_model_refusing_its_sizes_is_one_line(tiny_text: Path, tmp_path: Path, capsys, monkeypatch):
    """A ValueError from a model's __init__ (e.g. heads not dividing the width) is a bad value, not a traceback."""
    from seqlab.models import RNN

    def refuse(self, *args, **kwargs):
        raise ValueError("emb_dim=16 is not a multiple of num_heads=3")

    refuse.__signature__ = inspect.signature(RNN.__init__)  # the config check still reads the real settings
    monkeypatch.setattr(RNN, "__init__", refuse)
    message = expect_config_error(["data=text_file", f"data.path={tiny_text}", *TINY], tmp_path / "run", capsys)
    assert message == "error: seqlab.models.rnn.RNN: emb_dim=16 is not a multiple of num_heads=3"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("trainer", ["ddp", "gpu"])
def test_a_gpu_trainer_without_a_gpu(trainer: str, tiny_text: Path, tmp_path: Path, capsys):
    overrides = [
        "data=text_file",
        f"data.path={tiny_text}",
        *TINY[:-4],
        f"trainer={trainer}",
        "callbacks.progress=null",
    ]
    message = expect_config_error(overrides, tmp_path / "run", capsys)
    assert message.startswith("error: trainer.accelerator=gpu") and "no GPU device on this machine" in message


def test_a_full_disk_during_training_records_what_was_reached(tiny_text: Path, tmp_path: Path, capsys, monkeypatch):
    """The disk fills up at the second checkpoint save: one line, status failed, the steps it reached."""
    saves = []

    def save_until_full(self, checkpoint, path, storage_options=None):
        saves.append(path)
        if len(saves) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", save_until_full)
    overrides = ["data=text_file", f"data.path={tiny_text}", *TINY, "callbacks.resume.every_n_steps=1", *NO_PROBES]
    with pytest.raises(SystemExit) as stop:
        train(compose_config(overrides, tmp_path / "run"))
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"failed: cannot write {saves[-1]}: No space left on device at step 2"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["steps"] == 2 and metrics["params"] > 0


def test_a_metrics_json_that_cannot_be_written_goes_to_the_console(tmp_path: Path, capsys, monkeypatch):
    def full(path, payload):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(run, "write_json", full)
    with pytest.raises(SystemExit) as stop:
        train(compose_config(["threads=0"], tmp_path))
    assert stop.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: threads=0: must be a positive integer")
    assert f"; and cannot write {tmp_path / 'metrics.json'}: No space left on device; it would say " in line
    assert "'status': 'bad_config'" in line


def test_an_unwritable_run_dir_before_training_is_one_line(tiny_text: Path, tmp_path: Path, capsys, monkeypatch):
    def read_only(self, path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(TextDataModule, "save_vocab", read_only)
    message = expect_config_error(["data=text_file", f"data.path={tiny_text}", *TINY], tmp_path / "run", capsys)
    assert message == f"error: cannot write {tmp_path / 'run' / 'vocab.json'}: Read-only file system before training"


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
    assert "seqlab.models.rnn.RNN" in message and "seqlab.models.mlp_window.WindowMLP" in message


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


@pytest.mark.slow
def test_the_cli_without_data_path_prints_one_line(tmp_path: Path):
    """Hydra's MissingMandatoryValue used to come first, with a traceback and status failed."""
    done = run_cli("data=text_file", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: data.path=???: no value given")
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "bad_config"


@pytest.mark.slow
def test_a_sweep_of_bad_values_records_each_job_and_prints_its_summary(tmp_path: Path):
    done = run_cli("-m", "threads=0", "seed=1,lucky", f"hydra.sweep.dir={tmp_path}")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("sweep: 2 of 2 jobs did not finish ok")
    for job in ("0_seed=1", "1_seed=lucky"):
        metrics = json.loads((tmp_path / job / "metrics.json").read_text())
        assert metrics["status"] == "bad_config" and metrics["reason"].startswith(("threads=0", "seed=lucky"))


def run_sample(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "sample.py"), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("temperature", ["nan", "inf", "-inf", "0"])
def test_sample_rejects_a_temperature_that_is_not_a_positive_number(temperature: str, tmp_path: Path):
    done = run_sample(str(tmp_path / "any.ckpt"), f"--temperature={temperature}")  # answers before importing torch
    assert done.returncode == 1
    expected = "must be positive" if temperature == "0" else "must be a finite number"
    assert done.stderr.strip() == f"error: --temperature={float(temperature)}: {expected}"


@pytest.mark.parametrize("content", ["garbage", "foreign", "truncated"])
def test_sample_says_a_corrupt_checkpoint_is_not_a_seqlab_checkpoint(content: str, tmp_path: Path, capsys, monkeypatch):
    path = tmp_path / "last.ckpt"
    if content == "garbage":
        path.write_bytes(bytes(range(256)) * 8)
    else:
        torch.save({"state_dict": {"w": torch.zeros(64, 64)}}, path)  # another program's checkpoint
        if content == "truncated":
            path.write_bytes(path.read_bytes()[:1000])
    spec = importlib.util.spec_from_file_location("sample_cli", ROOT / "sample.py")
    sample_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sample_cli)
    monkeypatch.setattr(sys, "argv", ["sample.py", str(path)])
    with pytest.raises(SystemExit) as stop:
        sample_cli.main()
    assert str(stop.value.code).startswith(f"error: {path}: not a seqlab checkpoint (loading it raised ")
    assert "weights_only" not in str(stop.value.code)


def test_an_outputs_dir_through_a_file_is_one_line_before_hydra_makes_it(tmp_path: Path):
    (tmp_path / "outputs").write_text("a file where the dir would go")
    for mode in (
        [f"hydra.run.dir={tmp_path / 'outputs' / 'run'}"],
        ["-m", f"hydra.sweep.dir={tmp_path / 'outputs' / 's'}"],
    ):
        done = run_cli(*mode, "trainer.max_steps=2")
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines()[-1].endswith(f": {tmp_path / 'outputs'} is a file")


def test_a_read_only_outputs_dir_is_one_line(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # what a read-only filesystem answers, even to root
    with pytest.raises(SystemExit) as stop:
        WritableOutputs().check(tmp_path / "outputs" / "runs" / "x")
    assert stop.value.code == 2
    assert (
        capsys.readouterr().err
        == f"error: cannot write {tmp_path / 'outputs' / 'runs' / 'x'}: {tmp_path} is not writable\n"
    )
    assert not (tmp_path / "outputs").exists()


SHIPPED = [
    f"{group}={p.stem}" for group in ("model", "data", "optim") for p in sorted((ROOT / "conf" / group).glob("*.yaml"))
]
SHIPPED += [f"experiment={p.stem}" for p in sorted((ROOT / "conf" / "experiment").glob("*.yaml"))]


@pytest.mark.parametrize("choice", SHIPPED)
def test_every_shipped_config_passes_the_check(choice: str, tmp_path: Path):
    """The check must never refuse what the repository itself ships."""
    check_config(compose_config([choice, "data.path=any.txt"] if choice == "data=text_file" else [choice], tmp_path))


@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=vanishing", "model.recurrent_radius=1.5", "trainer.gradient_clip_val=null"],
        ["experiment=context_sweep", "model=mlp_window", "data.context_length=256"],
        ["experiment=hidden_sweep", "model=unigram", "model.hidden_size=512"],
        ["optim=sgd", "optim.lr=1", "seed=0", "threads=1", "trainer.max_steps=-1", "trainer.max_epochs=2"],
    ],
)
def test_the_values_sweeps_use_pass_the_check(overrides: list[str], tmp_path: Path):
    check_config(compose_config(overrides, tmp_path))
