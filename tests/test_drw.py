"""DeferredReweighting: the schedule, the official LDAM-DRW weights, and applying them to losses."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from longtail import FocalLoss, class_balanced_weights
from longtail.drw import DeferredReweighting
from longtail.functional.ldam import ldam_loss
from longtail.losses.ldam import LDAMLoss

COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]  # CIFAR-10-LT, rho = 100


def _official_drw_weights(counts, epoch):
    """The authors' train.py: idx = epoch // 160, betas = [0, 0.9999], weights summing to C."""
    betas = [0, 0.9999]
    beta = betas[epoch // 160]
    effective_num = 1.0 - np.power(beta, counts)
    per_cls_weights = (1.0 - beta) / np.array(effective_num)
    return per_cls_weights / np.sum(per_cls_weights) * len(counts)


def test_schedule_and_official_weights():
    drw = DeferredReweighting(COUNTS, start_epoch=160)
    for epoch in [0, 1, 159, 160, 161, 199]:
        weight = drw.weight_for_epoch(epoch)
        official = _official_drw_weights(np.array(COUNTS, dtype=np.float64), epoch)
        if epoch < 160:
            assert weight is None and not drw.is_active(epoch)
            np.testing.assert_allclose(official, np.ones(10))  # the official "beta = 0" phase: unweighted
        else:
            assert drw.is_active(epoch) and weight.dtype == torch.float32 and weight.shape == (10,)
            np.testing.assert_allclose(weight.numpy(), official, rtol=1e-6)
            torch.testing.assert_close(weight, class_balanced_weights(COUNTS, 0.9999), rtol=0, atol=0)
    assert DeferredReweighting(COUNTS, start_epoch=0).weight_for_epoch(0) is not None


def test_literal_weights_and_fresh_copies():
    # beta = 0.99, counts [100, 10, 1]: (1 - beta) / (1 - beta**n) = [0.0158, 0.1044, 1.0], rescaled to sum 3.
    drw = DeferredReweighting([100, 10, 1], start_epoch=2, beta=0.99)
    torch.testing.assert_close(drw.weight_for_epoch(5), torch.tensor([0.0422375, 0.2800436, 2.6777189]), rtol=0, atol=1e-6)
    drw.weight_for_epoch(5).mul_(0)  # a caller's in-place change must not leak into the schedule
    assert float(drw.weight_for_epoch(5).sum()) == pytest.approx(3.0, rel=1e-6)
    assert repr(drw) == "DeferredReweighting(num_classes=3, start_epoch=2, beta=0.99)"


def test_apply_to_ldam_reproduces_official_ldam_drw():
    drw = DeferredReweighting(COUNTS, start_epoch=3)
    criterion = LDAMLoss(COUNTS, reduction="weighted_mean")
    z = torch.rand(32, 10, dtype=torch.float64) * 2 - 1
    y = torch.randint(0, 10, (32,))
    criterion.double()
    for epoch in range(5):
        returned = drw.apply(criterion, epoch)
        got = criterion(z, y)
        # Official: F.cross_entropy(s * where(onehot, z - m_y, z), y, weight=per_cls_weights or None).
        onehot = F.one_hot(y, 10).bool()
        output = 30.0 * torch.where(onehot, z - criterion.margins[y].unsqueeze(1), z)
        w = None if epoch < 3 else torch.tensor(_official_drw_weights(np.array(COUNTS, dtype=np.float64), 160))
        torch.testing.assert_close(got, F.cross_entropy(output, y, weight=w), rtol=1e-6, atol=1e-9)
        assert (returned is None) == (epoch < 3) and bool((criterion.weight == 1).all()) == (epoch < 3)
    assert criterion.weight.dtype == torch.float64  # set_weight follows the module's dtype
    torch.testing.assert_close(
        criterion(z, y), ldam_loss(z, y, criterion.margins, weight=criterion.weight, reduction="weighted_mean")
    )


def test_apply_to_modules_with_a_weight_attribute():
    drw = DeferredReweighting([30, 10, 3], start_epoch=1, beta=0.999)
    ce = nn.CrossEntropyLoss()
    assert drw.apply(ce, 0) is None and ce.weight is None
    weight = drw.apply(ce, 1)
    assert "weight" in dict(ce.named_buffers()) and torch.equal(ce.weight, weight)
    z, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    torch.testing.assert_close(ce(z, y), F.cross_entropy(z, y, weight=class_balanced_weights([30, 10, 3], 0.999)))
    focal = FocalLoss(gamma=2.0).double()
    drw.apply(focal, 4)
    assert torch.equal(focal.weight, class_balanced_weights([30, 10, 3], 0.999))
    drw.apply(focal, 0)  # unweighted again: all ones, the same loss as no weight
    assert focal.weight.tolist() == [1.0, 1.0, 1.0]
    meta = nn.CrossEntropyLoss(weight=torch.ones(3, dtype=torch.float64)).to("meta")
    drw.apply(meta, 2)  # placed like the criterion's current weight
    assert meta.weight.device.type == "meta" and meta.weight.dtype == torch.float64


def test_apply_to_class_balanced_loss_keeps_a_tensor_weight():
    from longtail import ClassBalancedLoss

    drw = DeferredReweighting([30, 10, 3], start_epoch=2, beta=0.999)
    criterion = ClassBalancedLoss([30, 10, 3], beta=0.9)
    drw.apply(criterion, 0)  # before the start: unweighted, i.e. all ones
    assert criterion.weight.tolist() == [1.0, 1.0, 1.0]
    drw.apply(criterion, 2)
    assert torch.equal(criterion.weight, class_balanced_weights([30, 10, 3], 0.999))


def test_apply_needs_a_weighted_loss():
    with pytest.raises(TypeError, match="MSELoss has neither set_weight\\(\\) nor a weight buffer"):
        DeferredReweighting([3, 1], start_epoch=0).apply(nn.MSELoss(), 0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(start_epoch=-1), ValueError, "start_epoch must be an integer >= 0; got -1"),
        (dict(start_epoch=1.5), TypeError, "start_epoch must be an integer; got float 1.5"),
        (dict(start_epoch=True), TypeError, "start_epoch must be an integer; got bool True"),
        (dict(beta=1.5), ValueError, r"beta must be in \[0, 1\]; got 1.5"),
        (dict(beta=float("nan")), ValueError, "beta must be a number; got NaN"),
        (dict(counts=[[1, 2]]), ValueError, "counts must be 1-D"),
        (dict(counts=[3, -1]), ValueError, "counts must be non-negative"),
        (dict(counts=[3, 0]), ValueError, "counts must be positive for every class"),
        (dict(zero_counts="drop"), ValueError, "zero_counts must be one of 'error', 'ignore'; got 'drop'"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = dict(counts=[30, 10, 3], start_epoch=2)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        DeferredReweighting(**args)


def test_bad_epoch_and_zero_count_policy():
    drw = DeferredReweighting([30, 0, 3], start_epoch=2, zero_counts="ignore")
    assert float(drw.weight_for_epoch(2)[1]) == 0.0  # absent class: weight 0, the rest sum to 2
    assert float(drw.weight_for_epoch(2).sum()) == pytest.approx(2.0, rel=1e-6)
    with pytest.raises(ValueError, match="epoch must be an integer >= 0; got -3"):
        drw.weight_for_epoch(-3)
    with pytest.raises(TypeError, match="epoch must be an integer; got str"):
        drw.weight_for_epoch("5")
    assert drw.weight_for_epoch(np.int64(3)) is not None
