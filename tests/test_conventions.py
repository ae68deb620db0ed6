"""label_smoothing, sample_weight and pos_weight (docs/conventions.md): PyTorch in the degenerate cases, the
numpy reference (tests/reference.py), hand-computed values, and where (and why) we differ from PyTorch.

The contract every loss keeps with these arguments (ones change nothing, zeros drop samples, bad values are
refused, gradcheck, compile) is in tests/test_loss_contract.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import reference_loss

import longtail.functional._core as core
from longtail import (
    BalancedSoftmaxLoss,
    CDBLoss,
    ClassBalancedLoss,
    FocalLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    SigmoidFocalLoss,
)
from longtail.functional import (
    balanced_softmax_loss,
    class_balanced_loss,
    focal_loss,
    ldam_loss,
    ldam_margins,
    logit_adjusted_loss,
    sigmoid_focal_loss,
)

C = 4
COUNTS = [400, 90, 20, 5]
REDUCTIONS = ["mean", "weighted_mean", "sum", "none"]


def _plain_cross_entropy_forms(eps: float) -> dict[str, torch.nn.Module]:
    """Every softmax-family module in a configuration that is plain cross-entropy (no weights, margins, shifts)."""
    return {
        "cb_softmax": ClassBalancedLoss(COUNTS, beta=0.0, label_smoothing=eps),
        "cb_softmax_focal_gamma0": ClassBalancedLoss(COUNTS, beta=0.0, loss="softmax_focal", label_smoothing=eps),
        "focal_gamma0": FocalLoss(gamma=0.0, label_smoothing=eps),
        "cdb": CDBLoss(C, tau=1.0, label_smoothing=eps),  # its weights start at 1
        "ldam_no_margin": LDAMLoss(COUNTS, max_margin=0.0, scale=1.0, label_smoothing=eps),
        "balanced_softmax_equal_counts": BalancedSoftmaxLoss([50] * C, label_smoothing=eps),
        "logit_adjusted_tau0": LogitAdjustedLoss(COUNTS, tau=0.0, label_smoothing=eps),
    }


PLAIN = sorted(_plain_cross_entropy_forms(0.1))


# --- label_smoothing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PLAIN)
def test_unweighted_label_smoothing_equals_pytorch(name):
    eps = 0.15
    criterion = _plain_cross_entropy_forms(eps)[name].double()
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(6, C, 2, dtype=torch.float64, generator=gen) * 2
    y = torch.randint(0, C, (6, 2), generator=gen)
    y[0, 1] = y[4, 0] = -100  # ignored samples contribute nothing and are not counted
    soft = torch.softmax(torch.randn(6, C, 2, dtype=torch.float64, generator=gen), 1)
    for reduction in ["mean", "sum", "none"]:
        criterion.reduction = reduction
        expected = F.cross_entropy(z, y, label_smoothing=eps, reduction=reduction)
        torch.testing.assert_close(criterion(z, y), expected, rtol=1e-12, atol=1e-14)
        if name != "ldam_no_margin":  # LDAM needs class indices
            expected = F.cross_entropy(z, soft, label_smoothing=eps, reduction=reduction)
            torch.testing.assert_close(criterion(z, soft), expected, rtol=1e-12, atol=1e-14)


# The 2-sample example worked by hand: w = [1, 2, 0.5], eps = 0.3, C = 3, q = 0.8 at the label and 0.1 elsewhere.
# Sample 1: z = [1, 0, 0], y = 0: -log p = [0.5514447, 1.5514447, 1.5514447]; l = 0.8 * 0.5514447 + 0.1 * 2 * 1.5514447
#           = 0.7514447, weight w_0 = 1.
# Sample 2: z = [0, 2, 0], y = 2: -log p = [2.2395447, 0.2395447, 2.2395447]; l = 0.9 * 2.2395447 + 0.1 * 0.2395447
#           = 2.0395447, weight w_2 = 0.5 -> 1.0197724.
# sum = 1.7712171; mean (N = 2) = 0.8856085; weighted_mean (/ (1 + 0.5)) = 1.1808114.
HAND_Z = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]
HAND_Y = [0, 2]
HAND_W = [1.0, 2.0, 0.5]
HAND = {"sum": 1.7712171, "mean": 0.8856085, "weighted_mean": 1.1808114}


def _hand_inputs():
    return torch.tensor(HAND_Z, dtype=torch.float64), torch.tensor(HAND_Y), torch.tensor(HAND_W, dtype=torch.float64)


def test_weighted_label_smoothing_hand_computed():
    z, y, w = _hand_inputs()
    for reduction, value in HAND.items():
        assert float(class_balanced_loss(z, y, w, label_smoothing=0.3, reduction=reduction)) == pytest.approx(value, abs=2e-7)
    none = class_balanced_loss(z, y, w, label_smoothing=0.3, reduction="none")
    torch.testing.assert_close(none, torch.tensor([0.7514447, 1.0197724], dtype=torch.float64), rtol=0, atol=2e-7)
    # the same with the math module only
    hand = []
    for row, label in zip(HAND_Z, HAND_Y):
        log_z = math.log(sum(math.exp(v) for v in row))
        nll = [log_z - v for v in row]
        hand.append(HAND_W[label] * sum((0.7 * (c == label) + 0.1) * nll[c] for c in range(3)))
    torch.testing.assert_close(none, torch.tensor(hand, dtype=torch.float64), rtol=1e-14, atol=0)


def test_where_weighted_label_smoothing_differs_from_pytorch():
    """PyTorch weighs the smoothing term of class c by w_c (pytorch/pytorch#104776, "class weighting changes
    label_smoothing"): its per-sample loss is (1 - eps) w_y (-log p_y) + eps / C sum_c w_c (-log p_c), so with
    class weights its minimiser is no longer the smoothed target. Ours keeps the sample's weight w_y on the
    whole smoothed term, w_y sum_c q_c (-log p_c). On the hand example (weighted_mean, both divide by
    sum w_y = 1.5): PyTorch 1.3311322, ours 1.1808114; without class weights the two agree."""
    z, y, w = _hand_inputs()
    pytorch = F.cross_entropy(z, y, weight=w, label_smoothing=0.3)
    assert float(pytorch) == pytest.approx(1.3311322, abs=2e-7)
    ours = class_balanced_loss(z, y, w, label_smoothing=0.3, reduction="weighted_mean")
    assert float(ours) == pytest.approx(1.1808114, abs=2e-7)
    per_pytorch = F.cross_entropy(z, y, weight=w, label_smoothing=0.3, reduction="none")
    torch.testing.assert_close(per_pytorch, torch.tensor([0.8290169, 1.1676813], dtype=torch.float64), rtol=0, atol=2e-7)
    # PyTorch's smoothing term, weighted per class, is the whole difference:
    nll = -F.log_softmax(z, 1)
    theirs_by_hand = 0.7 * w[y] * nll.gather(1, y[:, None]).squeeze(1) + 0.1 * (w * nll).sum(1)
    torch.testing.assert_close(per_pytorch, theirs_by_hand, rtol=1e-14, atol=0)
    ones = torch.ones(3, dtype=torch.float64)
    torch.testing.assert_close(class_balanced_loss(z, y, ones, label_smoothing=0.3, reduction="weighted_mean"),
                               F.cross_entropy(z, y, weight=ones, label_smoothing=0.3), rtol=1e-14, atol=0)


def _minimise(loss_of_logits) -> torch.Tensor:
    z = torch.zeros(1, C, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([z], lr=1.0, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        value = loss_of_logits(z)
        value.backward()
        return value

    optimiser.step(closure)
    return torch.softmax(z.detach(), 1)[0]


def test_a_weighted_samples_loss_is_minimised_at_the_smoothed_target():
    eps, y = 0.2, torch.tensor([0])
    w = torch.tensor([3.0, 0.2, 1.0, 5.0], dtype=torch.float64)
    q = torch.full((C,), eps / C, dtype=torch.float64)
    q[0] += 1 - eps  # [0.85, 0.05, 0.05, 0.05]
    ours = _minimise(lambda z: class_balanced_loss(z, y, w, label_smoothing=eps))
    torch.testing.assert_close(ours, q, rtol=0, atol=1e-6)
    # PyTorch's minimiser moves with the class weights: proportional to (1 - eps) w_y onehot + eps / C w.
    theirs = _minimise(lambda z: F.cross_entropy(z, y, weight=w, label_smoothing=eps))
    moved = (1 - eps) * w[0] * F.one_hot(y, C)[0] + eps / C * w
    torch.testing.assert_close(theirs, moved / moved.sum(), rtol=0, atol=1e-6)
    assert theirs[1] < 0.1 * q[1]  # class 1 (w = 0.2) gets 0.0035 of the mass, not 0.05
    # The focal form's minimiser is not q (focal loss is not a proper scoring rule), but it does not move with
    # the class weights either: the weight w_y multiplies the whole smoothed term.
    focal = _minimise(lambda z: class_balanced_loss(z, y, w, loss="softmax_focal", gamma=2.0, label_smoothing=eps))
    unweighted = _minimise(lambda z: focal_loss(z, y, gamma=2.0, label_smoothing=eps))
    torch.testing.assert_close(focal, unweighted, rtol=0, atol=1e-6)


def test_weighted_focal_label_smoothing_with_sample_weights_matches_the_numpy_reference():
    gen = torch.Generator().manual_seed(11)
    z = torch.randn(7, C, dtype=torch.float64, generator=gen) * 2
    y = torch.tensor([0, 1, 2, 3, -100, 1, 0])
    w, s = torch.rand(C, dtype=torch.float64, generator=gen) + 0.1, torch.rand(7, dtype=torch.float64, generator=gen)
    for reduction in REDUCTIONS:
        got = focal_loss(z, y, w, gamma=1.5, reduction=reduction, label_smoothing=0.25, sample_weight=s)
        ref = reference_loss(z.numpy(), y.numpy(), w.numpy(), loss="softmax_focal", gamma=1.5, label_smoothing=0.25,
                             sample_weight=s.numpy(), reduction=reduction)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-14)


def _functional_smoothed_losses(eps: float):
    margins = ldam_margins(COUNTS, dtype=torch.float64)
    lp = torch.log(torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS))
    w = torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=torch.float64)
    return {
        "cb_softmax": lambda z, y: class_balanced_loss(z, y, w, label_smoothing=eps),
        "cb_softmax_focal": lambda z, y: class_balanced_loss(z, y, w, loss="softmax_focal", gamma=2.0, label_smoothing=eps),
        "focal": lambda z, y: focal_loss(z, y, w, gamma=0.5, label_smoothing=eps),
        "ldam": lambda z, y: ldam_loss(z, y, margins, scale=5.0, weight=w, label_smoothing=eps),
        "logit_adjusted": lambda z, y: logit_adjusted_loss(z, y, lp, 0.7, weight=w, label_smoothing=eps),
        "balanced_softmax": lambda z, y: balanced_softmax_loss(z, y, log_prior=lp, weight=w, label_smoothing=eps),
    }


# The focal form is under the contract (case "focal_weighted_smoothed"); LDAM and logit adjustment smooth shifted logits.
@pytest.mark.parametrize("name", ["cb_softmax", "ldam", "logit_adjusted"])
def test_label_smoothing_gradcheck_and_gradgradcheck(name):
    loss = _functional_smoothed_losses(0.1)[name]
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(3, C, dtype=torch.float64, generator=gen, requires_grad=True)
    y = torch.tensor([0, -100, 3])
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (z,))
    assert torch.autograd.gradgradcheck(lambda t: loss(t, y), (z,))
    if name != "ldam":
        soft = torch.softmax(torch.randn(3, C, dtype=torch.float64, generator=gen), 1)
        assert torch.autograd.gradcheck(lambda t: loss(t, soft), (z,))
        assert torch.autograd.gradgradcheck(lambda t: loss(t, soft), (z,))


def test_ldam_and_logit_adjustment_smooth_the_shifted_logits():
    gen = torch.Generator().manual_seed(6)
    z = torch.randn(5, C, dtype=torch.float64, generator=gen)
    y = torch.tensor([0, 1, 2, 3, 1])
    margins = ldam_margins(COUNTS, dtype=torch.float64)
    shifted = 5.0 * (z - margins[y][:, None] * F.one_hot(y, C))
    torch.testing.assert_close(ldam_loss(z, y, margins, scale=5.0, label_smoothing=0.2),
                               F.cross_entropy(shifted, y, label_smoothing=0.2), rtol=1e-13, atol=0)
    lp = torch.log(torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS))
    torch.testing.assert_close(logit_adjusted_loss(z, y, lp, 0.7, label_smoothing=0.2),
                               F.cross_entropy(z + 0.7 * lp, y, label_smoothing=0.2), rtol=1e-13, atol=0)


def test_label_smoothing_zero_takes_the_unsmoothed_path_bit_for_bit(monkeypatch):
    gen = torch.Generator().manual_seed(9)
    z = torch.randn(6, C, dtype=torch.float32, generator=gen)
    y, soft = torch.tensor([0, 1, 2, 3, -100, 1]), torch.softmax(torch.randn(6, C, generator=gen), 1)
    weight = torch.tensor([0.5, 1.0, 2.0, 1.5])

    def values_and_gradients():
        for name, criterion in _plain_cross_entropy_forms(0.0).items():
            criterion.set_weight(weight)
            for reduction in REDUCTIONS:
                criterion.reduction = reduction
                zz = z.clone().requires_grad_(True)
                out = criterion(zz, y)
                out.sum().backward()
                yield name, criterion, reduction, out.detach(), zz.grad

    before = {(name, reduction): (out, grad) for name, _, reduction, out, grad in values_and_gradients()}

    def refuse(*args, **kwargs):
        raise AssertionError("eps = 0 must not reach the smoothed path")

    monkeypatch.setattr(core, "smoothed_softmax_loss", refuse)
    for name, criterion, reduction, out, grad in values_and_gradients():
        assert torch.equal(out, before[name, reduction][0]) and torch.equal(grad, before[name, reduction][1])
        if name != "ldam_no_margin":
            criterion(z, soft)  # probability targets at eps = 0 do not reach it either
    assert torch.equal(class_balanced_loss(z, y, weight, label_smoothing=0.0), class_balanced_loss(z, y, weight))


@pytest.mark.parametrize("make", [
    lambda: ClassBalancedLoss(COUNTS, loss="sigmoid", label_smoothing=0.1),
    lambda: ClassBalancedLoss(COUNTS, loss="focal", gamma=2.0, label_smoothing=0.1),
    lambda: class_balanced_loss(torch.zeros(2, C), torch.tensor([0, 1]), torch.ones(C), loss="sigmoid", label_smoothing=0.1),
    lambda: class_balanced_loss(torch.zeros(2, C), torch.tensor([0, 1]), torch.ones(C), loss="focal", label_smoothing=0.1),
], ids=["module_sigmoid", "module_focal", "functional_sigmoid", "functional_focal"])
def test_label_smoothing_is_refused_on_the_sigmoid_losses(make):
    with pytest.raises(ValueError, match=r"label_smoothing must be 0 with loss='(sigmoid|focal)' \(label smoothing is "
                                         r"defined here for the softmax losses"):
        make()


@pytest.mark.parametrize("bad, error, match", [
    (1.0, ValueError, r"label_smoothing must be in \[0, 1\); got 1.0"),
    (-0.1, ValueError, r"label_smoothing must be in \[0, 1\); got -0.1"),
    (float("nan"), ValueError, "label_smoothing must be a number; got NaN"),
    ("0.1", TypeError, "label_smoothing must be a real number; got str"),
    (True, TypeError, "label_smoothing must be a real number; got bool"),
])
def test_a_bad_label_smoothing_is_refused(bad, error, match):
    for make in (lambda: FocalLoss(label_smoothing=bad), lambda: LDAMLoss(COUNTS, label_smoothing=bad),
                 lambda: CDBLoss(C, label_smoothing=bad), lambda: LogitAdjustedLoss(COUNTS, label_smoothing=bad),
                 lambda: focal_loss(torch.zeros(2, C), torch.tensor([0, 1]), label_smoothing=bad)):
        with pytest.raises(error, match=match):
            make()


# --- sample_weight --------------------------------------------------------------------------------------------


def test_weighted_mean_without_class_weights_is_numpys_weighted_average():
    gen = torch.Generator().manual_seed(12)
    z = torch.randn(9, C, dtype=torch.float64, generator=gen)
    y = torch.randint(0, C, (9,), generator=gen)
    s = torch.rand(9, dtype=torch.float64, generator=gen) * 3
    for criterion in (FocalLoss(gamma=2.0), ClassBalancedLoss(COUNTS, beta=0.0), SigmoidFocalLoss(gamma=1.0),
                      LDAMLoss(COUNTS, scale=5.0)):
        criterion = criterion.double()
        criterion.reduction = "none"
        per_sample = criterion(z, y).numpy()
        criterion.reduction = "weighted_mean"
        assert float(criterion(z, y, s)) == pytest.approx(np.average(per_sample, weights=s.numpy()), rel=1e-13)


@pytest.mark.parametrize("loss", ["softmax", "softmax_focal", "sigmoid", "focal"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("soft", [False, True], ids=["index", "float"])
def test_sample_weight_per_reduction_matches_the_numpy_reference(loss, reduction, soft):
    gen = torch.Generator().manual_seed(len(loss) * 7 + len(reduction) + soft)
    z = torch.randn(8, C, dtype=torch.float64, generator=gen) * 2
    w = torch.rand(C, dtype=torch.float64, generator=gen) * 2 + 0.1
    s = torch.rand(8, dtype=torch.float64, generator=gen) * 2
    s[3] = 0.0
    if soft:
        sigmoid = loss in ("sigmoid", "focal")
        target = ((torch.rand(8, C, generator=gen) < 0.4).double() if sigmoid
                  else torch.softmax(torch.randn(8, C, dtype=torch.float64, generator=gen), 1))
    else:
        target = torch.tensor([0, 1, 2, 3, -100, 1, 0, 2])
    gamma = 1.5 if loss in ("focal", "softmax_focal") else 0.0
    eps = 0.1 if loss in ("softmax", "softmax_focal") else 0.0
    pw = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64) if loss in ("sigmoid", "focal") else None
    got = class_balanced_loss(z, target, w, loss=loss, gamma=gamma, reduction=reduction, label_smoothing=eps,
                              sample_weight=s, pos_weight=pw)
    ref = reference_loss(z.numpy(), target.numpy(), w.numpy(), loss=loss, gamma=gamma, label_smoothing=eps,
                         sample_weight=s.numpy(), pos_weight=None if pw is None else pw.numpy(), reduction=reduction)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-14)


def test_mean_divides_by_the_number_of_non_ignored_samples_and_weighted_mean_by_their_weights():
    z, y = torch.zeros(4, 2, dtype=torch.float64), torch.tensor([0, 1, -100, 1])  # every sample's CE is log 2
    w, s = torch.tensor([1.0, 3.0], dtype=torch.float64), torch.tensor([2.0, 0.5, 7.0, 1.0], dtype=torch.float64)
    log2 = math.log(2.0)
    total = (2.0 * 1.0 + 0.5 * 3.0 + 1.0 * 3.0) * log2  # s_i w_{y_i} l_i over the non-ignored samples
    assert float(class_balanced_loss(z, y, w, reduction="sum", sample_weight=s)) == pytest.approx(total, rel=1e-15)
    assert float(class_balanced_loss(z, y, w, reduction="mean", sample_weight=s)) == pytest.approx(total / 3, rel=1e-15)
    assert float(class_balanced_loss(z, y, w, reduction="weighted_mean", sample_weight=s)) == pytest.approx(log2, rel=1e-15)
    none = class_balanced_loss(z, y, w, reduction="none", sample_weight=s)
    torch.testing.assert_close(none, torch.tensor([2.0, 1.5, 0.0, 3.0], dtype=torch.float64) * log2, rtol=1e-15, atol=0)


def test_dense_sample_weight_equals_flattened():
    criterion = ClassBalancedLoss(COUNTS, beta=0.99, loss="softmax_focal", gamma=1.0, reduction="weighted_mean",
                                  label_smoothing=0.1, ignore_index=255).double()
    z = torch.randn(2, C, 3, 5, dtype=torch.float64)
    y = torch.randint(0, C, (2, 3, 5))
    y[0, 1, 1] = 255
    s = torch.rand(2, 3, 5, dtype=torch.float64)
    flat = criterion(z.movedim(1, -1).reshape(-1, C), y.reshape(-1), s.reshape(-1))
    torch.testing.assert_close(criterion(z, y, s), flat, rtol=1e-13, atol=0)


class _CountHostReads:
    """Counts the reads of tensor values on the host (``bool``, ``int``, ``float``, ``item``, ``tolist``)."""

    NAMES = ("__bool__", "__int__", "__float__", "item", "tolist")

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                self.count += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


def test_the_value_checks_of_every_argument_cost_one_host_read(monkeypatch):
    z, y = torch.randn(5, C), torch.tensor([0, 1, 2, 3, -100])
    w, s, pw = torch.rand(C), torch.rand(5), torch.rand(C) + 0.5
    margins, lp = ldam_margins(COUNTS), torch.log(torch.tensor(COUNTS) / sum(COUNTS))
    calls = [
        lambda: class_balanced_loss(z, y, w, loss="sigmoid", sample_weight=s, pos_weight=pw),
        lambda: class_balanced_loss(z, torch.rand(5, C), w, loss="focal", gamma=2.0, sample_weight=s, pos_weight=pw),
        lambda: class_balanced_loss(z, y, w, label_smoothing=0.1, sample_weight=s),
        lambda: ldam_loss(z, y, margins, weight=w, sample_weight=s),
        lambda: logit_adjusted_loss(z, y, lp, weight=w, sample_weight=s),
    ]
    for call in calls:
        counter = _CountHostReads(monkeypatch)
        call()
        assert counter.count == 1
        monkeypatch.undo()


def test_the_first_bad_argument_names_itself():
    z, y = torch.randn(3, C), torch.tensor([0, 1, 2])
    nan_w = torch.tensor([1.0, float("nan"), 1.0, 1.0])
    with pytest.raises(ValueError, match="weight must be finite and non-negative"):
        class_balanced_loss(z, torch.tensor([0, 1, 9]), nan_w, sample_weight=-torch.ones(3))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\]"):
        class_balanced_loss(z, torch.tensor([0, 1, 9]), torch.ones(C), sample_weight=-torch.ones(3))
    with pytest.raises(ValueError, match="sample_weight must be finite and non-negative; got -1.0 at sample 0"):
        class_balanced_loss(z, y, torch.ones(C), loss="sigmoid", sample_weight=-torch.ones(3), pos_weight=torch.zeros(C))
    with pytest.raises(ValueError, match=r"sample_weight must be finite and non-negative; got -1.0 at sample \(1, 0\)"):
        focal_loss(torch.randn(2, C, 3), torch.zeros(2, 3, dtype=torch.long),
                   sample_weight=torch.tensor([[1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match=r"margins must be finite and non-negative; got .*\(bad classes \[2\]\)"):
        ldam_loss(z, y, torch.tensor([0.1, 0.2, -0.3, 0.0]))


# --- pos_weight -------------------------------------------------------------------------------------------------


PW = [0.5, 2.0, 3.0, 1.25]


def _ours_reduced(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """Our reductions of an unweighted per-sample loss (mean: / N, the official code's; BCE's would be / N C)."""
    return {"none": per_sample, "sum": per_sample.sum(), "mean": per_sample.mean(), "weighted_mean": per_sample.mean()}[reduction]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("soft", [False, True], ids=["index", "multi_hot"])
def test_unweighted_sigmoid_with_pos_weight_equals_bce_with_logits(reduction, soft):
    gen = torch.Generator().manual_seed(21 + soft)
    z = torch.randn(7, C, dtype=torch.float64, generator=gen) * 3
    y = torch.randint(0, C, (7,), generator=gen)
    target = (torch.rand(7, C, generator=gen) < 0.4).double() if soft else y
    hot = target if soft else F.one_hot(y, C).double()
    pw = torch.tensor(PW, dtype=torch.float64)
    bce = F.binary_cross_entropy_with_logits(z, hot, pos_weight=pw, reduction="none").sum(1)
    expected = _ours_reduced(bce, reduction)
    criterion = ClassBalancedLoss(COUNTS, beta=0.0, loss="sigmoid", reduction=reduction, pos_weight=PW).double()
    torch.testing.assert_close(criterion(z, target), expected, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(sigmoid_focal_loss(z, target, gamma=0.0, reduction=reduction, pos_weight=pw), expected,
                               rtol=1e-13, atol=1e-14)
    # A list works as well as a tensor in the functional form.
    torch.testing.assert_close(class_balanced_loss(z, target, torch.ones(C, dtype=torch.float64), loss="sigmoid",
                                                   reduction=reduction, pos_weight=PW), expected, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("soft", [False, True], ids=["index", "multi_hot"])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_focal_with_pos_weight_matches_the_numpy_reference(soft, alpha):
    gen = torch.Generator().manual_seed(31 + soft)
    z = torch.randn(9, C, dtype=torch.float64, generator=gen) * 2
    target = (torch.rand(9, C, generator=gen) < 0.4).double() if soft else torch.tensor([0, 1, 2, 3, -100, 1, 0, 2, 3])
    w = torch.rand(C, dtype=torch.float64, generator=gen) + 0.2
    for reduction in REDUCTIONS:
        got = sigmoid_focal_loss(z, target, w, gamma=2.0, alpha=alpha, reduction=reduction, pos_weight=PW)
        ref = reference_loss(z.numpy(), target.numpy(), w.numpy(), loss="focal", gamma=2.0, alpha=alpha,
                             pos_weight=PW, reduction=reduction)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-14)


def test_pos_weight_dense_and_gradcheck():
    criterion = ClassBalancedLoss(COUNTS, beta=0.99, loss="focal", gamma=1.5, reduction="none", pos_weight=PW).double()
    z = torch.randn(2, C, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, C, (2, 3))
    flat = criterion(z.movedim(1, -1).reshape(-1, C), y.reshape(-1))
    torch.testing.assert_close(criterion(z, y).reshape(-1), flat, rtol=1e-13, atol=0)
    hot = (torch.rand(2, C, 3) < 0.5).double()
    torch.testing.assert_close(criterion(z, hot).reshape(-1), criterion(z.movedim(1, -1).reshape(-1, C),
                                                                         hot.movedim(1, -1).reshape(-1, C)),
                               rtol=1e-13, atol=0)
    # Class indices with focal are under the contract (case "sigmoid_focal_pos_weight"); multi-hot targets take the
    # exact one-sided forms at t = 0 and t = 1; BCE (no focal term) adds pos_weight to the SigmoidRowSum kernel.
    assert torch.autograd.gradcheck(lambda t: criterion(t, hot), (z,))
    assert torch.autograd.gradgradcheck(lambda t: criterion(t, hot), (z,))
    bce = ClassBalancedLoss(COUNTS, beta=0.99, loss="sigmoid", pos_weight=PW).double()
    x = torch.randn(3, C, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, -100, 3])
    assert torch.autograd.gradcheck(lambda t: bce(t, y), (x,))
    assert torch.autograd.gradgradcheck(lambda t: bce(t, y), (x,))


def test_pos_weight_is_a_buffer_and_none_keeps_the_state_dict():
    criterion = ClassBalancedLoss(COUNTS, beta=0.99, loss="sigmoid", pos_weight=PW)
    assert set(criterion.state_dict()) == {"weight", "counts", "pos_weight"}
    assert criterion.pos_weight.dtype == torch.float32 and criterion.pos_weight.tolist() == PW
    assert criterion.double().pos_weight.dtype == torch.float64
    assert criterion.to("meta").pos_weight.device.type == "meta"
    plain = ClassBalancedLoss(COUNTS, beta=0.99, loss="sigmoid")
    assert plain.pos_weight is None and set(plain.state_dict()) == {"weight", "counts"}
    focal = SigmoidFocalLoss(gamma=2.0, pos_weight=PW)
    fresh = SigmoidFocalLoss(gamma=2.0, pos_weight=[1.0] * C)
    fresh.load_state_dict(focal.state_dict())
    assert fresh.pos_weight.tolist() == PW
    z, y = torch.randn(5, C), torch.randint(0, C, (5,))
    ones = ClassBalancedLoss(COUNTS, beta=0.99, loss="sigmoid", pos_weight=[1.0] * C)
    torch.testing.assert_close(ones(z, y), plain(z, y), rtol=1e-6, atol=0)


@pytest.mark.parametrize("make, error, match", [
    (lambda: ClassBalancedLoss(COUNTS, loss="softmax", pos_weight=PW), ValueError, "pos_weight must be None with loss='softmax'"),
    (lambda: ClassBalancedLoss(COUNTS, loss="softmax_focal", pos_weight=PW), ValueError, "with loss='softmax_focal'"),
    (lambda: class_balanced_loss(torch.zeros(2, C), torch.tensor([0, 1]), torch.ones(C), pos_weight=PW), ValueError,
     "pos_weight must be None with loss='softmax'"),
    (lambda: ClassBalancedLoss(COUNTS, loss="sigmoid", pos_weight=[1.0, 0.0, 1.0, 1.0]), ValueError,
     r"pos_weight must be finite and positive; got .* \(bad classes \[1\]\)"),
    (lambda: SigmoidFocalLoss(pos_weight=[1.0, float("nan")]), ValueError, "pos_weight must be finite and positive"),
    (lambda: ClassBalancedLoss(COUNTS, loss="sigmoid", pos_weight=[1.0, 2.0]), ValueError,
     r"pos_weight must have shape \(4,\), one value per class; got \(2,\)"),
    (lambda: SigmoidFocalLoss(pos_weight="ones"), TypeError, "pos_weight must be a list, numpy array or tensor"),
    (lambda: sigmoid_focal_loss(torch.zeros(2, C), torch.tensor([0, 1]), pos_weight=torch.tensor([1.0, -1.0, 1.0, 1.0])),
     ValueError, r"pos_weight must be finite and positive; got \[1.0, -1.0, 1.0, 1.0\] \(bad classes \[1\]\)"),
    (lambda: sigmoid_focal_loss(torch.zeros(2, C), torch.tensor([0, 1]), pos_weight=torch.ones(3)), ValueError,
     r"pos_weight must have shape \(4,\)"),
    (lambda: sigmoid_focal_loss(torch.zeros(2, C), torch.tensor([0, 1]), pos_weight=torch.ones(C, dtype=torch.long)),
     TypeError, "pos_weight must be a floating-point tensor"),
    (lambda: sigmoid_focal_loss(torch.zeros(2, C), torch.tensor([0, 1]), pos_weight=torch.ones(C, device="meta")),
     ValueError, "pos_weight must be on the input's device cpu; got meta"),
    (lambda: sigmoid_focal_loss(torch.zeros(2, C), torch.tensor([0, 1]), pos_weight=2.0), TypeError,
     "pos_weight must be a tensor, list or numpy array"),
])
def test_a_bad_pos_weight_is_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()
