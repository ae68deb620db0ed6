"""Tests for longtail.metrics: hand-computed cases, agreement with scikit-learn, input validation."""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch

sklearn_metrics = pytest.importorskip("sklearn.metrics")

from longtail.metrics import (  # noqa: E402
    ConfusionMeter,
    accuracy,
    balanced_accuracy,
    classification_report,
    confusion_matrix,
    macro_f1,
    per_class_accuracy,
    report_from_confusion,
    shot_accuracy,
    shot_groups,
    top_k_accuracy,
)

# 3 classes, 6 samples.  true 0: predicted 0, 0, 1; true 1: predicted 1, 2; true 2: predicted 2.
TARGETS = torch.tensor([0, 0, 0, 1, 1, 2])
PREDS = torch.tensor([0, 0, 1, 1, 2, 2])
CM = [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


@contextlib.contextmanager
def _quiet_sklearn() -> Iterator[None]:
    """Let sklearn's own warnings (e.g. 'y_pred contains classes not in y_true') pass silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _one_hot_scores(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, num_classes).float() * 3.0 - 1.0


# ---------------------------------------------------------------------------------------------------------------
# Hand-computed examples
# ---------------------------------------------------------------------------------------------------------------


def test_confusion_matrix_hand_example() -> None:
    cm = confusion_matrix(PREDS, TARGETS, 3)
    assert cm.dtype == torch.int64 and cm.device.type == "cpu"
    assert cm.tolist() == CM


def test_scores_and_labels_give_same_result() -> None:
    scores = _one_hot_scores(PREDS, 3)
    assert confusion_matrix(scores, TARGETS, 3).tolist() == CM
    assert accuracy(scores, TARGETS, 3) == accuracy(PREDS, TARGETS, 3)


def test_scalar_metrics_hand_example() -> None:
    assert accuracy(PREDS, TARGETS, 3) == pytest.approx(4 / 6)
    acc = per_class_accuracy(PREDS, TARGETS, 3)
    assert acc.dtype == torch.float64
    assert acc.tolist() == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert balanced_accuracy(PREDS, TARGETS, 3) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # F1 per class: c0 tp2 fp0 fn1 -> 4/5; c1 tp1 fp1 fn1 -> 1/2; c2 tp1 fp1 fn0 -> 2/3
    assert macro_f1(PREDS, TARGETS, 3) == pytest.approx((4 / 5 + 1 / 2 + 2 / 3) / 3)


def test_per_class_accuracy_nan_for_class_without_test_samples() -> None:
    acc = per_class_accuracy(torch.tensor([0, 2, 1]), torch.tensor([0, 0, 1]), 3)
    assert acc[0] == 0.5 and acc[1] == 1.0 and math.isnan(acc[2])
    # class 2 was predicted but never true: ignored by balanced accuracy (= sklearn)
    assert balanced_accuracy(torch.tensor([0, 2, 1]), torch.tensor([0, 0, 1]), 3) == pytest.approx(0.75)


def test_top_k_hand_example() -> None:
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    targets = torch.tensor([2, 0, 0, 2])
    assert top_k_accuracy(logits, targets, 1) == 0.25
    assert top_k_accuracy(logits, targets, 2) == 0.5
    assert top_k_accuracy(logits, targets, 3) == 1.0


def test_accepts_numpy_and_lists() -> None:
    assert confusion_matrix(PREDS.numpy(), TARGETS.tolist(), 3).tolist() == CM


def test_float_and_int_dtypes_of_inputs() -> None:
    assert confusion_matrix(PREDS.to(torch.int32), TARGETS.to(torch.uint8), 3).tolist() == CM
    assert accuracy(_one_hot_scores(PREDS, 3).double(), TARGETS, 3) == pytest.approx(4 / 6)


# ---------------------------------------------------------------------------------------------------------------
# Agreement with scikit-learn
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_sklearn_random(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    c = 7
    n = int(torch.randint(1, 200, (1,), generator=g))
    logits = torch.randn(n, c, generator=g)
    targets = torch.randint(0, c, (n,), generator=g)
    y, p = targets.numpy(), logits.argmax(1).numpy()
    labels = list(range(c))
    assert confusion_matrix(logits, targets, c).numpy().tolist() == sklearn_metrics.confusion_matrix(
        y, p, labels=labels
    ).tolist()
    assert accuracy(logits, targets, c) == pytest.approx(sklearn_metrics.accuracy_score(y, p))
    with _quiet_sklearn():
        expected_bal = sklearn_metrics.balanced_accuracy_score(y, p)
    assert balanced_accuracy(logits, targets, c) == pytest.approx(expected_bal)
    assert macro_f1(logits, targets, c) == pytest.approx(
        sklearn_metrics.f1_score(y, p, average="macro", zero_division=0)
    )
    for k in (1, 3, 5):
        expected = sklearn_metrics.top_k_accuracy_score(y, logits.numpy(), k=k, labels=labels)
        assert top_k_accuracy(logits, targets, k) == pytest.approx(expected)


def test_macro_f1_with_never_predicted_and_never_true_classes_matches_sklearn() -> None:
    # class 1 is never predicted, class 3 is predicted but never true, class 4 appears nowhere
    y = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    p = np.array([0, 2, 0, 2, 2, 3, 2, 0])
    expected = sklearn_metrics.f1_score(y, p, average="macro", zero_division=0)
    assert macro_f1(torch.from_numpy(p), torch.from_numpy(y), 5) == pytest.approx(expected)
    with _quiet_sklearn():
        expected_bal = sklearn_metrics.balanced_accuracy_score(y, p)
    assert balanced_accuracy(torch.from_numpy(p), torch.from_numpy(y), 5) == pytest.approx(expected_bal)


def test_sklearn_agreement_with_many_missing_classes() -> None:
    g = torch.Generator().manual_seed(123)
    c = 50
    targets = torch.randint(0, 10, (300,), generator=g)  # only 10 of 50 classes occur in targets
    preds = torch.randint(0, 20, (300,), generator=g)
    y, p = targets.numpy(), preds.numpy()
    with _quiet_sklearn():
        expected_bal = sklearn_metrics.balanced_accuracy_score(y, p)
    assert balanced_accuracy(preds, targets, c) == pytest.approx(expected_bal)
    expected_f1 = sklearn_metrics.f1_score(y, p, average="macro", zero_division=0)
    assert macro_f1(preds, targets, c) == pytest.approx(expected_f1)


# ---------------------------------------------------------------------------------------------------------------
# Shot groups
# ---------------------------------------------------------------------------------------------------------------


def test_shot_groups_boundaries() -> None:
    counts = [500, 101, 100, 50, 20, 19, 0]
    assert shot_groups(counts) == {"many": [0, 1], "medium": [2, 3, 4], "few": [5, 6]}
    assert shot_groups(counts, many_threshold=400, few_threshold=60) == {
        "many": [0],
        "medium": [1, 2],
        "few": [3, 4, 5, 6],
    }


def test_shot_accuracy_from_per_class_and_from_preds() -> None:
    counts = torch.tensor([1000, 200, 50, 30, 5])
    acc = torch.tensor([0.9, 0.7, 0.5, 0.3, 0.1], dtype=torch.float64)
    out = shot_accuracy(acc, counts)
    assert out == pytest.approx({"many": 0.8, "medium": 0.4, "few": 0.1})

    # preds form: class c has 10 test samples of which 10 - 2c are right
    targets = torch.arange(5).repeat_interleave(10)
    preds = targets.clone()
    for c in range(5):
        wrong = (c + 1) % 5
        preds[c * 10 : c * 10 + 2 * c] = wrong
    out = shot_accuracy(preds, counts, targets=targets)
    assert out == pytest.approx({"many": (1.0 + 0.8) / 2, "medium": (0.6 + 0.4) / 2, "few": 0.2})


def test_shot_accuracy_empty_group_is_nan_and_report_gives_none() -> None:
    counts = [6000, 3000, 500, 200, 60]  # Fashion-MNIST-LT-like: no class below 20
    acc = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5], dtype=torch.float64)
    out = shot_accuracy(acc, counts)
    assert out["many"] == pytest.approx(0.75) and out["medium"] == pytest.approx(0.5)
    assert math.isnan(out["few"])
    # raising the thresholds fills the groups
    out = shot_accuracy(acc, counts, many_threshold=1000, few_threshold=100)
    assert out == pytest.approx({"many": 0.85, "medium": 0.65, "few": 0.5})

    targets = torch.arange(5)
    report = classification_report(targets, targets, 5, train_counts=counts)
    assert report["shot_accuracy"] == {"many": 1.0, "medium": 1.0, "few": None}
    assert report["shot_num_classes"] == {"many": 4, "medium": 1, "few": 0}
    json.dumps(report, allow_nan=False)


def test_shot_accuracy_ignores_classes_without_test_samples() -> None:
    acc = torch.tensor([1.0, float("nan"), float("nan")], dtype=torch.float64)
    out = shot_accuracy(acc, [500, 500, 5])
    assert out["many"] == 1.0 and math.isnan(out["few"]) and math.isnan(out["medium"])


# ---------------------------------------------------------------------------------------------------------------
# Report and meter
# ---------------------------------------------------------------------------------------------------------------


def test_classification_report_contents_and_json() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(100, 6, generator=g)
    targets = torch.randint(0, 6, (100,), generator=g)
    counts = [500, 200, 80, 40, 10, 3]
    r = classification_report(logits, targets, 6, counts, top_k=(1, 3))
    assert r["num_samples"] == 100 and r["num_classes"] == 6
    assert r["accuracy"] == pytest.approx(accuracy(logits, targets, 6))
    assert r["top_k_accuracy"]["1"] == pytest.approx(r["accuracy"])
    assert r["top_k_accuracy"]["3"] == pytest.approx(top_k_accuracy(logits, targets, 3))
    assert r["balanced_accuracy"] == pytest.approx(balanced_accuracy(logits, targets, 6))
    assert r["macro_f1"] == pytest.approx(macro_f1(logits, targets, 6))
    assert r["per_class_accuracy"] == pytest.approx(per_class_accuracy(logits, targets, 6).tolist())
    assert r["per_class_support"] == torch.bincount(targets, minlength=6).tolist()
    assert r["confusion_matrix"] == confusion_matrix(logits, targets, 6).tolist()
    assert r["shot_accuracy"] == pytest.approx(shot_accuracy(logits, counts, targets=targets))
    text = json.dumps(r, allow_nan=False)
    assert json.loads(text) == r
    for v in r.values():
        assert not isinstance(v, torch.Tensor)


def test_report_replaces_nan_per_class_with_none() -> None:
    r = classification_report(torch.tensor([0, 1]), torch.tensor([0, 0]), 3, include_confusion=False)
    assert r["per_class_accuracy"] == [0.5, None, None]
    assert "confusion_matrix" not in r
    json.dumps(r, allow_nan=False)


def test_meter_matches_functional_over_batches() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(250, 8, generator=g)
    targets = torch.randint(0, 8, (250,), generator=g)
    meter = ConfusionMeter(8, top_k=(1, 5))
    assert meter.compute().tolist() == [[0] * 8] * 8
    for i in range(0, 250, 64):
        meter.update(logits[i : i + 64], targets[i : i + 64])
    meter.update(torch.empty(0, 8), torch.empty(0, dtype=torch.long))  # empty batch is a no-op
    assert meter.num_samples == 250
    assert torch.equal(meter.compute(), confusion_matrix(logits, targets, 8))
    counts = [900, 400, 150, 90, 60, 30, 15, 5]
    expected = classification_report(logits, targets, 8, counts, top_k=(1, 5))
    got = meter.report(train_counts=counts)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value), key
        else:
            assert got[key] == value, key
    meter.reset()
    assert meter.num_samples == 0


def test_meter_accepts_labels_and_merge() -> None:
    a, b = ConfusionMeter(3), ConfusionMeter(3)
    a.update(PREDS[:3], TARGETS[:3])
    b.update(PREDS[3:], TARGETS[3:])
    a.merge(b)
    assert a.compute().tolist() == CM
    assert a.report()["accuracy"] == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="num_classes=3"):
        a.merge(ConfusionMeter(4))


def test_meter_compute_returns_a_copy() -> None:
    m = ConfusionMeter(3)
    m.update(PREDS, TARGETS)
    cm = m.compute()
    cm += 100
    assert m.compute().tolist() == CM


def test_meter_top_k_needs_scores() -> None:
    m = ConfusionMeter(3, top_k=(2,))
    with pytest.raises(ValueError, match=r"preds must be scores of shape \(N, C\) .* top_k=\[2\]; got predicted labels"):
        m.update(PREDS, TARGETS)
    assert m.num_samples == 0  # a failed update changes nothing
    with pytest.raises(ValueError, match=r"top_k\[0\] must be an integer in \[1, 3\] \(k <= num_classes\); got 4"):
        ConfusionMeter(3, top_k=(4,))
    with pytest.raises(TypeError, match="top_k must be a sequence of integers"):
        ConfusionMeter(3, top_k=2)  # type: ignore[arg-type]


def test_meter_is_the_cdb_counter_and_takes_arrays() -> None:
    from longtail.difficulty import ClassDifficulty

    assert issubclass(ClassDifficulty, ConfusionMeter)
    m = ConfusionMeter(3)
    m.update(PREDS.numpy(), TARGETS.tolist())  # converted like the functional metrics' inputs
    assert m.compute().tolist() == CM


def test_functional_metrics_ignore_no_label() -> None:
    # The meter skips ignore_index (-100 by default); the functional metrics count every sample, so -100 is an error.
    with pytest.raises(ValueError, match=r"target labels must be in \[0, 2\]; got label -100"):
        accuracy(PREDS, torch.tensor([0, 0, 0, 1, 1, -100]), 3)
    m = ConfusionMeter(3)
    m.update(PREDS, torch.tensor([0, 0, 0, 1, 1, -100]))
    assert m.num_samples == 5


def test_meter_all_reduce_single_process(tmp_path: object) -> None:
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    m = ConfusionMeter(3, top_k=(2,))
    assert m.all_reduce() is m and m.num_samples == 0  # no process group: a no-op
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    try:
        m.update(logits, TARGETS)
        assert m.all_reduce() is m
        assert torch.equal(m.compute(), confusion_matrix(logits, TARGETS, 3))
        assert m.report()["top_k_accuracy"]["2"] == pytest.approx(top_k_accuracy(logits, TARGETS, 2))
        empty = ConfusionMeter(3, top_k=(2,))
        empty.all_reduce()  # a rank without batches contributes zeros and ends up with the sum
        assert empty.num_samples == 0
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


def test_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match=r"preds must be .* predicted labels of the targets' shape \(6,\); got \(5,\)"):
        accuracy(PREDS[:5], TARGETS, 3)
    with pytest.raises(ValueError, match=r"scores for targets of shape \(6,\) must have shape \(6, 3\); got \(3, 3\)"):
        top_k_accuracy(torch.randn(3, 3), TARGETS, 2)


def test_wrong_number_of_score_columns() -> None:
    with pytest.raises(ValueError, match=r"scores for targets of shape \(6,\) must have shape \(6, 3\); got \(6, 4\)"):
        confusion_matrix(torch.randn(6, 4), TARGETS, 3)
    with pytest.raises(ValueError, match=r"logits must have num_classes=4 columns; got shape \(6, 3\)"):
        top_k_accuracy(torch.randn(6, 3), TARGETS, 1, num_classes=4)


def test_labels_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"target labels must be in \[0, 2\]; got label 3"):
        accuracy(PREDS, torch.tensor([0, 0, 0, 1, 1, 3]), 3)
    with pytest.raises(ValueError, match=r"predicted labels must be in \[0, 2\]; got label -1"):
        accuracy(torch.tensor([-1, 0, 1, 1, 2, 2]), TARGETS, 3)
    with pytest.raises(ValueError, match=r"target labels must be in \[0, 2\]; got label 5"):
        top_k_accuracy(torch.randn(6, 3), torch.tensor([0, 0, 0, 1, 1, 5]), 2)


def test_bad_shapes_and_dtypes() -> None:
    with pytest.raises(ValueError, match=r"targets must have shape \(N,\); got \(6, 1\)"):
        accuracy(PREDS, TARGETS[:, None], 3)
    with pytest.raises(ValueError, match=r"preds must be scores of shape \(N, C\) or labels of shape \(N,\); got \(2, 3,"):
        accuracy(torch.randn(2, 3, 1), TARGETS[:2], 3)
    with pytest.raises(TypeError, match="predicted labels must be integers; got dtype torch.float32"):
        accuracy(PREDS.float(), TARGETS, 3)
    with pytest.raises(TypeError, match="targets must hold integer class indices; got dtype torch.float32"):
        accuracy(PREDS, TARGETS.float(), 3)
    with pytest.raises(TypeError, match="preds must be a tensor, numpy array or list; got str"):
        accuracy("012", TARGETS, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="num_classes must be an integer; got float 3.0"):
        accuracy(PREDS, TARGETS, 3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1; got 0"):
        confusion_matrix(PREDS, TARGETS, 0)


def test_top_k_errors() -> None:
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 3\] \(k <= num_classes\); got 4"):
        top_k_accuracy(torch.randn(6, 3), TARGETS, 4)
    with pytest.raises(TypeError, match="k must be an integer; got float 1.0"):
        top_k_accuracy(torch.randn(6, 3), TARGETS, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"logits must be scores of shape \(N, C\) \(top-k needs a ranking"):
        top_k_accuracy(PREDS, TARGETS, 1)
    with pytest.raises(ValueError, match=r"preds must be scores of shape \(N, C\) for top_k=\[2\]; got labels"):
        classification_report(PREDS, TARGETS, 3, top_k=(2,))
    with pytest.raises(ValueError, match=r"top_k\[1\] must be an integer in \[1, 3\]"):
        classification_report(torch.randn(6, 3), TARGETS, 3, top_k=(1, 0))


def test_empty_inputs() -> None:
    empty_t = torch.empty(0, dtype=torch.long)
    assert confusion_matrix(empty_t, empty_t, 3).sum() == 0
    for fn in (accuracy, balanced_accuracy, macro_f1):
        with pytest.raises(ValueError, match="zero samples"):
            fn(empty_t, empty_t, 3)
    with pytest.raises(ValueError, match="zero samples"):
        ConfusionMeter(3).report()


def test_shot_argument_errors() -> None:
    acc = torch.tensor([0.5, 0.5])
    with pytest.raises(ValueError, match=r"train_counts must have shape \(2,\), one count per class; got \(3,\)"):
        shot_accuracy(acc, [10, 20, 30])
    with pytest.raises(ValueError, match="few_threshold must be <= many_threshold=10; got few_threshold=50"):
        shot_accuracy(acc, [10, 20], many_threshold=10, few_threshold=50)
    with pytest.raises(ValueError, match="many_threshold must be a number; got NaN"):
        shot_groups([10, 20], many_threshold=float("nan"))
    with pytest.raises(ValueError, match="train_counts must be non-negative; got -1 for class 0"):
        shot_accuracy(acc, [-1, 20])
    with pytest.raises(TypeError, match="train_counts must hold whole numbers"):
        shot_groups([10, 2.5])
    with pytest.raises(TypeError, match="pass targets="):
        shot_accuracy(torch.tensor([0, 1]), [10, 20])
    with pytest.raises(ValueError, match="num_classes must be None without targets="):
        shot_accuracy(acc, [10, 20], num_classes=2)
    with pytest.raises(ValueError, match=r"confusion must be a square \(C, C\) matrix with C >= 1; got shape \(2, 3\)"):
        report_from_confusion(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="confusion must hold integer counts; got dtype torch.float32"):
        report_from_confusion(torch.eye(2))
    with pytest.raises(ValueError, match="confusion must be non-negative counts; got minimum -1"):
        report_from_confusion([[1, -1], [0, 1]])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs_give_cpu_results() -> None:
    logits = torch.randn(64, 5, device="cuda")
    targets = torch.randint(0, 5, (64,), device="cuda")
    cm = confusion_matrix(logits, targets, 5)
    assert cm.device.type == "cpu"
    assert torch.equal(cm, confusion_matrix(logits.cpu(), targets.cpu(), 5))
    meter = ConfusionMeter(5, top_k=(2,))
    meter.update(logits, targets)
    assert meter.report()["top_k_accuracy"]["2"] == pytest.approx(top_k_accuracy(logits.cpu(), targets.cpu(), 2))
