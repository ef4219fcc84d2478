"""transformer, ssm and mingru in the gradient probe: its numbers against the scan path, computed independently."""

import pytest
import torch
import torch.nn.functional as F

from seqlab.models import SSM, MinGRU, Transformer
from seqlab.training.callbacks.gradient_profile import gradient_profile
from seqlab.training.sampling import generate

V, T, B = 13, 10, 4


@pytest.mark.parametrize(("model_class", "scan"), [(SSM, "loop"), (SSM, "chunked"), (MinGRU, "log")])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_probe_state_gradients_equal_the_scan_path(model_class, scan, num_layers):
    """‖∂L_T/∂h_t‖ from the probe (its step_embedded loop; column d = the state after step T−1−d) = the
    gradient with respect to that state fed to forward_with_state (the scan) for the rest of the chunk. They
    agree where h_t has no use inside its own step: the top layer (its step's output is not in L_T before the
    last step), and every layer with one layer; below the top the probe also counts layer i -> i + 1."""
    torch.manual_seed(0)
    model = model_class(V, T, hidden_size=6, emb_dim=8, num_layers=num_layers, scan=scan).double()
    idx, targets = torch.randint(V, (B, T)), torch.randint(V, (B, T))
    profile = gradient_profile(model, idx, targets)
    assert set(profile) == {"x", "h"} and profile["h"].shape == (B, num_layers, T)
    assert (profile["h"] > 0).all()
    for t in range(T - 1):  # the state after step t, i.e. after t + 1 tokens
        h = model.forward_with_state(idx[:, : t + 1])[1][0].detach().requires_grad_()  # (L, B, H)
        logits = model.forward_with_state(idx[:, t + 1 :], (h,))[0][:, -1]
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, targets[:, -1], reduction="sum"), [h])
        expected = grad.norm(dim=-1).T  # (B, L)
        torch.testing.assert_close(profile["h"][:, -1, T - 1 - t], expected[:, -1], rtol=1e-9, atol=1e-300)
        if num_layers == 1:
            torch.testing.assert_close(profile["h"][:, :, T - 1 - t], expected, rtol=1e-9, atol=1e-300)


def test_transformer_probe_reaches_every_position():
    """No recurrence, no state: the loss at the last position reaches every input through attention."""
    torch.manual_seed(0)
    model = Transformer(V, T, hidden_size=8, num_layers=2, num_heads=2).double()
    profile = gradient_profile(model, torch.randint(V, (B, T)), torch.randint(V, (B, T)))
    assert set(profile) == {"x"} and (profile["x"] > 0).all()


@pytest.mark.parametrize("model_class", [SSM, MinGRU, Transformer])
def test_streaming_generation_equals_rereading(model_class):
    """generate() streams through `step`: the SSM and minGRU draw what re-reading the whole history draws,
    far past the context; the Transformer what re-reading its last context_length tokens draws (its window)."""
    torch.manual_seed(0)
    kwargs = {"num_heads": 2, "hidden_size": 8} if model_class is Transformer else {"hidden_size": 6, "emb_dim": 8}
    model = model_class(V, T, num_layers=2, **kwargs).double().eval()
    prompt = torch.randint(V, (2, 3))
    streamed = generate(model, prompt, 30, 0.9, torch.Generator().manual_seed(7), context_length=T)
    window = T if model_class is Transformer else None
    generator, idx = torch.Generator().manual_seed(7), prompt
    with torch.no_grad():
        for _ in range(30):
            context = idx if window is None else idx[:, -window:]
            probs = torch.softmax(model(context)[:, -1].float() / 0.9, dim=-1)
            idx = torch.cat([idx, torch.multinomial(probs, 1, generator=generator)], dim=1)
    assert torch.equal(streamed, idx)


BAD = {
    "heads do not divide": (["model=transformer", "model.num_heads=3"], "model.num_heads=3: must divide"),
    "ssm scan": (["model=ssm", "model.scan=fft"], "model.scan=fft: must be one of 'loop', 'chunked'"),
    "ssm radius": (["model=ssm", "model.r_max=1.0"], "model.r_max=1.0: must be a number in [0, 1)"),
    "ssm radius 0 as an int": (["model=ssm", "model.r_min=0", "model.r_max=0"], "need r_min < r_max"),
    "mingru scan": (
        ["model=mingru", "model.scan=parallel"],
        "model.scan=parallel: must be one of 'loop', 'log', 'chunked'",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_model_values_are_one_line_config_errors(case, tiny_text, tmp_path, capsys):
    from helpers import expect_config_error

    overrides, expected = BAD[case]
    quick = ["data=text_file", f"data.path={tiny_text}", "data.context_length=32", "data.batch_size=16"]
    quick += ["model.hidden_size=16", "trainer.accelerator=cpu", "trainer.max_steps=2", "callbacks.progress=null"]
    assert expected in expect_config_error([*quick, *overrides], tmp_path, capsys)
