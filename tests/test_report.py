"""seqlab.report: seeds grouped into mean ± sd and n, rankings that say "≈" where the bands overlap, pages that
regenerate from runs.csv + manifest.json (and a hand-edited number that is caught), the README's results block,
and every preset declaring its seeds."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from seqlab.analysis.report import (
    MARKERS,
    current_readme_block,
    differences,
    main,
    rankings,
    readme_block,
    studies,
    update_readme,
)

# model -> best_val_ppl of seeds 0, 1, 2 (None: that seed diverged)
PPL = {
    "lstm": [4.0, 4.1, 4.2],  # 4.1 ± 0.1
    "gru": [4.15, 4.3, 4.45],  # 4.3 ± 0.15: overlaps the LSTM's band, not the RNN's
    "rnn": [5.0, 5.2, 5.4, None],  # 5.2 ± 0.2 from 3 seeds; the fourth diverged
    "unigram": [30.0],  # one seed: no band, so never separated
    "irnn": [None, None, None],  # every seed diverged
}
COMMIT = "0123456789ab" + "c" * 28
COMMAND = ["model=lstm,gru,rnn,unigram,irnn", "seed=0,1,2", "trainer.max_steps=10"]


def make_sweep(root: Path) -> Path:
    """A sweep dir as `python train.py -m` leaves it: multirun.yaml, and per job .hydra/overrides.yaml and
    metrics.json."""
    num = 0
    for model, ppls in PPL.items():
        for seed, ppl in enumerate(ppls):
            job = root / f"{num}_model={model},seed={seed}"
            (job / ".hydra").mkdir(parents=True)
            overrides = [f"model={model}", f"seed={seed}", "trainer.max_steps=10"]
            (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
            status = "ok" if ppl is not None else "diverged"
            hparams = {"model": model, "hidden_size": 64, "context_length": 16, "lr": 3e-3, "seed": seed}
            metrics = {"model": model, "status": status, "reason": None if ppl else "loss is nan at step 3"}
            metrics |= {"hparams": hparams, "params": 1000 + len(model), "steps": 10, "threads": 2, "wall_s": 1.5}
            metrics |= {"best_val_ppl": ppl, "test_ppl": None if ppl is None else ppl + 0.1}
            metrics["code"] = {"commit": COMMIT, "dirty": False}  # what every run records (seqlab.launch.provenance)
            (job / "metrics.json").write_text(json.dumps(metrics))
            num += 1
    hydra = {"overrides": {"task": COMMAND, "hydra": [f"hydra.sweep.dir={root}", "hydra.mode=MULTIRUN"]}}
    (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra | {"job": {"name": "train"}}}))
    return root


@pytest.fixture
def study(tmp_path: Path) -> Path:
    out = tmp_path / "results" / "toy"
    sweep = make_sweep(tmp_path / "sweep")
    assert main([str(sweep), "--study", "toy", "--out", str(out), "--notes", "one machine"]) == 0
    return out


def table_row(page: str, first_cell: str) -> list[str]:
    line = next(line for line in page.splitlines() if line.startswith(f"| {first_cell} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_seeds_are_grouped_into_mean_sd_and_n(study: Path) -> None:
    page = (study / "results.md").read_text()
    header = table_row(page, "model")
    rnn = dict(zip(header, table_row(page, "rnn"), strict=True))
    values = PPL["rnn"][:3]
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    assert (mean, round(sd, 12)) == (pytest.approx(5.2), 0.2)  # the independent numbers the cell must show
    assert rnn["n"] == "3" and rnn["best_val_ppl"] == "5.2 ± 0.2" and rnn["test_ppl"] == "5.3 ± 0.2"
    assert rnn["not ok"] == "1 diverged" and rnn["params"] == "1,003"  # the same in every seed: one number
    unigram = dict(zip(header, table_row(page, "unigram"), strict=True))
    assert unigram["n"] == "1" and unigram["best_val_ppl"] == "30"
    irnn = dict(zip(header, table_row(page, "irnn"), strict=True))
    assert irnn["n"] == "0" and irnn["best_val_ppl"] == "" and irnn["not ok"] == "3 diverged"


def test_the_ranking_says_approx_where_the_bands_overlap(study: Path) -> None:
    page = (study / "results.md").read_text()
    chain = "- lstm 4.1 ± 0.1 ≈ gru 4.3 ± 0.15 < rnn 5.2 ± 0.2 ≈ unigram 30; not ranked: irnn (3 diverged)"
    assert chain in page.splitlines()  # gru's band [4.15, 4.45] meets lstm's [4.0, 4.2]; one seed has no band
    assert chain in (study / "summary.md").read_text().splitlines()


def test_the_manifest_records_how_the_runs_were_made(study: Path) -> None:
    manifest = json.loads((study / "manifest.json").read_text())
    sweep = Path(manifest["sweep_dirs"][0])
    assert manifest["commands"] == [f"python train.py -m {' '.join(COMMAND)} hydra.sweep.dir={sweep}"]
    assert manifest["seeds"] == [0, 1, 2, 3] and manifest["jobs"] == 14 and manifest["threads"] == [2]
    assert manifest["settings"] == ["model"] and manifest["metric"] == "best_val_ppl"
    assert manifest["notes"] == "one machine" and manifest["wall_s"]["jobs_total"] == 21.0
    assert manifest["versions"]["torch"] and manifest["versions"]["lightning"] and manifest["machine"]["cpu"]
    assert manifest["git_commit"] == COMMIT and manifest["git_commit_of"] == "the jobs" and manifest["date"]
    assert "(commit 0123456789ab, seeds 0, 1, 2, 3)" in (study / "results.md").read_text()  # the jobs', not HEAD
    rnn_job = next(study.parent.parent.glob("sweep/*model=rnn,seed=0"))
    (rnn_job / "metrics.json").write_text(json.dumps(json.loads((rnn_job / "metrics.json").read_text()) | {"code": {}}))
    assert main([str(study.parent.parent / "sweep"), "--study", "toy", "--out", str(study)]) == 0
    assert "(commit 0123456789ab, recorded by 13 of 14 jobs, seeds" in (study / "results.md").read_text()
    runs = (study / "runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 14 and runs[0].startswith("job,model,seed,")
    assert {p.name for p in study.iterdir()} >= {"results.md", "summary.md", "results.png", "runs.csv", "manifest.json"}


def test_pages_regenerate_from_runs_csv_and_a_hand_edit_is_caught(study: Path, capsys) -> None:
    assert differences(study) == []
    before = (study / "results.md").read_text()
    assert main(["--regenerate", str(study)]) == 0
    assert (study / "results.md").read_text() == before  # runs.csv + manifest.json alone give the same page

    (study / "results.md").write_text(before.replace("5.2 ± 0.2", "5.1 ± 0.2", 1))  # one number, by hand
    assert differences(study) == ["results.md"]
    assert main(["--check", str(study.parent)]) == 1
    assert "stale: " in capsys.readouterr().err

    runs = (study / "runs.csv").read_text()
    (study / "runs.csv").write_text(runs.replace(",5.4,", ",5.6,", 1))  # a number in runs.csv changes the page
    assert main(["--regenerate", str(study)]) == 0
    assert "5.267 ± 0.31" in (study / "results.md").read_text()
    assert main(["--check", str(study.parent)]) == 0


def test_a_headline_quotes_numbers_computed_from_the_runs(tmp_path: Path, capsys) -> None:
    sweep, out = make_sweep(tmp_path / "sweep"), tmp_path / "toy"
    headline = "The LSTM reaches {best_val_ppl@model=lstm}, the RNN {test_ppl@model=rnn}."
    assert main([str(sweep), "--study", "toy", "--out", str(out), "--headline", headline]) == 0
    summary = (out / "summary.md").read_text()
    assert summary.startswith("The LSTM reaches 4.1 ± 0.1, the RNN 5.3 ± 0.2.")  # the diverged seed is left out
    runs = (out / "runs.csv").read_text()
    (out / "runs.csv").write_text(runs.replace(",4.2,", ",4.5,", 1))  # the numbers follow runs.csv
    assert main(["--regenerate", str(out)]) == 0
    assert "The LSTM reaches 4.2 ± 0.26" in (out / "summary.md").read_text()
    block = readme_block(tmp_path / "README.md", tmp_path)  # the README shows the headline, the page the ranking
    assert "The LSTM reaches 4.2 ± 0.26, the RNN 5.3 ± 0.2." in block and "- lstm" not in block
    bad = main([str(sweep), "--study", "toy", "--out", str(tmp_path / "bad"), "--headline", "{recall_acc@model=gru}"])
    assert bad == 2 and "no job that ended ok has recall_acc" in capsys.readouterr().err


@pytest.mark.parametrize("study_dir", studies(), ids=lambda p: p.name)
def test_every_committed_study_regenerates(study_dir: Path) -> None:
    """No hand-edited number survives in docs/results/: each page is what its runs.csv gives."""
    assert differences(study_dir) == [], f"python -m seqlab.report --regenerate {study_dir.relative_to(ROOT)}"


def test_the_readme_results_block_is_generated() -> None:
    readme = ROOT / "README.md"
    block = current_readme_block(readme.read_text())
    if block is None:
        pytest.skip(f"README.md has no {MARKERS[0]} block yet")
    assert block == readme_block(readme), "python -m seqlab.report --readme README.md"


def test_update_readme_rewrites_only_the_block(study: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{MARKERS[0]}\nold numbers\n{MARKERS[1]}\n\nafter\n")
    assert update_readme(readme, study.parent)
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n\n") and text.endswith("\n\nafter\n") and "old numbers" not in text
    assert "**toy** ([table and figures](results/toy/results.md))" in text
    assert "- lstm 4.1 ± 0.1 ≈ gru" in text
    assert current_readme_block(text) == readme_block(readme, study.parent)
    assert not update_readme(tmp_path / "results" / "toy" / "summary.md", study.parent)  # no markers: untouched


def test_the_cli_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "seqlab.report", str(tmp_path), "--study", "x", "--out", str(tmp_path / "o")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().startswith("error: no jobs")
    assert main([str(tmp_path), "--study", "../up"]) == 2
    assert main(["--regenerate", str(tmp_path)]) == 2


# --- the presets declare their seeds ------------------------------------------------------------------------------

SINGLE_RUNS = {"ptb_zaremba_small"}  # a published recipe of ≈2 h, run once (its docs say one seed)


@pytest.mark.parametrize(
    "preset", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml") if p.stem not in SINGLE_RUNS)
)
def test_every_sweep_preset_declares_three_seeds(preset: str) -> None:
    text = (ROOT / "conf" / "experiment" / f"{preset}.yaml").read_text()
    params = yaml.safe_load(text)["hydra"]["sweeper"]["params"]
    assert "seed" in params, f"experiment={preset}: add `seed: 0,1,2` to hydra.sweeper.params"
    seeds = str(params["seed"]).split(",")
    # a two-stage preset (the lr grid on seed 0, then seqlab.launch.lr_then_seeds) names its other seeds
    later = re.search(r"seqlab\.launch\.lr_then_seeds .+? --seeds ([\d,]+)", text)
    assert len(seeds) + (len(later.group(1).split(",")) if later else 0) >= 3


@pytest.mark.slow
def test_a_real_sweep_with_seeds_end_to_end(tmp_path: Path) -> None:
    text = tmp_path / "tiny.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    sweep, out = tmp_path / "sweep", tmp_path / "out"
    tiny = ["model.hidden_size=8", "trainer.max_steps=3", "trainer.val_check_interval=3", "data.batch_size=8"]
    cmd = [sys.executable, "train.py", "-m", "data=text_file", f"data.path={text}", "model=rnn,unigram", "seed=0,1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [*cmd, *tiny, "callbacks.progress=null", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert main([str(sweep), "--study", "tiny", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"] == ["model"] and manifest["seeds"] == [0, 1]
    assert "model=rnn,unigram seed=0,1" in manifest["commands"][0]
    assert table_row((out / "results.md").read_text(), "rnn")[1] == "2"  # n: two seeds of one configuration
    assert (out / "grad_profiles.png").is_file() and differences(out) == []
    shutil.rmtree(sweep)  # the pages need nothing from the sweep any more
    assert main(["--regenerate", str(out)]) == 0 and differences(out) == []


def test_rank_across_every_configuration_ranks_recipes_whose_settings_differ_together() -> None:
    """A tuned recipe changes lr and weight decay at once: ranked within each weight decay there is nothing to
    order; `--rank-across '*'` ranks the two recipes against each other."""
    recipes = {("0.003", "0.1"): [6.2, 6.3, 6.3], ("0.009", "0.005"): [5.9, 5.9, 6.0]}
    runs = [
        {"optim.lr": lr, "optim.weight_decay": wd, "seed": seed, "status": "ok", "best_val_ppl": ppl}
        for (lr, wd), ppls in recipes.items()
        for seed, ppl in enumerate(ppls)
    ]
    manifest = {"settings": ["optim.lr", "optim.weight_decay"], "metric": "best_val_ppl"}
    assert rankings(runs, manifest | {"rank_across": "optim.lr"}) == []
    tuned, defaults = recipes[("0.009", "0.005")], recipes[("0.003", "0.1")]
    assert max(tuned) + statistics.stdev(tuned) < min(defaults)  # the bands are apart: "<", not "≈"
    assert rankings(runs, manifest | {"rank_across": "*"}) == [
        "- lr=0.009, weight_decay=0.005 5.933 ± 0.058 < lr=0.003, weight_decay=0.1 6.267 ± 0.058"
    ]


def test_the_command_of_a_single_run_is_read_from_its_hydra_dir(tmp_path: Path) -> None:
    from seqlab.analysis.report import sweep_command

    hydra = {
        "job": {"name": "train"},
        "overrides": {"task": ["experiment=x"], "hydra": ["hydra.run.dir=r", "hydra.mode=RUN"]},
    }
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    (tmp_path / "run" / ".hydra" / "hydra.yaml").write_text(json.dumps({"hydra": hydra}))  # JSON is YAML
    assert sweep_command(tmp_path) == sweep_command(tmp_path / "run") == "python train.py experiment=x hydra.run.dir=r"
    hydra["overrides"]["hydra"] = ["hydra.sweep.dir=s", "hydra.mode=MULTIRUN"]
    (tmp_path / "multirun.yaml").write_text(json.dumps({"hydra": hydra}))
    assert sweep_command(tmp_path) == "python train.py -m experiment=x hydra.sweep.dir=s"
