"""The context-use study: probe curves grouped over seeds (saturation per seed, the unbounded history's gain marked
≈ 0 where its sd band holds zero), and the pages regenerated from context_use.csv alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA_DIR, ROOT

from seqlab.analysis import context_use


def rows(model: str, seed: int, losses: dict, T: int = 8) -> list[dict]:
    base = {"job": f"{model}_{seed}", "data": "text", "model": model, "seed": seed, "context_length": T}
    base |= {"status": "ok", "best_val_loss": min(losses.values())}
    return [base | {"k": k, "loss": v} for k, v in losses.items()]


def test_saturation_per_seed_and_the_gain_of_the_unbounded_history() -> None:
    found = rows("rnn", 0, {1: 2.0, 2: 1.5, 4: 1.2, 8: 1.1, "all": 1.0})  # gains past T: saturates at "all"
    found += rows("rnn", 1, {1: 2.0, 2: 1.5, 4: 1.105, 8: 1.1, "all": 1.098})  # within 0.01 from k = 4
    found += rows("mlp_window", 0, {1: 2.0, 2: 1.6, 4: 1.6, 8: 1.6})
    found += [rows("mlp_window", 1, {1: 1.0})[0] | {"status": "failed", "k": None, "loss": None}]
    rnn, mlp = sorted(context_use.summarise(found), key=lambda e: e["model"] != "rnn")
    assert rnn["saturation"] == ["all", 4] and rnn["n"] == 2
    assert rnn["gain"] == pytest.approx([-0.1, -0.002])
    assert mlp["saturation"] == [2] and mlp["n"] == 1 and mlp["missing"] == 1 and mlp["gain"] == []
    assert context_use.gain_text([-0.1, -0.002]) == "-0.0510 ± 0.0693 (≈ 0)"  # the band holds zero
    assert context_use.gain_text([0.1, 0.12]) == "+0.1100 ± 0.0141" and context_use.gain_text([0.1]) == "+0.1000"
    page = context_use.render(found)
    assert "| rnn | 8 | 2 |" in page and "all, 4" in page and "no probe or not ok" in page
    assert "rnn k = all/4 (unbounded history − k = 8: -0.0510 ± 0.0693 (≈ 0) nats)" in context_use.headline(found)


@pytest.mark.slow
def test_the_study_from_a_tiny_sweep_probes_its_jobs_and_regenerates(tmp_path: Path, tiny_text: Path) -> None:
    env = {"PYTHONPATH": str(ROOT / "src"), "SEQLAB_DATA_DIR": str(DATA_DIR), "PATH": "/usr/bin:/bin"}
    sweep = tmp_path / "sweep"
    quick = ["trainer.max_steps=4", "trainer.val_check_interval=2", "model.hidden_size=16", "data.context_length=8"]
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "model=rnn,mlp_window",
        "seed=0,1",
        "data=text_file",
        f"data.path={tiny_text}",
    ]
    subprocess.run([*cmd, *quick, f"hydra.sweep.dir={sweep}"], cwd=ROOT, env=env, check=True, capture_output=True)
    out = tmp_path / "out"
    assert context_use.main([str(sweep), "--probe", "--tokens", "64", "--ks", "1", "4", "--out", str(out)]) == 0
    table = context_use.read_csv(out / "context_use.csv")
    assert len({r["job"] for r in table}) == 4
    rnn = {r["k"] for r in table if r["model"] == "rnn"}
    assert rnn == {1, 4, 8, "all"} and "all" not in {r["k"] for r in table if r["model"] == "mlp_window"}
    page = (out / "context_use.md").read_text()
    assert (out / context_use.FIGURE).is_file() and "| rnn | 8 | 2 |" in page
    (out / "context_use.md").write_text(page.replace("| rnn | 8 | 2 |", "| rnn | 8 | 3 |"))  # a hand edit
    assert context_use.main(["--regenerate", str(out)]) == 0
    assert (out / "context_use.md").read_text() == page
