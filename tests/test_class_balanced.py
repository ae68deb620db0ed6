"""class_balanced_loss: hand-computed values, the official formulas, native PyTorch in degenerate cases."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import effective_weights, official_loss

from longtail import ClassBalancedLoss, class_balanced_weights
from longtail.functional import class_balanced_loss, focal_loss, sigmoid_focal_loss

LOSSES = ["softmax", "sigmoid", "focal", "softmax_focal"]
FOCAL = ("focal", "softmax_focal")


def _gamma(loss, gamma):
    """``gamma`` for a focal loss; 0 for softmax / sigmoid, which have no focal term and refuse a gamma."""
    return gamma if loss in FOCAL else 0.0


def _with_gammas(gammas, losses=LOSSES):
    """(loss, gamma) pairs: every gamma for the focal losses, gamma 0 once for the others."""
    return [(loss, g) for loss in losses for g in (gammas if loss in FOCAL else [0.0])]

# A 3-class example small enough to follow on paper.
Z = [[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [-0.5, 1.5, 0.0]]
Y = [0, 2, 1]
COUNTS, BETA = [100, 10, 1], 0.99


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _hand(loss, gamma):
    """The loss of the 3-class example with the math module only."""
    raw = [(1 - BETA) / (1 - BETA**n) for n in COUNTS]
    w = [3 * r / sum(raw) for r in raw]
    total = 0.0
    for z, y in zip(Z, Y):
        if loss in ("softmax", "softmax_focal"):
            p_y = math.exp(z[y]) / sum(math.exp(v) for v in z)
            term = -math.log(p_y) * ((1 - p_y) ** gamma if loss == "softmax_focal" else 1.0)
        else:
            term = 0.0
            for i, zi in enumerate(z):
                p_t = _sigmoid(zi) if i == y else 1 - _sigmoid(zi)
                term += -math.log(p_t) * ((1 - p_t) ** gamma if loss == "focal" else 1.0)
        total += w[y] * term
    return total / len(Y)


@pytest.mark.parametrize("loss, gamma", _with_gammas([0.0, 0.5, 2.0]))
def test_hand_computed_three_classes(loss, gamma):
    w = class_balanced_weights(COUNTS, BETA, dtype=torch.float64)
    got = class_balanced_loss(torch.tensor(Z, dtype=torch.float64), torch.tensor(Y), w, loss=loss, gamma=gamma)
    assert float(got) == pytest.approx(_hand(loss, gamma), rel=1e-12)


def test_hand_computed_literal_values():
    # Worked by hand: w = [0.0422375, 0.2800436, 2.6777189] for classes [0, 1, 2];
    # CE_n = logsumexp(z_n) - z_{n,y}: [2.241235 - 2, 3.109600 - 3, 1.806356 - 1.5] = [0.241235, 0.109600, 0.306356];
    # sum_n w_y CE_n = 0.010189 + 0.293478 + 0.085793 = 0.38947; mean over N = 3 samples: 0.12982 (6-digit hand arithmetic).
    w = class_balanced_weights(COUNTS, BETA)
    z, y = torch.tensor(Z), torch.tensor(Y)
    assert float(class_balanced_loss(z, y, w, loss="softmax")) == pytest.approx(0.12982, abs=1e-5)
    assert float(class_balanced_loss(z, y, w, loss="softmax", reduction="sum")) == pytest.approx(0.38947, abs=2e-5)


@pytest.mark.parametrize("loss, gamma", _with_gammas([0.5, 1.0, 2.0]))
@pytest.mark.parametrize("beta", [0.9, 0.99, 0.999, 0.9999])
def test_matches_official_formulas_on_random_inputs(loss, beta, gamma):
    gen = torch.Generator().manual_seed(hash((loss, beta, gamma)) % 2**31)
    n, c = 64, 7
    z = torch.randn(n, c, generator=gen, dtype=torch.float64) * 3
    y = torch.randint(0, c, (n,), generator=gen)
    counts = torch.randint(1, 5000, (c,), generator=gen)
    w = class_balanced_weights(counts, beta, dtype=torch.float64)
    assert w.numpy() == pytest.approx(effective_weights(counts.numpy(), beta), rel=1e-12)
    got = class_balanced_loss(z, y, w, loss=loss, gamma=gamma)
    expected = official_loss(z.numpy(), y.numpy(), w.numpy(), loss, gamma)
    assert float(got) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_reductions_relate_as_documented():
    z, y = torch.randn(20, 5, dtype=torch.float64), torch.randint(0, 5, (20,))
    w = torch.rand(5, dtype=torch.float64) + 0.2
    for loss in LOSSES:
        kw = dict(loss=loss, gamma=_gamma(loss, 1.5))
        none = class_balanced_loss(z, y, w, reduction="none", **kw)
        assert none.shape == (20,)
        assert float(class_balanced_loss(z, y, w, reduction="sum", **kw)) == pytest.approx(float(none.sum()), rel=1e-12)
        assert float(class_balanced_loss(z, y, w, reduction="mean", **kw)) == pytest.approx(float(none.sum() / 20), rel=1e-12)
        weighted = class_balanced_loss(z, y, w, reduction="weighted_mean", **kw)
        assert float(weighted) == pytest.approx(float(none.sum() / w[y].sum()), rel=1e-12)


# --- degenerate cases: native PyTorch is the reference -------------------------------------------


def _value_and_grad(fn, z):
    z = z.detach().clone().requires_grad_(True)
    value = fn(z)
    (grad,) = torch.autograd.grad(value.sum(), z)
    return value.detach(), grad


def test_beta_zero_softmax_is_cross_entropy_in_value_and_gradient():
    z, y = torch.randn(32, 10, dtype=torch.float64), torch.randint(0, 10, (32,))
    w = class_balanced_weights(torch.randint(1, 100, (10,)), 0.0, dtype=torch.float64)
    for reduction in ["mean", "sum", "none", "weighted_mean"]:
        native = "mean" if reduction == "weighted_mean" else reduction
        ours = _value_and_grad(lambda t: class_balanced_loss(t, y, w, reduction=reduction), z)
        ref = _value_and_grad(lambda t: F.cross_entropy(t, y, reduction=native), z)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)


def test_weighted_mean_is_pytorch_weighted_cross_entropy():
    z, y = torch.randn(32, 10, dtype=torch.float64), torch.randint(0, 10, (32,))
    w = class_balanced_weights(torch.randint(1, 1000, (10,)), 0.999, dtype=torch.float64)
    ours = _value_and_grad(lambda t: class_balanced_loss(t, y, w, reduction="weighted_mean"), z)
    ref = _value_and_grad(lambda t: F.cross_entropy(t, y, weight=w), z)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)
    none = class_balanced_loss(z, y, w, reduction="none")
    torch.testing.assert_close(none, F.cross_entropy(z, y, weight=w, reduction="none"), rtol=1e-12, atol=0)


def test_beta_zero_sigmoid_is_bce_summed_over_classes():
    n, c = 32, 10
    z, y = torch.randn(n, c, dtype=torch.float64), torch.randint(0, c, (n,))
    onehot = F.one_hot(y, c).double()
    ones = torch.ones(c, dtype=torch.float64)
    ours = _value_and_grad(lambda t: class_balanced_loss(t, y, ones, loss="sigmoid"), z)
    ref = _value_and_grad(lambda t: F.binary_cross_entropy_with_logits(t, onehot, reduction="sum") / n, z)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)
    # BCEWithLogitsLoss's mean divides by N * C: ours is C times it.
    bce_mean = F.binary_cross_entropy_with_logits(z, onehot)
    assert float(class_balanced_loss(z, y, ones, loss="sigmoid")) == pytest.approx(c * float(bce_mean), rel=1e-12)


@pytest.mark.parametrize("target_kind", ["index", "multi_hot"])
def test_gamma_zero_focal_is_sigmoid_in_value_and_gradient(target_kind):
    n, c = 16, 6
    z = torch.randn(n, c, dtype=torch.float64) * 4
    y = torch.randint(0, c, (n,)) if target_kind == "index" else (torch.rand(n, c) < 0.3).double()
    w = torch.rand(c, dtype=torch.float64) + 0.5
    ours = _value_and_grad(lambda t: class_balanced_loss(t, y, w, loss="focal", gamma=0.0, reduction="none"), z)
    ref = _value_and_grad(lambda t: class_balanced_loss(t, y, w, loss="sigmoid", reduction="none"), z)
    torch.testing.assert_close(ours, ref, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("target_kind", ["index", "soft"])
def test_gamma_zero_softmax_focal_is_softmax_in_value_and_gradient(target_kind):
    n, c = 16, 6
    z = torch.randn(n, c, dtype=torch.float64) * 4
    y = torch.randint(0, c, (n,)) if target_kind == "index" else torch.softmax(torch.randn(n, c, dtype=torch.float64), 1)
    w = torch.rand(c, dtype=torch.float64) + 0.5
    ours = _value_and_grad(lambda t: class_balanced_loss(t, y, w, loss="softmax_focal", reduction="none"), z)
    ref = _value_and_grad(lambda t: class_balanced_loss(t, y, w, loss="softmax", reduction="none"), z)
    torch.testing.assert_close(ours, ref, rtol=1e-13, atol=1e-15)


def test_dense_inputs_and_ignore_index_match_cross_entropy():
    z = torch.randn(2, 5, 4, 3, dtype=torch.float64)
    y = torch.randint(0, 5, (2, 4, 3))
    y[0, 0, :] = 255
    w = torch.rand(5, dtype=torch.float64) + 0.1
    for reduction, native in [("weighted_mean", "mean"), ("sum", "sum"), ("none", "none")]:
        ours = class_balanced_loss(z, y, w, reduction=reduction, ignore_index=255)
        ref = F.cross_entropy(z, y, weight=w, reduction=native, ignore_index=255)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)
    valid = (y != 255).sum()
    mean = class_balanced_loss(z, y, w, ignore_index=255)
    torch.testing.assert_close(mean, F.cross_entropy(z, y, weight=w, reduction="sum", ignore_index=255) / valid)


# --- float targets -------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("reduction", ["mean", "weighted_mean", "sum", "none"])
def test_one_hot_float_target_equals_index_target(loss, reduction):
    z, y = torch.randn(12, 5, dtype=torch.float64) * 3, torch.randint(0, 5, (12,))
    w = torch.rand(5, dtype=torch.float64) + 0.1
    onehot = F.one_hot(y, 5).double()
    gamma = _gamma(loss, 2.0)
    a = _value_and_grad(lambda t: class_balanced_loss(t, y, w, loss=loss, gamma=gamma, reduction=reduction), z)
    b = _value_and_grad(lambda t: class_balanced_loss(t, onehot, w, loss=loss, gamma=gamma, reduction=reduction), z)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss", ["softmax", "softmax_focal"])
def test_softmax_soft_targets_are_linear_in_the_target(loss):
    # Mixup: t = lam * e_a + (1 - lam) * e_b must give lam * L(a) + (1 - lam) * L(b), sample by sample.
    n, c = 10, 6
    z = torch.randn(n, c, dtype=torch.float64)
    a, b = torch.randint(0, c, (n,)), torch.randint(0, c, (n,))
    lam = torch.rand(n, 1, dtype=torch.float64)
    t = lam * F.one_hot(a, c) + (1 - lam) * F.one_hot(b, c)
    w = torch.rand(c, dtype=torch.float64) + 0.1
    kw = dict(loss=loss, gamma=_gamma(loss, 2.0), reduction="none")
    mixed = class_balanced_loss(z, t, w, **kw)
    expected = lam[:, 0] * class_balanced_loss(z, a, w, **kw) + (1 - lam[:, 0]) * class_balanced_loss(z, b, w, **kw)
    torch.testing.assert_close(mixed, expected, rtol=1e-12, atol=1e-14)


def test_softmax_soft_targets_match_pytorch_soft_weighted_cross_entropy():
    z = torch.randn(10, 6, dtype=torch.float64)
    t = torch.softmax(torch.randn(10, 6, dtype=torch.float64) * 2, 1)
    w = torch.rand(6, dtype=torch.float64) + 0.1
    # PyTorch's probability-target CE: -sum_c w_c t_c log p_c per sample, mean divides by N.
    ours = class_balanced_loss(z, t, w, reduction="mean")
    torch.testing.assert_close(ours, F.cross_entropy(z, t, weight=w), rtol=1e-12, atol=1e-14)
    wm = class_balanced_loss(z, t, w, reduction="weighted_mean")
    torch.testing.assert_close(wm, F.cross_entropy(z, t, weight=w, reduction="sum") / (t * w).sum(), rtol=1e-12, atol=0)


def test_multi_hot_average_rule():
    z = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 1]], dtype=torch.float64)
    w = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)
    per_row = F.binary_cross_entropy_with_logits(z, t, reduction="none").sum(1)
    sample_w = torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64)  # (0.5+1.5)/2, 1.0, mean(w), mean(w)
    got = class_balanced_loss(z, t, w, loss="sigmoid", reduction="none")
    torch.testing.assert_close(got, sample_w * per_row)
    w2 = torch.tensor([0.2, 1.0, 1.8], dtype=torch.float64)
    expected_w2 = torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    expected_w2[0] = (0.2 + 1.8) / 2
    got2 = class_balanced_loss(z, t, w2, loss="sigmoid", reduction="none")
    torch.testing.assert_close(got2, expected_w2 * per_row)
    w3 = torch.tensor([0.3, 0.6, 2.1], dtype=torch.float64)
    got3 = class_balanced_loss(z, t, w3, loss="sigmoid", reduction="none")
    torch.testing.assert_close(got3, torch.tensor([1.2, 0.6, 1.0, 1.0], dtype=torch.float64) * per_row)


def test_multi_hot_by_class_rule_is_per_column_bce_weight():
    z = torch.randn(8, 5, dtype=torch.float64)
    t = (torch.rand(8, 5) < 0.4).double()
    w = torch.rand(5, dtype=torch.float64) + 0.1
    got = class_balanced_loss(z, t, w, loss="sigmoid", reduction="sum", multilabel_weight="by_class")
    ref = F.binary_cross_entropy_with_logits(z, t, weight=w.view(1, 5), reduction="sum")
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)


def test_sigmoid_focal_soft_targets_match_torchvision_formula():
    # torchvision: p_t = p t + (1 - p)(1 - t); loss = BCE * (1 - p_t)**gamma, alpha_t weighting.
    z = torch.randn(6, 4, dtype=torch.float64) * 3
    t = torch.rand(6, 4, dtype=torch.float64)
    p = torch.sigmoid(z)
    p_t = p * t + (1 - p) * (1 - t)
    alpha = 0.25
    ref = F.binary_cross_entropy_with_logits(z, t, reduction="none") * (1 - p_t) ** 2
    ref = (alpha * t + (1 - alpha) * (1 - t)) * ref
    got = sigmoid_focal_loss(z, t, gamma=2.0, alpha=alpha, reduction="none")
    torch.testing.assert_close(got, ref.sum(1), rtol=1e-12, atol=1e-14)


def test_sigmoid_focal_index_targets_match_torchvision_formula_with_alpha():
    z = torch.randn(6, 4, dtype=torch.float64) * 3
    y = torch.randint(0, 4, (6,))
    t = F.one_hot(y, 4).double()
    p = torch.sigmoid(z)
    p_t = p * t + (1 - p) * (1 - t)
    ref = F.binary_cross_entropy_with_logits(z, t, reduction="none") * (1 - p_t) ** 1.5
    ref = ((0.3 * t + 0.7 * (1 - t)) * ref).sum() / 6
    torch.testing.assert_close(sigmoid_focal_loss(z, y, gamma=1.5, alpha=0.3), ref, rtol=1e-12, atol=0)


def test_softmax_focal_matches_direct_formula_with_weight():
    z, y = torch.randn(9, 4, dtype=torch.float64), torch.randint(0, 4, (9,))
    w = torch.rand(4, dtype=torch.float64)
    p_y = torch.softmax(z, 1)[torch.arange(9), y]
    ref = (-w[y] * (1 - p_y) ** 2.5 * torch.log(p_y)).mean()
    torch.testing.assert_close(focal_loss(z, y, w, gamma=2.5), ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(focal_loss(z, y, gamma=0.0), F.cross_entropy(z, y), rtol=1e-13, atol=0)


# --- gradients and numerics ----------------------------------------------------------------------


@pytest.mark.parametrize("loss, gamma", _with_gammas([0.0, 0.25, 0.5, 1.0, 2.0, 5.0]))
@pytest.mark.parametrize("scale", [100.0, 1e4, 1e30])
def test_focal_modulator_is_finite_for_extreme_logits_at_every_gamma(loss, scale, gamma):
    z = torch.tensor([[1.0, -1.0, 0.5], [-1.0, 1.0, -0.5], [1.0, 1.0, -1.0], [-1.0, -1.0, -1.0]]) * scale
    y = torch.tensor([0, 0, 2, 1])  # confident-right, confident-wrong, tied, all-negative
    for target in [y, F.one_hot(y, 3).float()]:
        z_ = z.clone().requires_grad_(True)
        out = class_balanced_loss(z_, target, torch.ones(3), loss=loss, gamma=gamma)
        out.backward()
        assert torch.isfinite(out), (loss, scale, gamma, out)
        assert torch.isfinite(z_.grad).all(), (loss, scale, gamma, z_.grad)


def test_hard_positive_with_very_negative_logit_keeps_its_focal_modulator():
    # The official modulator exp(-g*y*z - g*log1p(exp(-z))) overflows in float32 for z < -88.
    z = torch.tensor([[-100.0, 0.0]])
    got = class_balanced_loss(z, torch.tensor([0]), torch.ones(2), loss="focal", gamma=2.0, reduction="none")
    # positive term: (1 - sigmoid(-100))**2 * 100 ~= 100; negative term: sigmoid(0)**2 * log 2.
    assert float(got) == pytest.approx(100 + 0.25 * math.log(2), rel=1e-6)
    official = torch.exp(-2 * z[0, 0] - 2 * torch.log1p(torch.exp(-z[0, 0])))
    assert not torch.isfinite(official) or float(official) == 0  # the form we avoid


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(target=torch.zeros(3, 2)), ValueError, r"must have the input's shape \(3, 3\); got \(3, 2\)"),
        (dict(target=torch.full((3, 3), 1.5)), ValueError, r"probabilities in \[0, 1\]; got values in \[1.5, 1.5\]"),
        (dict(target=torch.zeros(3, dtype=torch.complex64)), TypeError, "complex64"),
        (dict(weight=torch.ones(4)), ValueError, r"weight must have shape \(3,\), one value per class; got \(4,\)"),
        (dict(weight=torch.ones(3, device="meta")), ValueError, "weight must be on the input's device cpu; got meta"),
        (dict(weight=torch.ones(3, dtype=torch.long)), TypeError, "weight must be a floating-point tensor"),
        (dict(weight=None), TypeError, "weight must be a tensor of per-class weights; got None"),
        (dict(loss="softmax_ce"), ValueError, "loss must be one of 'softmax', 'sigmoid', 'focal', 'softmax_focal'; got 'softmax_ce'"),
        (dict(reduction="avg"), ValueError, "reduction must be one of 'mean', 'weighted_mean', 'sum', 'none'; got 'avg'"),
        (dict(gamma=-1.0), ValueError, r"gamma must be in \[0, inf\]; got -1.0"),
        (dict(gamma=float("nan")), ValueError, "gamma must be a number; got NaN"),
        # No focal term in softmax / sigmoid: a gamma would be ignored silently (as ClassBalancedLoss refuses it).
        (dict(loss="softmax", gamma=2.0), ValueError,
         "gamma is used only with loss='focal' or 'softmax_focal'; got gamma=2.0 with loss='softmax'"),
        (dict(loss="sigmoid", gamma=0.5), ValueError,
         "gamma is used only with loss='focal' or 'softmax_focal'; got gamma=0.5 with loss='sigmoid'"),
        (dict(multilabel_weight="max"), ValueError, "multilabel_weight must be one of 'average', 'by_class'; got 'max'"),
    ],
)
def test_bad_input_messages(kwargs, error, match):
    args = dict(logits=torch.zeros(3, 3), target=torch.tensor([0, 1, 2]), weight=torch.ones(3))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        class_balanced_loss(args.pop("logits"), args.pop("target"), args.pop("weight"), **args)


def test_numpy_reference_is_itself_right():
    # Guard the reference: at beta -> its formulas reduce to the textbook CE for one sample.
    z = np.array([[2.0, 0.5, -1.0]])
    ce = -(2.0 - math.log(math.exp(2.0) + math.exp(0.5) + math.exp(-1.0)))
    assert official_loss(z, np.array([0]), np.ones(3), "softmax") == pytest.approx(ce, rel=1e-14)


@pytest.mark.slow
@pytest.mark.parametrize("loss, gamma, target_kind",
                         [(loss, gamma, "soft") for loss, gamma in _with_gammas([0.0, 0.5, 2.0])]
                         + [(loss, gamma, "multi_hot")
                            for loss, gamma in _with_gammas([0.0, 0.5, 2.0], ["sigmoid", "focal"])])
def test_gradients_of_every_order_with_float_targets_at_every_gamma(loss, gamma, target_kind):
    # gradgradcheck: gradient penalties and Hessian-vector products need finite second derivatives. Float
    # targets of exactly 0 or 1 once put log(0) inside a logaddexp: right first derivatives, NaN second ones.
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(5, 4, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    if target_kind == "soft":
        t = torch.softmax(torch.randn(5, 4, 2, dtype=torch.float64, generator=gen), 1)
    else:  # multi-hot, for the sigmoid losses
        t = (torch.rand(5, 4, 2, generator=gen) < 0.4).double()
        t[0] = 0.0  # a row with no positive label
    w = torch.rand(4, dtype=torch.float64, generator=gen) + 0.1
    for reduction in ["mean", "weighted_mean"]:
        fn = lambda x: class_balanced_loss(x, t, w, loss=loss, gamma=gamma, reduction=reduction)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (z,))
        assert torch.autograd.gradgradcheck(fn, (z,))


def test_weighted_mean_and_pytorch_agree_for_index_targets_only_as_the_readme_says():
    z = torch.randn(8, 3, dtype=torch.float64)
    y, w = torch.randint(0, 3, (8,)), torch.tensor([0.2, 1.0, 2.5], dtype=torch.float64)
    t = torch.softmax(torch.randn(8, 3, dtype=torch.float64), 1)
    torch.testing.assert_close(class_balanced_loss(z, y, w, reduction="weighted_mean"), F.cross_entropy(z, y, weight=w))
    # Probability targets: PyTorch divides the weighted sum by N, which is our official "mean".
    torch.testing.assert_close(class_balanced_loss(z, t, w, reduction="mean"), F.cross_entropy(z, t, weight=w))
    expected = -(t * w * F.log_softmax(z, 1)).sum() / (t * w).sum()
    torch.testing.assert_close(class_balanced_loss(z, t, w, reduction="weighted_mean"), expected)


@pytest.mark.parametrize("loss", ["sigmoid", "focal", "softmax"])
def test_integer_multi_hot_targets_are_read_as_zeros_and_ones(loss):
    """An integer target of the logits' shape cannot be class indices: it is 0/1 multi-hot, read like floats."""
    logits = torch.randn(6, 4)
    hot = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0]])
    criterion = ClassBalancedLoss([50, 20, 5, 2], beta=0.99, loss=loss, gamma=1.0 if loss == "focal" else 0.0)
    torch.testing.assert_close(criterion(logits, hot), criterion(logits, hot.float()))
    with pytest.raises(ValueError, match=r"must hold probabilities in \[0, 1\]; got values in \[0, 2\]"):
        criterion(logits, hot * 2)
