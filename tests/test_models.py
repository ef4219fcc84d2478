"""Every model in conf/model/ against the properties the seed's argument rests on."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from seqlab.models import RNN, PaddedMLP, WindowMLP

MODEL_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "conf" / "model").glob("*.yaml"))
V, T = 30, 12


def build(config_path: Path, **overrides) -> torch.nn.Module:
    cfg = OmegaConf.load(config_path)
    cfg.update({k: v for k, v in overrides.items() if k in cfg})
    if "hidden_size" in cfg:
        cfg.hidden_size = 32
    if "emb_dim" in cfg:
        cfg.emb_dim = 16
    return instantiate(cfg, vocab_size=V, context_length=T)


@pytest.fixture(params=MODEL_CONFIGS, ids=lambda p: p.stem)
def model(request) -> torch.nn.Module:
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


def test_rnn_fused_equals_explicit_cell():
    """The fused nn.RNN computes exactly h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), h_0 = 0."""
    torch.manual_seed(3)
    rnn = RNN(V, T, hidden_size=20, emb_dim=8)
    idx = torch.randint(V, (3, T))
    e = rnn.embed(idx)
    fused, _ = rnn.rnn(e)
    W_ih, W_hh = rnn.rnn.weight_ih_l0, rnn.rnn.weight_hh_l0
    b = rnn.rnn.bias_ih_l0 + rnn.rnn.bias_hh_l0
    h = torch.zeros(3, 20)
    for t in range(T):
        h = torch.tanh(e[:, t] @ W_ih.T + h @ W_hh.T + b)
        torch.testing.assert_close(fused[:, t], h, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.stack(rnn.unroll(e), 1), fused, rtol=1e-5, atol=1e-6)


def test_rnn_recurrent_radius_sets_spectral_radius():
    rnn = RNN(V, T, hidden_size=64, recurrent_radius=0.7)
    radius = torch.linalg.eigvals(rnn.rnn.weight_hh_l0.detach()).abs().max()
    assert radius.item() == pytest.approx(0.7, rel=1e-4)


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
