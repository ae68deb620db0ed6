"""Balanced Softmax, logit-adjusted loss and post-hoc logit adjustment: hand values, F.cross_entropy on z + tau log pi."""

import io
import math

import pytest
import torch
import torch.nn.functional as F

from longtail.functional.logit_adjusted import (
    balanced_softmax_loss,
    class_log_prior,
    logit_adjust,
    logit_adjusted_loss,
)
from longtail.losses.logit_adjusted import BalancedSoftmaxLoss, LogitAdjustedLoss

# A 3-class example small enough to follow on paper.
Z = [[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [-0.5, 1.5, 0.0]]
Y = [0, 2, 1]
COUNTS = [90, 9, 1]


def _hand(tau, reduction="mean"):
    """The loss of the 3-class example with the math module only."""
    total_count = sum(COUNTS)
    log_prior = [math.log(n / total_count) for n in COUNTS]
    losses = []
    for z, y in zip(Z, Y):
        adjusted = [v + tau * lp for v, lp in zip(z, log_prior)]
        losses.append(math.log(sum(math.exp(v) for v in adjusted)) - adjusted[y])
    return sum(losses) if reduction == "sum" else sum(losses) / len(losses)


def _value_and_grad(fn, z):
    z = z.detach().clone().requires_grad_(True)
    value = fn(z)
    (grad,) = torch.autograd.grad(value.sum(), z)
    return value.detach(), grad


def _view(lp, ndim):
    return lp.view((1, -1) + (1,) * (ndim - 2))


# --- the log prior -------------------------------------------------------------------------------


def test_class_log_prior_literal_and_policy():
    # log(0.9), log(0.09), log(0.01)
    lp = class_log_prior(COUNTS, dtype=torch.float64)
    torch.testing.assert_close(lp, torch.tensor([math.log(0.9), math.log(0.09), math.log(0.01)], dtype=torch.float64))
    assert float(torch.logsumexp(lp, 0)) == pytest.approx(0.0, abs=1e-15)
    assert class_log_prior(COUNTS).dtype == torch.float32
    with pytest.raises(ValueError, match=r"counts must be positive for every class .* got 0 for classes \[1\]\. Add a pseudo-count"):
        class_log_prior([5, 0, 2])
    # The documented way out gives finite values everywhere.
    assert torch.isfinite(class_log_prior(torch.tensor([5, 0, 2]) + 1)).all()


@pytest.mark.parametrize(
    "counts, error, match",
    [
        ([[1, 2], [3, 4]], ValueError, r"counts must be 1-D \(one value per class\); got shape \(2, 2\)"),
        ([5, -1, 3], ValueError, r"counts must be non-negative; got negative counts for classes \[1\]"),
        ([5, float("inf")], ValueError, "counts must be finite"),
        ([], ValueError, "counts must have at least one class"),
        (None, TypeError, "counts must be a list, numpy array or tensor; got NoneType"),
    ],
)
def test_class_log_prior_bad_counts(counts, error, match):
    with pytest.raises(error, match=match):
        class_log_prior(counts)


# --- values --------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_hand_computed_three_classes(tau, reduction):
    z, y = torch.tensor(Z, dtype=torch.float64), torch.tensor(Y)
    lp = class_log_prior(COUNTS, dtype=torch.float64)
    got = logit_adjusted_loss(z, y, lp, tau, reduction=reduction)
    assert float(got) == pytest.approx(_hand(tau, reduction), rel=1e-12)
    if tau == 1.0:
        assert float(balanced_softmax_loss(z, y, COUNTS, reduction=reduction)) == pytest.approx(_hand(1.0, reduction), rel=1e-12)


def test_hand_computed_literal_values():
    # First two samples, log pi = [-0.105361, -2.407946, -4.605170]:
    # Balanced Softmax, sample 0: z + log pi = [1.894639, -1.907946, -5.605170], CE = log(1 + e^-3.802585 + e^-7.499809)
    #   = log(1 + 0.022313 + 0.000553) = log(1.022866) = 0.022609; sample 1: [-0.005361, -2.207946, -1.605170],
    #   CE = log(0.994654 + 0.109926 + 0.200855) + 1.605170 = 0.266537 + 1.605170 = 1.871707; mean 0.947158.
    z, y = torch.tensor(Z[:2]), torch.tensor(Y[:2])
    assert float(balanced_softmax_loss(z, y, COUNTS)) == pytest.approx(0.947158, abs=2e-6)
    none = balanced_softmax_loss(z, y, COUNTS, reduction="none")
    torch.testing.assert_close(none, torch.tensor([0.022609, 1.871707]), rtol=0, atol=2e-6)
    # Post-hoc: z - log pi for the first sample.
    torch.testing.assert_close(logit_adjust(z[:1], COUNTS), torch.tensor([[2.105361, 2.907946, 3.605170]]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("tau", [0.0, 0.7, 1.0, 1.5])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "weighted_mean"])
@pytest.mark.parametrize("target_kind", ["index", "soft"])
def test_is_cross_entropy_on_adjusted_logits_in_value_and_gradient(tau, reduction, target_kind):
    n, c = 24, 6
    z = torch.randn(n, c, dtype=torch.float64) * 3
    y = torch.randint(0, c, (n,)) if target_kind == "index" else torch.softmax(torch.randn(n, c, dtype=torch.float64), 1)
    lp = class_log_prior(torch.randint(1, 5000, (c,)), dtype=torch.float64)
    native = "mean" if reduction == "weighted_mean" else reduction
    ours = _value_and_grad(lambda t: logit_adjusted_loss(t, y, lp, tau, reduction=reduction), z)
    ref = _value_and_grad(lambda t: F.cross_entropy(t + tau * lp, y, reduction=native), z)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)


def test_weighted_forms_match_pytorch_weighted_cross_entropy():
    z, y = torch.randn(20, 5, dtype=torch.float64), torch.randint(0, 5, (20,))
    t = torch.softmax(torch.randn(20, 5, dtype=torch.float64), 1)
    lp = class_log_prior([500, 200, 80, 20, 5], dtype=torch.float64)
    w = torch.rand(5, dtype=torch.float64) + 0.1
    got = logit_adjusted_loss(z, y, lp, 0.5, weight=w, reduction="weighted_mean")
    torch.testing.assert_close(got, F.cross_entropy(z + 0.5 * lp, y, weight=w), rtol=1e-12, atol=0)
    soft = balanced_softmax_loss(z, t, log_prior=lp, weight=w)  # PyTorch's probability-target mean divides by N
    torch.testing.assert_close(soft, F.cross_entropy(z + lp, t, weight=w), rtol=1e-12, atol=0)


@pytest.mark.parametrize("target_kind", ["index", "soft"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_balanced_softmax_is_logit_adjustment_at_tau_one(target_kind, reduction):
    n, c = 16, 5
    z = torch.randn(n, c, dtype=torch.float64) * 2
    y = torch.randint(0, c, (n,)) if target_kind == "index" else torch.softmax(torch.randn(n, c, dtype=torch.float64), 1)
    counts = torch.randint(1, 1000, (c,))
    lp = class_log_prior(counts, dtype=torch.float64)
    bs = _value_and_grad(lambda t: balanced_softmax_loss(t, y, counts, reduction=reduction), z)
    la = _value_and_grad(lambda t: logit_adjusted_loss(t, y, lp, 1.0, reduction=reduction), z)
    torch.testing.assert_close(bs, la, rtol=0, atol=0)
    modules = [BalancedSoftmaxLoss(counts, reduction=reduction).double(), LogitAdjustedLoss(counts, 1.0, reduction=reduction).double()]
    torch.testing.assert_close(modules[0](z, y), modules[1](z, y), rtol=0, atol=0)


def test_tau_zero_is_cross_entropy_and_log_prior_offset_changes_nothing():
    z, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 4, (16,))
    lp = class_log_prior([40, 30, 20, 10], dtype=torch.float64)
    torch.testing.assert_close(logit_adjusted_loss(z, y, lp, 0.0), F.cross_entropy(z, y), rtol=1e-15, atol=0)
    # Unnormalised log counts give the same loss: softmax is shift invariant.
    log_counts = torch.log(torch.tensor([40.0, 30.0, 20.0, 10.0], dtype=torch.float64))
    torch.testing.assert_close(logit_adjusted_loss(z, y, log_counts, 0.8), logit_adjusted_loss(z, y, lp, 0.8), rtol=1e-13, atol=0)


def test_balanced_prior_is_plain_cross_entropy():
    z, y = torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 4, (10,))
    torch.testing.assert_close(balanced_softmax_loss(z, y, [7, 7, 7, 7]), F.cross_entropy(z, y), rtol=1e-13, atol=0)


# --- post-hoc adjustment -------------------------------------------------------------------------


def test_logit_adjust_is_a_shift_by_the_scaled_log_prior():
    z = torch.randn(8, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    counts = [400, 100, 20, 4]
    lp = class_log_prior(counts, dtype=torch.float64)
    out = logit_adjust(z, counts, tau=0.5)
    torch.testing.assert_close(out, z - 0.5 * _view(lp, 4), rtol=0, atol=1e-15)
    out.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))
    torch.testing.assert_close(logit_adjust(z, log_prior=lp, tau=0.5), out)
    torch.testing.assert_close(logit_adjust(z, counts, tau=0.0), z)
    # Equal counts change no prediction; skewed ones move predictions towards the rare classes.
    flat = torch.zeros(1, 4, dtype=torch.float64)
    assert int(logit_adjust(flat, counts).argmax()) == 3
    assert torch.equal(logit_adjust(z, [5, 5, 5, 5]).argmax(1), z.argmax(1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_logit_adjust_half_inputs(dtype):
    z = torch.randn(6, 3).to(dtype)
    out = logit_adjust(z, COUNTS)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), z.float() - class_log_prior(COUNTS), rtol=1e-2, atol=1e-2)


# --- dense inputs, ignore_index ------------------------------------------------------------------


def test_dense_inputs_and_ignore_index_match_cross_entropy():
    z = torch.randn(2, 5, 4, 3, dtype=torch.float64)
    y = torch.randint(0, 5, (2, 4, 3))
    y[0, 0, :] = 255
    lp = class_log_prior([400, 200, 50, 10, 3], dtype=torch.float64)
    adjusted = lambda t: t + 0.6 * _view(lp, 4)  # noqa: E731
    for reduction in ["mean", "sum", "none"]:
        ours = _value_and_grad(lambda t: logit_adjusted_loss(t, y, lp, 0.6, reduction=reduction, ignore_index=255), z)
        ref = _value_and_grad(lambda t: F.cross_entropy(adjusted(t), y, reduction=reduction, ignore_index=255), z)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)
    dense = balanced_softmax_loss(z, y, log_prior=lp, reduction="none", ignore_index=255)
    assert dense.shape == (2, 4, 3) and bool((dense[0, 0] == 0).all())
    soft = torch.softmax(torch.randn(2, 5, 4, 3, dtype=torch.float64), 1)
    torch.testing.assert_close(
        logit_adjusted_loss(z, soft, lp, 0.6), F.cross_entropy(adjusted(z), soft), rtol=1e-12, atol=0
    )


# --- gradients and numerics ----------------------------------------------------------------------


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(target=torch.zeros(3, 2)), ValueError, r"must have the input's shape \(3, 3\); got \(3, 2\)"),
        (dict(target=torch.full((3, 3), 1.5)), ValueError, r"probabilities in \[0, 1\]; got values in \[1.5, 1.5\]"),
        (dict(log_prior=torch.zeros(4)), ValueError, r"log_prior must have shape \(3,\), one value per class; got \(4,\)"),
        (dict(log_prior=torch.zeros(3, device="meta")), ValueError, "log_prior must be on the input's device cpu; got meta"),
        (dict(log_prior=torch.zeros(3, dtype=torch.long)), TypeError, "log_prior must be a floating-point tensor"),
        (dict(log_prior=torch.tensor([0.0, -float("inf"), -1.0])), ValueError, r"log_prior must be finite; .*bad classes \[1\]"),
        (dict(log_prior=torch.tensor([0.0, float("nan"), -1.0])), ValueError, "log_prior must be finite"),
        (dict(weight=torch.ones(4)), ValueError, r"weight must have shape \(3,\), one value per class; got \(4,\)"),
        (dict(reduction="avg"), ValueError, "reduction must be one of 'mean', 'weighted_mean', 'sum', 'none'; got 'avg'"),
        (dict(tau=float("nan")), ValueError, "tau must be a number; got NaN"),
        (dict(tau=-0.5), ValueError, "tau must be a non-negative finite number; got -0.5"),
        (dict(tau=float("inf")), ValueError, "tau must be a non-negative finite number; got inf"),
        (dict(tau=True), TypeError, "tau must be a non-negative finite number; got bool"),
        (dict(tau="dynamic"), ValueError, r"tau must be a non-negative finite number \('dynamic' is CDB's tau\)"),
    ],
)
def test_bad_input_messages(kwargs, error, match):
    args = dict(logits=torch.zeros(3, 3), target=torch.tensor([0, 1, 2]), log_prior=class_log_prior(COUNTS))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        logit_adjusted_loss(args.pop("logits"), args.pop("target"), args.pop("log_prior"), **args)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda z, y: balanced_softmax_loss(z, y), TypeError, "balanced_softmax_loss needs exactly one of counts and log_prior; got neither"),
        (lambda z, y: balanced_softmax_loss(z, y, COUNTS, log_prior=class_log_prior(COUNTS)), TypeError, "got both"),
        (lambda z, y: balanced_softmax_loss(z, y, [1, 2]), ValueError, r"counts must have one value per class \(3\); got 2"),
        (lambda z, y: balanced_softmax_loss(z, y, [1, 0, 2]), ValueError, "counts must be positive for every class"),
        (lambda z, y: balanced_softmax_loss(z, y, [1, -1, 2]), ValueError, "counts must be non-negative"),
        (lambda z, y: logit_adjust(z, [1, 0, 2]), ValueError, "counts must be positive for every class"),
        (lambda z, y: logit_adjust(z), TypeError, "logit_adjust needs exactly one of counts and log_prior; got neither"),
        (lambda z, y: logit_adjust(z, COUNTS, tau=-1.0), ValueError, "tau must be a non-negative finite number; got -1.0"),
        (lambda z, y: logit_adjust(z[0], COUNTS), ValueError, r"input must have shape \(N, C\)"),
    ],
)
def test_counts_and_post_hoc_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.zeros(3, 3), torch.tensor([0, 1, 2]))


@pytest.mark.parametrize(
    "cls, kwargs, error, match",
    [
        (LogitAdjustedLoss, dict(counts=[[1, 2]]), ValueError, "counts must be 1-D"),
        (LogitAdjustedLoss, dict(counts=[3, 0, 2]), ValueError, "counts must be positive for every class"),
        (LogitAdjustedLoss, dict(counts=[3, -1, 2]), ValueError, "counts must be non-negative"),
        (LogitAdjustedLoss, dict(counts=[3, 1], tau=float("nan")), ValueError, "tau must be a number; got NaN"),
        (LogitAdjustedLoss, dict(counts=[3, 1], reduction="avg"), ValueError, "reduction must be one of"),
        (BalancedSoftmaxLoss, dict(counts=[3, 0, 2]), ValueError, "counts must be positive for every class"),
        (BalancedSoftmaxLoss, dict(counts=[3, 1], reduction="avg"), ValueError, "reduction must be one of"),
    ],
)
def test_module_bad_arguments(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**kwargs)


# --- the modules ---------------------------------------------------------------------------------


def test_modules_match_functional_and_round_trip_state_dict():
    z, y = torch.tensor(Z), torch.tensor(Y)
    la = LogitAdjustedLoss(COUNTS, tau=0.5, reduction="sum")
    bs = BalancedSoftmaxLoss(COUNTS)
    assert dict(la.named_buffers()).keys() == {"weight", "log_prior"} and la.log_prior.dtype == torch.float32
    assert la.weight.tolist() == [1.0, 1.0, 1.0]
    torch.testing.assert_close(la(z, y), logit_adjusted_loss(z, y, class_log_prior(COUNTS), 0.5, reduction="sum"))
    torch.testing.assert_close(bs(z, y), balanced_softmax_loss(z, y, COUNTS))
    assert "tau=0.5" in repr(la) and "tau" not in repr(bs)
    for module, fresh in [(la, LogitAdjustedLoss([1, 1, 1], tau=0.5, reduction="sum")), (bs, BalancedSoftmaxLoss([1, 1, 1]))]:
        buffer = io.BytesIO()
        torch.save(module.state_dict(), buffer)
        buffer.seek(0)
        fresh.load_state_dict(torch.load(buffer))
        torch.testing.assert_close(fresh.log_prior, module.log_prior, rtol=0, atol=0)
        torch.testing.assert_close(fresh(z, y), module(z, y), rtol=0, atol=0)
    assert la.double().log_prior.dtype == torch.float64


