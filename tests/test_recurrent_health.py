"""σ_max per layer and gate, and gate saturation, against computations written here from the weights."""

import pytest
import torch

from seqlab.models import GRU, LSTM, RNN
from seqlab.training.callbacks.training_health import gate_saturation, recurrent_sigma_max

V, T = 11, 10


def test_sigma_max_of_every_layer_and_gate_block():
    torch.manual_seed(0)
    lstm = LSTM(V, T, hidden_size=8, emb_dim=4, num_layers=2)
    sigma = recurrent_sigma_max(lstm)
    assert list(sigma) == [f"weight_hh_l{i}/{g}" for i in (0, 1) for g in "ifgo"]
    for i, layer in enumerate(lstm.layers):
        for k, gate in enumerate("ifgo"):
            block = layer.weight_hh_l0.detach()[k * 8 : (k + 1) * 8]  # (H, H): gate k's recurrent matrix
            assert sigma[f"weight_hh_l{i}/{gate}"].item() == pytest.approx(torch.linalg.svdvals(block)[0].item())
    rnn = RNN(V, T, hidden_size=8, num_layers=3, init="orthogonal", recurrent_radius=0.8)
    assert recurrent_sigma_max(rnn) == pytest.approx({f"weight_hh_l{i}": 0.8 for i in range(3)}, rel=1e-5)
    assert list(recurrent_sigma_max(GRU(V, T, hidden_size=8, num_layers=1))) == [f"weight_hh_l0/{g}" for g in "rzn"]


@pytest.mark.parametrize("model_class", [LSTM, GRU])
def test_gate_saturation_equals_a_stepped_count(model_class):
    """The hooked, batched count = counting the gates of every explicit step, every layer."""
    torch.manual_seed(1)
    model = model_class(V, T, hidden_size=8, emb_dim=4, num_layers=2, residual=True).double()
    with torch.no_grad():
        for p in model.layers.parameters():
            p.mul_(6)  # large weights: many gates saturate
    idx = torch.randint(V, (5, T))
    model.train()  # the measurement runs in eval mode and restores this
    shares = gate_saturation(model, idx)
    assert model.training

    counts: dict[str, list[torch.Tensor]] = {}
    state = model.initial_state(5)
    for t in range(T):
        x = model.embed(idx[:, t])
        new = []
        for i, layer in enumerate(model.layers):
            previous = tuple(s[i] for s in state)
            for gate in model.sigmoid_gates:
                a = model.gates(layer, x, previous[0])[gate]
                counts.setdefault(f"l{i}/{gate}", []).append((a < 0.05) | (a > 0.95))
            out, s = model.cell(layer, x, previous)
            new.append(s)
            x = x + out if i > 0 else out
        state = tuple(torch.stack(s) for s in zip(*new, strict=True))
    expected = {k: torch.stack(v).double().mean().item() for k, v in counts.items()}
    assert set(shares) == set(expected) == {f"l{i}/{g}" for i in (0, 1) for g in model.sigmoid_gates}
    assert {k: v.item() for k, v in shares.items()} == pytest.approx(
        expected, abs=1e-6
    )  # counts of 400: steps of 2.5e-3
    assert 0.05 < sum(expected.values()) / len(expected) < 0.95  # a count that can fail both ways
