"""The contract every loss module of the library keeps, tested once for all of them (kornia's BaseTester idea).

A new loss gets the whole contract from one line in ``CASES``: dense inputs with ``ignore_index``, an
all-ignored batch giving 0, float64 gradcheck and gradgradcheck, finite values and gradients for
extreme logits, half-precision inputs computed in float32, bad-input messages, ``state_dict`` and
``.to()``, the one weight mechanism (``set_weight``), ``torch.compile(fullgraph=True)``, and the per-sample
weights every ``forward`` takes (``sample_weight``: ones change nothing, zeros drop samples, integers repeat
them, bad ones are refused). Cases with ``label_smoothing`` and ``pos_weight`` put those paths under the same
contract. The family test files keep only their formula tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import longtail

from longtail import (
    BalancedSoftmaxLoss,
    CDBLoss,
    ClassBalancedLoss,
    FocalLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    SigmoidFocalLoss,
    StableCDBLoss,
)
from longtail.losses import WeightedLoss
from longtail.train import LOSSES, TrainConfig, build_loss
from profiling import host_syncs

C = 4
COUNTS = [400, 90, 20, 5]


def _cdb(loss: str, gamma: float) -> CDBLoss:
    criterion = CDBLoss(C, tau=1.5, loss=loss, gamma=gamma)
    criterion.update_weights([0.9, 0.6, 0.3, 0.5])  # non-trivial weights
    return criterion


def _stable_cdb() -> StableCDBLoss:
    criterion = StableCDBLoss(C, tau=1.5, loss="softmax_focal", gamma=1.0, momentum=0.5, max_ratio=4.0)
    criterion.update_weights([0.9, 0.6, 0.3, 0.5])  # damped, bounded, non-trivial weights
    criterion.update_weights([1.0, 0.2, 0.6, 0.5])
    return criterion


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], WeightedLoss]
    soft: bool = True  # accepts float (probability) targets


CASES = [
    Case("cb_softmax", lambda: ClassBalancedLoss(COUNTS, beta=0.99, loss="softmax")),
    Case("cb_sigmoid", lambda: ClassBalancedLoss(COUNTS, beta=0.99, loss="sigmoid")),
    Case("cb_focal", lambda: ClassBalancedLoss(COUNTS, beta=0.99, loss="focal", gamma=2.0)),
    Case("cb_focal_gamma_half", lambda: ClassBalancedLoss(COUNTS, beta=0.999, loss="focal", gamma=0.5)),
    Case("cb_softmax_focal", lambda: ClassBalancedLoss(COUNTS, beta=0.99, loss="softmax_focal", gamma=0.5)),
    Case("focal", lambda: FocalLoss(gamma=2.0, num_classes=C)),
    Case("focal_gamma_half", lambda: FocalLoss(gamma=0.5, num_classes=C)),
    Case("focal_weighted", lambda: FocalLoss(gamma=1.0, weight=[0.5, 1.0, 1.5, 1.0])),
    Case("sigmoid_focal", lambda: SigmoidFocalLoss(gamma=2.0, alpha=0.25, num_classes=C)),
    Case("sigmoid_focal_gamma_half", lambda: SigmoidFocalLoss(gamma=0.5, weight=[1.0, 2.0, 0.5, 1.0])),
    Case("cdb", lambda: _cdb("softmax", 0.0)),
    Case("cdb_focal", lambda: _cdb("softmax_focal", 2.0)),
    Case("cdb_stable_focal", _stable_cdb),
    Case("ldam", lambda: LDAMLoss(COUNTS, scale=10.0), soft=False),
    Case("balanced_softmax", lambda: BalancedSoftmaxLoss(COUNTS)),
    Case("logit_adjusted", lambda: LogitAdjustedLoss(COUNTS, tau=0.5)),
    # The label-smoothing path (log_softmax in autograd) and the pos_weight path under the same contract (the
    # cross-entropy and BCE variants of both have their gradchecks in tests/test_conventions.py).
    Case("focal_weighted_smoothed", lambda: FocalLoss(gamma=0.5, weight=[0.5, 1.0, 1.5, 1.0], label_smoothing=0.2)),
    Case("sigmoid_focal_pos_weight", lambda: SigmoidFocalLoss(gamma=0.5, alpha=0.25, num_classes=C,
                                                              pos_weight=[2.0, 0.3, 1.0, 4.0])),
]
IDS = [case.name for case in CASES]
SOFT = [case for case in CASES if case.soft]


def _with(criterion: WeightedLoss, **attributes: object) -> WeightedLoss:
    for name, value in attributes.items():
        setattr(criterion, name, value)
    return criterion


def test_every_registered_loss_is_under_the_contract():
    covered = {type(case.make()) for case in CASES}
    for name in LOSSES:
        config = TrainConfig(dataset="synthetic", loss=name, val_per_class=1)
        criterion = build_loss(config, torch.tensor(COUNTS))
        assert isinstance(criterion, WeightedLoss), name
        assert type(criterion) in covered, f"{name}: {type(criterion).__name__} has no contract case"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_dense_input_equals_flattened_and_ignored_positions_give_zero(case):
    criterion = _with(case.make().double(), reduction="none", ignore_index=255)
    z = torch.randn(2, C, 3, 5, dtype=torch.float64)
    y = torch.randint(0, C, (2, 3, 5))
    y[1, 2, 4] = 255
    dense = criterion(z, y)
    assert dense.shape == (2, 3, 5) and dense[1, 2, 4] == 0
    flat = criterion(z.movedim(1, -1).reshape(-1, C), y.reshape(-1))
    torch.testing.assert_close(dense.reshape(-1), flat, rtol=1e-12, atol=1e-14)
    criterion.reduction = "sum"
    torch.testing.assert_close(criterion(z, y), flat.sum(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("reduction", ["mean", "weighted_mean", "sum"])
def test_all_ignored_gives_zero_not_nan(case, reduction):
    criterion = _with(case.make(), reduction=reduction)
    z = torch.randn(3, C, requires_grad=True)
    out = criterion(z, torch.full((3,), -100))
    out.backward()
    assert out.item() == 0.0 and torch.equal(z.grad, torch.zeros_like(z))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ignored_samples_contribute_nothing(case):
    criterion = case.make().double()
    z, y = torch.randn(6, C, dtype=torch.float64), torch.tensor([0, 1, -100, 3, -100, 2])
    keep = y != -100
    torch.testing.assert_close(criterion(z, y), criterion(z[keep], y[keep]), rtol=1e-13, atol=0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("reduction", ["mean", "weighted_mean", "none"])
def test_gradcheck_and_gradgradcheck_with_index_targets(case, reduction):
    criterion = _with(case.make().double(), reduction=reduction)
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(5, C, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    y = torch.randint(0, C, (5, 2), generator=gen)
    y[0, 0] = -100
    assert torch.autograd.gradcheck(lambda t: criterion(t, y), (z,))
    assert torch.autograd.gradgradcheck(lambda t: criterion(t, y), (z,))


@pytest.mark.parametrize("case", SOFT, ids=[c.name for c in SOFT])
def test_gradcheck_and_gradgradcheck_with_soft_targets(case):
    criterion = case.make().double()
    gen = torch.Generator().manual_seed(8)
    z = torch.randn(5, C, dtype=torch.float64, generator=gen, requires_grad=True)
    soft = torch.softmax(torch.randn(5, C, dtype=torch.float64, generator=gen), 1)
    assert torch.autograd.gradcheck(lambda t: criterion(t, soft), (z,))
    assert torch.autograd.gradgradcheck(lambda t: criterion(t, soft), (z,))


@pytest.mark.parametrize("case", SOFT, ids=[c.name for c in SOFT])
def test_one_hot_float_target_equals_index_target(case):
    criterion = case.make().double()
    z, y = torch.randn(12, C, dtype=torch.float64) * 3, torch.randint(0, C, (12,))
    torch.testing.assert_close(criterion(z, F.one_hot(y, C).double()), criterion(z, y), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("scale", [1e2, 1e4, 1e30])
def test_extreme_logits_give_finite_values_and_gradients(case, scale):
    criterion = case.make()
    base = torch.tensor([[1.0, -1.0, 0.5, 0.0], [-1.0, 1.0, -0.5, 0.0], [1.0, 1.0, -1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]])
    z = (base * scale).requires_grad_(True)
    y = torch.tensor([0, 0, 2, 1])  # confident-right, confident-wrong, tied, all-negative
    out = criterion(z, y)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(case, dtype):
    criterion = case.make()
    z = (torch.randn(64, C) * 3).to(dtype)
    y = torch.randint(0, C, (64,))
    zz = z.clone().requires_grad_(True)
    out = criterion(zz, y)
    out.backward()
    assert out.dtype == dtype and zz.grad.dtype == dtype and torch.isfinite(zz.grad.float()).all()
    assert float(out.detach()) == pytest.approx(float(criterion(z.float(), y)), rel=1e-2)


BAD_INPUT = [
    (dict(target=torch.tensor([0, 1])), ValueError, r"must have shape \(3,\) \(or, for multi-hot or probability targets, the input.s shape\); got \(2,\)"),
    (dict(target=torch.tensor([0, 1, 4])), ValueError, r"labels must be in \[0, 3\] or equal ignore_index=-100; got label 4"),
    (dict(target=torch.tensor([0, -1, 2])), ValueError, "got label -1"),
    (dict(target=[0, 1, 2]), TypeError, "target must be a tensor; got list"),
    (dict(logits=torch.zeros(3, C, dtype=torch.long)), TypeError, "floating-point tensor of logits; got dtype torch.int64"),
    (dict(logits=torch.zeros(3)), ValueError, r"shape \(N, C\) or \(N, C, d1, ...\); got shape \(3,\)"),
    (dict(logits=torch.zeros(3, C + 1)), ValueError, r"must have shape \(5,\), one value per class; got \(4,\)"),
]


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("kwargs, error, match", BAD_INPUT, ids=[m for _, _, m in BAD_INPUT])
def test_bad_input_is_refused_with_a_message(case, kwargs, error, match):
    args = dict(logits=torch.zeros(3, C), target=torch.tensor([0, 1, 2]))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        case.make()(args["logits"], args["target"])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dict_round_trip_and_to_double(case):
    criterion = case.make()
    criterion.set_weight(torch.tensor([0.2, 1.0, 2.0, 0.8]))
    fresh = case.make()
    fresh.load_state_dict(criterion.state_dict())
    z, y = torch.randn(8, C), torch.randint(0, C, (8,))
    torch.testing.assert_close(fresh(z, y), criterion(z, y), rtol=0, atol=0)
    double = fresh.double()
    assert all(b.dtype == torch.float64 for b in double.buffers() if b.is_floating_point())
    torch.testing.assert_close(double(z.double(), y).float(), criterion(z, y), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_set_weight_is_the_one_weight_mechanism(case):
    criterion = case.make()
    assert isinstance(criterion, WeightedLoss) and criterion.weight.shape == (C,)
    z, y = torch.randn(16, C, dtype=torch.float64), torch.randint(0, C, (16,))
    criterion = _with(criterion.double(), reduction="sum")
    criterion.set_weight(None)  # all ones: the unweighted loss
    assert criterion.weight.tolist() == [1.0] * C and criterion.weight.dtype == torch.float64
    unweighted = criterion(z, y)
    criterion.set_weight([2.0] * C)
    torch.testing.assert_close(criterion(z, y), 2 * unweighted, rtol=1e-12, atol=0)
    buffer = criterion.weight
    criterion.set_weight(torch.tensor([1.0, 0.0, 3.0, 0.5]))
    assert criterion.weight is buffer  # in place: a compiled forward sees it, the device and dtype stay
    for bad, error, match in [([1.0, float("nan"), 1.0, 1.0], ValueError, "finite and non-negative"),
                              ([1.0, -1.0, 1.0, 1.0], ValueError, "finite and non-negative"),
                              ([1.0, 1.0], ValueError, r"shape \(4,\), one value per class; got \(2,\)"),
                              ("ones", TypeError, "weight must be a list, numpy array or tensor")]:
        with pytest.raises(error, match=match):
            criterion.set_weight(bad)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_set_weight_keeps_the_loss_device(case):
    # A weight computed on the CPU (DRW, CDB) must land on the loss's device: "meta" stands in for a GPU here.
    criterion = case.make().to("meta")
    criterion.set_weight(torch.tensor([0.5, 1.0, 1.5, 1.0]))
    assert criterion.weight.device.type == "meta"
    criterion.set_weight(None)
    assert criterion.weight.device.type == "meta"


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_compiles_without_graph_breaks_and_sees_new_weights(case):
    torch._dynamo.reset()
    criterion = case.make()
    compiled = torch.compile(criterion, fullgraph=True, backend="eager")
    z, y = torch.randn(8, C), torch.randint(0, C, (8,))
    torch.testing.assert_close(compiled(z, y), criterion(z, y))
    criterion.set_weight(torch.tensor([3.0, 0.1, 0.1, 0.1]))
    torch.testing.assert_close(compiled(z, y), criterion(z, y))
    if case.soft:
        soft = torch.softmax(torch.randn(8, C), 1)
        torch.testing.assert_close(compiled(z, soft), criterion(z, soft))
    sample_weight = torch.rand(8)
    torch.testing.assert_close(compiled(z, y, sample_weight), criterion(z, y, sample_weight))


def test_an_unsized_loss_is_sized_by_its_first_weight_and_by_a_loaded_state():
    criterion = FocalLoss(gamma=2.0)  # no weight, no num_classes: unweighted for any C
    assert criterion.weight.shape == (0,) and criterion.num_classes is None
    z, y = torch.randn(8, C), torch.randint(0, C, (8,))
    plain = criterion(z, y)
    criterion.set_weight(torch.ones(C))
    assert criterion.num_classes == C
    torch.testing.assert_close(criterion(z, y), plain)
    criterion.set_weight(torch.tensor([0.5, 1.0, 1.5, 1.0]))
    resumed = FocalLoss(gamma=2.0)
    resumed.load_state_dict(criterion.state_dict())
    torch.testing.assert_close(resumed(z, y), criterion(z, y), rtol=0, atol=0)


@pytest.mark.parametrize("bad", [[1.0, float("nan"), 1.0, 1.0], [1.0, -10.0, 1.0, 1.0], [1.0, float("inf"), 1.0, 1.0]])
def test_the_functional_forms_refuse_non_finite_or_negative_weights(bad):
    from longtail.functional import class_balanced_loss, focal_loss, sigmoid_focal_loss

    z, y, w = torch.randn(3, C), torch.tensor([0, 1, 2]), torch.tensor(bad)
    for call in (lambda: focal_loss(z, y, w), lambda: sigmoid_focal_loss(z, y, w),
                 lambda: class_balanced_loss(z, y, w, loss="softmax")):
        with pytest.raises(ValueError, match=r"weight must be finite and non-negative; got .*\(bad classes \[1\]\)"):
            call()


def test_the_functional_forms_refuse_a_non_integer_ignore_index():
    from longtail.functional import class_balanced_loss, focal_loss

    z, y = torch.randn(3, C), torch.tensor([0, 1, 2])
    for call in (lambda: focal_loss(z, y, ignore_index=1.5),
                 lambda: class_balanced_loss(z, y, torch.ones(C), ignore_index=True)):
        with pytest.raises(TypeError, match="ignore_index must be an integer; got"):
            call()


# --- sample_weight: every forward takes per-sample weights ------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_sample_weight_of_ones_equals_none(case):
    criterion = case.make().double()
    z = torch.randn(3, C, 2, dtype=torch.float64)
    y = torch.randint(0, C, (3, 2))
    y[1, 0] = -100
    ones = torch.ones(3, 2, dtype=torch.float64)
    for reduction in ["mean", "weighted_mean", "sum", "none"]:
        criterion.reduction = reduction
        torch.testing.assert_close(criterion(z, y, ones), criterion(z, y), rtol=1e-15, atol=0)
    if case.soft:
        soft = torch.softmax(torch.randn(3, C, 2, dtype=torch.float64), 1)
        torch.testing.assert_close(criterion(z, soft, ones), criterion(z, soft), rtol=1e-15, atol=0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_sample_weight_zero_drops_samples_and_integers_repeat_them(case):
    criterion = _with(case.make().double(), reduction="sum")
    z, y = torch.randn(6, C, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 1, 0])
    zeros = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    keep = zeros > 0
    torch.testing.assert_close(criterion(z, y, zeros), criterion(z[keep], y[keep]), rtol=1e-13, atol=0)
    torch.testing.assert_close(criterion(z, y, zeros), criterion(z, torch.where(keep, y, -100)), rtol=1e-13, atol=0)
    counts = torch.tensor([2, 0, 1, 3, 1, 2])
    repeated = (z.repeat_interleave(counts, 0), y.repeat_interleave(counts, 0))
    for reduction in ["sum", "weighted_mean"]:
        criterion.reduction = reduction
        torch.testing.assert_close(criterion(z, y, counts.double()), criterion(*repeated), rtol=1e-13, atol=1e-15)


BAD_SAMPLE_WEIGHT = [
    (torch.ones(2), ValueError, r"sample_weight must have shape \(3,\), one weight per sample"),
    (torch.ones(3, 1), ValueError, r"sample_weight must have shape \(3,\)"),
    (torch.tensor([1.0, -0.5, 1.0]), ValueError, "sample_weight must be finite and non-negative; got -0.5 at sample 1"),
    (torch.tensor([1.0, 1.0, float("nan")]), ValueError, "sample_weight must be finite and non-negative; got nan at sample 2"),
    (torch.tensor([1.0, float("inf"), 1.0]), ValueError, "sample_weight must be finite and non-negative; got inf"),
    (torch.tensor([1, 2, 1]), TypeError, "sample_weight must be a floating-point tensor; got dtype torch.int64"),
    ([1.0, 1.0, 1.0], TypeError, "sample_weight must be a floating-point tensor of shape \\(3,\\).*; got list"),
    (torch.ones(3, device="meta"), ValueError, "sample_weight must be on the input's device cpu; got meta"),
]


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("bad, error, match", BAD_SAMPLE_WEIGHT, ids=[m for _, _, m in BAD_SAMPLE_WEIGHT])
def test_bad_sample_weight_is_refused_with_a_message(case, bad, error, match):
    with pytest.raises(error, match=match):
        case.make()(torch.zeros(3, C), torch.tensor([0, 1, 2]), bad)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_value_checks_off_give_the_same_loss_with_no_host_sync(case):
    criterion = case.make()
    z, y = torch.randn(6, C, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 3, 0, 1])
    expected = criterion(z, y)
    assert host_syncs(lambda: criterion(z, y)) == 1  # the one merged value check
    with longtail.value_checks(False):
        assert longtail.checks.value_checks_enabled() is False
        torch.testing.assert_close(criterion(z, y), expected, rtol=0, atol=0)
        assert host_syncs(lambda: criterion(z, y)) == 0
    assert longtail.checks.value_checks_enabled() is True
    with pytest.raises(ValueError, match=r"^target labels must be in \[0, 3\] or equal ignore_index=-100; got label 4$"):
        criterion(z, torch.tensor([0, 1, 2, 3, 0, C]))  # on again after the block


def test_value_checks_restore_the_previous_state_nest_and_are_per_thread():
    import threading

    with pytest.raises(TypeError, match=r"^enabled must be a bool; got int$"):
        with longtail.value_checks(0):
            pass
    with pytest.raises(RuntimeError, match="inside"):
        with longtail.value_checks(False):
            with longtail.value_checks(True):
                assert longtail.checks.value_checks_enabled()
            assert not longtail.checks.value_checks_enabled()
            raise RuntimeError("inside")
    assert longtail.checks.value_checks_enabled()
    seen = []
    with longtail.value_checks(False):
        thread = threading.Thread(target=lambda: seen.append(longtail.checks.value_checks_enabled()))
        thread.start()
        thread.join()
    assert seen == [True]  # another thread keeps its checks
