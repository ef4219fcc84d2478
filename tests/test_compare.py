"""seqlab.analysis.compare on sweep dirs built by hand: every job is a row (failed, diverged and missing ones too),
the plots exist, and the gradient profile is the last line of each job's grad_profile.jsonl."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from seqlab.analysis.compare import collect, last_grad_profile, main

ROOT = Path(__file__).resolve().parents[1]
PLOTS = ["ppl_vs_hidden.png", "ppl_vs_context.png", "params_vs_context.png", "grad_profiles.png"]


def make_job(root: Path, name: str, status: str = "ok", reason: str | None = None, **hp) -> Path:
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    hparams = {
        "model": hp["model"],
        "hidden_size": hp.get("hidden_size", 64),
        "context_length": hp.get("context_length", 16),
    }
    hparams.update(lr=hp.get("lr", 3e-3), params=hp.get("params", 1000))
    ppl = hp.get("ppl", 10.0) if status == "ok" else None
    metrics = {
        "model": hp["model"],
        "status": status,
        "reason": reason,
        "hparams": hparams,
        "params": hparams["params"],
    }
    metrics.update(best_val_ppl=ppl, test_ppl=ppl, steps=100)
    (job / "metrics.json").write_text(json.dumps(metrics))
    return job


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    for i, (model, hidden, context, ppl) in enumerate(
        [("rnn", 64, 16, 6.0), ("rnn", 256, 16, 5.0), ("unigram", 64, 16, 30.0), ("mlp_window", 64, 64, 9.0)]
    ):
        make_job(
            root,
            f"{i}_model={model},h={hidden}",
            model=model,
            hidden_size=hidden,
            context_length=context,
            ppl=ppl,
        )
    make_job(
        root,
        "4_model=rnn,optim.lr=1000",
        status="diverged",
        reason="loss is nan at step 17",
        model="rnn",
        lr=1000,
    )
    make_job(root, "5_model=rnn,x=1", status="failed", reason="RuntimeError: boom", model="rnn")
    (root / "6_model=rnn,killed" / ".hydra").mkdir(parents=True)  # a job that never wrote metrics.json
    (root / ".submitit" / "1").mkdir(parents=True)
    profile = root / "0_model=rnn,h=64" / "grad_profile.jsonl"
    lines = [
        {"step": 0, "g_h_mean": [1.0, 0.1], "g_x_mean": [1.0, 0.5]},
        {"step": 100, "g_h_mean": [1.0, 0.5, 0.25], "g_x_mean": [2.0, 1.0, 0.0]},
    ]
    profile.write_text("".join(json.dumps(line) + "\n" for line in lines))
    (root / "2_model=unigram,h=64" / "grad_profile.jsonl").write_text(
        json.dumps({"step": 5, "g_h_mean": None, "g_x_mean": [0.1]}) + "\n"
    )
    return root


def test_every_job_is_a_row_with_its_status(sweep: Path) -> None:
    assert main([str(sweep)]) == 0
    with (sweep / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7
    status = {r["job"]: (r["status"], r["reason"]) for r in rows}
    assert status["4_model=rnn,optim.lr=1000"] == ("diverged", "loss is nan at step 17")
    assert status["5_model=rnn,x=1"] == ("failed", "RuntimeError: boom")
    assert status["6_model=rnn,killed"][0] == "missing"
    # sorted by model (in display order), then hidden size
    assert [r["model"] for r in rows[:2]] == ["unigram", "mlp_window"]
    assert [r["hidden_size"] for r in rows if r["model"] == "rnn" and r["status"] == "ok"] == ["64", "256"]
    ratios = {r["job"]: r["grad_ratio"] for r in rows}
    assert float(ratios["0_model=rnn,h=64"]) == 0.25  # last profile's g_h: 0.25 / 1.0
    assert float(next(r for r in rows if r["job"] == "0_model=rnn,h=64")["grad_ratio_init"]) == 0.1  # step 0's
    assert float(ratios["2_model=unigram,h=64"]) == 1.0  # no g_h: g_x's ratio (one position)
    assert ratios["1_model=rnn,h=256"] == ""  # no profile, no ratio
    table = (sweep / "comparison.md").read_text()
    assert "| diverged | loss is nan at step 17 |" in table and "7 jobs, 4 ok, 3 not ok." in table
    for name in PLOTS:
        image = matplotlib.image.imread(sweep / name)
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0  # a real picture, not blank


def test_gradient_profile_is_the_last_complete_line(sweep: Path, tmp_path: Path) -> None:
    assert last_grad_profile(sweep / "0_model=rnn,h=64")["step"] == 100
    assert last_grad_profile(sweep / "1_model=rnn,h=256") is None
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "grad_profile.jsonl").write_text('{"step": 1, "g_x_mean": [1]}\n{"step": 2, "g_x')  # killed mid-write
    assert last_grad_profile(cut)["step"] == 1
    _, profiles = collect([sweep])
    assert set(profiles) == {"0_model=rnn,h=64", "2_model=unigram,h=64"}


def test_several_sweeps_keep_their_names_apart(sweep: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    make_job(other, "0_model=rnn,h=64", model="rnn")
    out = tmp_path / "out"
    assert main([str(sweep), str(other), "--out", str(out)]) == 0
    with (out / "comparison.csv").open() as f:
        jobs = [r["job"] for r in csv.DictReader(f)]
    assert len(jobs) == 8 and "sweep/0_model=rnn,h=64" in jobs and "other/0_model=rnn,h=64" in jobs
    assert all((out / name).exists() for name in PLOTS)


def test_cli_rejects_a_dir_without_jobs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "seqlab.analysis.compare", str(tmp_path)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2 and "no jobs" in done.stderr
    assert main([str(tmp_path / "nope")]) == 2


@pytest.mark.parametrize(
    "content", ["[]", "42", '"ok"', "null", "\x00\xff garbage", '{"status": "ok", "hparams": [1]}']
)
def test_a_damaged_metrics_json_is_a_row_with_a_reason(content: str, tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    make_job(root, "0_model=rnn", model="rnn")
    bad = root / "1_model=rnn,bad"
    bad.mkdir()
    (bad / "metrics.json").write_bytes(content.encode("latin-1"))
    assert main([str(root)]) == 0
    rows = {r["job"]: r for r in csv.DictReader((root / "comparison.csv").open())}
    assert rows["0_model=rnn"]["status"] == "ok"
    if content.startswith("{"):  # an object whose hparams are not a dict: the row stands, without them
        assert rows["1_model=rnn,bad"]["status"] == "ok" and rows["1_model=rnn,bad"]["hidden_size"] == ""
    else:
        assert rows["1_model=rnn,bad"]["status"] == "missing"
        assert rows["1_model=rnn,bad"]["reason"].startswith("unreadable metrics.json")


def test_a_value_that_is_not_a_number_is_dropped_and_said(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    make_job(root, "0_model=rnn", model="rnn", ppl="low", hidden_size=[64])
    assert main([str(root)]) == 0
    (row,) = csv.DictReader((root / "comparison.csv").open())
    assert row["best_val_ppl"] == "" and row["hidden_size"] == ""
    assert "best_val_ppl='low' is not a number" in row["reason"] and "hidden_size=[64]" in row["reason"]


def test_corrupt_grad_profile_lines_are_skipped_and_counted(sweep: Path) -> None:
    path = sweep / "0_model=rnn,h=64" / "grad_profile.jsonl"
    path.write_text(path.read_text() + '[1, 2]\n{"step": 7, "g_h_mean": "x"}\n{"step": 8, "g_h_mean": [1, null]}\n')
    assert last_grad_profile(sweep / "0_model=rnn,h=64")["step"] == 100
    (sweep / "1_model=rnn,h=256" / "grad_profile.jsonl").write_bytes(b"\xff\xfe\x00garbage\n")
    assert main([str(sweep)]) == 0
    rows = {r["job"]: r for r in csv.DictReader((sweep / "comparison.csv").open())}
    assert rows["0_model=rnn,h=64"]["reason"] == "grad_profile.jsonl: 3 unreadable line(s) skipped"
    assert float(rows["0_model=rnn,h=64"]["grad_ratio"]) == 0.25
    assert rows["1_model=rnn,h=256"]["reason"] == "grad_profile.jsonl: 1 unreadable line(s) skipped"


def test_an_out_that_is_a_file_is_one_line(sweep: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "taken.txt"
    out.write_text("keep me")
    assert main([str(sweep), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {out}: exists and is not a directory"
    assert out.read_text() == "keep me"
    assert main([str(sweep), "--out", str(out / "sub")]) == 2  # a path through a file
    assert capsys.readouterr().err.strip().startswith(f"error: --out {out / 'sub'}: cannot write there")


def test_grad_profile_colours_group_by_model_and_labels_name_what_varies() -> None:
    import matplotlib.colors

    from seqlab.analysis.compare import job_styles

    rows = [
        {"job": f"{i}_x", "model": m, "context_length": c, "hidden_size": 256}
        for i, (m, c) in enumerate((m, c) for m in ("mlp_window", "rnn") for c in (16, 64, 256))
    ]
    styles = job_styles(rows)
    assert [styles[r["job"]][1] for r in rows[:2]] == ["mlp_window, context_length=16", "mlp_window, context_length=64"]
    hues = {r["job"]: matplotlib.colors.rgb_to_hsv(styles[r["job"]][0][:3])[0] for r in rows}
    window, rnn = [hues[r["job"]] for r in rows[:3]], [hues[r["job"]] for r in rows[3:]]
    # one hue per model (shades of it along the context), far from the other model's
    assert max(window) - min(window) < 0.05 and max(rnn) - min(rnn) < 0.05
    assert abs(window[0] - rnn[0]) > 0.1
    assert len({styles[r["job"]][0] for r in rows}) == 6


def test_ppl_plot_says_when_a_point_is_the_best_of_several_jobs(tmp_path: Path, monkeypatch) -> None:
    import matplotlib.figure

    from seqlab.analysis.compare import plot_lines

    notes: list[str] = []
    original = matplotlib.figure.Figure.text
    monkeypatch.setattr(
        matplotlib.figure.Figure, "text", lambda self, x, y, s, **kw: notes.append(s) or original(self, x, y, s, **kw)
    )
    rows = [
        {
            "job": f"{h}_{c}",
            "model": "rnn",
            "hidden_size": h,
            "context_length": c,
            "best_val_ppl": 5 + h / 1000,
            "status": "ok",
        }
        for h in (64, 256)
        for c in (16, 64)
    ]
    plot_lines(rows, "context_length", "best_val_ppl", tmp_path / "a.png", title="t", ylabel="best val ppl")
    assert notes == ["each point: the lowest best val ppl over hidden_size"]
    notes.clear()
    plot_lines(rows[:2], "context_length", "best_val_ppl", tmp_path / "b.png", title="t", ylabel="best val ppl")
    assert notes == []
