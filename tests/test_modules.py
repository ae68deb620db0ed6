"""The nn.Module forms: equal to the functional forms, buffers that follow .to() and state_dict."""

import io

import pytest
import torch
import torch.nn.functional as F

import longtail
from longtail import ClassBalancedLoss, FocalLoss, SigmoidFocalLoss, class_balanced_weights
from longtail.functional import class_balanced_loss, focal_loss, sigmoid_focal_loss

COUNTS = [500, 120, 40, 9, 2]


@pytest.mark.parametrize("loss", ["softmax", "sigmoid", "focal", "softmax_focal"])
@pytest.mark.parametrize("reduction", ["mean", "weighted_mean", "sum", "none"])
def test_module_equals_functional(loss, reduction):
    gamma = 1.5 if loss in ("focal", "softmax_focal") else 0.0  # the others refuse a focal parameter
    criterion = ClassBalancedLoss(COUNTS, beta=0.999, loss=loss, gamma=gamma, reduction=reduction)
    z, y = torch.randn(16, 5), torch.randint(0, 5, (16,))
    expected = class_balanced_loss(
        z, y, class_balanced_weights(COUNTS, 0.999), loss=loss, gamma=gamma, reduction=reduction
    )
    assert torch.equal(criterion(z, y), expected)


def test_focal_modules_equal_functional():
    z, y = torch.randn(16, 5), torch.randint(0, 5, (16,))
    w = torch.rand(5)
    assert torch.equal(FocalLoss(gamma=2.0, weight=w)(z, y), focal_loss(z, y, w, gamma=2.0))
    assert torch.equal(
        SigmoidFocalLoss(gamma=2.0, alpha=0.25, weight=w)(z, y), sigmoid_focal_loss(z, y, w, gamma=2.0, alpha=0.25)
    )
    assert torch.equal(FocalLoss(gamma=0.0)(z, y), focal_loss(z, y, gamma=0.0))


def test_weights_are_buffers_that_follow_to_and_state_dict():
    criterion = ClassBalancedLoss(COUNTS, beta=0.99)
    assert set(criterion.state_dict()) == {"weight", "counts"}
    assert list(criterion.parameters()) == []
    doubled = criterion.to(torch.float64)
    assert doubled.weight.dtype == torch.float64
    buffer = io.BytesIO()
    torch.save(ClassBalancedLoss(COUNTS, beta=0.99).state_dict(), buffer)
    buffer.seek(0)
    restored = ClassBalancedLoss([1, 1, 1, 1, 1], beta=0.0)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.weight, class_balanced_weights(COUNTS, 0.99))
    assert restored.counts.tolist() == COUNTS
    z, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    assert torch.equal(restored(z, y), ClassBalancedLoss(COUNTS, beta=0.99)(z, y))


def test_from_labels_counts_the_training_set():
    labels = torch.tensor([0] * 50 + [1] * 5 + [2] * 1)
    criterion = ClassBalancedLoss.from_labels(labels, 3, beta=0.9)
    assert criterion.counts.tolist() == [50, 5, 1]
    assert torch.equal(criterion.weight, class_balanced_weights([50, 5, 1], 0.9))


def test_module_used_in_training_step_decreases_loss():
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = (x[:, 0] > 1.2).long() + (x[:, 1] > 1.5).long()
    model = torch.nn.Linear(4, 3)
    criterion = ClassBalancedLoss(longtail.class_counts(y, 3), beta=0.999, loss="focal", gamma=2.0)
    longtail.init_prior_bias(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    first = criterion(model(x), y).item()
    for _ in range(50):
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
    assert criterion(model(x), y).item() < 0.5 * first


def test_repr_and_constructor_errors():
    assert "beta=0.99, loss='focal'" in repr(ClassBalancedLoss(COUNTS, beta=0.99, loss="focal"))
    with pytest.raises(ValueError, match="loss must be one of"):
        ClassBalancedLoss(COUNTS, loss="ce")
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]; got 2.0"):
        ClassBalancedLoss(COUNTS, beta=2.0)
    with pytest.raises(ValueError, match="got 0 for classes"):
        ClassBalancedLoss([3, 0, 1])
    with pytest.raises(ValueError, match="reduction must be one of"):
        FocalLoss(reduction="avg")
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]; got 1.5"):
        SigmoidFocalLoss(alpha=1.5)
    with pytest.raises(ValueError, match=r"weight must be 1-D \(one value per class\); got shape \(1, 1\)"):
        FocalLoss(weight=[[1.0]])


def test_cross_entropy_equivalence_of_module_at_beta_zero():
    criterion = ClassBalancedLoss(COUNTS, beta=0.0)
    z, y = torch.randn(32, 5), torch.randint(0, 5, (32,))
    torch.testing.assert_close(criterion(z, y), F.cross_entropy(z, y))


@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
def test_gamma_is_refused_for_a_loss_without_a_focal_term(loss):
    # It was silently ignored (CDBLoss refuses the same); the message names both and the losses that use it.
    with pytest.raises(ValueError) as info:
        ClassBalancedLoss(COUNTS, beta=0.99, loss=loss, gamma=2)
    assert str(info.value) == (
        f"gamma is used only with loss='focal' or 'softmax_focal'; got gamma=2.0 with loss='{loss}'"
    )
    assert ClassBalancedLoss(COUNTS, beta=0.99, loss=loss, gamma=0.0).gamma == 0.0
    assert ClassBalancedLoss(COUNTS, beta=0.99, loss=loss).gamma == 0.0
    with pytest.raises(ValueError, match=r"gamma must be in \[0, inf\]; got -1.0"):
        ClassBalancedLoss(COUNTS, loss=loss, gamma=-1.0)


@pytest.mark.parametrize("loss", ["focal", "softmax_focal"])
def test_focal_losses_keep_their_gamma(loss):
    assert ClassBalancedLoss(COUNTS, beta=0.99, loss=loss, gamma=2).gamma == 2.0
    assert ClassBalancedLoss(COUNTS, beta=0.99, loss=loss, gamma=0).gamma == 0.0


def test_trainer_never_passes_gamma_to_a_loss_without_a_focal_term():
    # The harness builds cb_softmax / cb_sigmoid / ce / sigmoid without reading gamma, so a non-zero
    # configured gamma (meant for the focal losses) does not reach them.
    import dataclasses
    from types import SimpleNamespace

    from longtail.train import LOSSES, TrainConfig

    defaults = TrainConfig(dataset="synthetic")
    fields = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(TrainConfig)}
    config = SimpleNamespace(**{**fields, "gamma": 3.0, "beta": 0.99})  # every field a spec may read
    for name, spec in LOSSES.items():
        criterion = spec.build_loss(config, torch.tensor(COUNTS))
        if isinstance(criterion, ClassBalancedLoss):
            assert criterion.gamma == (3.0 if criterion.loss in ("focal", "softmax_focal") else 0.0), name
