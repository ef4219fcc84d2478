"""Training-health numbers against independent computations; a real CLI run, its event files read back."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

from seqlab.models import RNN
from seqlab.training.callbacks.training_health import group_norms, recurrent_names, recurrent_sigma_max
from seqlab.training.dashboard import LAYOUT
from seqlab.training.system import LanguageModel

ROOT = Path(__file__).resolve().parents[1]


def test_grad_norms_by_group_match_the_gradients():
    torch.manual_seed(0)
    system = LanguageModel(
        model={"_target_": "seqlab.models.RNN", "hidden_size": 16, "emb_dim": 8},
        optim={"_target_": "torch.optim.AdamW", "lr": 1e-3},
        vocab_size=11,
        context_length=9,
    )
    x, y = torch.randint(11, (4, 9)), torch.randint(11, (4, 9))
    F.cross_entropy(system(x).flatten(0, 1), y.flatten()).backward()
    system.on_before_optimizer_step(None)

    rnn = system.model.layers[0]
    expected = {
        "embedding": [system.model.tok_emb.weight],
        "recurrent": [rnn.weight_hh_l0],
        "head": [system.model.head.weight, system.model.head.bias],
        "input": [rnn.weight_ih_l0, rnn.bias_ih_l0, rnn.bias_hh_l0],
    }
    got = group_norms(system.grad_norms, recurrent_names(system.model, "model."))
    assert set(got) == set(expected)
    for group, params in expected.items():
        reference = torch.cat([p.grad.flatten() for p in params]).norm()
        torch.testing.assert_close(got[group], reference)
    everything = torch.cat([p.grad.flatten() for p in system.parameters()]).norm()
    torch.testing.assert_close(system.grad_norm, everything)


def test_sigma_max_is_the_spectral_radius_of_an_orthogonal_init():
    sigma = recurrent_sigma_max(RNN(11, 9, hidden_size=32, recurrent_radius=0.9))
    assert list(sigma) == ["weight_hh_l0"]
    assert sigma["weight_hh_l0"].item() == pytest.approx(0.9, rel=1e-5)


def _scalars(acc: EventAccumulator, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in acc.Scalars(tag)}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, sample_text: str) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    text = tmp / "tiny.txt"
    text.write_text(sample_text[:20_000])
    out = tmp / "out"
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "data=text_file",
        f"data.path={text}",
        "data.context_length=32",
        "data.batch_size=16",
        "model=rnn",
        "model.hidden_size=32",
        "model.emb_dim=16",
        "trainer.max_steps=20",
        "trainer.val_check_interval=10",
        "trainer.log_every_n_steps=5",
        "trainer.gradient_clip_val=0.001",  # so small that every step is clipped
        "callbacks.gradient_profile.every_n_steps=10",
        "callbacks.gradient_profile.max_share=1",  # no time budget: tiny steps would skip the probe
        "callbacks.samples.length=40",
        "callbacks.progress=null",
        f"hydra.run.dir={out}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.slow
def test_event_files_hold_profile_health_hparams_and_samples(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok"
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()

    # gradient profile: scalars at steps 0, 10, 20 that agree with the JSONL, and the figure
    records = [json.loads(line) for line in (run_dir / "grad_profile.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 10, 20]
    assert all(r["model"] == "RNN" and r["T"] == 32 and len(r["g_h_mean"]) == 32 for r in records)
    for kind in ("h", "x"):
        for d in (1, 4, 16):
            logged = _scalars(acc, f"grad/{kind}/d={d:03d}")
            assert logged == pytest.approx({r["step"]: r[f"g_{kind}_mean"][d] for r in records}, rel=1e-6)
            log10 = _scalars(acc, f"grad/{kind}/log10/d={d:03d}")  # readable on TensorBoard's linear axis
            assert log10 == pytest.approx({s: math.log10(v) for s, v in logged.items()}, rel=1e-6)
        ratio = _scalars(acc, f"grad/{kind}/ratio")
        assert 0 < ratio[0] < 1e-2  # an untrained RNN forgets: the vanishing-gradient claim, measured
    assert "grad/profile" in tags["images"] and len(acc.Images("grad/profile")) == 3
    assert (run_dir / "grad_profile.png").stat().st_size > 0

    # health, on the logging steps
    for tag in ("grad_norm", *(f"grad_norm/{g}" for g in ("embedding", "recurrent", "head", "input"))):
        assert sorted(_scalars(acc, f"health/{tag}")) == [5, 10, 15, 20]
    assert set(_scalars(acc, "health/clipped_frac").values()) == {1.0}
    assert all(v > 0.001 for v in _scalars(acc, "health/grad_norm").values())
    # σ_max logged after step 20 is that of the W_hh saved in last.ckpt
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    w_hh = state["model.layers.0.weight_hh_l0"]
    sigma = _scalars(acc, "health/sigma_max/weight_hh_l0")
    assert sigma[20] == pytest.approx(torch.linalg.svdvals(w_hh)[0].item(), rel=1e-5)

    # HParams tab: one session with our hparams, whose metrics exist as scalars
    content = acc.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    start = session.session_start_info
    hparams = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
    assert hparams["model"] == "rnn"
    assert hparams["hidden_size"] == 32 and hparams["context_length"] == 32
    assert hparams["gradient_clip_val"] == 0.001 and hparams["params"] == metrics["params"]
    assert {"lr", "window"} <= set(hparams)
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    assert metric_tags == {"hp/best_val_ppl", "hp/test_ppl", "hp/test_ppl_stateful"}  # an rnn: scored statefully too
    assert _scalars(acc, "hp/best_val_ppl")[0] == pytest.approx(metrics["best_val_ppl"], rel=1e-6)
    assert _scalars(acc, "hp/test_ppl")[0] == pytest.approx(metrics["test_ppl"], rel=1e-6)
    assert math.isfinite(metrics["test_ppl"])

    # the Custom Scalars tab's layout: every chart's tags match scalars the run logged
    (config,) = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0])
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    assert set(charts) == set(LAYOUT["seqlab"])
    logged = set(tags["scalars"])
    for title, patterns in charts.items():
        assert any(re.search(p, tag) for p in patterns for tag in logged), title

    # samples: one per validation (steps 10 and 20), in the Text tab
    samples = acc.Tensors("samples/text_summary")
    assert [s.step for s in samples] == [10, 20]
    text = samples[-1].tensor_proto.string_val[0].decode()
    assert "```" in text and len(text.split("```")[1].strip()) > 0
