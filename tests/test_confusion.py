"""longtail.confusion: the one per-class counter (kernel, meter, collective) of the metrics and the CDB loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from longtail.difficulty import ClassDifficulty
from longtail.confusion import all_reduce_sum, confusion_counts, top_k_counts
from longtail.metrics import ConfusionMeter
from longtail.losses.cdb import CDBLoss
from longtail.metrics import classification_report


def _loop_confusion(pred_labels, targets, num_classes, ignore_index=-100):
    cm = [[0] * num_classes for _ in range(num_classes)]
    for p, t in zip(pred_labels.reshape(-1).tolist(), targets.reshape(-1).tolist()):
        if t != ignore_index:
            cm[t][p] += 1
    return cm


def _loop_top_k(scores, targets, ks, ignore_index=-100):
    """Top-k hits with one Python loop over positions; ``scores`` ``(N, C, ...)`` moved to the last dim."""
    flat = scores.movedim(1, -1).reshape(-1, scores.shape[1])
    hits = [0] * len(ks)
    for row, t in zip(flat.tolist(), targets.reshape(-1).tolist()):
        if t == ignore_index:
            continue
        order = sorted(range(len(row)), key=lambda c: -row[c])
        for i, k in enumerate(ks):
            hits[i] += int(t in order[:k])
    return hits


def _dense_batch(gen, n=5, c=4, ignore_index=-100):
    logits = torch.randn(n, c, 3, 4, generator=gen)
    targets = torch.randint(0, c, (n, 3, 4), generator=gen)
    targets[torch.rand(n, 3, 4, generator=gen) < 0.2] = ignore_index
    return logits, targets


# --- the kernel ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ignore_index", [-100, 255])
def test_confusion_counts_dense_logits_match_a_loop(ignore_index):
    gen = torch.Generator().manual_seed(0)
    logits, targets = _dense_batch(gen, ignore_index=ignore_index)
    assert (targets == ignore_index).any() and (targets != ignore_index).any()
    cm = confusion_counts(logits, targets, 4, ignore_index=ignore_index)
    assert cm.dtype == torch.int64 and cm.shape == (4, 4) and cm.device == targets.device
    assert cm.tolist() == _loop_confusion(logits.argmax(1), targets, 4, ignore_index)
    assert int(cm.sum()) == int((targets != ignore_index).sum())


def test_confusion_counts_label_inputs_match_a_loop():
    gen = torch.Generator().manual_seed(1)
    preds = torch.randint(0, 6, (40,), generator=gen)
    targets = torch.randint(0, 6, (40,), generator=gen)
    targets[:7] = -100
    expected = _loop_confusion(preds, targets, 6)
    assert confusion_counts(preds, targets, 6).tolist() == expected
    # Dtypes and containers: int32 labels, uint8 targets, numpy arrays and lists.
    kept = targets != -100
    assert confusion_counts(preds.int(), targets.clamp(min=0).to(torch.uint8), 6, ignore_index=None).tolist() == (
        _loop_confusion(preds, targets.clamp(min=0), 6)
    )
    assert confusion_counts(preds.numpy(), targets.tolist(), 6).tolist() == expected
    assert confusion_counts(preds[kept], targets[kept], 6, ignore_index=None).tolist() == expected
    # Labels (N, d1) and scores (N, C, d1) of the same predictions agree.
    dense_t = targets.reshape(8, 5)
    dense_scores = torch.nn.functional.one_hot(preds, 6).float().reshape(8, 5, 6).movedim(-1, 1)
    assert confusion_counts(dense_scores, dense_t, 6).tolist() == expected
    assert confusion_counts(preds.reshape(8, 5), dense_t, 6).tolist() == expected


def test_confusion_counts_empty_batch_and_ignore_none():
    assert confusion_counts(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), 3).tolist() == [[0] * 3] * 3
    with pytest.raises(ValueError, match=r"target labels must be in \[0, 2\]; got label -100"):
        confusion_counts(torch.tensor([0, 1]), torch.tensor([0, -100]), 3, ignore_index=None)


@pytest.mark.parametrize(
    "preds, targets, error, match",
    [
        (torch.tensor([0, 3]), torch.tensor([0, 1]), ValueError, r"predicted labels must be in \[0, 2\]; got label 3"),
        (torch.tensor([0, 1]), torch.tensor([0, 7]), ValueError, r"ignore_index=-100; got label 7"),
        (torch.randn(2, 3, 4), torch.zeros(2, 5, dtype=torch.long), ValueError, r"shape \(2, 3, 5\); got \(2, 3, 4\)"),
        (torch.randn(2, 3), torch.tensor([0.0, 1.0]), TypeError, "targets must hold integer class indices"),
        (torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), TypeError, r"integers; got dtype torch.float32 \(scores must .*\(2, 3\)\)"),
        (None, torch.tensor([0, 1]), TypeError, "preds must be a tensor, numpy array or list; got NoneType"),
    ],
)
def test_confusion_counts_errors(preds, targets, error, match):
    with pytest.raises(error, match=match):
        confusion_counts(preds, targets, 3)


def test_confusion_counts_argument_errors():
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1; got 0"):
        confusion_counts(torch.tensor([0]), torch.tensor([0]), 0)
    with pytest.raises(TypeError, match="ignore_index must be an integer; got float -1.0"):
        confusion_counts(torch.tensor([0]), torch.tensor([0]), 2, ignore_index=-1.0)


@pytest.mark.slow
def test_confusion_counts_compiles_without_graph_breaks():
    # No boolean indexing and no host sync: the only data-dependent check is skipped while tracing.
    torch._dynamo.reset()
    compiled = torch.compile(confusion_counts, fullgraph=True, backend="eager")
    logits, targets = _dense_batch(torch.Generator().manual_seed(2))
    assert torch.equal(compiled(logits, targets, 4), confusion_counts(logits, targets, 4))


@pytest.mark.parametrize("ignore_index", [-100, 2])  # 2: an ignored value that is also a class index
def test_top_k_counts_with_ignore_index_match_a_loop(ignore_index):
    gen = torch.Generator().manual_seed(3)
    logits, targets = _dense_batch(gen, ignore_index=ignore_index)
    hits = top_k_counts(logits, targets, (1, 2, 4), ignore_index=ignore_index)
    assert hits.dtype == torch.int64
    assert hits.tolist() == _loop_top_k(logits, targets, (1, 2, 4), ignore_index)
    assert int(hits[0]) == int(confusion_counts(logits, targets, 4, ignore_index=ignore_index).trace())
    assert int(hits[2]) == int((targets != ignore_index).sum())  # k = C: every counted position
    with pytest.raises(ValueError, match=r"scores must have shape \(N, C\) or \(N, C, d1, ...\)"):
        top_k_counts(targets, targets, (1,))
    with pytest.raises(ValueError, match=r"top_k\[0\] must be an integer in \[1, 4\]"):
        top_k_counts(logits, targets, (5,))


# --- the meter -----------------------------------------------------------------------------------


def test_meter_top_k_with_ignore_index_over_batches():
    gen = torch.Generator().manual_seed(4)
    meter = ConfusionMeter(4, top_k=(1, 3))
    batches = [_dense_batch(gen) for _ in range(3)]
    for logits, targets in batches:
        meter(logits, targets)  # calling the module is update
    logits = torch.cat([b[0] for b in batches])
    targets = torch.cat([b[1] for b in batches])
    assert meter.confusion.tolist() == _loop_confusion(logits.argmax(1), targets, 4)
    assert meter.top_k_hits.tolist() == _loop_top_k(logits, targets, (1, 3))
    assert meter.num_samples == int((targets != -100).sum())
    assert torch.equal(meter.correct, meter.confusion.diagonal()) and torch.equal(meter.total, meter.confusion.sum(1))
    report = meter.report(include_confusion=False)
    assert report["top_k_accuracy"] == {"1": report["accuracy"], "3": meter.top_k_hits[1].item() / meter.num_samples}


def test_meter_report_matches_classification_report():
    gen = torch.Generator().manual_seed(5)
    logits, targets = torch.randn(90, 5, generator=gen), torch.randint(0, 5, (90,), generator=gen)
    meter = ConfusionMeter(5, top_k=(2,))
    meter.update(logits[:40], targets[:40])
    meter.update(logits[40:], targets[40:])
    counts = [300, 120, 60, 25, 5]
    assert meter.report(counts) == classification_report(logits, targets, 5, counts, top_k=(2,))


def test_meter_accuracy_is_cpu_float64_with_nan_for_absent_classes():
    meter = ConfusionMeter(3)
    assert torch.isnan(meter.accuracy()).all()
    meter.update(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]))
    acc = meter.accuracy()
    assert acc.dtype == torch.float64 and acc.device.type == "cpu"
    assert acc[:2].tolist() == [0.5, 1.0] and math.isnan(acc[2])
    meter.reset()
    assert meter.num_samples == 0


def test_meter_state_dict_round_trip_and_dtype_casts_keep_int64():
    meter = ConfusionMeter(3, top_k=(1, 2), ignore_index=7)
    meter.update(torch.randn(10, 3), torch.tensor([0, 1, 2, 7, 0, 1, 2, 7, 0, 1]))
    state = meter.state_dict()
    assert set(state) == {"confusion", "top_k_hits"}
    assert set(ConfusionMeter(3).state_dict()) == {"confusion"}
    resumed = ConfusionMeter(3, top_k=(1, 2), ignore_index=7)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.confusion, meter.confusion) and torch.equal(resumed.top_k_hits, meter.top_k_hits)
    # nn.Module.to(dtype) / .double() / .half() cast floating buffers only: the counts stay exact int64.
    for cast in (lambda m: m.to(torch.float64), lambda m: m.double(), lambda m: m.half()):
        moved = cast(resumed)
        assert moved.confusion.dtype == torch.int64 and moved.top_k_hits.dtype == torch.int64
        assert torch.equal(moved.confusion, meter.confusion)
    with pytest.raises(RuntimeError, match="top_k_hits"):
        ConfusionMeter(3).load_state_dict(state)  # a meter without top-k cannot take top-k hits


def test_meter_all_reduce_without_a_process_group_is_a_no_op():
    meter = ConfusionMeter(2, top_k=(1,))
    meter.update(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1]))
    before = meter.confusion.clone()
    assert meter.all_reduce() is meter
    assert torch.equal(meter.confusion, before) and meter.top_k_hits.tolist() == [1]
    tensor = torch.arange(4)
    assert all_reduce_sum(tensor) is tensor and tensor.tolist() == [0, 1, 2, 3]


def test_meter_failed_update_changes_nothing_and_merge():
    meter = ConfusionMeter(3, top_k=(2,))
    meter.update(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    before = meter.confusion.clone(), meter.top_k_hits.clone()
    with pytest.raises(ValueError, match="got label 3"):
        meter.update(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="for top_k=\\[2\\]; got predicted labels"):
        meter.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert torch.equal(meter.confusion, before[0]) and torch.equal(meter.top_k_hits, before[1])
    other = ConfusionMeter(3, top_k=(2,))
    other.update(torch.randn(5, 3), torch.tensor([2, 2, 1, 0, 0]))
    expected = meter.confusion + other.confusion, meter.top_k_hits + other.top_k_hits
    assert meter.merge(other) is meter
    assert torch.equal(meter.confusion, expected[0]) and torch.equal(meter.top_k_hits, expected[1])
    with pytest.raises(ValueError, match=r"ConfusionMeter with num_classes=3, top_k=\[2\]; got num_classes=3, top_k=\[\]"):
        meter.merge(ConfusionMeter(3))
    with pytest.raises(TypeError, match="other must be a ConfusionMeter; got Tensor"):
        meter.merge(torch.zeros(3, 3))


def test_meter_ignores_gradients_and_repr():
    meter = ConfusionMeter(3, top_k=(2,))
    meter.update(torch.randn(4, 3, requires_grad=True), torch.tensor([0, 1, 2, 0]))
    assert not meter.confusion.requires_grad
    assert repr(meter) == "ConfusionMeter(num_classes=3, top_k=[2], ignore_index=-100)"


# --- one counter for the metrics and CDB ---------------------------------------------------------


def test_class_difficulty_is_a_confusion_meter():
    difficulty = ClassDifficulty(3, ignore_index=255)
    assert isinstance(difficulty, ConfusionMeter)
    assert difficulty.top_k == () and difficulty.ignore_index == 255
    assert set(difficulty.state_dict()) == {"confusion"}
    difficulty.update(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1, 255]))
    assert difficulty.correct.tolist() == [1, 1, 0] and difficulty.total.tolist() == [2, 1, 0]
    assert difficulty.report(include_confusion=False)["per_class_accuracy"] == [0.5, 1.0, None]
    torch.testing.assert_close(difficulty.difficulty(), 1.0 - difficulty.accuracy(), equal_nan=True)
    assert repr(difficulty) == "ClassDifficulty(num_classes=3, ignore_index=255)"


def test_cdb_loss_updates_from_a_confusion_meter():
    meter = ConfusionMeter(3, top_k=(2,))
    meter.update(torch.tensor([[3.0, 0.0, 1.0], [0.0, 2.0, 1.0], [1.0, 0.0, 2.0], [2.0, 0.0, 1.0]]),
                 torch.tensor([0, 1, 2, 2]))
    # accuracies [1, 1, 0.5]: d = [0, 0, 0.5], w = 3 * d / 0.5 with tau = 1.
    criterion = CDBLoss(3, tau=1.0)
    assert criterion.update_from(meter).tolist() == pytest.approx([0.0, 0.0, 3.0])
    assert criterion.last_accuracy.tolist() == [1.0, 1.0, 0.5]
    from_difficulty = CDBLoss(3, tau=1.0)
    difficulty = ClassDifficulty(3)
    difficulty.load_state_dict({"confusion": meter.confusion})
    assert torch.equal(from_difficulty.update_from(difficulty), criterion.weight)


def test_numpy_scores_in_the_meter():
    meter = ConfusionMeter(2, top_k=(1,))
    meter.update(np.array([[0.2, 0.8], [0.9, 0.1]]), np.array([1, 1]))
    assert meter.confusion.tolist() == [[0, 0], [1, 1]] and meter.top_k_hits.tolist() == [1]
