"""The Transformer's key/value cache against its own uncached forward, and its causal mask."""

import pytest
import torch

from seqlab.errors import ConfigError
from seqlab.models import Transformer

V, T = 23, 10


@pytest.fixture
def model() -> Transformer:
    torch.manual_seed(0)
    m = Transformer(V, T, hidden_size=16, num_layers=2, num_heads=4).double().eval()
    for p in m.parameters():  # GPT-2's init makes every logit ≈ 0; larger weights make the comparison bite
        p.data.normal_(0, 0.3)
    return m


@pytest.mark.parametrize("prompt_len", [1, 4, T])
def test_cached_generation_equals_uncached_forward(model, prompt_len):
    """prefill + step, also past context_length (the re-prefilled window), equals model(window)[:, -1]."""
    idx = torch.randint(V, (3, 2 * T + 3))
    logits, state = model.prefill(idx[:, :prompt_len])
    torch.testing.assert_close(logits, model(idx[:, :prompt_len]), rtol=0, atol=1e-12)
    for t in range(prompt_len, idx.shape[1]):
        step_logits, state = model.step(idx[:, t], state)
        window = idx[:, max(0, t + 1 - T) : t + 1]
        torch.testing.assert_close(step_logits, model(window)[:, -1], rtol=0, atol=1e-12)
        assert state[1].shape[3] == window.shape[1]  # the cache holds exactly the window


def test_step_from_initial_state_equals_forward(model):
    idx = torch.randint(V, (2, T))
    state = model.initial_state(2)
    steps = []
    for t in range(T):
        logits, state = model.step(idx[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), model(idx), rtol=0, atol=1e-12)


def test_causal_with_large_weights(model):
    """The shared causality test at init sees near-zero logits; this one sees an attention that bites."""
    idx = torch.randint(V, (2, T))
    logits = model(idx)
    for t in range(T - 1):
        changed = idx.clone()
        changed[:, t + 1 :] = (idx[:, t + 1 :] + 1) % V
        torch.testing.assert_close(model(changed)[:, : t + 1], logits[:, : t + 1], rtol=0, atol=1e-12)
        assert not torch.allclose(model(changed)[:, t + 1 :], logits[:, t + 1 :])  # later positions do see it


def test_too_long_input_and_bad_heads_are_clear_errors(model):
    with pytest.raises(ValueError, match="context_length=10"):
        model(torch.zeros(1, T + 1, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"model\.num_heads=3: must divide model\.hidden_size=16"):
        Transformer(V, T, hidden_size=16, num_heads=3)
