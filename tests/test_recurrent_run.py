"""A stacked LSTM trained through train(): its profiles (h and the cell c, every layer), σ_max per gate and
gate saturation reach TensorBoard and grad_profile.jsonl, and agree with each other."""

import json
from pathlib import Path

import pytest
from conftest import compose_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqlab.training.run import train


@pytest.mark.slow
def test_stacked_lstm_run_logs_every_state_and_gate(tiny_text: Path, tmp_path: Path):
    overrides = ["data=text_file", f"data.path={tiny_text}", "data.context_length=32", "data.batch_size=16"]
    overrides += ["model=lstm", "model.hidden_size=16", "model.emb_dim=8", "model.num_layers=2", "model.residual=true"]
    overrides += ["trainer.max_steps=10", "trainer.val_check_interval=10", "trainer.log_every_n_steps=5"]
    overrides += ["callbacks.gradient_profile.every_n_steps=5", "callbacks.gradient_profile.max_share=1"]
    overrides += ["callbacks.gradient_profile.probe_size=4", "callbacks.gradient_profile.all_layers=true"]
    overrides += ["callbacks.health.probe_size=4"]
    overrides += ["callbacks.samples.length=300", "callbacks.progress=null", "threads=1"]
    metrics = train(compose_config(overrides, tmp_path))
    assert metrics["status"] == "ok"

    records = [json.loads(line) for line in (tmp_path / "grad_profile.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 5, 10]
    for r in records:
        assert r["state_names"] == ["h", "c"] and r["num_layers"] == 2
        for name in ("h", "c"):
            by_layer = r[f"g_{name}_by_layer"]
            assert len(by_layer) == 2 and all(len(g) == 32 for g in by_layer)
            assert r[f"g_{name}_mean"] == pytest.approx(by_layer[-1])  # the top layer's by default

    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for name in ("h", "c", "x"):
        logged = {e.step: e.value for e in acc.Scalars(f"grad/{name}/d=016")}
        assert logged == pytest.approx({r["step"]: r[f"g_{name}_mean"][16] for r in records}, rel=1e-6)
        assert f"grad/{name}/ratio" in scalars
    for name in ("h", "c"):  # all_layers=true: every layer's curve as well
        for i in (0, 1):
            logged = {e.step: e.value for e in acc.Scalars(f"grad/{name}/l{i}/d=004")}
            assert logged == pytest.approx({r["step"]: r[f"g_{name}_by_layer"][i][4] for r in records}, rel=1e-6)
    gates = [f"{i}/{g}" for i in (0, 1) for g in "ifo"]
    assert {f"health/gate_saturation/l{g}" for g in gates} <= scalars
    assert {f"health/sigma_max/weight_hh_l{i}/{g}" for i in (0, 1) for g in "ifgo"} <= scalars
    saturation = [e.value for g in gates for e in acc.Scalars(f"health/gate_saturation/l{g}")]
    assert all(0 <= s <= 1 for s in saturation)
    # the sample streams past the 32-token training context
    sample = acc.Tensors("samples/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert len(sample.split("```")[1].strip("\n")) >= 300
