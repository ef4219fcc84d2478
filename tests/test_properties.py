"""The properties command: matched sizes, the fit, and a --quick run read back from its files."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA_DIR

from seqlab.analysis.properties import build, matched_size, n_params, slope, spread

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["rnn", "lstm", "transformer", "ssm", "mingru"])
def test_matched_sizes_are_within_3_percent(name):
    size = matched_size(name, 100_000, 64)
    assert abs(n_params(build(name, 64, size)) - 100_000) < 3_000


def test_slope_recovers_a_power_law():
    xs = [64, 128, 256, 512]
    assert slope(xs, [3e-6 * x**2 for x in xs]) == pytest.approx(2.0)
    assert slope(xs, [0.5 * x for x in xs]) == pytest.approx(1.0)


def test_timings_are_medians_with_their_interquartile_range():
    # numpy's linear interpolation; one repeat slowed by other work moves neither the median nor the quartiles
    assert spread("step_s", [1.0, 2.0, 3.0, 4.0, 50.0]) == {"step_s": 3.0, "step_s_q25": 2.0, "step_s_q75": 4.0}


@pytest.mark.slow
def test_quick_run_writes_tables_plot_and_tensorboard(tmp_path):
    models = ["rnn", "transformer", "ssm", "mingru"]
    cmd = [sys.executable, "-m", "seqlab.analysis.properties", "--quick", "--out", str(tmp_path), "--models", *models]
    cmd += ["--report", str(tmp_path / "study")]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    train = list(csv.DictReader((tmp_path / "training.csv").read_text().splitlines()))
    assert {(r["model"], int(r["context"])) for r in train} == {(m, t) for m in models for t in (16, 32, 64)}
    assert all(float(r["s_per_seq"]) > 0 and int(r["activation_bytes_per_seq"]) > 0 for r in train)
    assert all(float(r["step_s_q25"]) <= float(r["step_s"]) <= float(r["step_s_q75"]) for r in train)
    gen = list(csv.DictReader((tmp_path / "generation.csv").read_text().splitlines()))
    state = {(r["model"], int(r["position"])): int(r["state_bytes"]) for r in gen}
    transformer = build("transformer", 64, matched_size("transformer", 10_000, 64))
    L, E = len(transformer.blocks), transformer.tok_emb.embedding_dim
    for p in (1, 4, 16, 64):  # the cache: token ids (int64) + keys + values (float32), growing with p
        assert state["transformer", p] == p * 8 + 2 * L * p * E * 4
        assert state["transformer (no cache)", p] == p * 8  # the prefix it re-reads
        assert state["ssm", p] == state["ssm", 1] and state["mingru", p] == state["mingru", 1]  # constant
    md = (tmp_path / "properties.md").read_text()
    assert "| Compute (training) | O(T) |" in md and "transformer: T^" in md
    assert (tmp_path / "properties.png").stat().st_size > 10_000

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path)).Reload()
    steps = [e.step for e in events.Scalars("properties/state_bytes/transformer")]
    assert steps == [1, 4, 16, 64]
    assert not math.isnan(events.Scalars("properties/train_s_per_seq/ssm")[0].value)

    # --report: a results page made from runs.csv alone, checked like a sweep's
    from seqlab.analysis.report import differences

    study = tmp_path / "study"
    manifest = json.loads((study / "manifest.json").read_text())
    assert manifest["commands"][0].startswith("python -m seqlab.properties --quick") and manifest["git_commit_of"]
    assert "transformer: T^" in (study / "results.md").read_text() and differences(study) == []
    page = (study / "results.md").read_text()
    (study / "results.md").write_text(page.replace("transformer: T^", "transformer: T^9", 1))
    assert differences(study) == ["results.md"]  # a hand-edited cell is caught


@pytest.mark.slow
def test_trained_cells_fill_the_table_and_a_diverged_lr_loses_nothing(tmp_path, tiny_text):
    """--train-budget: real train.py runs per model and lr. An lr that diverges is a row with its status;
    the other lr still fills the cells; mlp_padded says it cannot run past its T_max."""
    cmd = [
        sys.executable,
        "-m",
        "seqlab.analysis.properties",
        "--quick",
        "--out",
        str(tmp_path),
        "--models",
        "rnn",
        "mlp_padded",
    ]
    cmd += ["--train-budget", "2", "--lrs", "1e-2", "1e4", "--recall-gaps", "4", "--recall-steps", "3"]
    # the text the test wrote, and the prepared corpora dir for anything else: every file is local
    cmd += ["--train-data", "text_file", f"data.path={tiny_text}", f"paths.data_dir={DATA_DIR}"]
    cmd += ["data.batch_size=8", "data.context_length=32", "trainer.val_check_interval=20"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    md = (tmp_path / "properties.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert "rnn: 1/2 lrs ok" in rows["Stable training"] and "mlp_padded: 1/2 lrs ok" in rows["Stable training"]
    assert "rnn: val ppl" in rows["Parameter efficiency (trained)"]
    assert "mlp_padded: cannot run past T=32" in rows["Variable length"]
    assert "(last 1 kept), " in rows["Order sensitivity"] and " (last 16)" in rows["Order sensitivity"]
    assert "d=4: " in rows["Long-range deps (trained)"] and "rnn: reach " in rows["Long-range deps (trained)"]
    runs = tmp_path / "runs" / "text_file"
    statuses = {p.name: json.loads((p / "metrics.json").read_text())["status"] for p in runs.iterdir()}
    assert statuses == {
        "rnn-lr0.01": "ok",
        "rnn-lr10000": "diverged",
        "mlp_padded-lr0.01": "ok",
        "mlp_padded-lr10000": "diverged",
    }
    assert "## Trained runs" in md


def test_a_latency_change_inside_the_spread_is_not_a_trend():
    from seqlab.analysis.properties import latency_trend

    def row(model, p, median, q25, q75):
        return {"model": model, "position": p, "decode_s": median, "decode_s_q25": q25, "decode_s_q75": q75}

    gen = [row("rnn", 64, 55e-6, 54e-6, 80e-6), row("rnn", 2048, 70e-6, 60e-6, 90e-6)]  # ranges overlap
    gen += [row("transformer", 64, 600e-6, 590e-6, 620e-6), row("transformer", 2048, 900e-6, 880e-6, 950e-6)]
    gen += [row("rnn", 1, 300e-6, 290e-6, 310e-6)]  # positions before 64 (warm-up) are not compared
    assert latency_trend(gen) == (["rnn"], ["transformer"])
