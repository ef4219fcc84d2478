"""The CUDA path: every model, its explicit recurrence, the gradient profile, generation and a whole run on a GPU
agree with the CPU (or with themselves, step by step). Skipped where there is no CUDA device, as in CI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import T, V, build

from seqlab.models.catalog import model_class, model_names
from seqlab.training.callbacks.gradient_profile import gradient_profile
from seqlab.training.sampling import generate

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def full_precision_matmuls():
    """TF32 would round float32 products to 10 bits on the GPU: compare in full float32."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("name", model_names())
def test_model_on_cuda_equals_cpu(name: str):
    """Logits and every parameter's gradient (cuDNN's fused RNNs, the scans, attention) match the CPU's."""
    torch.manual_seed(0)
    cpu = build(name).double()
    gpu = build(name).double().cuda()
    gpu.load_state_dict(cpu.state_dict())
    idx = torch.randint(V, (4, T))
    results = []
    for model, x in ((cpu, idx), (gpu, idx.cuda())):
        logits = model(x)
        logits.logsumexp(-1).sum().backward()
        results.append((logits.cpu(), {n: p.grad.cpu() for n, p in model.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-9, atol=1e-10)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, rtol=1e-7, atol=1e-9, msg=name)


@pytest.mark.parametrize("name", [n for n in model_names() if model_class(n).incremental])
def test_step_equals_fused_on_cuda(name: str):
    """One step per token on the GPU (float32, as trained) gives the fused / scanned / cached forward's logits."""
    torch.manual_seed(0)
    model = build(name).cuda().eval()
    idx = torch.randint(V, (3, T), device="cuda")
    state = model.initial_state(3, idx.device)
    with torch.no_grad():
        steps = []
        for t in range(T):
            logits, state = model.step(idx[:, t], state)
            steps.append(logits)
        torch.testing.assert_close(torch.stack(steps, 1), model(idx), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru", "mingru"])
def test_gradient_profile_on_cuda_equals_cpu(name: str):
    torch.manual_seed(0)
    cpu = build(name, num_layers=2).double()
    gpu = build(name, num_layers=2).double().cuda()
    gpu.load_state_dict(cpu.state_dict())
    idx, targets = torch.randint(V, (4, T)), torch.randint(V, (4, T))
    on_cpu = gradient_profile(cpu, idx, targets)
    on_gpu = gradient_profile(gpu, idx.cuda(), targets.cuda())
    assert on_gpu.keys() == on_cpu.keys()
    for key, profile in on_cpu.items():
        torch.testing.assert_close(on_gpu[key].cpu(), profile, rtol=1e-9, atol=1e-15, msg=key)


def test_streaming_generation_on_cuda_equals_rereading():
    """The carried state on the GPU draws what re-reading the whole history would, past the context."""
    torch.manual_seed(0)
    model = build("lstm", num_layers=2).double().cuda().eval()
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]], device="cuda")
    streamed = generate(model, prompt, 30, 0.9, torch.Generator("cuda").manual_seed(7), context_length=T)
    generator, idx = torch.Generator("cuda").manual_seed(7), prompt
    with torch.no_grad():
        for _ in range(30):
            probs = torch.softmax(model(idx)[:, -1].float() / 0.9, dim=-1)
            idx = torch.cat([idx, torch.multinomial(probs, 1, generator=generator)], dim=1)
    assert torch.equal(streamed, idx)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_train_cli_on_gpu(model: str, tiny_text: Path, tmp_path: Path):
    """`python train.py trainer=gpu` end to end (bf16-mixed): finite metrics, the stateful evaluation for the
    recurrent model, its gradient profile written."""
    stateful = ["data.stateful=true"] if model == "lstm" else []
    args = [f"model={model}", "trainer=gpu", "data=text_file", f"data.path={tiny_text}", "data.batch_size=16"]
    args += ["data.context_length=32", "trainer.max_steps=30", "trainer.val_check_interval=15", *stateful]
    args += [f"hydra.run.dir={tmp_path}/run", "callbacks.progress=null"]
    done = subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=os.environ
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "ok"
    assert 1 < metrics["test_ppl"] < 200
    if model == "lstm":
        assert 1 < metrics["test_ppl_stateful"] < 200
    lines = (tmp_path / "run" / "grad_profile.jsonl").read_text().splitlines()
    assert lines and all(json.loads(line)["step"] >= 0 for line in lines)
