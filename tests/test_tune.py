"""Tuning with Optuna (skipped without it): a small study with pruning, killed mid-trial and continued, ends
with every trial recorded once, each an ordinary run dir that seqlab.analysis.compare reads."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest
from helpers import checkpoint_step, run_env

optuna = pytest.importorskip("optuna", reason='Optuna is optional: pip install -e ".[tune]"')

from seqlab.launch.tune import load_study, main, open_storage, parse_param, trial_dirname  # noqa: E402 (after the skip)

QUICK = [
    "data=text_file",
    "data.context_length=32",
    "data.batch_size=16",
    "model=rnn",
    "model.hidden_size=32",
    "model.emb_dim=16",
    "trainer.max_steps=20",
    "trainer.val_check_interval=5",
    "callbacks.resume.every_n_steps=2",
    "callbacks.progress=null",
    "callbacks.gradient_profile=null",
    "callbacks.samples=null",
    "callbacks.health=null",
]
SLOW = ["+callbacks.slow._target_=slow_steps.SlowSteps", "+callbacks.slow.seconds=0.2"]


def test_param_specs() -> None:
    assert parse_param("optim.lr=1e-4:3e-2:log") == ("optim.lr", {"low": 1e-4, "high": 3e-2, "log": True, "int": False})
    assert parse_param("model.hidden_size=64,128") == ("model.hidden_size", {"choices": [64, 128]})
    assert parse_param("model.hidden_size=32:256:int")[1]["int"]
    for bad in ("optim.lr", "optim.lr=3:1", "optim.lr=0:1:log", "optim.lr=a:b", "optim.lr=1:2:cubic"):
        with pytest.raises(Exception, match="--param"):
            parse_param(bad)
    assert trial_dirname(3, {"optim.lr": 0.0123456, "model.hidden_size": 64}) == "003_lr=0.01235,hidden_size=64"


def test_workers_started_together_draw_different_trials(tmp_path: Path) -> None:
    """One --seed, two workers: each samples its own startup trials (the same seed would repeat them)."""
    args = Namespace(study_name="s", journal=tmp_path / "journal.log", seed=0, startup_trials=4, warmup_steps=0)
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    first, second = (load_study(args, worker).ask({"lr": lr}).params["lr"] for worker in (0, 1))
    assert first != second
    again = load_study(args, 0).ask({"lr": lr}).params["lr"]  # a continued study: not worker 0's first draw
    assert again not in (first, second)
    reproduced = load_study(Namespace(**{**vars(args), "journal": tmp_path / "other.log"}), 0)
    assert reproduced.ask({"lr": lr}).params["lr"] == first  # and the seed still reproduces a study


@pytest.mark.slow
def test_study_with_pruning_killed_and_continued(tiny_text: Path, tmp_path: Path) -> None:
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "seqlab.launch.tune",
        str(study_dir),
        "--trials",
        "4",
        "--startup-trials",
        "1",
        "--seed",
        "0",
    ]
    cmd += ["--warmup-steps", "8"]  # pruning from the validation at step 10 on
    cmd += ["--param", "optim.lr=1e-5:5e-2:log", f"data.path={tiny_text}", *QUICK, *SLOW]
    # the first trials fixed, so that the third one is bad enough to be pruned (after one complete trial)
    study = optuna.create_study(study_name="study", storage=open_storage(study_dir / "journal.log"))
    for lr in (3e-2, 2e-2, 1e-5):
        study.enqueue_trial({"optim.lr": lr})

    first = subprocess.Popen(cmd, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    second_trial = study_dir / trial_dirname(1, {"optim.lr": 2e-2}) / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while checkpoint_step(second_trial) < 6:  # kill the study in the middle of its second trial
        assert first.poll() is None, first.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the second trial never reached step 6"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.communicate()

    again = subprocess.run(cmd, env=run_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "trial 1: its worker" in again.stderr and "is gone; queued again" in again.stderr

    trials = optuna.load_study(study_name="study", storage=open_storage(study_dir / "journal.log")).trials
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(finished) == 4 and [t.number for t in failed] == [1]  # only the killed one, run again once
    retry = next(t for t in finished if t.user_attrs.get("retry_of") == 1)
    assert retry.user_attrs["run_dir"] == failed[0].user_attrs["run_dir"]  # in its own dir, from its checkpoint
    assert not any(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    dirs = sorted(Path(t.user_attrs["run_dir"]).name for t in finished)
    assert dirs == sorted(p.name for p in study_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    pruned = [t for t in finished if t.state == optuna.trial.TrialState.PRUNED]
    assert 1e-5 in [t.params["optim.lr"] for t in pruned]  # far worse than the first trial at step 10
    for trial in pruned:
        metrics = json.loads((Path(trial.user_attrs["run_dir"]) / "metrics.json").read_text())
        assert metrics["status"] == "pruned" and metrics["steps"] < 20

    compare = subprocess.run(
        [sys.executable, "-m", "seqlab.analysis.compare", str(study_dir)], env=run_env(), capture_output=True, text=True
    )
    assert compare.returncode == 0, compare.stderr
    rows = {row["job"]: row for row in csv.DictReader((study_dir / "comparison.csv").open())}
    best = min((t for t in finished if t.value is not None and t.state.name == "COMPLETE"), key=lambda t: t.value)
    best_row = next(row for job, row in rows.items() if job.endswith(Path(best.user_attrs["run_dir"]).name))
    assert best_row["status"] == "ok" and float(best_row["best_val_ppl"]) == pytest.approx(2.718281828**best.value)
    assert len(rows) == 4


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--param", "optim.lrr=1e-4:1e-2:log"], "error: optim.lrr: no such setting in the config (misspelled? "),
        (["model.hiden_size=8"], "error: model.hiden_size: no such setting in the config"),
        (["+model.hiden_size=8"], "error: model.hiden_size: seqlab.models.rnn.RNN takes no such setting"),
        (["model=nonesuch"], "error: In 'train': Could not find 'model/nonesuch'; Available options in 'model': "),
        (["--param", "optim.lr=0:0.1"], "error: optim.lr=0.0: must be a positive number"),  # the low end
        (["--param", "model.dropout=0:1", "model=lstm"], "error: model.dropout=1.0: must be a number in [0, 1)"),
        (["trainer.max_steps=5", "schedule=cosine"], "error: schedule.scheduler.warmup_steps=100: longer than"),
    ],
)
def test_a_bad_key_or_value_is_one_line_before_the_study_exists(
    argv: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A misspelled key used to fail inside the first trial: Optuna's tracebacks, and a journal left behind."""
    study_dir = tmp_path / "study"
    assert main([str(study_dir), "--trials", "1", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1
    assert not study_dir.exists()  # no journal, no trial dir


def test_a_study_dir_that_is_a_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    assert main([str(path), "--trials", "1"]) == 2
    assert capsys.readouterr().err == f"error: {path}: is a file, not a study dir\n"
    assert path.read_text() == "mine"


def test_the_cli_says_a_misspelled_param_in_one_line(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "seqlab.tune", str(tmp_path / "study"), "--param", "optim.lrr=1e-4:1e-2:log"]
    done = subprocess.run(cmd, env=run_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: optim.lrr: no such setting in the config") and done.stderr.count("\n") == 1
    assert not (tmp_path / "study").exists()
