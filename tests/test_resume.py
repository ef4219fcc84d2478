"""A run killed mid-way (SIGKILL or SIGTERM) and resumed ends with the same numbers as an unbroken run."""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import MAX_STEPS, checkpoint_step, command, results, run_env, start_and_stop

from seqlab.data.batches import TrainBatches
from seqlab.training import resume
from seqlab.training.resume import AtomicCheckpointIO, ResumeCheckpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def short_text(tmp_path_factory: pytest.TempPathFactory, sample_text: str) -> Path:
    path = tmp_path_factory.mktemp("data") / "short.txt"
    path.write_text(sample_text[:9000])  # 10 batches of 16 x 32 per epoch
    return path


@pytest.fixture(scope="module")
def unbroken(short_text: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    run_dir = tmp_path_factory.mktemp("unbroken")
    subprocess.run(command(short_text, run_dir), env=run_env(), check=True, capture_output=True)
    return results(run_dir)


@pytest.mark.slow
def test_sigkill_then_resume_a_moved_copy_matches_unbroken_run(
    short_text: Path, unbroken: dict, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    cmd = command(short_text, run_dir)
    proc = start_and_stop(cmd, run_dir, signal.SIGKILL, after_step=14)
    assert proc.returncode == -signal.SIGKILL
    killed_at = checkpoint_step(run_dir / "checkpoints" / "last.ckpt")
    assert 14 <= killed_at < MAX_STEPS

    # the run dir moves (a copy, then the original deleted): everything the resume needs is found in the copy
    copy = tmp_path / "moved"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(run_dir)
    cmd = [arg for arg in cmd if not arg.startswith("hydra.run.dir=")]
    resumed = subprocess.run([*cmd, f"resume={copy}"], env=run_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    # CPU kernels are deterministic here, and every state that shapes the rest of the run is restored
    assert results(copy) == unbroken
    best = json.loads((copy / "metrics.json").read_text())["best_checkpoint"]
    assert Path(best).parent == (copy / "checkpoints").resolve()
    assert not run_dir.exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_saves_a_checkpoint_and_resume_matches(
    sig: signal.Signals, short_text: Path, unbroken: dict, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    cmd = command(short_text, run_dir)
    proc = start_and_stop(cmd, run_dir, sig, after_step=7)
    assert proc.returncode == 130
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted"
    assert f"resume={run_dir}" in metrics["reason"]
    assert "stopped by a signal at step" in metrics["reason"]  # our handler, not Lightning's
    # saved on the way out, after the step in flight, not the periodic one from before the signal
    assert metrics["steps"] == checkpoint_step(run_dir / "checkpoints" / "last.ckpt") < MAX_STEPS

    # resume= alone picks the run dir: the command a user typed without hydra.run.dir works the same
    cmd = [arg for arg in cmd if not arg.startswith("hydra.run.dir=")]
    resumed = subprocess.run([*cmd, f"resume={run_dir}"], env=run_env(), capture_output=True, text=True, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert results(run_dir) == unbroken


def test_train_batches_continue_from_their_state():
    """A loader rebuilt from a state_dict taken mid-epoch yields exactly the batches the original would have."""

    def loader() -> TrainBatches:
        return TrainBatches(torch.arange(3000), context_length=15, batch_size=8, seed=3)  # 23 batches an epoch

    unbroken = loader()
    expected = [x for _ in range(3) for x, _ in unbroken]  # three whole epochs
    first = loader()
    seen = [x for x, _ in first]  # epoch 0
    seen += [x for x, _ in itertools.islice(first, 7)]  # 7 batches into epoch 1, then the "kill"
    assert first.state_dict() == {"epoch": 1, "batch": 7}
    resumed = loader()
    resumed.load_state_dict(first.state_dict())
    seen += [x for x, _ in resumed]  # the rest of epoch 1
    seen += [x for x, _ in resumed]  # epoch 2
    assert len(seen) == len(expected) == 69
    assert all(torch.equal(a, b) for a, b in zip(seen, expected, strict=True))


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path: Path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "weights": torch.ones(3)}, path)
    with pytest.raises(Exception):  # noqa: B017 (whatever torch.save raises for an unpicklable object)
        io.save_checkpoint({"step": 2, "weights": torch.ones(3), "broken": lambda: None}, path)
    assert io.load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.ckpt.part", "last.ckpt"]


def test_last_ckpt_is_due_after_its_seconds_or_its_steps_whichever_comes_first(monkeypatch: pytest.MonkeyPatch):
    now = [1000.0]
    monkeypatch.setattr(resume.time, "monotonic", lambda: now[0])
    by_time = ResumeCheckpoint("unused", every_n_seconds=60)  # the default: no step count
    assert not any(by_time._interval_passed(step) for step in (1, 50, 100, 1000))
    now[0] += 59.9
    assert not by_time._interval_passed(7)
    now[0] += 0.1
    assert by_time._interval_passed(7)

    both = ResumeCheckpoint("unused", every_n_steps=3, every_n_seconds=60)
    assert [both._interval_passed(step) for step in range(1, 7)] == [False, False, True, False, False, True]
    now[0] += 60
    assert both._interval_passed(4)

    neither = ResumeCheckpoint("unused", every_n_steps=None, every_n_seconds=None)  # validations and signals only
    now[0] += 1e6
    assert not any(neither._interval_passed(step) for step in range(1, 100))
