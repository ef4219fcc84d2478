"""Every fast scan equals the plain loop (float64), values and gradients, with and without an initial state."""

import pytest
import torch

from seqlab.errors import ConfigError
from seqlab.models import SSM, MinGRU
from seqlab.models.scan import chunked_scan, log_space_scan, sequential_scan, signed_decay

B, N = 3, 5


def inputs(T: int, positive: bool, with_h0: bool):
    g = torch.Generator().manual_seed(T)
    log_a = -torch.nn.functional.softplus(torch.randn(B, T, N, generator=g, dtype=torch.float64) * 3)
    b = torch.randn(B, T, N, generator=g, dtype=torch.float64)
    b = b.exp() if positive else b
    h0 = torch.randn(B, N, generator=g, dtype=torch.float64) if with_h0 else None  # any sign
    leaves = [log_a.requires_grad_(), b.requires_grad_()] + ([h0.requires_grad_()] if with_h0 else [])
    return log_a, b, h0, leaves


def check(fast, T: int, positive: bool, with_h0: bool, loop=sequential_scan) -> None:
    log_a, b, h0, leaves = inputs(T, positive, with_h0)
    expected = loop(log_a, b, h0)
    weights = torch.randn_like(expected)
    expected_grads = torch.autograd.grad((expected * weights).sum(), leaves)
    got = fast(log_a, b, h0)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    for g, e in zip(torch.autograd.grad((got * weights).sum(), leaves), expected_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize(("T", "chunk"), [(1, 4), (7, 4), (16, 4), (33, 16), (40, 64)])
def test_chunked_scan_equals_loop(T, chunk, with_h0):
    check(lambda la, b, h0: chunked_scan(la, b, h0, chunk=chunk), T, positive=False, with_h0=with_h0)


@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize(("T", "chunk"), [(5, 4), (32, 8)])
def test_chunked_scan_with_a_fixed_decay_equals_loop(T, chunk, with_h0):
    def fixed(log_a, b, h0):  # one decay per channel, as the LRU's λ
        return chunked_scan(log_a[0, 0], b, h0, chunk=chunk)

    check(fixed, T, positive=False, with_h0=with_h0, loop=lambda la, b, h0: sequential_scan(la[0, 0], b, h0))


@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("T", [1, 9, 50])
def test_log_space_scan_equals_loop(T, with_h0):
    check(lambda la, b, h0: log_space_scan(la, b.log(), h0), T, positive=True, with_h0=with_h0)


def test_log_space_scan_with_a_zero_state_is_finite():
    """initial_state() is zeros: the zero-state result, and finite gradients."""
    log_a, b, _, _ = inputs(12, positive=True, with_h0=False)
    h0 = torch.zeros(B, N, dtype=torch.float64, requires_grad=True)
    got = log_space_scan(log_a, b.log(), h0)
    torch.testing.assert_close(got, sequential_scan(log_a, b), rtol=1e-10, atol=1e-12)
    (grad,) = torch.autograd.grad(got.sum(), [b])
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize(
    ("name", "scan", "signed"),
    [
        ("ssm", "chunked", False),
        ("ssm", "loop", False),
        ("mingru", "log", False),
        ("mingru", "chunked", False),
        ("ssm", "chunked", True),
        ("ssm", "loop", True),
        ("mingru", "chunked", True),
        ("mingru", "loop", True),
    ],
)
def test_model_scan_equals_its_step_recurrence(name, scan, signed):
    """forward_with_state (the scan) from zeros and from a carried state equals step_embedded, token by token."""
    torch.manual_seed(0)
    model_class = SSM if name == "ssm" else MinGRU
    model = model_class(17, 9, hidden_size=6, emb_dim=8, num_layers=2, scan=scan, signed=signed).double()
    idx = torch.randint(17, (2, 9))
    state = model.initial_state(2)
    steps = []
    for t in range(9):
        logits, state = model.step(idx[:, t], state)
        steps.append(logits)
    steps = torch.stack(steps, 1)
    first, mid = model.forward_with_state(idx[:, :4])
    rest, end = model.forward_with_state(idx[:, 4:], mid)  # the carried-state path
    torch.testing.assert_close(torch.cat([first, rest], 1), steps, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(end[0], state[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model(idx), steps, rtol=1e-10, atol=1e-12)
    zeros = model.forward_with_state(idx, model.initial_state(2))[0]  # an explicit zero state, as None
    torch.testing.assert_close(zeros, steps, rtol=1e-10, atol=1e-12)


def signed_inputs(T: int, with_h0: bool, fixed: bool):
    """A decay of either sign (about half negative, some near 0) as (log|a|, sign), and b, h0."""
    g = torch.Generator().manual_seed(100 + T)
    a = torch.empty(N if fixed else (B, T, N), dtype=torch.float64).uniform_(-1, 1, generator=g)
    log_a, sign = signed_decay(a.requires_grad_())
    b = torch.randn(B, T, N, generator=g, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, N, generator=g, dtype=torch.float64, requires_grad=True) if with_h0 else None
    return a, log_a, sign, b, h0


@pytest.mark.parametrize("fixed", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize(("T", "chunk"), [(1, 4), (7, 4), (33, 8)])
def test_signed_scans_equal_the_plain_product(T, chunk, with_h0, fixed):
    """With signs, the loop and the chunked scan = h_t = a_t h_{t−1} + b_t computed with a itself; gradients too."""
    a, log_a, sign, b, h0 = signed_inputs(T, with_h0, fixed)
    leaves = [a, b] + ([h0] if with_h0 else [])
    h, hs = torch.zeros(B, N, dtype=torch.float64) if h0 is None else h0, []
    for t in range(T):
        h = (a if fixed else a[:, t]) * h + b[:, t]
        hs.append(h)
    expected = torch.stack(hs, 1)
    weights = torch.randn_like(expected)
    expected_grads = torch.autograd.grad((expected * weights).sum(), leaves)
    for scan in (sequential_scan, lambda *args: chunked_scan(*args, chunk=chunk)):
        got = scan(log_a, b, h0, sign)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
        grads = torch.autograd.grad((got * weights).sum(), leaves, retain_graph=True)  # log_a serves both scans
        for g, e in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-11)


def test_signed_eigenvalues_stay_inside_minus_one_one_for_any_input():
    """The signed decays are strictly inside (−1, 1) even where the gate saturates (inputs ±1e4, float32), and
    reach both signs; the defaults stay positive."""
    torch.manual_seed(0)
    mingru = MinGRU(17, 9, hidden_size=6, emb_dim=8, signed=True).layers[0]
    k = torch.tensor([-1e4, -30.0, -1.0, 0.0, 1.0, 30.0, 1e4])
    a = mingru.decay(k)
    assert (a.abs() < 1).all() and a.min() < -0.99 and a.max() > 0.99
    log_a, sign = signed_decay(a)
    assert torch.isfinite(log_a).all() and (log_a < 0).all() and torch.equal(sign, torch.where(a < 0, -1.0, 1.0))
    ssm = SSM(17, 9, hidden_size=6, emb_dim=8, signed=True).layers[0]
    assert (ssm.eigenvalues() < 0).any() and (ssm.eigenvalues() > 0).any()  # both signs from the start
    with torch.no_grad():
        ssm.lambda_raw.copy_(torch.tensor([-1e4, -5.0, 0.0, 1e-3, 5.0, 1e4]))
    lam = ssm.eigenvalues()
    assert (lam.abs() < 1).all() and lam.min() < -0.99 and lam.max() > 0.99
    x = torch.randn(2, 5, 8) * 1e4  # the scan path at saturated inputs: finite, and bounded as |a| < 1 says
    for layer in (mingru, ssm):
        out, h = layer(x, None, sequential_scan if layer is ssm else "loop")
        assert torch.isfinite(out).all() and torch.isfinite(h).all()
    assert (SSM(17, 9, hidden_size=6, emb_dim=8).layers[0].eigenvalues() > 0).all()


def test_signed_mingru_refuses_the_log_space_scan():
    with pytest.raises(ConfigError, match=r"model\.scan=log with model\.signed=true"):
        MinGRU(17, 9, scan="log", signed=True)
