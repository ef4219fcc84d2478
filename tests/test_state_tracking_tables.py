"""The state-tracking table maker: lr choice, verdicts against the predictions, pages rebuilt from st.csv, and
the "why" measurements on a real (tiny) run."""

import json
from pathlib import Path

import pytest
from conftest import compose_config
from omegaconf import OmegaConf

from seqlab.analysis import state_tracking as st
from seqlab.training.run import train


def fake_job(root: Path, name: str, st_model: str, task: str, seed: int, lr: float, acc: dict, val: float = 0.1):
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    overrides = [f"st_model={st_model}", f"data.task={task}", f"seed={seed}", f"optim.lr={lr}"]
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    metrics = {
        "status": "ok",
        "model": st_model.removesuffix("_signed"),
        "best_val_loss": val,
        "best_val_ppl": 1.1,
        "test_ppl": 1.1,
        "params": 21000,
        "hparams": {"lr": lr, "seed": seed, "data": "state_tracking", "model": st_model},
        "state_tracking": {"task": task, "chance": st.chance_of(task), "acc": acc},
    }
    (job / "metrics.json").write_text(json.dumps(metrics))


def accuracies(in_dist: float, long: float, stream: float | None = None) -> dict:
    acc = {"3-40": in_dist, "40-64": long, "64-128": long, "128-256": long}
    return acc | ({"stream-1024": stream} if stream is not None else {})


def test_every_model_and_task_has_a_prediction_and_the_issues_cells_are_as_stated():
    for model in st.MODELS:
        for task in st.TASKS:
            assert st.predicted(model, task) in (st.G, st.F_, st.Q) and st.reason(model, task)
    expected = {"lstm": "✓", "gru": "✓", "transformer": "✗", "mingru": "✗", "mingru_signed": "✓", "deltanet": "✗"}
    expected |= {"deltanet_signed": "✓", "ssm": "✗", "ssm_signed": "✗"}
    assert {m: st.predicted(m, "parity") for m in expected} == expected
    assert st.predicted("mingru_signed", "mod3") == "✗"  # signs give period 2, not 3


def test_verdicts_follow_the_thresholds():
    assert st.verdict(0.95, "parity") == "✓" and st.verdict(0.6, "parity") == "✗" and st.verdict(0.75, "parity") == "~"
    assert st.verdict(1 / 6 + 0.1, "s3") == "✗"  # within a fifth of the way from 1/6 to 1
    assert st.verdict(None, "s3") == ""


def test_lrs_table_and_study_pages(tmp_path: Path):
    stage1, stage2 = tmp_path / "s1", tmp_path / "s2"
    for i, lr in enumerate([1e-3, 3e-3, 1e-2]):
        fake_job(stage1, f"{i}_lstm", "lstm", "parity", 0, lr, accuracies(1, 1), [0.5, 0.01, 0.2][i])
        fake_job(stage1, f"{i}_mingru", "mingru_signed", "parity", 0, lr, accuracies(1, 1), [0.6, 0.3, 0.05][i])
    lrs = st.choose_lrs(st.collect([stage1]))
    assert st.st_lr_override(lrs) == "+st_lr={lstm:0.003,mingru_signed:0.01}"
    for seed in range(3):
        fake_job(stage2, f"a{seed}", "lstm", "parity", seed, 3e-3, accuracies(1.0, 0.99 + seed / 1000, 1.0))
        fake_job(stage2, f"b{seed}", "mingru", "parity", seed, 3e-3, accuracies(0.95, 0.97))  # theory: fails
        fake_job(stage2, f"c{seed}", "transformer", "mod3", seed, 1e-3, accuracies(0.8, 0.34))
    out = st.table([stage2], "st_test", tmp_path / "study", stage1, notes="")
    page = (out / "st.md").read_text()
    summary = {(r["model"], r["task"]): r for r in st.summarise(st.collect([stage2]))}
    assert summary["lstm", "parity"]["agree"] == "yes" and summary["lstm", "parity"]["n"] == 3
    assert summary["lstm", "parity"]["128-256"] == "0.991 ± 0.001"
    assert summary["mingru", "parity"]["agree"] == "NO"
    assert summary["transformer", "mod3"]["agree"] == "yes (3-40 < 0.9)"
    assert summary["transformer", "mod3"]["stream-1024"] == "cannot run"
    assert "2 cells agree with the prediction, 1 disagree: mingru on parity" in page
    assert "| lstm | 0.003 | 0.01 | ✓ |" in page
    assert {"results.md", "runs.csv", "manifest.json", "st.csv", "lrs.csv", "st.png"} <= {p.name for p in out.iterdir()}
    (out / "st.md").write_text("edited")
    st.write_table(out)  # the page again, from st.csv and lrs.csv alone
    assert (out / "st.md").read_text() == page


@pytest.mark.slow
def test_why_measures_a_real_run(tmp_path: Path):
    """The gradient of the final label by distance and the probes, on a tiny trained GRU's own checkpoint."""
    small = ["data.sequences=[300,60,60]", "data.bucket_sequences=20", "data.stream_sequences=4"]
    cfg = ["experiment=state_tracking", "st_model=gru", "trainer.max_steps=30", "trainer.val_check_interval=15"]
    config = compose_config([*cfg, *small], tmp_path)
    assert train(config)["status"] == "ok"
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(config, tmp_path / ".hydra" / "config.yaml")  # what a train.py run leaves for the tools
    found = st.why(tmp_path, length=60, n=16)
    assert found["task"] == "parity" and found["gradient_of"] == "h (top layer)"
    assert found["g d=0"] > 0 and len(found["profile"]) == 61
    assert all(0 <= found[k] <= 1 for k in found if k.startswith("probe"))
