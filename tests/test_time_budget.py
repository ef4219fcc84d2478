"""A wall-clock budget (trainer.max_time) ends training, still validates and tests, and records val loss vs seconds."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_config
from helpers import scalars

from seqlab.config import check_config
from seqlab.training.run import train

TINY = ["model=unigram", "trainer.accelerator=cpu", "callbacks.progress=null", "callbacks.gradient_profile=null"]


def test_max_time_is_an_accepted_budget(tmp_path: Path):
    cfg = compose_config([*TINY, "trainer.max_steps=-1", "trainer.max_time=00:00:01:10"], tmp_path)
    check_config(cfg)  # a DD:HH:MM:SS string passes Lightning's type hint, and the budget ends


def test_max_time_validates_tests_and_records_the_curve(tiny_text: Path, tmp_path: Path):
    # a validation interval far beyond what 2 s can reach: the only validation is the one at the budget's end
    overrides = [*TINY, "data=text_file", f"data.path={tiny_text}", "trainer.max_steps=-1"]
    overrides += ["trainer.max_time=00:00:00:02", "trainer.val_check_interval=100000"]
    metrics = train(compose_config(overrides, tmp_path))
    assert metrics["status"] == "ok" and metrics["steps"] > 0
    (point,) = metrics["curve"]
    assert point["step"] == metrics["steps"]
    assert point["val_loss"] == pytest.approx(metrics["best_val_loss"])
    assert 2.0 <= point["s"] < 300 and 0 < point["train_s"] <= point["s"]
    assert metrics["test_loss"] is not None
    assert scalars(tmp_path)["val/loss_vs_s"] == [int(point["s"])]  # TensorBoard's step axis reads seconds


def test_openmp_waiters_sleep_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch):
    from seqlab.launch.openmp import settings, sleep_when_idle

    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(key, raising=False)
    sleep_when_idle()
    assert settings()["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    sleep_when_idle()
    assert settings()["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")
    sleep_when_idle()
    assert settings()["OMP_WAIT_POLICY"] is None  # a spin count is a choice too


PAGE_FAULTS = """
import resource, torch
from seqlab.launch.malloc import keep_freed_memory
from seqlab.models import WindowMLP
print(keep_freed_memory())
torch.manual_seed(0)
model = WindowMLP(16, 32, hidden_size=1024, emb_dim=64, window=3)  # a (256, 1024, 32) hidden layer: 32 MiB
x, y = torch.randint(16, (2, 256, 32))
def step():
    torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
step(), step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_training_steps_reuse_freed_activations_without_page_faults():
    """Five training steps of a window MLP whose activations are tens of MiB: glibc's default maps them afresh
    each step, so every page faults in again (≈ 70k faults a step here); with seqlab's setting the pages of
    the earlier steps are reused."""
    base = {k: v for k, v in os.environ.items() if k not in ("SEQLAB_MALLOC", "MALLOC_MMAP_THRESHOLD_")}
    faults = {}
    for setting in ("seqlab", "default"):
        out = subprocess.run(
            [sys.executable, "-c", PAGE_FAULTS], env=base | {"SEQLAB_MALLOC": setting}, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        applied, faults[setting] = out.stdout.split()
        assert applied == str(setting == "seqlab")
    assert int(faults["default"]) > 5 * int(faults["seqlab"]), faults
