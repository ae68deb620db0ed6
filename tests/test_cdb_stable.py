"""Stable CDB weights (an extension beyond the paper): posterior accuracy, confidence, damping, the ratio bound,
the oscillation they stop, the paper's form kept, the trainer's losses and their resume."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longtail import StableCDBLoss
from longtail.difficulty import ClassDifficulty, TrainingDifficultyEMA, estimated_accuracy, posterior_accuracy
from longtail.weights import bound_ratio, cdb_weights, damped_weights
from longtail.losses.cdb import CDBLoss
from longtail.metrics import ConfusionMeter
from longtail.train import LOSSES, TrainConfig, prepare_data, train

NAN = float("nan")


def _meter(correct, total, num_classes=None, **kwargs):
    """A ClassDifficulty that saw ``total[c]`` samples of class c, ``correct[c]`` of them predicted right."""
    c = num_classes or len(total)
    meter = ClassDifficulty(c, **kwargs)
    labels = torch.cat([torch.full((n,), k) for k, n in enumerate(total)])
    preds = torch.cat([torch.where(torch.arange(n) < r, k, (k + 1) % c) for k, (r, n) in enumerate(zip(correct, total))])
    meter.update(preds, labels)
    return meter


# --- the posterior mean ---------------------------------------------------------------------------


def test_posterior_accuracy_hand_computed():
    # Laplace: 25 of 25 -> 26/27, 0 of 25 -> 1/27; Jeffreys: 25.5/26 = 51/52 and 0.5/26 = 1/52.
    laplace = posterior_accuracy([25, 0, 12], [25, 25, 25], prior=1.0)
    assert laplace.tolist() == pytest.approx([26 / 27, 1 / 27, 13 / 27], rel=1e-15)
    assert posterior_accuracy([25, 0], [25, 25], prior=0.5).tolist() == pytest.approx([51 / 52, 1 / 52], rel=1e-15)
    assert posterior_accuracy([25], [25], prior=(2.0, 1.0)).tolist() == pytest.approx([27 / 28], rel=1e-15)
    plain = posterior_accuracy([25, 3], [25, 4], prior=None)
    assert plain.tolist() == [1.0, 0.75] and posterior_accuracy([25, 3], [25, 4], prior=0).tolist() == [1.0, 0.75]
    assert math.isnan(float(posterior_accuracy([0, 1], [0, 2])[0]))  # no samples: not measured, not the prior mean


def test_estimated_accuracy_from_the_counter():
    meter = _meter([25, 0, 20], [25, 25, 25])
    assert estimated_accuracy(meter).tolist() == [1.0, 0.0, 0.8]  # the paper: the plain ratio
    assert estimated_accuracy(meter, prior=1.0).tolist() == pytest.approx([26 / 27, 1 / 27, 21 / 27], rel=1e-15)
    # A plain ConfusionMeter (the trainer's) and TrainingDifficultyEMA's discounted sums are counts too.
    plain = ConfusionMeter(3)
    plain.merge(meter)
    assert torch.equal(estimated_accuracy(plain, prior=1.0), estimated_accuracy(meter, prior=1.0))
    ema = TrainingDifficultyEMA(2, momentum=0.5)
    ema.update(torch.tensor([0, 0]), torch.tensor([0, 1]))
    assert estimated_accuracy(ema, prior=1.0).tolist() == pytest.approx([2 / 3, 1 / 3])


def test_confidence_is_the_mean_true_class_probability():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(200, 5, generator=gen) * 2
    labels = torch.randint(0, 5, (200,), generator=gen)
    labels[::17] = -100
    meter = ClassDifficulty(5, confidence=True)
    for chunk in range(0, 200, 64):
        meter.update(logits[chunk : chunk + 64], labels[chunk : chunk + 64])
    z, y = logits.double().numpy(), labels.numpy()
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    keep = y != -100
    sums = np.bincount(y[keep], weights=p[keep, y[keep]], minlength=5)
    counts = np.bincount(y[keep], minlength=5)
    np.testing.assert_allclose(meter.true_prob_sum.numpy(), sums, rtol=1e-6)
    np.testing.assert_allclose(meter.confidence().numpy(), sums / counts, rtol=1e-6)
    np.testing.assert_allclose(estimated_accuracy(meter, prior=1.0, difficulty="confidence").numpy(),
                               (sums + 1) / (counts + 2), rtol=1e-6)
    # The sums are integers: another batch split (or order) gives the same counts exactly.
    split = ClassDifficulty(5, confidence=True)
    for chunk in reversed(range(0, 200, 50)):
        split.update(logits[chunk : chunk + 50], labels[chunk : chunk + 50])
    assert torch.equal(split.confidence_units, meter.confidence_units)
    dense = ClassDifficulty(5, confidence=True)  # dense inputs (N, C, d) equal the flattened ones
    dense.update(logits[:198].view(99, 2, 5).transpose(1, 2), labels[:198].view(99, 2))
    dense.update(logits[198:], labels[198:])
    torch.testing.assert_close(dense.true_prob_sum, meter.true_prob_sum, rtol=1e-6, atol=0)


def test_confidence_counts_are_one_more_buffer_of_the_counter():
    meter = ClassDifficulty(3, confidence=True)
    meter.update(torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), torch.tensor([0, 1]))
    assert set(meter.state_dict()) == {"confusion", "confidence_units"}
    assert meter.double().confidence_units.dtype == torch.int64
    twice = ClassDifficulty(3, confidence=True).merge(meter).merge(meter)
    assert torch.equal(twice.confidence_units, 2 * meter.confidence_units)
    assert meter.all_reduce() is meter  # no process group: a no-op
    meter.reset()
    assert int(meter.confidence_units.sum()) == 0 and set(ClassDifficulty(3).state_dict()) == {"confusion"}


@pytest.mark.parametrize("make, error, match", [
    (lambda: ClassDifficulty(3, confidence=True).update(torch.tensor([0, 1]), torch.tensor([0, 1])), ValueError,
     r"preds must be scores \(logits\) of shape \(N, C\) or \(N, C, d1, \.\.\.\) for confidence=True"),
    (lambda: ConfusionMeter(3, confidence=1), TypeError, "confidence must be True or False; got int 1"),
    (lambda: estimated_accuracy(ClassDifficulty(3), difficulty="confidence"), TypeError,
     "source must be a ClassDifficulty or ConfusionMeter built with confidence=True"),
    (lambda: estimated_accuracy(ClassDifficulty(3), difficulty="top1"), ValueError,
     "difficulty must be one of 'accuracy', 'confidence'; got 'top1'"),
    (lambda: posterior_accuracy([3], [2]), ValueError, r"successes must be in \[0, total\] per class"),
    (lambda: posterior_accuracy([1], [2], prior=-1), ValueError, r"prior must be in \[0, inf\]; got -1.0"),
    (lambda: posterior_accuracy([1], [2], prior=(1, 2, 3)), ValueError, r"prior must be a number or a pair"),
    (lambda: StableCDBLoss(3, momentum=0), ValueError, r"momentum must be in \(0, 1\]; got 0.0"),
    (lambda: StableCDBLoss(3, max_ratio=0.5), ValueError, r"max_ratio must be in \[1, inf\]; got 0.5"),
    (lambda: TrainConfig(cdb_momentum=1.5), ValueError, r"cdb_momentum must be in \(0, 1\]; got 1.5"),
    (lambda: TrainConfig(cdb_max_ratio=float("inf")), ValueError, "cdb_max_ratio must be finite; got inf"),
    (lambda: TrainConfig(cdb_difficulty="hits"), ValueError, "cdb_difficulty must be one of 'accuracy', 'confidence'"),
])
def test_errors_name_expected_and_given(make, error, match):
    with pytest.raises(error, match=match):
        make()


# --- damping and the bound ------------------------------------------------------------------------


def test_ema_and_ratio_bound_by_hand():
    # Half-way from uniform to the paper's [0, 0, 3]: [0.5, 0.5, 2]; a bound of 2 raises 0.5 to 2 / 2 = 1, then x 3/4.
    assert damped_weights([1, 1, 1], [0, 0, 3], momentum=0.5, max_ratio=None).tolist() == [0.5, 0.5, 2.0]
    assert damped_weights([1, 1, 1], [0, 0, 3], momentum=0.5, max_ratio=2.0).tolist() == [0.75, 0.75, 1.5]
    assert damped_weights([1, 1, 1], [0, 0, 3], momentum=1.0, max_ratio=None).tolist() == [0.0, 0.0, 3.0]
    assert bound_ratio([0.0, 1.0, 2.0], 4.0).tolist() == pytest.approx([1.5 / 3.5, 3 / 3.5, 6 / 3.5], rel=1e-15)
    assert bound_ratio([0.2, 1.0, 1.8], 1.0).tolist() == pytest.approx([1.0, 1.0, 1.0], rel=1e-15)
    assert bound_ratio([0.0, 0.0], 4.0).tolist() == [1.0, 1.0]


@settings(max_examples=30)
@given(
    previous=st.lists(st.floats(0.0, 10.0), min_size=2, max_size=8),
    target=st.lists(st.floats(0.0, 10.0), min_size=8, max_size=8),
    momentum=st.floats(0.01, 1.0),
    ratio=st.floats(1.0, 1e4),
)
def test_the_ratio_bound_holds_and_the_weights_sum_to_c(previous, target, momentum, ratio):
    c = len(previous)
    w = damped_weights(previous, target[:c], momentum=momentum, max_ratio=ratio)
    if sum(previous) + sum(target[:c]) > 0:
        assert float(w.max()) <= ratio * float(w.min()) * (1 + 1e-12)
    assert float(w.sum()) == pytest.approx(c, rel=1e-12)
    assert bool((w > 0).all())


def test_the_oscillation_flips_the_papers_weights_but_not_the_stable_ones():
    paper = CDBLoss(3, tau=1.0)
    stable = StableCDBLoss(3, tau=1.0, prior=None, momentum=0.25, max_ratio=None)
    bounded = StableCDBLoss(3, tau=1.0, prior=None, momentum=0.25, max_ratio=4.0)
    for epoch in range(6):
        acc = [1.0, 1.0, 0.0] if epoch % 2 == 0 else [0.0, 0.0, 1.0]
        before = stable.weight.clone()
        target = cdb_weights(acc, 1.0)
        assert paper.update_weights(acc).tolist() == target.tolist()  # [0, 0, 3] <-> [1.5, 1.5, 0]: a full flip
        moved = stable.update_weights(acc) - before
        # Each class moves by exactly the EMA step of its distance to the target, at most 0.25 x 3.
        torch.testing.assert_close(moved, 0.25 * (target.float() - before), rtol=0, atol=1e-6)
        assert float(moved.abs().max()) <= 0.25 * 3 + 1e-6
        w = bounded.update_weights(acc)
        assert float(w.max() / w.min()) <= 4.0 * (1 + 1e-6) and float(w.sum()) == pytest.approx(3.0, rel=1e-6)
    # The paper's head weights were 0 every other epoch; the stable ones never left [0.5, 1.6].
    assert 0.5 <= float(stable.weight.min()) and float(stable.weight.max()) <= 1.6


def test_the_prior_keeps_a_perfect_class_in_the_loss():
    paper, stable = CDBLoss(3), StableCDBLoss(3, prior=1.0, difficulty="accuracy", momentum=1.0, max_ratio=None)
    meter = _meter([25, 25, 0], [25, 25, 25])
    assert paper.update_from(meter)[:2].tolist() == [0.0, 0.0]
    w = stable.update_from(meter)
    assert bool((w > 0).all())
    # 26/27 and 1/27 with tau dynamic: d = 1/27 for the perfect classes, 26/27 for the hopeless one.
    tau = float(stable.last_tau)
    raw = [(1 / 27) ** tau, (1 / 27) ** tau, (26 / 27) ** tau]
    assert w.tolist() == pytest.approx([3 * r / sum(raw) for r in raw], rel=1e-6)
    assert stable.last_accuracy.tolist() == pytest.approx([26 / 27, 26 / 27, 1 / 27], rel=1e-15)


# --- the paper's form kept, state -----------------------------------------------------------------


def test_the_paper_settings_are_cdb_loss_update_for_update():
    paper = CDBLoss(4, tau="dynamic")
    same = StableCDBLoss(4, tau="dynamic", prior=None, difficulty="accuracy", momentum=1.0, max_ratio=None)
    for acc in ([0.9, 0.7, 0.2, 0.05], [1.0, NAN, 0.4, 0.1], [0.3, 0.9, 1.0, 1.0]):
        assert torch.equal(same.update_weights(acc), paper.update_weights(acc))
    meter = _meter([20, 5, 0, 25], [25, 25, 25, 25])
    assert torch.equal(same.update_from(meter), paper.update_from(meter))
    assert set(CDBLoss(4).state_dict()) == {"weight", "last_tau", "last_accuracy", "num_updates"}


def test_state_dict_round_trip_continues_exactly():
    criterion = StableCDBLoss(4, loss="softmax_focal", gamma=2.0, difficulty="confidence")
    meter = ClassDifficulty(4, confidence=True)
    meter.update(torch.randn(40, 4), torch.arange(40) % 4)
    criterion.update_from(meter)
    state = criterion.state_dict()
    assert set(state) == {"weight", "last_tau", "last_accuracy", "num_updates", "target_weight"}
    resumed = StableCDBLoss(4, loss="softmax_focal", gamma=2.0, difficulty="confidence")
    resumed.load_state_dict(state)
    nxt = [0.99, 0.8, NAN, 0.3]
    assert torch.equal(resumed.update_weights(nxt), criterion.update_weights(nxt))
    assert torch.equal(resumed.target_weight, criterion.target_weight)


# --- the trainer ----------------------------------------------------------------------------------


def test_the_stable_losses_are_registered_with_their_fields():
    for name in ("cdb_stable", "cdb_stable_focal"):
        spec = LOSSES[name]
        assert spec.needs_validation and not spec.deferred_reweighting
        assert {"cdb_prior", "cdb_difficulty", "cdb_momentum", "cdb_max_ratio"} <= set(spec.reads)
    config = TrainConfig(dataset="synthetic", loss="cdb_stable", val_per_class=1)
    criterion = LOSSES["cdb_stable"].build_loss(config, torch.tensor([50, 20, 5]))
    assert isinstance(criterion, StableCDBLoss) and criterion.prior == (config.cdb_prior, config.cdb_prior)
    assert (criterion.momentum, criterion.max_ratio) == (config.cdb_momentum, config.cdb_max_ratio)


@pytest.mark.slow
def test_a_stable_run_killed_mid_way_resumes_to_the_same_result(tmp_path, interrupted, tiny_config):
    config = tiny_config(val_per_class=10, loss="cdb_stable", cdb_difficulty="confidence", cdb_momentum=0.5,
                         cdb_max_ratio=8.0)
    data = prepare_data(config, torch.device("cpu"))
    full = train(config, tmp_path / "full", verbose=0, data=data)
    last = full["history"][-1]
    for key in ("cdb_weights", "cdb_tau", "val_class_accuracy", "cdb_class_accuracy", "cdb_target_weights"):
        assert key in last
    assert max(last["cdb_weights"]) / min(last["cdb_weights"]) <= 8.0 * (1 + 1e-6)
    interrupted(train, config, tmp_path / "part", verbose=0, data=data, at=1)
    again = train(config, tmp_path / "part", resume=True, verbose=0, data=data)
    assert again["history"] == full["history"] and again["final"] == full["final"]
