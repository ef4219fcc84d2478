"""The streams and recall-capacity table makers and the lr-then-seeds launcher, on sweep dirs written by hand (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import compose_config

from seqlab.analysis import recall_capacity, streams
from seqlab.config import check_config
from seqlab.launch import lr_then_seeds


def job(root: Path, name: str, overrides: dict, metrics: dict) -> Path:
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))
    hp = {"hidden_size": overrides.get("model.hidden_size", 64), "lr": float(overrides["optim.lr"])}
    hp["seed"] = int(overrides["seed"])
    (d / "metrics.json").write_text(json.dumps({"model": overrides["model"], "status": "ok", "hparams": hp} | metrics))
    return d


def stream_rows(acc: list[float], state: int | list[int]) -> dict:
    held = state if isinstance(state, list) else [state] * len(acc)
    rows = [
        {"length": n, "accuracy": a, "seconds": 0.5, "state_bytes": b}
        for n, a, b in zip((1024, 65536), acc, held, strict=True)
    ]
    return {"read": "carried state", "limit": None, "rows": rows}


def test_streams_table_takes_the_lr_of_the_first_seed(tmp_path):
    """The lr with the lowest best_val_loss on the first seed, then every seed at that lr (mean ± sd); a constant
    state is said once; a model that stops says why, under the table."""
    sweep = tmp_path / "sweep"
    for i, (lr, seed, loss, acc) in enumerate(
        [(1e-3, 0, 0.5, [0.2, 0.1]), (3e-3, 0, 0.01, [1.0, 0.9]), (3e-3, 1, 0.02, [1.0, 1.0]), (1e-3, 1, 0.001, [0, 0])]
    ):
        job(
            sweep,
            f"{i}_lstm",
            {"model": "lstm", "optim.lr": lr, "seed": seed},
            {"best_val_loss": loss, "recall_acc": 1.0, "streams": stream_rows(acc, 512)},
        )
    window = stream_rows([0.3, 0.06], [16384, 16384]) | {
        "read": "last 256 tokens re-read",
        "limit": "its KV cache cannot run past 256 tokens",
    }
    job(
        sweep,
        "9_transformer",
        {"model": "transformer", "optim.lr": 1e-3, "seed": 0},
        {"best_val_loss": 0.1, "recall_acc": 0.9, "streams": window},
    )
    assert streams.main(["table", str(sweep), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "streams.md").read_text()
    lstm = next(line for line in text.splitlines() if line.startswith("| lstm"))
    assert "| 0.003 | 2 |" in lstm and "| 1 |" in lstm and "0.95 ± 0.071" in lstm and "512 at every length" in lstm
    assert "**transformer**: its KV cache cannot run past 256 tokens" in text
    before = text
    assert streams.main(["table", "--regenerate", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "streams.md").read_text() == before  # the page is its csv's


def test_recall_capacity_k50_and_figure(tmp_path):
    sweep = tmp_path / "sweep"
    for width, accs in ((32, [1.0, 0.6, 0.2]), (64, [1.0, 0.9, 0.7])):
        for seed in (0, 1):
            rows = [
                {"pairs": k, "length": 64, "recall_acc": a, "state_bytes": 4 * width}
                for k, a in zip((4, 8, 16), accs, strict=True)
            ]
            job(
                sweep,
                f"gru_{width}_{seed}",
                {"model": "gru", "model.hidden_size": width, "optim.lr": 1e-3, "seed": seed},
                {"best_val_loss": 0.1, "mqar": rows},
            )
    out = tmp_path / "out"
    assert recall_capacity.main([str(sweep), "--out", str(out)]) == 0
    text = (out / "capacity.md").read_text()
    assert "| gru | 32 | 0.001 | 2 | 128 | 1 | 0.6 | 0.2 | 8 | 8, 8 |" in text
    assert "| gru | 64 | 0.001 | 2 | 256 | 1 | 0.9 | 0.7 | 16 | 16, 16 |" in text
    assert "**gru**: K₅₀ by width 32 → 8, 64 → 16: never falls" in text
    assert (out / recall_capacity.FIGURE).stat().st_size > 0


def test_lr_then_seeds_runs_each_group_at_its_best_lr(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for i, (model, lr, loss) in enumerate(
        [("lstm", 1e-3, 0.5), ("lstm", 1e-2, 0.1), ("gru", 1e-3, 0.2), ("gru", 1e-2, 0.9)]
    ):
        job(
            sweep, f"{i}", {"experiment": "streams", "model": model, "optim.lr": lr, "seed": 0}, {"best_val_loss": loss}
        )
    job(sweep, "9", {"experiment": "streams", "model": "rnn", "optim.lr": 1e-3, "seed": 0}, {"best_val_loss": None})
    assert lr_then_seeds.main([str(sweep), "--dry-run", "--seeds", "1,2", "--", "hydra/launcher=joblib"]) == 1
    out, err = capsys.readouterr()
    lines = sorted(out.splitlines())
    assert len(lines) == 2 and "skipped model=rnn: no job ended ok with a best_val_loss" in err
    assert "model=gru optim.lr=0.001 seed=1,2" in lines[0] and lines[0].endswith("hydra/launcher=joblib")
    assert "experiment=streams" in lines[1] and "model=lstm optim.lr=0.01 seed=1,2" in lines[1]
    assert f"hydra.sweep.dir={sweep}/seeds/model_lstm " in lines[1]


@pytest.mark.parametrize("preset", ["streams", "recall_capacity"])
def test_presets_compose_for_every_swept_model(preset, tmp_path):
    """Each model the preset sweeps composes and passes the config checks (a key a model does not take, e.g.
    num_heads for an LSTM, would be one line at the start of its job)."""
    group = "model" if preset == "streams" else "rc_model"
    swept = compose_config([f"experiment={preset}"], tmp_path).hydra.sweeper.params[group].split(",")
    assert {"lstm", "gru", "transformer"} <= set(swept)
    for name in swept:
        cfg = compose_config([f"experiment={preset}", f"{group}={name}"], tmp_path)
        check_config(cfg)
        assert cfg.trainer.max_time and cfg.callbacks.samples is None
    if preset == "recall_capacity":
        assert compose_config([f"experiment={preset}", "rc_model=transformer"], tmp_path).model.num_heads == 1
