"""How a run is evaluated: confusion counts on a split, the validation pass of every epoch, the test-set
report, and the post-hoc tau that validation chooses.

- :func:`evaluate` counts a model's predictions on a split (each process a shard, summed over processes);
- :func:`validate` is the epoch's validation pass of a run, then its loss's ``after_validation`` hook;
- :func:`final_report` is the full report on the (balanced) test set (``result.json``'s ``final``), post-hoc
  adjusted when the configuration asks (the tau with the best validation balanced accuracy);
- :func:`shot_thresholds` are the many/few thresholds of a run (a :class:`~longtail.train.trainer.Run` holds
  them as ``run.shot_thresholds``, computed once).

The ``run`` these functions take is a :class:`longtail.train.trainer.Run` (not imported here: the trainer
imports this module).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..metrics import ConfusionMeter, nan_to_none, relative_shot_thresholds
from .config import TrainConfig
from .data import DeviceSplit
from .device import autocast_enabled, distributed
from .posthoc import POSTHOC, adjusted_model

SUMMARY_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "shot_accuracy")


@torch.no_grad()
def evaluate(
    model: nn.Module, data: DeviceSplit, num_classes: int, config: TrainConfig, *, confidence: bool = False
) -> ConfusionMeter:
    """Confusion counts of the model on ``data`` (each process a shard, then summed over processes); with
    ``confidence``, also each class's summed true-class probability (for a loss that weights by it)."""
    model.eval()
    rank, world = distributed()
    meter = ConfusionMeter(num_classes, confidence=confidence).to(data.labels.device)
    indices = torch.arange(rank, len(data), world, device=data.labels.device)
    for start in range(0, len(indices), config.eval_batch_size):
        chunk = indices[start : start + config.eval_batch_size]
        images = data.images[chunk].contiguous(memory_format=torch.channels_last)
        with torch.autocast(data.images.device.type, dtype=torch.bfloat16,
                            enabled=autocast_enabled(config.amp, data.images.device)):
            logits = model(images)
        meter.update(logits.float(), data.labels[chunk])
    return meter.all_reduce()


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a report (those the epoch's history keeps)."""
    return {k: report[k] for k in SUMMARY_KEYS if k in report}


def shot_thresholds(config: TrainConfig, counts: torch.Tensor) -> dict[str, float]:
    """The many/few thresholds of a run: the configuration's, or 0.2 / 0.04 x the head class's training count."""
    if config.many_threshold is not None:
        return dict(many_threshold=config.many_threshold, few_threshold=config.few_threshold)
    many, few = relative_shot_thresholds(counts)
    return dict(many_threshold=many, few_threshold=few)


def validate(run: Any) -> dict[str, Any]:
    """Validation metrics of ``run`` (every loss reports them, so hyperparameters can be chosen without the
    test set), then the loss's ``after_validation`` hook; ``{}`` without a validation split."""
    if run.data.val is None:
        return {}
    # Only the losses whose spec asks for them (stable CDB with difficulty="confidence") pay for the true-class
    # probabilities.
    meter = evaluate(run.eager, run.data.val, run.num_classes, run.config, confidence=run.needs_confidence)
    entry: dict[str, Any] = {"val": summary(meter.report(**run.shot_thresholds))}
    if run.spec.after_validation is not None:
        entry.update(run.spec.after_validation(run.criterion, meter))
    return entry


def final_report(run: Any) -> dict[str, Any]:
    """The full report of ``run`` on the (balanced) test set, shot groups by the training counts; with a post-hoc
    adjustment, the adjusted model's (``posthoc`` says which tau validation chose). The last epoch's is
    ``result.json``'s ``final``; an ``eval_every`` epoch keeps its :func:`summary`."""
    meter = evaluate(run.eager, run.data.test, run.num_classes, run.config)
    report = meter.report(train_counts=run.data.counts, **run.shot_thresholds)
    return report if run.config.posthoc == "none" else _posthoc_report(run, report)


def _posthoc_report(run: Any, unadjusted: dict[str, Any]) -> dict[str, Any]:
    """Chooses the post-hoc tau on the validation split (highest balanced accuracy, the earliest on ties), then
    reports the adjusted model on the test set."""
    config, method = run.config, run.config.posthoc
    assert run.data.val is not None  # the configuration requires val_per_class >= 1
    grid = POSTHOC[method].grid
    scores = []
    for tau in grid:
        meter = evaluate(adjusted_model(run.model, method, run.data.counts, tau), run.data.val, run.num_classes, config)
        scores.append(nan_to_none(meter.report(**run.shot_thresholds)["balanced_accuracy"]))
    best = max(range(len(grid)), key=lambda i: (-math.inf if scores[i] is None else scores[i], -i))
    model = adjusted_model(run.model, method, run.data.counts, grid[best])
    report = evaluate(model, run.data.test, run.num_classes, config).report(
        train_counts=run.data.counts, **run.shot_thresholds)
    report["posthoc"] = {
        "method": method,
        "tau": grid[best],
        "grid": list(grid),
        "val_balanced_accuracy": scores,
        "unadjusted": summary(unadjusted),
    }
    return report


__all__ = ["evaluate", "final_report", "shot_thresholds", "summary", "validate"]
