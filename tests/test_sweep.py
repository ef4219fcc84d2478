"""Sweeps: presets compose, job dirs are named by their overrides, parallel launchers share the cores, and a
sweep with a failed or diverged job finishes all the others and exits non-zero."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from seqlab.launch.sweep import (
    SWEPT_KEYS_ENV,
    Job,
    SweepReport,
    find_job_dirs,
    job_dirname,
    read_job,
    resume_command,
    swept_keys,
    threads_per_job,
    write_hparams_experiment,
)

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


def test_job_dirname_is_one_safe_unique_dir(monkeypatch) -> None:
    monkeypatch.delenv(SWEPT_KEYS_ENV, raising=False)
    assert job_dirname(3, "data.context_length=16,model=rnn") == "3_data.context_length=16,model=rnn"
    assert job_dirname(0, "") == "0"
    nested = job_dirname(1, "callbacks.checkpoint.dirpath=/x/y,model=rnn")
    assert "/" not in nested and nested.startswith("1_")
    long = job_dirname(12, ",".join(f"key{i}=välue{i}" for i in range(60)))
    assert len(long.encode()) <= 200 and long.startswith("12_")


def test_job_dirname_keeps_only_the_swept_keys(monkeypatch) -> None:
    overrides = ["model=rnn,gru", "trainer.max_steps=20", "+callbacks.x.seconds=1", "data.context_length=16"]
    keys = swept_keys(overrides, {"model.hidden_size": "64,256", "data.context_length": "16,64"})
    assert keys == ["model", "model.hidden_size"]  # the command line's single value wins over the preset's grid
    monkeypatch.setenv(SWEPT_KEYS_ENV, ",".join(keys))
    dirname = "+callbacks.x.seconds=1,data.context_length=16,model.hidden_size=64,model=gru,trainer.max_steps=20"
    assert job_dirname(2, dirname) == "2_model.hidden_size=64,model=gru"
    assert job_dirname(0, "model=rnn,optim.betas=[0.9,0.95]") == "0_model=rnn"
    monkeypatch.setenv(SWEPT_KEYS_ENV, "optim.betas")
    assert job_dirname(0, "model=rnn,optim.betas=[0.9,0.95]") == "0_optim.betas=[0.9,0.95]"


def test_sweep_hparams_experiment_marks_the_keys_that_differ(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    hparams = [{"model": m, "hidden_size": h, "lr": 0.003, "window": None} for m in ("rnn", "gru") for h in (8, 16)]
    jobs = [Job(tmp_path / str(i), {"status": "ok", "hparams": hp}) for i, hp in enumerate(hparams)]
    write_hparams_experiment(tmp_path, jobs)
    write_hparams_experiment(tmp_path, jobs)  # a resumed sweep replaces it: one per logdir
    (event_file,) = tmp_path.glob("events.out.tfevents.*")
    values = [v for e in EventFileLoader(str(event_file)).Load() for v in e.summary.value]
    assert [v.tag for v in values] == ["_hparams_/experiment"]
    content = values[0].metadata.plugin_data.content
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    assert {h.name: h.differs for h in experiment.hparam_infos} == {
        "hidden_size": True,
        "lr": False,
        "model": True,
        "window": False,
    }
    assert [m.name.tag for m in experiment.metric_infos][:2] == ["hp/best_val_ppl", "hp/test_ppl"]


def test_resume_command_points_the_same_command_at_the_same_sweep_dir(tmp_path: Path) -> None:
    argv = ["train.py", "-m", "model=rnn,gru", "hydra.sweep.dir=old", "data.path=/a b/c.txt"]
    command = resume_command(tmp_path, argv)
    assert command == f"python train.py -m model=rnn,gru 'data.path=/a b/c.txt' hydra.sweep.dir={tmp_path}"


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
    assert cfg.trainer.max_steps > 0 or cfg.trainer.max_time  # a step or a wall-clock budget
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
    return set(multiplexer.Runs()) - {"."}  # the sweep's root holds its HParams experiment, no run


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

    from seqlab.analysis.compare import main as compare

    assert compare([str(tmp_path)]) == 0
    table = (tmp_path / "comparison.md").read_text()
    assert "| diverged |" in table and "| bad_config |" in table and "optim.lr=-1" in table
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 3  # none dropped
    bad_row = next(r for r in rows if "bad_config" in r)
    assert "| 16 |" in bad_row  # its settings come from Hydra's saved config, since training never started


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_sigterm_stops_a_joblib_sweep_cleanly_and_its_command_resumes_it(tiny_text: Path, tmp_path: Path) -> None:
    args = ["data=text_file", f"data.path={tiny_text}", "model=rnn", "model.hidden_size=8,12,16"]
    args += ["data.context_length=16", "data.batch_size=8", "trainer.max_steps=30", "trainer.val_check_interval=30"]
    args += ["callbacks.resume.every_n_steps=2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    args += ["+callbacks.slow._target_=slow_steps.SlowSteps", "+callbacks.slow.seconds=0.2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT / 'tests'}"}
    cmd = [sys.executable, "train.py", "-m", *args, f"hydra.sweep.dir={tmp_path}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while len(list(tmp_path.glob("*/checkpoints/last.ckpt"))) < 2:  # both workers are training
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the jobs never started training"
        time.sleep(0.2)
    children = [
        int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    ]
    assert len(children) >= 2  # joblib's workers (and its resource tracker)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)

    assert proc.returncode == 130, err[-3000:]
    jobs = {j.name: read_job(j) for j in find_job_dirs(tmp_path)}
    assert sorted(j.status for j in jobs.values()) == ["interrupted", "interrupted", "not_started"], err[-3000:]
    for job in jobs.values():
        if job.status == "interrupted":  # stopped the way a single run stops: early, with its last.ckpt saved
            assert job.metrics["steps"] < 30 and (job.dir / "checkpoints" / "last.ckpt").is_file()
    assert "sweep: stopped: 3 of 3 jobs did not finish ok, 1 not started" in err
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in children):  # the resource tracker leaves a moment after its parent
        assert time.monotonic() < deadline, [pid for pid in children if _alive(pid)]
        time.sleep(0.2)

    (resume,) = [line for line in err.splitlines() if line.startswith("sweep: resume (ok jobs are kept): ")]
    resume_cmd = shlex.split(resume.split(": ", 2)[2])
    assert resume_cmd[0] == "python" and resume_cmd[-1] == f"hydra.sweep.dir={tmp_path}"
    done = subprocess.run([sys.executable, *resume_cmd[1:]], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "all 3 jobs ok" in done.stderr
    for name, before in jobs.items():
        after = read_job(tmp_path / name)
        assert after.status == "ok" and after.metrics["steps"] == 30
        last = tmp_path / name / "checkpoints" / "last.ckpt"
        resumed = f"Restoring states from the checkpoint path at {last}" in (tmp_path / name / "train.log").read_text()
        assert resumed == (before.status == "interrupted")
