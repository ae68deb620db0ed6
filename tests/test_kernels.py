"""The hand-written autograd functions of ``longtail.functional._kernels`` against autograd references.

``TargetLogSoftmax``, ``SigmoidRowSum`` and ``FocalNLL`` write their gradients by hand (in place, reusing
buffers); these tests pin them in float64 with ``gradcheck`` / ``gradgradcheck`` and against the same
formulas differentiated by autograd, on ``(N, C)`` and dense ``(N, C, d1, d2)`` inputs, and check the
buffer hand-over (a retained graph run twice, ``create_graph``) and extreme logits.
"""

import pytest
import torch
import torch.nn.functional as F

from longtail.functional._kernels import (
    FocalNLL,
    SigmoidRowSum,
    TargetLogSoftmax,
    log1mexp,
)

SHAPES = [(6, 5), (2, 4, 2, 2)]


def _inputs(shape, seed=0, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    z = (scale * torch.randn(shape, dtype=torch.float64, generator=gen)).requires_grad_(True)
    target = torch.randint(0, shape[1], (shape[0],) + tuple(shape[2:]), generator=gen)
    return z, target


def _reference_target_log_softmax(z, y):
    return F.log_softmax(z, 1).gather(1, y.unsqueeze(1)).squeeze(1)


def _reference_sigmoid_row_sum(z, y, gamma, alpha):
    onehot = F.one_hot(y, z.shape[1]).movedim(-1, 1).to(z.dtype)
    z_t = torch.where(onehot.bool(), z, -z)
    terms = -F.logsigmoid(z_t)
    if gamma is not None:
        terms = torch.exp(gamma * F.logsigmoid(-z_t)) * terms
    if alpha is not None:
        terms = (alpha * onehot + (1 - alpha) * (1 - onehot)) * terms
    return terms.sum(1)


def _reference_focal_nll(log_p, gamma):
    return -torch.exp(gamma * log1mexp(log_p)) * log_p


def _grad(fn, z, weight):
    (g,) = torch.autograd.grad((fn(z) * weight).sum(), z)
    return g


# --- TargetLogSoftmax ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_target_log_softmax_gradcheck(shape):
    z, y = _inputs(shape)
    assert torch.autograd.gradcheck(lambda t: TargetLogSoftmax.apply(t, y), (z,))
    assert torch.autograd.gradgradcheck(lambda t: TargetLogSoftmax.apply(t, y), (z,))


@pytest.mark.parametrize("shape", SHAPES)
def test_target_log_softmax_matches_autograd(shape):
    z, y = _inputs(shape, seed=1)
    w = torch.randn(y.shape, dtype=torch.float64)  # any sign: the gradient is not assumed one-signed
    torch.testing.assert_close(TargetLogSoftmax.apply(z, y), _reference_target_log_softmax(z, y), rtol=1e-14, atol=0)
    torch.testing.assert_close(_grad(lambda t: TargetLogSoftmax.apply(t, y), z, w),
                               _grad(lambda t: _reference_target_log_softmax(t, y), z, w), rtol=1e-13, atol=1e-15)


def test_target_log_softmax_retained_graph_and_create_graph_give_the_same_gradient():
    z, y = _inputs((5, 7), seed=2)
    w = torch.rand(5, dtype=torch.float64)
    out = (TargetLogSoftmax.apply(z, y) * w).sum()
    (first,) = torch.autograd.grad(out, z, retain_graph=True)  # consumes the kept log-softmax buffer
    (second,) = torch.autograd.grad(out, z, retain_graph=True)  # recomputes it
    (third,) = torch.autograd.grad(out, z, create_graph=True)  # the differentiable path
    assert torch.equal(first, second)
    assert torch.equal(first, third.detach())
    assert third.requires_grad


def test_target_log_softmax_gradient_is_a_fresh_tensor_each_time():
    # The buffer handed to the first backward must not be written by a later call.
    z, y = _inputs((4, 3), seed=3)
    out = TargetLogSoftmax.apply(z, y).sum()
    out.backward(retain_graph=True)
    kept = z.grad.clone()
    out.backward()
    torch.testing.assert_close(z.grad, 2 * kept, rtol=1e-15, atol=0)


@pytest.mark.parametrize("scale", [1e2, 1e4, 1e30])
def test_target_log_softmax_extreme_logits_are_finite(scale):
    z = (torch.tensor([[1.0, -1.0, 0.5], [-1.0, 1.0, -0.5]]) * scale).requires_grad_(True)
    y = torch.tensor([0, 0])
    out = TargetLogSoftmax.apply(z, y)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(z.grad).all()


# --- SigmoidRowSum -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gamma", [None, 0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", [None, 0.25, 0.0, 1.0])
def test_sigmoid_row_sum_gradcheck(shape, gamma, alpha):
    z, y = _inputs(shape, seed=4)
    fn = lambda t: SigmoidRowSum.apply(t, y, gamma, alpha)
    assert torch.autograd.gradcheck(fn, (z,))
    if alpha in (None, 0.25):  # the double backward shares one code path for every alpha
        assert torch.autograd.gradgradcheck(fn, (z,))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gamma", [None, 0.0, 0.25, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_sigmoid_row_sum_matches_autograd(shape, gamma, alpha):
    z, y = _inputs(shape, seed=5)
    w = torch.randn(y.shape, dtype=torch.float64)
    fn = lambda t: SigmoidRowSum.apply(t, y, gamma, alpha)
    ref = lambda t: _reference_sigmoid_row_sum(t, y, gamma, alpha)
    torch.testing.assert_close(fn(z), ref(z), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(_grad(fn, z, w), _grad(ref, z, w), rtol=1e-12, atol=1e-15)


def test_sigmoid_row_sum_gamma_zero_equals_bce_in_value_and_gradient():
    z, y = _inputs((6, 4), seed=6)
    onehot = F.one_hot(y, 4).double()
    bce = lambda t: F.binary_cross_entropy_with_logits(t, onehot, reduction="none").sum(1)
    for gamma in [None, 0.0]:
        fn = lambda t, gamma=gamma: SigmoidRowSum.apply(t, y, gamma, None)
        torch.testing.assert_close(fn(z), bce(z), rtol=1e-14, atol=0)
        torch.testing.assert_close(_grad(fn, z, 1.0), _grad(bce, z, 1.0), rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("gamma", [None, 0.0, 0.25, 2.0])
@pytest.mark.parametrize("scale", [1e2, 1e4, 1e30])
def test_sigmoid_row_sum_extreme_logits_are_finite(gamma, scale):
    z = (torch.tensor([[1.0, -1.0, 0.5], [-1.0, 1.0, -0.5], [-1.0, -1.0, -1.0]]) * scale).requires_grad_(True)
    y = torch.tensor([0, 0, 1])
    out = SigmoidRowSum.apply(z, y, gamma, 0.25)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(z.grad).all()


def test_sigmoid_row_sum_retained_graph_gives_the_same_gradient():
    z, y = _inputs((5, 6), seed=7)
    out = SigmoidRowSum.apply(z, y, 2.0, 0.25).sum()
    (a,) = torch.autograd.grad(out, z, retain_graph=True)
    (b,) = torch.autograd.grad(out, z, retain_graph=True)
    (c,) = torch.autograd.grad(out, z, create_graph=True)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, c.detach(), rtol=1e-14, atol=1e-16)


# --- FocalNLL ------------------------------------------------------------------------------------


def _log_probs(shape, seed):
    z, _ = _inputs(shape, seed=seed)
    return F.log_softmax(z.detach(), 1).requires_grad_(True)


@pytest.mark.parametrize("gamma", [0.0, 0.25, 0.5, 1.0, 2.0, 5.0])
def test_focal_nll_gradcheck(gamma):
    log_p = _log_probs((5, 4), seed=8)
    assert torch.autograd.gradcheck(lambda t: FocalNLL.apply(t, gamma), (log_p,))
    assert torch.autograd.gradgradcheck(lambda t: FocalNLL.apply(t, gamma), (log_p,))


@pytest.mark.parametrize("gamma", [0.0, 0.25, 0.5, 1.0, 2.0, 5.0])
def test_focal_nll_matches_autograd_through_log1mexp(gamma):
    # log p from -40 (p ~ 4e-18) to -1e-12 (p ~ 1): both branches of log1mexp and the p -> 1 end.
    log_p = (-torch.logspace(-12, 1.6, 60, dtype=torch.float64)).requires_grad_(True)
    w = torch.rand(60, dtype=torch.float64)
    fn = lambda t: FocalNLL.apply(t, gamma)
    ref = lambda t: _reference_focal_nll(t, gamma)
    torch.testing.assert_close(fn(log_p), ref(log_p), rtol=1e-13, atol=0)
    torch.testing.assert_close(_grad(fn, log_p, w), _grad(ref, log_p, w), rtol=1e-10, atol=1e-300)


def test_focal_nll_gamma_zero_is_the_negative_log_probability():
    log_p = _log_probs((4, 3), seed=9)
    torch.testing.assert_close(FocalNLL.apply(log_p, 0.0), -log_p, rtol=0, atol=0)
    (g,) = torch.autograd.grad(FocalNLL.apply(log_p, 0.0).sum(), log_p)
    assert torch.equal(g, -torch.ones_like(g))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.0, 0.25, 0.5, 2.0])
def test_focal_nll_at_probability_one_and_zero_is_finite(dtype, gamma):
    log_p = torch.tensor([0.0, -0.0, -torch.finfo(dtype).tiny, -1e-30, -50.0, -1e4, -1e30], dtype=dtype)
    log_p.requires_grad_(True)
    out = FocalNLL.apply(log_p, gamma)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(log_p.grad).all()
    assert out[0] == 0  # p = 1: no loss


# --- torch.compile -------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["target_log_softmax", "sigmoid", "sigmoid_focal", "sigmoid_focal_alpha", "focal_nll"])
def test_kernel_outputs_are_not_written_in_place(kernel):
    # Measured with torch 2.11.0: under torch.compile, a Function whose forward returned the result of an in-place op
    # (FocalNLL's ``.neg_()``) got a zero gradient. A fresh output has version 0 on every torch version.
    z, y = _inputs((6, 5), seed=3)
    out = {
        "target_log_softmax": lambda: TargetLogSoftmax.apply(z, y),
        "sigmoid": lambda: SigmoidRowSum.apply(z, y, None, None),
        "sigmoid_focal": lambda: SigmoidRowSum.apply(z, y, 2.0, None),
        "sigmoid_focal_alpha": lambda: SigmoidRowSum.apply(z, y, 2.0, 0.25),
        "focal_nll": lambda: FocalNLL.apply(F.log_softmax(z, 1)[:, 0], 2.0),
    }[kernel]()
    assert out._version == 0


def test_kernels_compile_without_graph_breaks():
    torch._dynamo.reset()
    z, y = _inputs((6, 5), seed=10)

    def loss(t):
        log_p = TargetLogSoftmax.apply(t, y)
        return FocalNLL.apply(log_p, 2.0).sum() + SigmoidRowSum.apply(t, y, 2.0, 0.25).sum() - log_p.sum()

    compiled = torch.compile(loss, fullgraph=True, backend="eager")
    (g_eager,) = torch.autograd.grad(loss(z), z)
    out = compiled(z)
    (g_compiled,) = torch.autograd.grad(out, z)
    torch.testing.assert_close(out, loss(z))
    torch.testing.assert_close(g_compiled, g_eager)
