"""Sweeps: presets compose, job dirs are named by their overrides, parallel launchers share the cores, and a
sweep with a failed or diverged job finishes all the others and exits non-zero."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from seqlab.sweep import SweepReport, find_job_dirs, job_dirname, read_job, threads_per_job

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SINGLE_RUNS = {"ptb_zaremba_small"}  # a published recipe run once (tests/test_stateful.py), not a sweep
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml") if p.stem not in SINGLE_RUNS)
TINY = ["trainer.max_steps=3", "trainer.val_check_interval=3", "data.batch_size=8"]


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 120)
    return path


def run_sweep(args: list[str], sweep_dir: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "train.py", "-m", *args, f"hydra.sweep.dir={sweep_dir}"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


# --- fast: names, threads, presets ---------------------------------------------------------------------


def test_job_dirname_is_one_safe_unique_dir() -> None:
    assert job_dirname(3, "data.context_length=16,model=rnn") == "3_data.context_length=16,model=rnn"
    assert job_dirname(0, "") == "0"
    nested = job_dirname(1, "callbacks.checkpoint.dirpath=/x/y,model=rnn")
    assert "/" not in nested and nested.startswith("1_")
    long = job_dirname(12, ",".join(f"key{i}=välue{i}" for i in range(60)))
    assert len(long.encode()) <= 200 and long.startswith("12_")


@pytest.mark.parametrize(
    ("launcher", "cpus", "expected"),
    [
        (
            {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2},
            2,
            1,
        ),
        (
            {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 4},
            16,
            4,
        ),
        (
            {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -1},
            16,
            1,
        ),
        (
            {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -2},
            16,
            1,
        ),
        ({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"}, 16, 1),
        ({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}, 16, None),
        (
            {
                "_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                "cpus_per_task": 6,
            },
            16,
            6,
        ),
        ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 16, None),
    ],
)
def test_threads_per_job_splits_the_cores_among_parallel_jobs(launcher: dict, cpus: int, expected: int | None) -> None:
    assert threads_per_job(OmegaConf.create(launcher), cpus=cpus) == expected


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_and_declares_its_sweep(preset: str) -> None:
    cfg = compose_train([f"experiment={preset}"])
    params = cfg.hydra.sweeper.params
    assert params, f"experiment={preset} declares no hydra.sweeper.params"
    assert cfg.trainer.max_steps > 0
    assert cfg.data.batch_size >= 1  # interpolations (context_sweep: tokens per batch) must resolve
    # every swept key reaches the job's dir name (override_dirname excludes none of them)
    excluded = set(cfg.hydra.job.config.override_dirname.exclude_keys)
    assert not excluded & set(params), f"{preset}: swept keys hidden from the job names"


def test_preset_sweeps_match_the_issue() -> None:
    baselines = compose_train(["experiment=baselines"])
    assert set(baselines.hydra.sweeper.params.model.split(",")) == {
        "unigram",
        "mlp_window",
        "mlp_padded",
        "rnn",
        "lstm",
        "gru",
    }
    assert (baselines.data.context_length, baselines.model.hidden_size) == (64, 256)
    vanishing = compose_train(["experiment=vanishing"])
    assert vanishing.hydra.runtime.choices.model == "rnn"
    radii = [float(r) for r in vanishing.hydra.sweeper.params["model.recurrent_radius"].split(",")]
    assert min(radii) == 0.5 and max(radii) == 1.5 and 1.0 in radii
    assert vanishing.hydra.sweeper.params["trainer.gradient_clip_val"] == "null,1.0"
    context = compose_train(["experiment=context_sweep", "data.context_length=256"])
    assert context.data.batch_size * context.data.context_length == 4096  # same tokens per step at every length


def test_ddp_trainer_composes_for_several_gpus() -> None:
    cfg = compose_train(["trainer=ddp", "trainer.devices=4"])
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 4
    assert cfg.trainer.use_distributed_sampler is False  # the batch iterables shard by rank themselves
    assert cfg.trainer.accelerator == "gpu"


def test_slurm_launcher_composes() -> None:
    cfg = compose_train(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"])
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.partition == "gpu"
    assert threads_per_job(cfg.hydra.launcher, cpus=64) == cfg.hydra.launcher.cpus_per_task


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_ddp_runs_one_job_on_two_gpus(tiny_text: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "train.py", "trainer=ddp", "data=text_file", f"data.path={tiny_text}", *TINY]
    done = subprocess.run([*cmd, f"hydra.run.dir={tmp_path}"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "ok"


def test_sweep_report_exits_non_zero_and_names_the_failed_job(tmp_path: Path, capsys) -> None:
    for name, status in [("0_model=rnn", "ok"), ("1_model=rnn,optim.lr=1000", "diverged")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"status": status, "reason": "loss is nan"}))
    (tmp_path / "2_model=rnn,optim.lr=5" / ".hydra").mkdir(parents=True)  # started, never finished
    (tmp_path / ".submitit" / "123").mkdir(parents=True)  # not a job
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    with pytest.raises(SystemExit) as exit_info:
        SweepReport().on_multirun_end(config=config)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "2 of 3 jobs" in err and "1_model=rnn,optim.lr=1000: diverged" in err and "missing" in err
    assert [d.name for d in find_job_dirs(tmp_path)] == [
        "0_model=rnn",
        "1_model=rnn,optim.lr=1000",
        "2_model=rnn,optim.lr=5",
    ]
    assert read_job(tmp_path / "2_model=rnn,optim.lr=5").status == "missing"

    (tmp_path / "1_model=rnn,optim.lr=1000" / "metrics.json").write_text(json.dumps({"status": "ok"}))
    (tmp_path / "2_model=rnn,optim.lr=5" / "metrics.json").write_text(json.dumps({"status": "ok"}))
    SweepReport().on_multirun_end(config=config)  # all ok: returns


# --- slow: real sweeps through train.py -m ------------------------------------------------------------

GRID = ["model=unigram,rnn", "model.hidden_size=8,16", "data.context_length=8,16"]


def run_names(sweep_dir: Path) -> set[str]:
    """The run list TensorBoard shows for `tensorboard --logdir <sweep_dir>`."""
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(sweep_dir))
    multiplexer.Reload()
    return set(multiplexer.Runs())


def check_grid_sweep(sweep_dir: Path) -> None:
    jobs = find_job_dirs(sweep_dir)
    assert len(jobs) == 8
    assert all(read_job(j).status == "ok" for j in jobs)
    names = run_names(sweep_dir)
    assert names == {j.name for j in jobs}
    overrides = [dict(kv.split("=", 1) for kv in n.split("_", 1)[1].split(",")) for n in names]
    combos = {(o["model"], o["model.hidden_size"], o["data.context_length"]) for o in overrides}
    assert combos == {(m, h, c) for m in ("unigram", "rnn") for h in ("8", "16") for c in ("8", "16")}
    assert not any("/" in n or "data.path" in n for n in names)


@pytest.mark.slow
def test_joblib_sweep_runs_two_jobs_at_a_time_with_one_thread_each(tiny_text: Path, tmp_path: Path) -> None:
    args = ["data=text_file", f"data.path={tiny_text}", *GRID, *TINY]
    done = run_sweep([*args, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    check_grid_sweep(tmp_path)
    cores = len(os.sched_getaffinity(0))
    threads = {json.loads((j / "metrics.json").read_text())["threads"] for j in find_job_dirs(tmp_path)}
    assert threads == {max(cores // 2, 1)}
    assert "all 8 jobs ok" in done.stderr


@pytest.mark.slow
def test_submitit_local_sweep(tiny_text: Path, tmp_path: Path) -> None:
    args = ["data=text_file", f"data.path={tiny_text}", *GRID, *TINY]
    done = run_sweep([*args, "hydra/launcher=submitit_local"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    check_grid_sweep(tmp_path)
    assert (tmp_path / ".submitit").is_dir()  # the jobs really went through submitit


@pytest.mark.slow
def test_a_diverged_and_a_bad_job_do_not_stop_the_sweep(tiny_text: Path, tmp_path: Path) -> None:
    # rnn at lr=1000 on this text: the loss turns inf within ~20 steps; lr=-1 is rejected before training
    args = ["data=text_file", f"data.path={tiny_text}", "model=rnn", "optim.lr=0.003,1000,-1"]
    args += [
        "model.hidden_size=16",
        "data.context_length=16",
        "trainer.max_steps=40",
        "trainer.val_check_interval=40",
    ]
    done = run_sweep(args, tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "2 of 3 jobs did not finish ok" in done.stderr
    status = {j.name: read_job(j).status for j in find_job_dirs(tmp_path)}
    assert sorted(status.values()) == ["bad_config", "diverged", "ok"]
    assert status[next(n for n in status if "optim.lr=1000" in n)] == "diverged"

    from seqlab.compare import main as compare

    assert compare([str(tmp_path)]) == 0
    table = (tmp_path / "comparison.md").read_text()
    assert "| diverged |" in table and "| bad_config |" in table and "optim.lr=-1" in table
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 3  # none dropped
    bad_row = next(r for r in rows if "bad_config" in r)
    assert "| 16 |" in bad_row  # its settings come from Hydra's saved config, since training never started
