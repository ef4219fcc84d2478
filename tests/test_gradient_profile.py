"""The gradient profile against independent autograd computations, and the vanishing it is meant to show."""

import pytest
import torch
import torch.nn.functional as F

from seqlab.models import GRU, LSTM, RNN, PaddedMLP, Unigram, WindowMLP
from seqlab.training.callbacks.gradient_profile import gradient_profile, log_spaced_distances

V, T, B = 13, 12, 5


def _batch(seed: int = 0, length: int = T) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(V, (B, length), generator=g), torch.randint(V, (B, length), generator=g)


def explicit_rnn_gradients(model: RNN, idx: torch.Tensor, targets: torch.Tensor):
    """‖∂L_T/∂h_t‖ and ‖∂L_T/∂e_t‖ per sequence, by position, from a loop written here from the weights."""
    r = model.layers[0]
    e = model.tok_emb.weight[idx].detach().requires_grad_()  # (B, T, E)
    h = torch.zeros(idx.shape[0], r.hidden_size, dtype=e.dtype)
    hs = []
    for t in range(idx.shape[1]):
        h = torch.tanh(e[:, t] @ r.weight_ih_l0.T + r.bias_ih_l0 + h @ r.weight_hh_l0.T + r.bias_hh_l0)
        hs.append(h)
    logits = h @ model.head.weight.T + model.head.bias  # (B, V)
    loss = F.cross_entropy(logits, targets[:, -1], reduction="sum")
    grads = torch.autograd.grad(loss, [e, *hs])
    g_x = grads[0].norm(dim=-1)  # (B, T) by position
    g_h = torch.stack([g.norm(dim=-1) for g in grads[1:]], dim=1)  # (B, T) by position
    return g_h, g_x, logits


def explicit_lstm_stack_gradients(model: LSTM, idx: torch.Tensor, targets: torch.Tensor):
    """{h, c: (B, L, T)}: ‖∂L_T/∂h_t‖, ‖∂L_T/∂c_t‖ for every layer and position, from a loop written here."""
    B, T = idx.shape
    H, n_layers = model.hidden_size, model.num_layers
    x_all = model.tok_emb.weight[idx]  # (B, T, E)
    h = [torch.zeros(B, H, dtype=x_all.dtype) for _ in range(n_layers)]
    c = [torch.zeros(B, H, dtype=x_all.dtype) for _ in range(n_layers)]
    states = []  # per step: (h per layer, c per layer)
    for t in range(T):
        x, h_new, c_new = x_all[:, t], [], []
        for i, p in enumerate(model.layers):
            gates = x @ p.weight_ih_l0.T + p.bias_ih_l0 + h[i] @ p.weight_hh_l0.T + p.bias_hh_l0
            gi, gf, gg, go = gates.chunk(4, 1)
            c_i = torch.sigmoid(gf) * c[i] + torch.sigmoid(gi) * torch.tanh(gg)
            h_i = torch.sigmoid(go) * torch.tanh(c_i)
            h_new.append(h_i)
            c_new.append(c_i)
            x = x + h_i if model.residual and i > 0 else h_i
        h, c = h_new, c_new
        states.append((h, c))
    loss = F.cross_entropy(model.head(x), targets[:, -1], reduction="sum")
    leaves = [s for hs, cs in states for s in (*hs, *cs)]
    grads = torch.autograd.grad(loss, leaves)
    norms = torch.stack([g.norm(dim=-1) for g in grads]).reshape(T, 2, n_layers, B)  # (T, {h, c}, L, B)
    return {"h": norms[:, 0].permute(2, 1, 0), "c": norms[:, 1].permute(2, 1, 0)}  # (B, L, T) by position


def test_rnn_profile_equals_explicit_unrolled_autograd():
    torch.manual_seed(0)
    model = RNN(V, T, hidden_size=16, emb_dim=8).double()
    idx, targets = _batch()
    profile = gradient_profile(model, idx, targets)
    ref_h, ref_x, ref_logits = explicit_rnn_gradients(model, idx, targets)
    # the explicit loop is the fused module's computation: same last-position logits
    torch.testing.assert_close(ref_logits, model(idx)[:, -1], rtol=1e-10, atol=1e-12)
    assert set(profile) == {"x", "h"}
    assert profile["h"].shape == (B, 1, T) and profile["x"].shape == (B, T)
    assert profile["h"].dtype == profile["x"].dtype == torch.float64
    # column d of the profile is position T-1-d
    torch.testing.assert_close(profile["h"][:, 0], ref_h.flip(1), rtol=1e-10, atol=0)
    torch.testing.assert_close(profile["x"], ref_x.flip(1), rtol=1e-10, atol=0)
    assert (profile["h"][:, 0, -1] > 0).all()  # the whole chunk is reached, if faintly


@pytest.mark.parametrize(("num_layers", "residual"), [(1, False), (3, False), (3, True)])
def test_lstm_stack_profile_equals_explicit_autograd(num_layers, residual):
    """h and the cell c, every layer: the probe's numbers = autograd through a stacked-LSTM loop written here."""
    torch.manual_seed(1)
    model = LSTM(V, T, hidden_size=8, emb_dim=6, num_layers=num_layers, residual=residual).double()
    idx, targets = _batch(1)
    profile = gradient_profile(model, idx, targets)
    reference = explicit_lstm_stack_gradients(model, idx, targets)
    assert set(profile) == {"x", "h", "c"}
    for name in ("h", "c"):
        assert profile[name].shape == (B, num_layers, T)
        torch.testing.assert_close(profile[name], reference[name].flip(-1), rtol=1e-10, atol=1e-300)
        assert (profile[name] > 0).all()


@pytest.mark.parametrize("model_class", [RNN, LSTM, GRU])
def test_profile_norms_are_taken_in_float64(model_class):
    """Tiny float32 gradients: a float32 norm squares them to 0; the profile keeps them."""
    torch.manual_seed(0)
    model = model_class(V, T, hidden_size=8, emb_dim=4)
    idx, targets = _batch()
    with torch.no_grad():
        model.head.weight.mul_(1e-30)  # every gradient ~1e-30: its square underflows float32
        model.head.bias.zero_()
    profile = gradient_profile(model, idx, targets)
    assert (profile["x"][:, 0] > 0).all() and (profile["h"][:, -1, 0] > 0).all()
    assert (profile["x"][:, 0] < 1e-25).all()


def test_fused_output_gradient_is_only_the_direct_term():
    """Why the probe steps: autograd's gradient for a fused nn.RNN's outputs misses the recurrence."""
    torch.manual_seed(0)
    model = RNN(V, T, hidden_size=16, emb_dim=8)
    idx, targets = _batch()
    out, _ = model.layers[0](model.embed(idx))  # (B, T, H)
    loss = F.cross_entropy(model.head(out[:, -1]), targets[:, -1], reduction="sum")
    (g_out,) = torch.autograd.grad(loss, out)
    assert (g_out[:, :-1] == 0).all()
    assert (gradient_profile(model, idx, targets)["h"][:, 0, 1:] > 0).all()


def test_profile_leaves_parameter_gradients_alone():
    model = LSTM(V, T, hidden_size=16, emb_dim=8, num_layers=2)
    gradient_profile(model, *_batch())
    assert all(p.grad is None for p in model.parameters())


def test_window_mlp_sees_exactly_its_window():
    torch.manual_seed(0)
    window = 4
    model = WindowMLP(V, T, hidden_size=16, emb_dim=8, window=window)
    profile = gradient_profile(model, *_batch())
    assert set(profile) == {"x"}
    assert (profile["x"][:, :window] > 0).all()
    assert (profile["x"][:, window:] == 0).all()


def test_padded_mlp_sees_the_whole_prefix_and_unigram_nothing():
    torch.manual_seed(0)
    assert (gradient_profile(PaddedMLP(V, T, hidden_size=16, emb_dim=8), *_batch())["x"] > 0).all()
    profile = gradient_profile(Unigram(V, T), *_batch())
    assert set(profile) == {"x"} and profile["x"].shape == (B, T)
    assert (profile["x"] == 0).all()


def _ratio(radius: float, seed: int) -> float:
    torch.manual_seed(seed)
    model = RNN(V, 32, hidden_size=32, emb_dim=8, recurrent_radius=radius)
    with torch.no_grad():  # small inputs keep tanh near its linear part, where W_hh alone sets the decay
        model.tok_emb.weight.mul_(0.01)
        model.layers[0].bias_ih_l0.zero_()
        model.layers[0].bias_hh_l0.zero_()
    mean = gradient_profile(model, *_batch(seed, length=32))["h"][:, 0].mean(0)
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

    from seqlab.data import TextDataModule
    from seqlab.training.callbacks import GradientProfile
    from seqlab.training.system import LanguageModel

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
    profile = gradient_profile(model, idx, targets)
    g_h, g_x = profile["h"], profile["x"]
    reference = gradient_profile(model.double(), idx, targets)  # same weights, every step in float64
    ref_h, ref_x = reference["h"], reference["x"]
    assert ref_h.min() > 1e-26 and ref_h.max() < 1e-22  # the range where float32 squares underflow
    torch.testing.assert_close(g_h, ref_h, rtol=1e-4, atol=0)
    torch.testing.assert_close(g_x, ref_x, rtol=1e-4, atol=0)
    assert g_h.dtype == torch.float64
