"""Every model in conf/model/ (found by seqlab.models.catalog) against the properties the case for recurrence rests on,
and the model interface (models/base.py) that the rest of seqlab reads."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import T, V, build

from seqlab.errors import ConfigError
from seqlab.models import GRU, LSTM, RNN, PaddedMLP, WindowMLP
from seqlab.models.base import FAMILIES, RecurrentModel, SequenceModel
from seqlab.models.catalog import model_class, model_config, model_names

MODEL_NAMES = model_names()
RECURRENT = [n for n in MODEL_NAMES if model_class(n).recurrent]


@pytest.fixture(params=MODEL_NAMES)
def model(request) -> SequenceModel:
    torch.manual_seed(0)
    return build(request.param)


def test_output_shape(model):
    idx = torch.randint(V, (3, T))
    assert model(idx).shape == (3, T, V)


def test_causal(model):
    """Changing tokens after t never changes the logits up to t."""
    torch.manual_seed(1)
    idx = torch.randint(V, (2, T))
    logits = model(idx)
    for t in range(T - 1):
        changed = idx.clone()
        changed[:, t + 1 :] = torch.randint(V, (2, T - t - 1))
        torch.testing.assert_close(model(changed)[:, : t + 1], logits[:, : t + 1], rtol=0, atol=1e-6)


def test_loss_near_ln_v_at_init(model):
    idx = torch.randint(V, (8, T))
    loss = F.cross_entropy(model(idx).flatten(0, 1), torch.randint(V, (8 * T,)))
    assert abs(loss.item() - math.log(V)) < 0.15


def test_overfits_one_batch(model):
    """A model that cannot memorise 4 short sequences has a bug, whatever its inductive bias."""
    torch.manual_seed(2)
    x = torch.randint(V, (4, T + 1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(150):
        loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    if sum(p.numel() for p in model.parameters()) == V:  # the unigram can only learn the token frequencies
        counts = torch.bincount(x[:, 1:].flatten(), minlength=V).float()
        p = counts / counts.sum()
        entropy = -(p[p > 0] * p[p > 0].log()).sum()
        assert loss.item() == pytest.approx(entropy.item(), abs=0.02)
    else:
        assert loss.item() < 0.1


def test_the_interface_is_declared(model):
    """What the rest of seqlab reads, declared by the class: a family of the properties table, recurrent models with a
    state of fixed size (the same bytes after 1 token and after 2T), a context limit for the others."""
    assert isinstance(model, SequenceModel) and model.family in FAMILIES
    assert model.recurrent == isinstance(model, RecurrentModel)
    if model.recurrent:
        assert model.incremental and model.max_context is None and model.state_names
        state = model.initial_state(2)
        assert len(state) == len(model.state_names) and model.state_bytes(2) > 0
        _, after = model.forward_with_state(torch.randint(V, (2, 2 * T)))
        assert [s.shape for s in after] == [s.shape for s in state]
    else:
        assert model.max_context is not None and model.max_context <= T
    assert set(model.sigmoid_gates) <= set(model.gate_names)


def test_every_model_takes_hidden_size():
    """One width knob: `model.hidden_size` is in every model's config, so a sweep over it covers them all."""
    for name in MODEL_NAMES:
        assert "hidden_size" in model_config(name), name


def test_recurrent_configs_are_found():
    assert {"rnn", "lstm", "gru", "irnn", "rnn_orthogonal", "ssm", "mingru"} <= set(RECURRENT)
    irnn = build("irnn")
    assert irnn.layers[0].nonlinearity == "relu" and torch.equal(irnn.layers[0].weight_hh_l0.detach(), torch.eye(32))


STACKS = [
    (n, layers, residual)
    for n in RECURRENT
    if n != "rnn_orthogonal"
    for layers in (1, 2, 3)  # it adds nothing
    for residual in ((False, True) if "residual" in model_config(n) else (False,))
]  # ssm/mingru: residual anyway


@pytest.mark.parametrize(("name", "num_layers", "residual"), STACKS)
def test_step_equals_fast_path(name, num_layers, residual):
    """One explicit step at a time over the same weights = the fast path (fused kernels, scans): every logit and
    the final state, from the zero state and from a given one; and a chunk continued from a carried state = one
    pass over both chunks."""
    torch.manual_seed(num_layers)
    model = build(name, num_layers=num_layers, residual=residual).double().eval()
    idx = torch.randint(V, (3, T))
    zero = model.initial_state(3)
    assert len(zero) == len(model.state_names)
    assert all(s.dtype == torch.float64 and (s == 0).all() for s in zero)
    given = tuple(torch.randn_like(s) * 0.5 for s in zero)
    for start in (None, given):
        logits, final = model.forward_with_state(idx, start)
        state, stepped = zero if start is None else start, []
        for t in range(T):
            step_logits, state = model.step(idx[:, t], state)
            stepped.append(step_logits)
        torch.testing.assert_close(torch.stack(stepped, 1), logits, rtol=1e-10, atol=1e-12)
        for s, f in zip(state, final, strict=True):
            torch.testing.assert_close(s, f, rtol=1e-10, atol=1e-12)
        # a chunk continued from the state another chunk left = one pass over both
        both, _ = model.forward_with_state(torch.cat([idx, idx.flip(1)], 1), start)
        second, _ = model.forward_with_state(idx.flip(1), final)
        torch.testing.assert_close(second, both[:, T:], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model(idx), model.forward_with_state(idx)[0], rtol=0, atol=0)


def test_rnn_fused_equals_explicit_cell():
    """The fused nn.RNN computes exactly h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), h_0 = 0."""
    torch.manual_seed(3)
    rnn = RNN(V, T, hidden_size=20, emb_dim=8)
    idx = torch.randint(V, (3, T))
    e = rnn.embed(idx)
    layer = rnn.layers[0]
    fused, _ = layer(e)
    W_ih, W_hh = layer.weight_ih_l0, layer.weight_hh_l0
    b = layer.bias_ih_l0 + layer.bias_hh_l0
    h = torch.zeros(3, 20)
    for t in range(T):
        h = torch.tanh(e[:, t] @ W_ih.T + h @ W_hh.T + b)
        torch.testing.assert_close(fused[:, t], h, rtol=1e-5, atol=1e-6)


def test_lstm_and_gru_cells_follow_their_papers():
    """The gates written out here from the weights (PyTorch's block order) = the model's step."""
    torch.manual_seed(4)
    lstm, gru = LSTM(V, T, hidden_size=6, emb_dim=4).double(), GRU(V, T, hidden_size=6, emb_dim=4).double()
    x, h, c = torch.randn(2, 4).double(), torch.randn(2, 6).double(), torch.randn(2, 6).double()
    p = lstm.layers[0]
    i, f, g, o = (x @ p.weight_ih_l0.T + p.bias_ih_l0 + h @ p.weight_hh_l0.T + p.bias_hh_l0).chunk(4, 1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_next, (_, c2) = lstm.cell(p, x, (h, c))
    torch.testing.assert_close(c2, c_next)
    torch.testing.assert_close(h_next, torch.sigmoid(o) * torch.tanh(c_next))
    p = gru.layers[0]
    xr, xz, xn = (x @ p.weight_ih_l0.T + p.bias_ih_l0).chunk(3, 1)
    hr, hz, hn = (h @ p.weight_hh_l0.T + p.bias_hh_l0).chunk(3, 1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    h_next, _ = gru.cell(p, x, (h,))
    torch.testing.assert_close(h_next, (1 - z) * torch.tanh(xn + r * hn) + z * h)


def test_rnn_recurrent_radius_sets_spectral_radius():
    rnn = RNN(V, T, hidden_size=64, recurrent_radius=0.7)
    radius = torch.linalg.eigvals(rnn.layers[0].weight_hh_l0.detach()).abs().max()
    assert radius.item() == pytest.approx(0.7, rel=1e-4)


@pytest.mark.parametrize("radius", [None, 0.9])
def test_rnn_inits(radius):
    """orthogonal: every singular value = the radius (1 by default); identity: the IRNN's W_hh = radius × I, b = 0."""
    scale = 1.0 if radius is None else radius
    ortho = RNN(V, T, hidden_size=16, num_layers=2, init="orthogonal", recurrent_radius=radius)
    for layer in ortho.layers:
        svd = torch.linalg.svdvals(layer.weight_hh_l0.detach())
        torch.testing.assert_close(svd, torch.full((16,), scale), rtol=1e-5, atol=1e-5)
    irnn = RNN(V, T, hidden_size=16, num_layers=2, init="identity", nonlinearity="relu", recurrent_radius=radius)
    for layer in irnn.layers:
        assert torch.equal(layer.weight_hh_l0.detach(), torch.eye(16) * scale)
        assert (layer.bias_hh_l0 == 0).all() and (layer.bias_ih_l0 == 0).all()
        assert layer.nonlinearity == "relu"
    default = RNN(V, T, hidden_size=16)  # PyTorch's U(±1/√H): not orthogonal
    assert torch.linalg.svdvals(default.layers[0].weight_hh_l0.detach()).std() > 0.05


def test_tied_weights_share_one_matrix():
    model = LSTM(V, T, hidden_size=16, emb_dim=16, tie_weights=True)
    assert model.head.weight is model.tok_emb.weight
    n_untied = sum(p.numel() for p in LSTM(V, T, hidden_size=16, emb_dim=16).parameters())
    assert sum(p.numel() for p in model.parameters()) == n_untied - V * 16


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"tie_weights": True, "emb_dim": 8},
            "model.tie_weights=true needs model.emb_dim (8) == model.hidden_size (16)",
        ),
    ],
)
def test_bad_recurrent_options_are_config_errors(kwargs, message):
    """What the config layer cannot see (two keys of one model that must agree) the model checks itself."""
    with pytest.raises(ConfigError) as err:
        RNN(V, T, **{"hidden_size": 16, **kwargs})
    assert str(err.value) == message


def test_dropout_acts_in_training_only():
    torch.manual_seed(5)
    model = GRU(V, T, hidden_size=16, emb_dim=8, num_layers=2, dropout=0.5)
    idx = torch.randint(V, (2, T))
    model.train()
    assert not torch.equal(model(idx), model(idx))
    model.eval()
    assert torch.equal(model(idx), model(idx))


def test_residual_adds_each_upper_layer_to_its_input():
    torch.manual_seed(6)
    model = LSTM(V, T, hidden_size=16, emb_dim=8, num_layers=3, residual=True)
    e = model.embed(torch.randint(V, (2, T)))
    x1, _ = model.layers[0](e)  # the first layer's input is the embedding, of another width: no skip
    x2 = x1 + model.layers[1](x1)[0]
    x3 = x2 + model.layers[2](x2)[0]
    torch.testing.assert_close(model.forward_embedded(e), model.head(x3))


def test_init_range_draws_every_parameter_uniformly():
    model = GRU(V, T, hidden_size=16, emb_dim=8, num_layers=2, init_range=0.1)
    values = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert values.abs().max() <= 0.1 and values.abs().max() > 0.099
    assert abs(values.mean()) < 0.01


def test_window_mlp_equals_concatenation():
    """The conv1d shortcut is the Bengio MLP: concat(e[t-k+1..t]) @ W + b, padding before the chunk start."""
    torch.manual_seed(4)
    k = 4
    mlp = WindowMLP(V, T, hidden_size=16, emb_dim=8, window=k)
    idx = torch.randint(V, (2, T))
    e = mlp.embed(idx)
    conv = mlp.concat_to_hidden
    W = conv.weight.permute(2, 1, 0).reshape(k * 8, 16)  # (k*E, H): window slot j, embedding dim e
    for t in range(T):
        window = [e[:, s] if s >= 0 else mlp.pad.expand(2, 8) for s in range(t - k + 1, t + 1)]
        h = torch.tanh(torch.cat(window, dim=1) @ W + conv.bias)
        torch.testing.assert_close(mlp(idx)[:, t], mlp.head(h), rtol=1e-5, atol=1e-5)


def test_padded_mlp_equals_explicit_padding():
    """The cumulative-sum shortcut is one MLP on the prefix padded to T_max, weights per absolute position."""
    torch.manual_seed(5)
    mlp = PaddedMLP(V, T, hidden_size=16, emb_dim=8)
    idx = torch.randint(V, (2, T))
    e = mlp.embed(idx)
    W = mlp.per_position.reshape(T * 8, 16)  # (T_max * E, H)
    for t in range(T):
        padded = torch.cat([e[:, : t + 1], mlp.pad.expand(2, T - t - 1, 8)], dim=1)  # (B, T_max, E)
        h = torch.tanh(padded.flatten(1) @ W + mlp.bias)
        torch.testing.assert_close(mlp(idx)[:, t], mlp.head(h), rtol=1e-5, atol=1e-5)


def test_padded_mlp_grows_with_t_max_and_cannot_see_past_it():
    sizes = {t_max: sum(p.numel() for p in PaddedMLP(V, t_max, 16, 8).parameters()) for t_max in (8, 16, 32)}
    for t_max in (16, 32):  # one (E, H) matrix more per position
        assert sizes[t_max] - sizes[8] == (t_max - 8) * 8 * 16
    rnn_sizes = {t: sum(p.numel() for p in RNN(V, t, 16, 8).parameters()) for t in (8, 32)}
    assert rnn_sizes[8] == rnn_sizes[32]  # shared across time: the length costs nothing
    with pytest.raises(ValueError, match="at most 8"):
        PaddedMLP(V, 8, 16, 8)(torch.zeros(1, 9, dtype=torch.long))
