"""The gradient profile against independent autograd computations, and the vanishing it is meant to show."""

import pytest
import torch
import torch.nn.functional as F

from seqlab.callbacks.gradient_profile import gradient_profile, log_spaced_distances
from seqlab.models import RNN, PaddedMLP, Unigram, WindowMLP

V, T, B = 13, 12, 5


def _batch(seed: int = 0, length: int = T) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(V, (B, length), generator=g), torch.randint(V, (B, length), generator=g)


def explicit_rnn_gradients(model: RNN, idx: torch.Tensor, targets: torch.Tensor):
    """‖∂L_T/∂h_t‖ and ‖∂L_T/∂e_t‖ per sequence, by position, from a loop written here from the weights."""
    r = model.rnn
    e = model.tok_emb.weight[idx].detach().requires_grad_()  # (B, T, E)
    h = torch.zeros(idx.shape[0], r.hidden_size, dtype=e.dtype)
    hs = []
    for t in range(idx.shape[1]):
        h = torch.tanh(e[:, t] @ r.weight_ih_l0.T + r.bias_ih_l0 + h @ r.weight_hh_l0.T + r.bias_hh_l0)
        hs.append(h)
    logits = hs[-1] @ model.head.weight.T + model.head.bias  # (B, V)
    loss = F.cross_entropy(logits, targets[:, -1], reduction="sum")
    grads = torch.autograd.grad(loss, [e, *hs])
    g_x = grads[0].norm(dim=-1)  # (B, T) by position
    g_h = torch.stack([g.norm(dim=-1) for g in grads[1:]], dim=1)  # (B, T) by position
    return g_h, g_x, logits


def test_rnn_profile_equals_explicit_unrolled_autograd():
    torch.manual_seed(0)
    model = RNN(V, T, hidden_size=16, emb_dim=8).double()
    idx, targets = _batch()
    g_h, g_x = gradient_profile(model, idx, targets)
    ref_h, ref_x, ref_logits = explicit_rnn_gradients(model, idx, targets)
    # the explicit loop is the fused module's computation: same last-position logits
    torch.testing.assert_close(ref_logits, model(idx)[:, -1], rtol=1e-10, atol=1e-12)
    assert g_h.shape == g_x.shape == (B, T)
    # column d of the profile is position T-1-d
    torch.testing.assert_close(g_h, ref_h.flip(1), rtol=1e-5, atol=0)
    torch.testing.assert_close(g_x, ref_x.flip(1), rtol=1e-5, atol=0)
    assert (g_h[:, -1] > 0).all()  # the whole chunk is reached, if faintly


def test_fused_output_gradient_is_only_the_direct_term():
    """Why the probe unrolls: autograd's gradient for a fused nn.RNN's outputs misses the recurrence."""
    torch.manual_seed(0)
    model = RNN(V, T, hidden_size=16, emb_dim=8)
    idx, targets = _batch()
    out, _ = model.rnn(model.embed(idx))  # (B, T, H)
    loss = F.cross_entropy(model.head(out[:, -1]), targets[:, -1], reduction="sum")
    (g_out,) = torch.autograd.grad(loss, out)
    assert (g_out[:, :-1] == 0).all()
    g_h, _ = gradient_profile(model, idx, targets)
    assert (g_h[:, 1:] > 0).all()


def test_profile_leaves_parameter_gradients_alone():
    model = RNN(V, T, hidden_size=16, emb_dim=8)
    gradient_profile(model, *_batch())
    assert all(p.grad is None for p in model.parameters())


def test_window_mlp_sees_exactly_its_window():
    torch.manual_seed(0)
    window = 4
    model = WindowMLP(V, T, hidden_size=16, emb_dim=8, window=window)
    g_h, g_x = gradient_profile(model, *_batch())
    assert g_h is None
    assert (g_x[:, :window] > 0).all()
    assert (g_x[:, window:] == 0).all()


def test_padded_mlp_sees_the_whole_prefix_and_unigram_nothing():
    torch.manual_seed(0)
    _, g_x = gradient_profile(PaddedMLP(V, T, hidden_size=16, emb_dim=8), *_batch())
    assert (g_x > 0).all()
    g_h, g_x = gradient_profile(Unigram(V, T), *_batch())
    assert g_h is None and g_x.shape == (B, T)
    assert (g_x == 0).all()


def _ratio(radius: float, seed: int) -> float:
    torch.manual_seed(seed)
    model = RNN(V, 32, hidden_size=32, emb_dim=8, recurrent_radius=radius)
    with torch.no_grad():  # small inputs keep tanh near its linear part, where W_hh alone sets the decay
        model.tok_emb.weight.mul_(0.01)
        model.rnn.bias_ih_l0.zero_()
        model.rnn.bias_hh_l0.zero_()
    g_h, _ = gradient_profile(model, *_batch(seed, length=32))
    mean = g_h.mean(0)
    return float(mean[-1] / mean[0])


@pytest.mark.parametrize("seed", [0, 1])
def test_decay_is_ordered_by_spectral_radius(seed):
    ratios = {r: _ratio(r, seed) for r in (0.5, 0.9, 1.1)}
    assert ratios[0.5] < ratios[0.9] < ratios[1.1]
    assert ratios[0.5] < 1e-6  # 0.5^31 ≈ 5e-10: orders of magnitude, not a little
    assert ratios[1.1] > 1  # orthogonal ×1.1 in the linear regime: the gradient grows with distance


def test_log_spaced_distances():
    assert log_spaced_distances(64) == [1, 4, 16]
    assert log_spaced_distances(65) == [1, 4, 16, 64]
    assert log_spaced_distances(256) == [1, 4, 16, 64]
    assert log_spaced_distances(1) == []


@pytest.mark.parametrize(("max_share", "steps"), [(1.0, [0, 3, 6, 8]), (0.0, [0, 8])])
def test_callback_cadence_and_time_budget(tmp_path, max_share, steps):
    import lightning as L

    from seqlab.callbacks import GradientProfile
    from seqlab.data import TextDataModule
    from seqlab.system import LanguageModel

    (tmp_path / "tiny.txt").write_text("to be, or not to be: that is the question.\n" * 60)
    dm = TextDataModule("text_file", path=str(tmp_path / "tiny.txt"), context_length=16, batch_size=4)
    dm.setup("fit")
    system = LanguageModel(
        model={"_target_": "seqlab.models.RNN", "hidden_size": 8, "emb_dim": 4},
        optim={"_target_": "torch.optim.AdamW", "lr": 1e-3},
        vocab_size=dm.vocab_size,
        context_length=16,
    )
    profile = GradientProfile(every_n_steps=3, probe_size=5, max_share=max_share, dirpath=str(tmp_path))
    trainer = L.Trainer(
        max_steps=8,
        logger=False,
        callbacks=[profile],
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    )
    trainer.fit(system, datamodule=dm)
    assert [r["step"] for r in profile.history] == steps
    assert all(len(r["g_h_mean"]) == 16 for r in profile.history)
    assert len((tmp_path / "grad_profile.jsonl").read_text().splitlines()) == len(steps)


def test_tiny_gradients_do_not_underflow_in_the_norm():
    """A float32 model whose gradients sit near and below 1e-23: a float32 norm squares them to 0."""
    torch.manual_seed(0)
    model = RNN(V, T, hidden_size=16, emb_dim=8, recurrent_radius=1.0)
    with torch.no_grad():
        model.head.weight.mul_(1e-23)  # every gradient reaching back from the loss is scaled by 1e-23
    idx, targets = _batch()
    g_h, g_x = gradient_profile(model, idx, targets)
    ref_h, ref_x = gradient_profile(model.double(), idx, targets)  # same weights, every step in float64
    assert ref_h.min() > 1e-26 and ref_h.max() < 1e-22  # the range where float32 squares underflow
    torch.testing.assert_close(g_h, ref_h, rtol=1e-4, atol=0)
    torch.testing.assert_close(g_x, ref_x, rtol=1e-4, atol=0)
    assert g_h.dtype == torch.float64
