"""CDB loss (Sinha et al., ACCV 2020): weights, dynamic tau, per-class accuracy, the loss module, a short training run."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from longtail.difficulty import ClassDifficulty, TrainingDifficultyEMA
from longtail.functional import class_balanced_loss, focal_loss
from longtail.losses.cdb import CDBLoss
from longtail.weights import cdb_weights, dynamic_tau

NAN = float("nan")
ACC = [0.9, 0.6, 0.3]  # the 3-class example: difficulties [0.1, 0.4, 0.7]


def _hand_weights(acc, tau):
    """w_c = C d_c**tau / sum_k d_k**tau with the math module only."""
    raw = [(1.0 - a) ** tau for a in acc]
    return [len(acc) * r / sum(raw) for r in raw]


def _hand_dynamic_tau(acc):
    b = max(acc) / (min(acc) + 0.01) - 1.0
    return 2.0 / (1.0 + math.exp(-b))


# --- formulas against hand-computed values -------------------------------------------------------


def test_fixed_tau_weights_hand_computed():
    got = cdb_weights(ACC, tau=1.5, dtype=torch.float64)
    assert got.tolist() == pytest.approx(_hand_weights(ACC, 1.5), rel=1e-14)
    # By hand: d**1.5 = [0.0316228, 0.2529822, 0.5856620], sum 0.8702670, times 3 / sum:
    assert got.tolist() == pytest.approx([0.1090106, 0.8720848, 2.0189046], abs=1e-7)
    assert float(got.sum()) == pytest.approx(3.0, rel=1e-15)


def test_dynamic_tau_hand_computed():
    # b = 0.9 / (0.3 + 0.01) - 1 = 1.9032258; tau = 2 / (1 + exp(-b)) = 1.7405124.
    assert dynamic_tau(ACC) == pytest.approx(_hand_dynamic_tau(ACC), rel=1e-15)
    assert dynamic_tau(ACC) == pytest.approx(1.7405124, abs=1e-7)
    got = cdb_weights(ACC, tau="dynamic", dtype=torch.float64)
    assert got.tolist() == pytest.approx(_hand_weights(ACC, _hand_dynamic_tau(ACC)), rel=1e-14)
    assert got.tolist() == pytest.approx([0.0718745, 0.8025416, 2.1255840], abs=1e-7)
    # Explicit tau equal to the dynamic one gives the same weights.
    torch.testing.assert_close(got, cdb_weights(ACC, tau=dynamic_tau(ACC), dtype=torch.float64), rtol=0, atol=0)


def test_dynamic_tau_is_the_paper_form_not_the_cifar_class_form():
    # The official CIFAR loss class uses sigmoid(max / (min + 0.01)) = 0.948 here, range [0.5, 1).
    cifar_form = 1.0 / (1.0 + math.exp(-0.9 / 0.31))
    assert cifar_form == pytest.approx(0.9480057, abs=1e-7)
    assert dynamic_tau(ACC) > 1.7


def test_dynamic_tau_range_ends():
    assert dynamic_tau([0.0, 0.0]) == pytest.approx(2.0 / (1.0 + math.e), rel=1e-15)  # b = -1: 0.5379
    assert dynamic_tau([1.0, 0.0]) == 2.0  # b = 99, 2 sigmoid(99) rounds to 2 in float64
    assert dynamic_tau([0.7]) == pytest.approx(2.0 / (1.0 + math.exp(0.01 / 0.71)), rel=1e-15)


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12))
def test_dynamic_tau_stays_in_range_and_grows_with_the_spread(acc):
    tau = dynamic_tau(acc)
    assert 2.0 / (1.0 + math.e) - 1e-12 <= tau <= 2.0
    if max(acc) == min(acc):
        assert tau < 1.0


def test_dynamic_tau_ignores_classes_with_no_measurement():
    assert dynamic_tau([0.9, NAN, 0.3]) == dynamic_tau([0.9, 0.3])
    with pytest.raises(ValueError, match="at least one measured class; got NaN for every class"):
        dynamic_tau([NAN, NAN])


@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12),
    st.sampled_from([0.5, 1.0, 1.5, 2.0, 5.0, "dynamic"]),
    st.sampled_from([0.0, 0.05]),
)
def test_weights_sum_to_c_and_follow_difficulty(acc, tau, floor):
    w = cdb_weights(acc, tau, floor=floor, dtype=torch.float64)
    assert torch.isfinite(w).all() and (w >= 0).all()
    assert float(w.sum()) == pytest.approx(len(acc), rel=1e-12)
    order = np.argsort(acc, kind="stable")  # easiest last
    a = np.asarray(acc)[order]
    sorted_w = w.numpy()[order]
    # A harder class never gets less weight than an easier one.
    assert all(sorted_w[i] >= sorted_w[i + 1] - 1e-12 for i in range(len(a) - 1) if a[i] < a[i + 1])


@pytest.mark.parametrize("kind", ["list", "numpy", "tensor32", "tensor64"])
def test_accepts_lists_arrays_and_tensors(kind):
    value = {
        "list": ACC,
        "numpy": np.array(ACC),
        "tensor32": torch.tensor(ACC),
        "tensor64": torch.tensor(ACC, dtype=torch.float64),
    }[kind]
    expected = torch.tensor(_hand_weights(ACC, 1.5), dtype=torch.float32)
    torch.testing.assert_close(cdb_weights(value, 1.5), expected, rtol=1e-6, atol=1e-7)


# --- edge cases ----------------------------------------------------------------------------------


def test_perfect_class_gets_weight_zero_by_the_formula():
    w = cdb_weights([1.0, 0.5, 0.5], tau=1.0)
    assert w.tolist() == [0.0, 1.5, 1.5]


def test_floor_keeps_a_perfect_class_in_the_loss():
    # d = max(1 - A, 0.1) = [0.1, 0.5]; w = 2 * [0.1, 0.5] / 0.6.
    w = cdb_weights([1.0, 0.5], tau=1.0, floor=0.1, dtype=torch.float64)
    assert w.tolist() == pytest.approx([1.0 / 3.0, 5.0 / 3.0], rel=1e-14)
    assert cdb_weights([1.0, 0.2, 0.7], tau=2.0, floor=1.0).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("tau", [0.5, 1.5, 5.0, "dynamic"])
def test_every_class_perfect_gives_uniform_weights(tau):
    w = cdb_weights([1.0, 1.0, 1.0, 1.0], tau)
    assert w.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_equal_accuracies_give_uniform_weights():
    assert cdb_weights([0.4, 0.4, 0.4], tau="dynamic", dtype=torch.float64).tolist() == pytest.approx([1.0] * 3)


def test_absent_class_keeps_its_previous_weight():
    # Class 0 keeps 0.6; classes 1 and 2 share 3 - 0.6 = 2.4 in proportion to d = [0.5, 1.0].
    w = cdb_weights([NAN, 0.5, 0.0], tau=1.0, previous=[0.6, 1.2, 1.2], dtype=torch.float64)
    assert w.tolist() == pytest.approx([0.6, 0.8, 1.6], rel=1e-14)
    # The other measured classes all perfect: they share the rest equally.
    previous = torch.tensor([0.6, 1.2, 1.2], dtype=torch.float64)
    w = cdb_weights([NAN, 1.0, 1.0], tau=1.0, previous=previous, dtype=torch.float64)
    assert w.tolist() == pytest.approx([0.6, 1.2, 1.2], rel=1e-14)


def test_nan_without_previous_is_an_error():
    with pytest.raises(ValueError, match=r"got NaN for classes \[1\].*pass previous="):
        cdb_weights([0.9, NAN, 0.3])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(class_accuracy=[0.5, 1.2]), ValueError, r"must be in \[0, 1\] for every class; got 1.2 for class 1"),
        (dict(class_accuracy=[-0.1, 0.5]), ValueError, r"got -0.1 for class 0"),
        (dict(class_accuracy=[0.5, math.inf]), ValueError, r"got inf for class 1"),
        (dict(class_accuracy=[NAN, NAN], previous=[1.0, 1.0]), ValueError, "at least one measured class"),
        (dict(class_accuracy=[]), ValueError, "at least one class; got an empty class_accuracy"),
        (dict(class_accuracy=[[0.5, 0.5]]), ValueError, r"must be 1-D \(one value per class\); got shape \(1, 2\)"),
        (dict(class_accuracy="0.5"), TypeError, "list, numpy array or tensor; got str"),
        (dict(class_accuracy=torch.tensor([True, False])), TypeError, "real numbers; got dtype torch.bool"),
        (dict(class_accuracy=[0.5, 0.5], previous=[1.0]), ValueError, "previous must have 2 weights, one per class; got 1"),
        (dict(class_accuracy=[0.5, 0.5], previous=[1.0, -1.0]), ValueError, r"finite, non-negative weights; got \[1.0, -1.0\]"),
        (dict(class_accuracy=ACC, tau=0.0), ValueError, "tau must be a positive finite number or 'dynamic'; got 0.0"),
        (dict(class_accuracy=ACC, tau=-1), ValueError, "got -1.0"),
        (dict(class_accuracy=ACC, tau=math.inf), ValueError, "got inf"),
        (dict(class_accuracy=ACC, tau=NAN), ValueError, "tau must be a number; got NaN"),
        (dict(class_accuracy=ACC, tau="auto"), ValueError, "tau must be a positive finite number or 'dynamic'; got 'auto'"),
        (dict(class_accuracy=ACC, tau=None), TypeError, "tau must be a positive finite number or 'dynamic'; got NoneType None"),
        (dict(class_accuracy=ACC, floor=1.5), ValueError, r"floor must be in \[0, 1\]; got 1.5"),
        (dict(class_accuracy=ACC, floor=-0.1), ValueError, r"floor must be in \[0, 1\]; got -0.1"),
    ],
)
def test_weight_errors_name_expected_and_given(kwargs, error, match):
    with pytest.raises(error, match=match):
        cdb_weights(**kwargs)


# --- ClassDifficulty -----------------------------------------------------------------------------


def _loop_reference(preds, targets, num_classes, ignore_index=-100):
    correct, total = [0] * num_classes, [0] * num_classes
    for p, t in zip(preds.reshape(-1).tolist(), targets.reshape(-1).tolist()):
        if t == ignore_index:
            continue
        total[t] += 1
        correct[t] += int(p == t)
    return correct, total


def test_class_difficulty_counts_match_a_loop():
    difficulty = ClassDifficulty(5)
    all_preds, all_targets = [], []
    for _ in range(4):
        logits, y = torch.randn(30, 5), torch.randint(0, 5, (30,))
        y[:3] = -100
        difficulty.update(logits, y)
        all_preds.append(logits.argmax(1))
        all_targets.append(y)
    correct, total = _loop_reference(torch.cat(all_preds), torch.cat(all_targets), 5)
    assert difficulty.correct.dtype == torch.int64 and difficulty.total.dtype == torch.int64
    assert difficulty.correct.tolist() == correct and difficulty.total.tolist() == total
    expected = [c / t for c, t in zip(correct, total)]
    assert difficulty.accuracy().tolist() == pytest.approx(expected, rel=1e-15)
    torch.testing.assert_close(difficulty.difficulty(), 1 - difficulty.accuracy())


def test_class_difficulty_dense_logits_and_labels_agree():
    logits = torch.randn(2, 4, 5, 3)
    y = torch.randint(0, 4, (2, 5, 3))
    y[0, 0, 0] = 255
    from_logits, from_labels = ClassDifficulty(4, ignore_index=255), ClassDifficulty(4, ignore_index=255)
    from_logits.update(logits, y)
    from_labels(logits.argmax(1), y)  # calling the module is update
    correct, total = _loop_reference(logits.argmax(1), y, 4, ignore_index=255)
    assert from_logits.total.tolist() == total and from_logits.correct.tolist() == correct
    assert torch.equal(from_labels.correct, from_logits.correct) and torch.equal(from_labels.total, from_logits.total)
    assert int(from_logits.total.sum()) == 29


def test_class_difficulty_absent_class_is_nan_and_reset_clears():
    difficulty = ClassDifficulty(3)
    difficulty.update(torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1]))
    acc = difficulty.accuracy()
    assert acc.dtype == torch.float64
    assert acc[:2].tolist() == [0.5, 0.5] and math.isnan(acc[2])
    difficulty.update(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))  # an empty batch changes nothing
    assert difficulty.total.tolist() == [2, 2, 0]
    difficulty.reset()
    assert difficulty.total.tolist() == [0, 0, 0] and torch.isnan(difficulty.accuracy()).all()


def test_class_difficulty_all_reduce_without_a_process_group_is_a_no_op():
    difficulty = ClassDifficulty(2)
    difficulty.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    assert difficulty.all_reduce() is difficulty
    assert difficulty.total.tolist() == [2, 0] and difficulty.correct.tolist() == [1, 0]


def test_class_difficulty_ignores_gradients_of_the_logits():
    logits = torch.randn(6, 3, requires_grad=True)
    difficulty = ClassDifficulty(3)
    difficulty.update(logits, torch.randint(0, 3, (6,)))
    assert not difficulty.correct.requires_grad


@pytest.mark.parametrize(
    "preds, targets, error, match",
    [
        (torch.randn(4, 3), torch.tensor([0, 1, 2, 3]), ValueError, r"in \[0, 2\] or equal ignore_index=-100; got label 3"),
        (torch.randn(4, 2), torch.tensor([0, 1, 1, 0]), ValueError, r"targets of shape \(4,\) must have shape \(4, 3\); got \(4, 2\)"),
        (torch.tensor([0, 1]), torch.tensor([0, 1, 2]), ValueError, r"predicted labels of the targets' shape \(3,\); got \(2,\)"),
        (torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), TypeError, "predicted labels must be integers; got dtype torch.float32"),
        (torch.tensor([0, 5]), torch.tensor([0, 1]), ValueError, r"predicted labels must be in \[0, 2\]; got label 5"),
        (torch.randn(2, 3), torch.tensor([0.0, 1.0]), TypeError, "integer class indices; got dtype torch.float32"),
        ("01", torch.tensor([0, 1]), TypeError, "preds must be a tensor, numpy array or list; got str"),
        (torch.randn(2, 3), "01", TypeError, "targets must be a tensor, numpy array or list; got str"),
        (torch.randn(2, 3), torch.tensor(1), ValueError, r"targets must have shape \(N,\) or \(N, d1, ...\); got a 0-d tensor"),
        (torch.randn(2, 3) > 0, torch.tensor([0, 1]), TypeError, "preds must be real scores or integer predicted labels; got dtype torch.bool"),
    ],
)
def test_class_difficulty_errors(preds, targets, error, match):
    with pytest.raises(error, match=match):
        ClassDifficulty(3).update(preds, targets)


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((0,), ValueError, "num_classes must be an integer >= 1; got 0"),
        ((3.0,), TypeError, "num_classes must be an integer; got float 3.0"),
        ((True,), TypeError, "num_classes must be an integer; got bool True"),
        ((3, None), TypeError, "ignore_index must be an integer; got NoneType None"),
    ],
)
def test_class_difficulty_constructor_errors(args, error, match):
    with pytest.raises(error, match=match):
        ClassDifficulty(*args)


# --- the extension: training-batch EMA (not in the paper) ---------------------------------------


def test_training_ema_hand_computed():
    ema = TrainingDifficultyEMA(3, momentum=0.9)
    # batch 1: class 0 has 2 samples, 1 right; class 1 has 1 sample, right; class 2 absent.
    ema.update(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]))
    # batch 2: class 0 one sample right; class 1 two samples, both wrong.
    ema.update(torch.tensor([0, 0, 2]), torch.tensor([0, 1, 1]))
    acc = ema.accuracy()
    assert acc[0] == pytest.approx((0.9 * 1 + 1) / (0.9 * 2 + 1), rel=1e-15)
    assert acc[1] == pytest.approx((0.9 * 1 + 0) / (0.9 * 1 + 2), rel=1e-15)
    assert math.isnan(acc[2])
    ema.reset()
    assert torch.isnan(ema.accuracy()).all()
    assert ema.all_reduce() is ema  # no process group: no-op


def test_training_ema_momentum_zero_is_the_last_batch():
    ema = TrainingDifficultyEMA(2, momentum=0.0)
    ema.update(torch.tensor([0, 0]), torch.tensor([0, 1]))
    ema.update(torch.tensor([1, 1, 1]), torch.tensor([0, 1, 1]))
    assert ema.accuracy().tolist() == [0.0, 1.0]


@pytest.mark.parametrize("momentum, match", [(1.0, r"momentum must be in \[0, 1\); got 1.0"), (-0.5, r"momentum must be in \[0, 1\); got -0.5")])
def test_training_ema_momentum_errors(momentum, match):
    with pytest.raises(ValueError, match=match):
        TrainingDifficultyEMA(3, momentum=momentum)


def test_cdb_loss_updates_from_the_training_ema():
    ema = TrainingDifficultyEMA(3, momentum=0.5)
    ema.update(torch.tensor([0, 0, 0, 2]), torch.tensor([0, 1, 2, 2]))
    criterion = CDBLoss(3, tau=1.0)
    w = criterion.update_from(ema)
    # accuracies [1, 0, 0.5]: d = [0, 1, 0.5], w = 3 * d / 1.5.
    assert w.tolist() == pytest.approx([0.0, 2.0, 1.0], rel=1e-6)


# --- CDBLoss -------------------------------------------------------------------------------------


def test_weights_start_at_one_so_the_first_epoch_is_plain_cross_entropy():
    criterion = CDBLoss(4)
    assert criterion.weight.tolist() == [1.0] * 4
    assert math.isnan(criterion.last_tau) and torch.isnan(criterion.last_accuracy).all()
    assert int(criterion.num_updates) == 0
    z, y = torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 4, (10,))
    torch.testing.assert_close(criterion(z, y), F.cross_entropy(z, y), rtol=1e-14, atol=0)


@pytest.mark.parametrize("tau", [1.5, "dynamic"])
def test_loss_is_official_weighted_cross_entropy(tau):
    criterion = CDBLoss(3, tau=tau)
    w = criterion.update_weights(ACC)
    expected_w = torch.tensor(_hand_weights(ACC, 1.5 if tau == 1.5 else _hand_dynamic_tau(ACC)))
    torch.testing.assert_close(w, expected_w.float(), rtol=1e-6, atol=0)
    z, y = torch.randn(20, 3, dtype=torch.float64), torch.randint(0, 3, (20,))
    y[0] = -100
    w64 = criterion.weight.double()
    official = F.cross_entropy(z, y, weight=w64, reduction="sum") / 19  # the official reduction: / N
    torch.testing.assert_close(criterion(z, y), official, rtol=1e-12, atol=0)
    assert criterion.last_tau.dtype == torch.float64
    assert float(criterion.last_tau) == (1.5 if tau == 1.5 else dynamic_tau(ACC))
    assert criterion.last_accuracy.tolist() == ACC


def test_loss_matches_class_balanced_loss_and_native_reductions():
    for reduction, native in [("weighted_mean", "mean"), ("sum", "sum"), ("none", "none")]:
        criterion = CDBLoss(5, tau=2.0, reduction=reduction)
        criterion.update_weights([0.95, 0.8, 0.5, 0.2, 0.1])
        z, y = torch.randn(3, 5, 4, 4, dtype=torch.float64), torch.randint(0, 5, (3, 4, 4))
        w = criterion.weight.double()
        torch.testing.assert_close(criterion(z, y), F.cross_entropy(z, y, weight=w, reduction=native), rtol=1e-12, atol=1e-14)
        direct = class_balanced_loss(z, y, criterion.weight, loss="softmax", reduction=reduction)
        torch.testing.assert_close(criterion(z, y), direct, rtol=0, atol=0)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_focal_variant_is_focal_loss_with_alpha_equal_to_the_weights(gamma, reduction):
    criterion = CDBLoss(3, tau="dynamic", loss="softmax_focal", gamma=gamma, reduction=reduction)
    criterion.update_weights(ACC)
    z, y = torch.randn(16, 3, dtype=torch.float64) * 2, torch.randint(0, 3, (16,))
    w = criterion.weight.double()
    expected = focal_loss(z, y, weight=w, gamma=gamma, reduction=reduction)
    torch.testing.assert_close(criterion(z, y), expected, rtol=1e-12, atol=1e-14)
    p_y = torch.softmax(z, 1)[torch.arange(16), y]
    direct = -w[y] * (1 - p_y) ** gamma * torch.log(p_y)
    if reduction != "none":
        direct = direct.sum() / (16 if reduction == "mean" else 1)
    torch.testing.assert_close(criterion(z, y), direct, rtol=1e-10, atol=1e-14)


def test_weights_are_constants_of_the_loss():
    criterion = CDBLoss(4, tau=1.0, loss="softmax_focal", gamma=1.0)
    criterion.update_weights([0.9, 0.5, 0.4, 0.1])
    assert list(criterion.parameters()) == [] and not criterion.weight.requires_grad
    z = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    criterion.double()(z, torch.tensor([0, 1, 2, 3, -100, 1])).backward()
    assert criterion.weight.grad is None


def test_absent_class_keeps_its_weight_in_the_module():
    criterion = CDBLoss(3, tau=1.0)
    first = criterion.update_weights([0.8, 0.5, 0.2])  # d = [0.2, 0.5, 0.8] -> [0.4, 1.0, 1.6]
    assert first.tolist() == pytest.approx([0.4, 1.0, 1.6], rel=1e-6)
    second = criterion.update_weights(torch.tensor([0.5, NAN, 0.0], dtype=torch.float64))
    # Class 1 keeps 1.0; classes 0 and 2 share 2.0 in proportion to d = [0.5, 1.0].
    assert second.tolist() == pytest.approx([2.0 / 3.0, 1.0, 4.0 / 3.0], rel=1e-6)
    assert math.isnan(criterion.last_accuracy[1]) and int(criterion.num_updates) == 2
    difficulty = ClassDifficulty(3)
    difficulty.update(torch.tensor([0, 1]), torch.tensor([0, 1]))  # class 2 absent, 0 and 1 perfect
    third = criterion.update_from(difficulty)
    assert third[2] == second[2] and float(third.sum()) == pytest.approx(3.0, rel=1e-6)


def test_floor_in_the_module():
    criterion = CDBLoss(2, tau=1.0, floor=0.1)
    assert criterion.update_weights([1.0, 0.5]).tolist() == pytest.approx([1.0 / 3.0, 5.0 / 3.0], rel=1e-6)


def test_state_dict_round_trip_resumes_with_the_same_weights():
    criterion = CDBLoss(4, tau="dynamic", loss="softmax_focal", gamma=2.0)
    criterion.update_weights([0.9, 0.7, 0.2, 0.05])
    criterion.update_weights([0.95, NAN, 0.4, 0.1])
    state = criterion.state_dict()
    assert set(state) == {"weight", "last_tau", "last_accuracy", "num_updates"}
    assert state["last_tau"].dtype == torch.float64 and state["last_accuracy"].shape == (4,)
    resumed = CDBLoss(4, tau="dynamic", loss="softmax_focal", gamma=2.0)
    resumed.load_state_dict(state)
    for name in state:
        torch.testing.assert_close(getattr(resumed, name), getattr(criterion, name), rtol=0, atol=0, equal_nan=True)
    z, y = torch.randn(12, 4), torch.randint(0, 4, (12,))
    assert torch.equal(resumed(z, y), criterion(z, y))
    # The next update depends on the stored weights (class 2 absent keeps its weight): still identical.
    nxt = [0.99, 0.8, NAN, 0.3]
    assert torch.equal(resumed.update_weights(nxt), criterion.update_weights(nxt))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(loss="focal"), ValueError, "loss must be one of 'softmax', 'softmax_focal'; got 'focal'"),
        (dict(gamma=2.0), ValueError, "gamma is used only with loss='softmax_focal'; got gamma=2.0 with loss='softmax'"),
        (dict(loss="softmax_focal", gamma=-1.0), ValueError, r"gamma must be in \[0, inf\]; got -1.0"),
        (dict(reduction="avg"), ValueError, "reduction must be one of 'mean', 'weighted_mean', 'sum', 'none'; got 'avg'"),
        (dict(tau="auto"), ValueError, "tau must be a positive finite number or 'dynamic'; got 'auto'"),
        (dict(tau=0), ValueError, "tau must be a positive finite number or 'dynamic'; got 0.0"),
        (dict(floor=2.0), ValueError, r"floor must be in \[0, 1\]; got 2.0"),
        (dict(num_classes=0), ValueError, "num_classes must be an integer >= 1; got 0"),
        (dict(ignore_index=1.5), TypeError, "ignore_index must be an integer; got float 1.5"),
    ],
)
def test_cdb_loss_constructor_errors(kwargs, error, match):
    args = dict(num_classes=3)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        CDBLoss(**args)


def test_cdb_loss_update_errors():
    criterion = CDBLoss(3)
    with pytest.raises(ValueError, match="class_accuracy must have 3 values, one per class; got 2"):
        criterion.update_weights([0.5, 0.5])
    with pytest.raises(ValueError, match=r"in \[0, 1\] for every class; got 1.5 for class 2"):
        criterion.update_weights([0.5, 0.5, 1.5])
    with pytest.raises(ValueError, match="at least one measured class"):
        criterion.update_from(ClassDifficulty(3))  # never updated: every class NaN
    with pytest.raises(TypeError, match="ClassDifficulty or an object with an accuracy\\(\\) method; got list"):
        criterion.update_from([0.5, 0.5, 0.5])
    assert criterion.weight.tolist() == [1.0, 1.0, 1.0] and int(criterion.num_updates) == 0  # failed updates change nothing


@pytest.mark.slow
def test_inductor_compiled_value_and_gradient_match_eager():
    torch._dynamo.reset()
    criterion = CDBLoss(3, tau=1.5, loss="softmax_focal", gamma=2.0)
    criterion.update_weights(ACC)
    compiled = torch.compile(criterion, fullgraph=True)
    z, y = torch.randn(16, 3, requires_grad=True), torch.randint(0, 3, (16,))
    eager = criterion(z, y)
    (g_eager,) = torch.autograd.grad(eager, z)
    out = compiled(z, y)
    (g_compiled,) = torch.autograd.grad(out, z)
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(g_compiled, g_eager)


# --- a short training run on synthetic long-tailed data ------------------------------------------


def _blobs(counts, gen):
    """Three overlapping 2-D Gaussian blobs, ``counts[c]`` points of class c."""
    centers = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.7]])
    x = torch.cat([centers[c] + torch.randn(n, 2, generator=gen) for c, n in enumerate(counts)])
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return x, y


def _train(use_cdb, epochs=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x, y = _blobs([500, 100, 20], gen)
    x_val, y_val = _blobs([100, 100, 100], gen)  # balanced, never trained on
    torch.manual_seed(seed)
    model = nn.Linear(2, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    criterion = CDBLoss(3, tau="dynamic", floor=0.1)
    difficulty = ClassDifficulty(3)
    history = []
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), 64):
            batch = order[start : start + 64]
            loss = criterion(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        difficulty.reset()
        with torch.no_grad():
            difficulty.update(model(x_val), y_val)
        if use_cdb:
            criterion.update_from(difficulty)
        history.append((difficulty.accuracy(), criterion.weight.clone()))
    return history


def test_training_run_raises_tail_weights_and_tail_accuracy():
    cdb = _train(use_cdb=True)
    first_acc, first_w = cdb[0]
    # After one epoch of plain CE the head is the easiest class, so the tail classes weigh more.
    assert first_acc[0] > first_acc[1] > first_acc[2]
    assert first_w[2] > first_w[1] > first_w[0]
    assert float(first_w.sum()) == pytest.approx(3.0, rel=1e-6)
    plain = _train(use_cdb=False)
    assert plain[-1][1].tolist() == [1.0, 1.0, 1.0]
    cdb_acc, plain_acc = cdb[-1][0], plain[-1][0]
    # Same data, model and seed: rebalancing by difficulty trades head accuracy for the tail's.
    assert cdb_acc[2] > plain_acc[2] + 0.1
    assert float(cdb_acc.mean()) > float(plain_acc.mean())


# --- large tau: the limit, not uniform weights -----------------------------------------------------


def test_huge_tau_puts_all_the_weight_on_the_hardest_class():
    # 0.9**1e6 underflows to 0 for every class: the weights were uniform [1, 1, 1] instead of the limit.
    assert cdb_weights([0.9, 0.5, 0.1], tau=1e6).tolist() == [0.0, 0.0, 3.0]
    assert cdb_weights([0.9, 0.1, 0.1], tau=1e6).tolist() == [0.0, 1.5, 1.5]  # ties share
    assert cdb_weights([0.3, 0.3, 0.3, 0.3], tau=1e6).tolist() == [1.0, 1.0, 1.0, 1.0]
    assert cdb_weights([1.0, 0.5, 0.5], tau=1e6).tolist() == [0.0, 1.5, 1.5]  # a perfect class keeps weight 0
    assert cdb_weights([0.95, 0.5, 0.1], tau=1.7e308).tolist() == [0.0, 0.0, 3.0]  # near the float64 maximum
    # With previous, an absent class keeps its weight and the hardest measured class takes the rest.
    got = cdb_weights([NAN, 0.5, 0.1], tau=1e6, previous=[0.6, 1.2, 1.2], dtype=torch.float64)
    assert got.tolist() == pytest.approx([0.6, 0.0, 2.4], rel=1e-12)
    # floor clamps the difficulty: two classes at the floor tie below the hardest.
    assert cdb_weights([0.99, 0.98, 0.5], tau=1e6, floor=0.05).tolist() == [0.0, 0.0, 3.0]


def test_weight_of_the_hardest_class_grows_continuously_with_tau():
    acc = [0.9, 0.6, 0.3]
    hardest = []
    for tau in [1, 10, 100, 300, 310, 320, 400, 1000, 1e6, 1e300]:
        w = cdb_weights(acc, tau=tau, dtype=torch.float64)
        assert bool(torch.isfinite(w).all()) and float(w.sum()) == pytest.approx(3.0, rel=1e-12)
        assert w.tolist() == pytest.approx(_hand_weights_log(acc, tau), rel=1e-9, abs=1e-300)
        hardest.append(float(w[2]))
    assert hardest == sorted(hardest) and hardest[-1] == 3.0


def _hand_weights_log(acc, tau):
    """The same weights by math in log space: w_c = C exp(tau (log d_c - max log d))/sum."""
    logs = [math.log(1.0 - a) for a in acc]
    top = max(logs)
    raw = [math.exp(tau * (v - top)) for v in logs]
    return [len(acc) * r / sum(raw) for r in raw]


@pytest.mark.parametrize("tau", [0.5, 1.0, 1.5, 2.0, 5.0, "dynamic"])
def test_ordinary_tau_results_are_unchanged_bit_for_bit(tau):
    acc = torch.tensor([0.9, 0.6, 0.3, 0.75, 0.05], dtype=torch.float64)
    t = dynamic_tau(acc) if tau == "dynamic" else tau
    raw = (1.0 - acc).pow(t)
    expected = raw * (5.0 / float(raw.sum()))
    assert torch.equal(cdb_weights(acc, tau=tau, dtype=torch.float64), expected)
