"""deltanet: the step loop (the reference), the chunked WY/UT form and `step` agree in float64 on values, final
state and gradients; a sequence in two pieces with the carried state equals one pass; β stays in its interval."""

import pytest
import torch
import torch.nn.functional as F

from seqlab.models.deltanet import DeltaNet
from seqlab.training.callbacks.gradient_profile import gradient_profile
from seqlab.training.sampling import generate

V = 11


def model(scan: str, signed: bool = False, chunk_size: int = 4, num_layers: int = 2) -> DeltaNet:
    torch.manual_seed(0)
    return DeltaNet(V, 16, hidden_size=12, num_heads=3, num_layers=num_layers, signed=signed, scan=scan,
                    chunk_size=chunk_size).double()  # fmt: skip


def run(net: DeltaNet, idx: torch.Tensor, start: tuple[torch.Tensor, ...], path: str):
    """logits (B, T, V), final state, and the gradients of a fixed function of both (parameters, start)."""
    if path == "step":
        state, outs = start, []
        for t in range(idx.shape[1]):
            logits_t, state = net.step(idx[:, t], state)
            outs.append(logits_t)
        logits = torch.stack(outs, 1)
    else:
        net.scan = path
        logits, state = net.forward_with_state(idx, start)
    g = torch.Generator().manual_seed(1)
    loss = (logits * torch.randn(logits.shape, generator=g, dtype=logits.dtype)).sum()
    loss = loss + (state[0] * torch.randn(state[0].shape, generator=g, dtype=logits.dtype)).sum()
    grads = torch.autograd.grad(loss, [*net.parameters(), *start])
    return logits.detach(), state[0].detach(), grads


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize(("T", "chunk_size"), [(1, 4), (3, 4), (8, 4), (13, 4), (13, 32)])
def test_three_paths_agree_in_float64(T, chunk_size, signed):
    net = model("chunked", signed, chunk_size)
    idx = torch.randint(V, (3, T), generator=torch.Generator().manual_seed(T))
    for start in (net.initial_state(3), tuple(torch.randn_like(s) * 0.5 for s in net.initial_state(3))):
        start = tuple(s.requires_grad_() for s in start)
        reference = run(net, idx, start, "loop")
        for path in ("chunked", "step"):
            logits, state, grads = run(net, idx, start, path)
            torch.testing.assert_close(logits, reference[0], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(state, reference[1], rtol=1e-10, atol=1e-12)
            for got, expected in zip(grads, reference[2], strict=True):
                torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("cut", [1, 5, 8, 11])
def test_two_pieces_with_the_carried_state_equal_one_pass(cut):
    """The bug class users report in public chunked kernels: a cached state that does not continue exactly."""
    net = model("chunked", signed=True).eval()
    idx = torch.randint(V, (2, 19), generator=torch.Generator().manual_seed(cut))
    whole, end = net.forward_with_state(idx)
    first, mid = net.forward_with_state(idx[:, :cut])
    rest, end2 = net.forward_with_state(idx[:, cut:], mid)
    torch.testing.assert_close(torch.cat([first, rest], 1), whole, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(end2[0], end[0], rtol=1e-10, atol=1e-12)


def test_step_is_the_papers_recurrence():
    """S_t = α_t S_{t−1}(I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ, o_t = S_t q_t, with dense matrices, = the layer's
    step (whose memory is M = Sᵀ)."""
    net = model("loop", signed=True)
    layer = net.layers[0]
    x, m = torch.randn(2, 12, dtype=torch.float64), torch.randn(2, 3 * 16, dtype=torch.float64)
    q, k, v, beta, log_alpha = layer.inputs(x)
    S = m.view(2, 3, 4, 4).transpose(-1, -2).clone()  # (B, H, d_v, d_k)
    eye = torch.eye(4, dtype=torch.float64)
    for b in range(2):
        for h in range(3):
            kk = torch.outer(k[b, h], k[b, h])
            S_next = log_alpha[b, h].exp() * S[b, h] @ (eye - beta[b, h] * kk) + beta[b, h] * torch.outer(
                v[b, h], k[b, h]
            )
            S[b, h] = S_next
    o = (S @ q.unsqueeze(-1)).squeeze(-1)  # (B, H, d_v)
    out, m_next = layer.step(x, m)
    torch.testing.assert_close(m_next.view(2, 3, 4, 4).transpose(-1, -2), S)
    torch.testing.assert_close(out, layer.mix(x, o))


@pytest.mark.parametrize("signed", [False, True])
def test_beta_and_the_eigenvalues_stay_in_their_interval_for_any_input(signed):
    """β in [0, 1] (signed: [0, 2]), so the eigenvalues of α(I − β k kᵀ), α in [0, 1], lie in [0, 1] (signed:
    [−1, 1]), even for inputs of ±1e4 in float32; and signed reaches below 0 (what parity needs)."""
    torch.manual_seed(0)
    layer = DeltaNet(V, 16, hidden_size=12, num_heads=3, signed=signed).layers[0]
    with torch.no_grad():
        layer.gates.weight.mul_(1e3)  # saturate the gates
        x = torch.cat([torch.randn(64, 12) * 1e4, torch.randn(64, 12), torch.zeros(1, 12)])
        _, k, _, beta, log_alpha = layer.inputs(x)
        assert beta.min() >= 0 and beta.max() <= (2 if signed else 1)
        assert (log_alpha <= 0).all()
        transition = log_alpha.exp()[..., None, None] * (
            torch.eye(4) - beta[..., None, None] * k.unsqueeze(-1) * k.unsqueeze(-2)
        )
        eig = torch.linalg.eigvalsh(transition)
        assert eig.min() >= (-1 if signed else 0) - 1e-6 and eig.max() <= 1 + 1e-6
        assert (eig.min() < -0.5) == signed


def test_gradient_profile_equals_the_chunked_path():
    """‖∂L_T/∂M_t‖ from the gradient profile (its step loop) = the gradient with respect to the state fed to the
    chunked path for the rest of the sequence (one layer: no use of M_t inside its own step but the output)."""
    net = model("chunked", signed=True, num_layers=1)
    idx, targets = torch.randint(V, (4, 10)), torch.randint(V, (4, 10))
    profile = gradient_profile(net, idx, targets)
    assert set(profile) == {"x", "h"} and profile["h"].shape == (4, 1, 10) and (profile["h"] > 0).all()
    for t in range(9):
        m = net.forward_with_state(idx[:, : t + 1])[1][0].detach().requires_grad_()  # (1, B, H·d·d)
        logits = net.forward_with_state(idx[:, t + 1 :], (m,))[0][:, -1]
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, targets[:, -1], reduction="sum"), [m])
        torch.testing.assert_close(profile["h"][:, 0, 9 - t], grad[0].norm(dim=-1), rtol=1e-9, atol=1e-300)


def test_streaming_generation_equals_rereading():
    """sample.py's generate() streams through `step`, far past the context: the same draws as re-reading."""
    net = model("chunked", signed=True).eval()
    prompt = torch.randint(V, (2, 3))
    streamed = generate(net, prompt, 40, 0.9, torch.Generator().manual_seed(7), context_length=16)
    generator, idx = torch.Generator().manual_seed(7), prompt
    with torch.no_grad():
        for _ in range(40):
            probs = torch.softmax(net(idx)[:, -1].float() / 0.9, dim=-1)
            idx = torch.cat([idx, torch.multinomial(probs, 1, generator=generator)], dim=1)
    assert torch.equal(streamed, idx)
