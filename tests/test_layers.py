"""The package's layers, as its folders show them: the launch layer loads no torch (Hydra runs its callbacks in
the launching process, before a job should pay for torch), and the commands users type keep their names."""

import subprocess
import sys

import pytest

from seqlab.paths import ROOT

LAUNCH = ["seqlab.launch.openmp", "seqlab.launch.malloc", "seqlab.launch.rundir", "seqlab.launch.slurm"]
LAUNCH += ["seqlab.launch.sweep", "seqlab.launch.threads", "seqlab.launch.tune", "seqlab.config", "seqlab.paths"]
LAUNCH += ["seqlab.errors", "seqlab.launch.provenance"]


def test_the_launch_layer_imports_no_torch() -> None:
    code = (
        f"import sys; import {', '.join(LAUNCH)}; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["compare", "probe", "properties", "tune"])
def test_the_commands_keep_their_names(command: str) -> None:
    done = subprocess.run([sys.executable, "-m", f"seqlab.{command}", "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_conf_is_found_from_one_place() -> None:
    assert (ROOT / "conf" / "train.yaml").is_file()
    hits = subprocess.run(
        ["grep", "-rln", "--include=*.py", "__file__", str(ROOT / "src")], capture_output=True, text=True
    ).stdout
    assert hits.split() == [str(ROOT / "src" / "seqlab" / "paths.py")]
