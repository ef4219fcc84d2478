"""Run dirs: one of its own per run whatever the timing, a resume that checks before it writes a byte, run dirs
that can be moved or copied, budgets that end, and the data failures that are not config errors."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, compose_config
from hydra import compose, initialize_config_dir
from omegaconf import open_dict, read_write

from seqlab.launch.rundir import RunDir, claim
from seqlab.training.run import train

TINY = ["data.context_length=32", "data.batch_size=16", "model.hidden_size=32", "model.emb_dim=16"]
TINY += ["trainer.accelerator=cpu", "trainer.max_steps=4", "trainer.val_check_interval=2", "callbacks.progress=null"]
RESULTS = ("steps", "train_tokens", "best_val_loss", "test_loss", "test_ppl")


def tree(root: Path) -> dict[str, str]:
    """Every file and dir under `root` (hidden ones too) with a hash of its bytes: equal trees, equal dicts."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory, sample_text: str) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.txt"
    path.write_text(sample_text[:30_000])
    return path


@pytest.fixture(scope="module")
def finished(text: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny rnn run that ended ok: best-4.ckpt and last.ckpt in its checkpoints/."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert train(compose_config(["data=text_file", f"data.path={text}", *TINY], run_dir))["status"] == "ok"
    return run_dir


def one_line_error(capsys: pytest.CaptureFixture, run, code: int = 2) -> str:
    with pytest.raises(SystemExit) as stop:
        run()
    assert stop.value.code == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


# --- a dir of its own --------------------------------------------------------------------------------------


def _claim(path: Path, queue: multiprocessing.Queue) -> None:
    queue.put(str(claim(path, unique=True)))


def test_runs_started_together_claim_dirs_of_their_own(tmp_path: Path):
    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    base = tmp_path / "2026-01-01_00-00-00_shakespeare_rnn"  # the name every one of them computed
    jobs = [fork.Process(target=_claim, args=(base, queue)) for _ in range(6)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=60)
    claimed = sorted(queue.get(timeout=5) for _ in jobs)
    assert claimed == sorted([str(base)] + [f"{base}_{n}" for n in range(2, 7)])


def hydra_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def test_a_new_run_gets_the_next_free_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    dirs = []
    for _ in range(2):
        cfg = hydra_config([])
        with read_write(cfg.hydra):  # the same second for both
            cfg.hydra.run.dir = "outputs/runs/2026-01-01_00-00-00_shakespeare_rnn"
        RunDir().on_run_start(config=cfg)
        dirs.append(cfg.hydra.run.dir)
    assert dirs == [
        "outputs/runs/2026-01-01_00-00-00_shakespeare_rnn",
        "outputs/runs/2026-01-01_00-00-00_shakespeare_rnn_2",
    ]


def test_an_explicit_run_dir_that_holds_a_run_is_refused(finished: Path, capsys):
    before = tree(finished)
    cfg = hydra_config([f"hydra.run.dir={finished}"])
    message = one_line_error(capsys, lambda: RunDir().on_run_start(config=cfg))
    assert (
        message
        == f"error: hydra.run.dir={finished}: already holds a run; continue it with resume={finished}, or choose another dir"
    )
    assert tree(finished) == before


# --- resume= values that name no run dir: one line before Hydra writes anything ---------------------------

BAD_RESUME = {
    "empty": (lambda d: "", "resume=: give the dir of the run to continue"),
    "no such dir": (lambda d: str(d / "nowhere"), "nowhere: no such run dir"),
    "a checkpoint file": (
        lambda d: str(d / "run" / "checkpoints" / "last.ckpt"),
        "is a file; give the run dir (resume={d}/run), or start a new run from it with ckpt_path=",
    ),
}


@pytest.mark.parametrize("case", BAD_RESUME)
def test_a_resume_that_names_no_run_dir(case: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch):
    make, expected = BAD_RESUME[case]
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(b"a checkpoint")
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    cfg = hydra_config([f"resume={make(tmp_path)}"])
    message = one_line_error(capsys, lambda: RunDir().on_run_start(config=cfg))
    assert expected.format(d=tmp_path) in message
    assert tree(tmp_path) == before


def test_an_empty_resume_on_the_command_line_writes_nothing(tmp_path: Path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "resume="], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: resume=: give the dir of the run to continue, e.g. resume=outputs/runs/<name>"
    ]
    assert list(tmp_path.iterdir()) == []


# --- a refused resume leaves the run it names byte for byte as it was -------------------------------------


def garble(run_dir: Path, how: str) -> None:
    last = run_dir / "checkpoints" / "last.ckpt"
    if how == "missing":
        last.unlink()
    elif how == "truncated":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    elif how == "garbage":
        last.write_bytes(os.urandom(4096))


REFUSED = {
    "another model": (
        ["model=mlp_window"],
        "",
        "holds a seqlab.models.rnn.RNN, this run builds a seqlab.models.mlp_window.WindowMLP",
    ),
    "another hidden size": (["model.hidden_size=48"], "", "has model.hidden_size=32, this run 48"),
    "a bad value": (["optim.lr=0"], "", "optim.lr=0: must be a positive number"),
    "last.ckpt missing": ([], "missing", "no checkpoint at"),
    "last.ckpt truncated": ([], "truncated", "is not a seqlab checkpoint"),
    "last.ckpt garbage": ([], "garbage", "is not a seqlab checkpoint"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_refused_resume_changes_nothing(case: str, finished: Path, text: Path, tmp_path: Path, capsys):
    overrides, how, expected = REFUSED[case]
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    garble(run_dir, how)
    before = tree(run_dir)
    cfg = compose_config(["data=text_file", f"data.path={text}", *TINY, *overrides, f"resume={run_dir}"], run_dir)
    message = one_line_error(capsys, lambda: train(cfg))
    assert message.startswith("error: ") and expected in message
    if how:  # last.ckpt is unusable, the best checkpoint is whole: the message points at it
        best = run_dir / "checkpoints" / "best-4.ckpt"
        assert message.endswith(f"; {best} is there: continue from it in a new run with ckpt_path={best}")
    assert tree(run_dir) == before


def test_hparams_yaml_holds_the_run_summary(finished: Path):
    metrics = json.loads((finished / "metrics.json").read_text())
    assert yaml.safe_load((finished / "hparams.yaml").read_text()) == metrics["hparams"]


# --- budgets and batches -----------------------------------------------------------------------------------


def test_a_budget_that_never_ends_is_refused(text: Path, tmp_path: Path, capsys):
    cfg = compose_config(["data=text_file", f"data.path={text}", *TINY, "trainer.max_steps=-1"], tmp_path)
    assert one_line_error(capsys, lambda: train(cfg)) == (
        "error: trainer.max_steps=-1 with trainer.max_epochs=-1: never ends; give trainer.max_steps=N or "
        "trainer.max_epochs=N (or a trainer.max_time)"
    )
    cfg = compose_config(["data=text_file", f"data.path={text}", *TINY, "trainer.max_steps=0"], tmp_path)
    message = one_line_error(capsys, lambda: train(cfg))
    assert message.endswith("trainer.max_steps=0: must be a positive integer or -1 (-1: train by epochs or time)")


def test_a_budget_in_epochs_ends(text: Path, tmp_path: Path):
    overrides = ["data=text_file", f"data.path={text}", *TINY, "data.batch_size=256"]
    overrides += ["trainer.max_steps=-1", "trainer.max_epochs=2"]
    metrics = train(compose_config(overrides, tmp_path))
    assert metrics["status"] == "ok"
    chunks = int(len(text.read_text()) * 0.9) // 33 - 1  # one spare chunk, so the phase can move
    assert metrics["steps"] == 2 * (chunks // 256)


def test_a_batch_larger_than_the_train_split_is_refused(text: Path, tmp_path: Path, capsys):
    chunks = int(len(text.read_text()) * 0.9) // 33 - 1
    cfg = compose_config(["data=text_file", f"data.path={text}", *TINY, f"data.batch_size={chunks + 1}"], tmp_path)
    assert one_line_error(capsys, lambda: train(cfg)) == (
        f"error: data.batch_size={chunks + 1}: the train split of {text} has {chunks} chunks of 33 tokens; "
        f"use data.batch_size={chunks} or less"
    )


# --- a corpus that cannot be fetched: a failed run, one line, no stale lock ---------------------------------


def test_offline_is_a_failed_run_with_one_line(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    cfg = compose_config(["data=names", *TINY], tmp_path / "run")
    with open_dict(cfg):
        cfg.paths.data_dir = str(tmp_path / "cache")
    message = one_line_error(capsys, lambda: train(cfg), code=1)
    assert message.startswith(
        f"failed: {tmp_path / 'cache' / 'names' / 'names.txt'}: it is not cached and it could not"
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["reason"] == message.removeprefix("failed: ")
    assert list((tmp_path / "cache" / "names").iterdir()) == []  # no lock file, no partial download


# --- two real runs at once; resuming a run dir that was copied, then its original deleted -----------------


def cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, str(ROOT / "train.py"), *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def two_runs(text: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two `python train.py` started at the same moment in one dir, without naming a run dir."""
    cwd = tmp_path_factory.mktemp("together")
    procs = [cli("data=text_file", f"data.path={text}", *TINY, f"seed={seed}", cwd=cwd) for seed in (1, 2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    return sorted((cwd / "outputs" / "runs").iterdir())


@pytest.mark.slow
def test_two_runs_started_together_keep_their_results_apart(two_runs: list[Path]):
    assert len(two_runs) == 2
    seeds, writers = set(), set()
    for run_dir in two_runs:
        assert json.loads((run_dir / "metrics.json").read_text())["status"] == "ok"
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        assert len(list((run_dir / "checkpoints").glob("best-*.ckpt"))) == 1
        seeds.add(yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["seed"])
        # events.out.tfevents.<time>.<host>.<pid>.<n>: one process wrote every event file of a run
        pids = {p.name.split(".")[-2] for p in run_dir.glob("events.out.tfevents.*")}
        assert len(pids) == 1
        writers |= pids
        assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
    assert seeds == {1, 2} and len(writers) == 2


@pytest.mark.slow
def test_a_copied_run_dir_resumes_from_itself(two_runs: list[Path], text: Path, tmp_path: Path):
    original = two_runs[0]
    seed = yaml.safe_load((original / ".hydra" / "config.yaml").read_text())["seed"]
    args = ["data=text_file", f"data.path={text}", *TINY, f"seed={seed}"]
    # refused: Hydra's .hydra/ and train.log, metrics.json and vocab.json all stay as they were
    before = tree(original)
    proc = cli(*args, "model.hidden_size=48", f"resume={original}", cwd=tmp_path)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 2 and err.strip().splitlines()[-1].startswith("error: resume: ")
    assert tree(original) == before

    expected = json.loads((original / "metrics.json").read_text())
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    proc = cli(*args, f"resume={copy}", cwd=tmp_path)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    metrics = json.loads((copy / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["resumed_at_step"] == 4
    assert {k: metrics[k] for k in RESULTS} == {k: expected[k] for k in RESULTS}
    assert Path(metrics["best_checkpoint"]).parent == (copy / "checkpoints").resolve()
    assert f"resume={copy}" in (copy / ".hydra" / "overrides.yaml").read_text()  # written once accepted
