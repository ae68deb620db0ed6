"""Hugging Face ``transformers`` integration: a ``Trainer`` that trains with a class-balanced loss.

:class:`ClassBalancedTrainer` is a ``transformers.Trainer`` whose ``compute_loss`` applies a
:class:`longtail.ClassBalancedLoss` (or any longtail loss) to the model's ``logits`` and the batch's ``labels``,
instead of the model's own unweighted loss. The class counts come from ``class_counts=`` or are counted in
``train_dataset`` by :func:`counts_from_dataset`.

Imports ``transformers`` (its ``Trainer`` needs ``accelerate``); without it this module still imports and
:class:`ClassBalancedTrainer` raises ImportError when built (``pip install 'longtail[hf]'``).
:func:`counts_from_dataset` needs neither. See docs/integrations.md, which also shows the ten-line
``compute_loss`` override this class grew from.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..counts import class_counts
from ..losses import ClassBalancedLoss

try:
    import transformers
    from transformers import Trainer as _Trainer

    TRANSFORMERS_AVAILABLE = True
except ImportError:  # pragma: no cover - depends on what is installed
    _Trainer = object  # type: ignore[assignment, misc]
    TRANSFORMERS_AVAILABLE = False

IGNORE_INDEX = -100
"""The label value that Hugging Face models and collators use for "no label" (padding, sub-word pieces)."""

__all__ = ["IGNORE_INDEX", "TRANSFORMERS_AVAILABLE", "ClassBalancedTrainer", "counts_from_dataset"]

_INSTALL_HINT = "pip install 'longtail[hf]' (transformers and accelerate)"


# --- counting the labels of a dataset ----------------------------------------------------------------------------


def _label_values(dataset: Any, label_column: str) -> Any:
    """The label column of ``dataset``: a ``datasets.Dataset``'s column, or each row's ``label_column``."""
    columns = getattr(dataset, "column_names", None)
    if isinstance(columns, (list, tuple)):  # a datasets.Dataset (a DatasetDict has a dict of them: refused below)
        if label_column not in columns:
            raise KeyError(f"the dataset has no column {label_column!r}; its columns are {list(columns)}")
        return dataset[label_column]
    if isinstance(dataset, Mapping) or isinstance(dataset, (str, bytes)):
        raise TypeError(
            "dataset must be a datasets.Dataset or a sequence (or iterable) of dicts, one per sample; "
            f"got {type(dataset).__name__}" + (" (pass one split, e.g. dataset['train'])" if columns else "")
        )
    if isinstance(dataset, Sequence) or (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        rows: Iterable[Any] = (dataset[i] for i in range(len(dataset)))
    elif isinstance(dataset, Iterable):
        rows = iter(dataset)
    else:
        raise TypeError(
            f"dataset must be a datasets.Dataset or a sequence (or iterable) of dicts; got {type(dataset).__name__}"
        )
    values = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(
                f"each sample must be a dict with a {label_column!r} key; sample {i} is a {type(row).__name__}"
            )
        if label_column not in row:
            raise KeyError(f"sample {i} has no {label_column!r} key; its keys are {sorted(map(str, row))}")
        values.append(row[label_column])
    return values


def _as_label_tensor(values: Any) -> torch.Tensor:
    """One tensor for :func:`longtail.class_counts` from a column of per-sample labels."""
    if isinstance(values, torch.Tensor):
        return values
    if isinstance(values, np.ndarray) and values.dtype != object:
        return torch.from_numpy(np.ascontiguousarray(values))
    items = list(values)
    if not items:
        raise ValueError("the dataset has no samples to count")
    if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items):
        return torch.tensor(items, dtype=torch.int64)  # the common case: one class index per sample
    tensors = [v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v)) for v in items]
    if any(t.is_floating_point() or t.dtype == torch.bool for t in tensors):
        # multi-hot (or soft) targets, one (C,) row per sample
        return torch.stack([t.reshape(-1).to(torch.float64) for t in tensors])
    # class indices per sample, e.g. one per token (sequences of different lengths): every position counts
    return torch.cat([t.reshape(-1).to(torch.int64) for t in tensors])


def counts_from_dataset(
    dataset: Any,
    label_column: str = "labels",
    *,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Per-class counts of a dataset's labels: a ``datasets.Dataset`` or any sequence (or iterable) of dicts.

    Each sample's ``label_column`` holds a class index (sequence classification), a list of class indices
    (token classification: every position counts, ``ignore_index`` ones skipped), or a multi-hot float row
    ``(C,)`` (multi-label). The default ``"labels"`` falls back to ``"label"``, the column name of most Hugging
    Face datasets (the Trainer's collators rename it to ``labels``), when the dataset has no ``"labels"``.

    ``datasets`` need not be installed: a ``datasets.Dataset`` is recognised by its ``column_names`` and its
    column is read in one piece; other datasets are read sample by sample (a map-style ``torch`` dataset runs
    its ``__getitem__`` for every sample: pass the counts yourself when that is slow).

    Args:
        dataset: the training split.
        label_column: the key of the labels in each sample.
        num_classes: ``C``.
        ignore_index: label value that is not counted.

    Returns:
        ``(C,)`` int64 counts on the CPU (float64 for soft multi-label targets), as :func:`longtail.class_counts`.

    Example:
        >>> counts_from_dataset([{"labels": 0}, {"labels": 2}, {"labels": 2}], num_classes=3)
        tensor([1, 0, 2])
        >>> counts_from_dataset([{"label": [0, 1, -100]}, {"label": [1]}], num_classes=2)
        tensor([1, 2])
    """
    try:
        values = _label_values(dataset, label_column)
    except KeyError:
        if label_column != "labels":
            raise
        try:
            values = _label_values(dataset, "label")
        except KeyError:
            raise KeyError(
                "the dataset's samples have neither a 'labels' nor a 'label' key (or column); pass label_column="
            ) from None
    return class_counts(_as_label_tensor(values), num_classes, ignore_index=ignore_index)


# --- the Trainer --------------------------------------------------------------------------------------------------


class ClassBalancedTrainer(_Trainer):  # type: ignore[misc, valid-type]
    """A ``transformers.Trainer`` whose loss is a :class:`longtail.ClassBalancedLoss` of the model's logits.

    ``compute_loss`` pops ``labels`` from the batch (the model then computes no loss of its own), runs the model,
    and returns ``criterion(outputs.logits, labels)``; labels equal to -100 are ignored, as in Hugging Face's
    losses. The evaluation loss (``eval_loss``) is the same weighted loss. The loss is built once, in
    ``__init__``, on the model's device (``trainer.criterion``), and moved if the logits turn up elsewhere.

    Shapes: sequence classification ``logits`` ``(N, C)`` with ``labels`` ``(N,)``; token classification
    ``(N, L, C)`` with ``(N, L)`` (every labelled token is a sample); multi-label ``(N, C)`` with float multi-hot
    ``labels`` ``(N, C)``, for ``loss="sigmoid"`` or ``"focal"``.

    The loss is a mean over the batch's labelled samples (``reduction="mean"``); the Trainer divides it by
    ``gradient_accumulation_steps`` (this trainer sets ``model_accepts_loss_kwargs = False``, so the model is not
    asked to normalise by ``num_items_in_batch``, which ``compute_loss`` accepts and ignores).
    ``args.label_smoothing_factor`` becomes the loss's ``label_smoothing`` (softmax losses only), with each
    sample's weight on its whole smoothed term (docs/conventions.md).

    Args:
        *args, **kwargs: those of ``transformers.Trainer`` (``model``, ``args``, ``train_dataset``, ...).
        class_counts: training samples per class ``(C,)``. Default: counted in ``train_dataset`` by
            :func:`counts_from_dataset` (``label_column``, ``C = model.config.num_labels``).
        beta, loss, gamma: those of :class:`longtail.ClassBalancedLoss` (``loss`` one of ``"softmax"``,
            ``"sigmoid"``, ``"focal"``, ``"softmax_focal"``).
        loss_kwargs: more :class:`longtail.ClassBalancedLoss` arguments (``reduction``, ``zero_counts``,
            ``label_smoothing``, ``pos_weight``, ...).
        criterion: instead of the above, any loss module called as ``criterion(logits, labels)`` (e.g. a
            :class:`longtail.LDAMLoss` or :class:`longtail.LogitAdjustedLoss`), used as it is (then
            ``args.label_smoothing_factor`` must be 0: smooth with the loss's own ``label_smoothing``).
        label_column: the label key for counting ``train_dataset``.

    Example::

        trainer = ClassBalancedTrainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                                       beta=0.999, loss="softmax_focal", gamma=1.0)
        trainer.train()
    """

    # transformers >= 5: compute_loss returns a per-batch mean, not one already scaled for gradient accumulation.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        *args: Any,
        class_counts: Any = None,
        beta: float = 0.9999,
        loss: str = "softmax",
        gamma: float = 0.0,
        loss_kwargs: Mapping[str, Any] | None = None,
        criterion: nn.Module | None = None,
        label_column: str = "labels",
        **kwargs: Any,
    ) -> None:
        if not TRANSFORMERS_AVAILABLE:
            raise ImportError(f"ClassBalancedTrainer needs transformers: {_INSTALL_HINT}")
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError("ClassBalancedTrainer computes the loss itself: pass no compute_loss_func")
        if criterion is not None and (class_counts is not None or loss_kwargs):
            raise ValueError("pass either criterion= or class_counts=/loss_kwargs= (the class-balanced loss), not both")
        super().__init__(*args, **kwargs)
        # The model is asked for logits only; Trainer scales the per-batch mean for gradient accumulation.
        self.model_accepts_loss_kwargs = False
        if self.args.gradient_accumulation_steps > 1 and _unscaled_accumulation(transformers.__version__):
            warnings.warn(
                f"transformers {transformers.__version__}: its Trainer does not divide a loss that is not normalised "
                "by num_items_in_batch by gradient_accumulation_steps (4.46 and 4.47 only, its own default loss "
                f"too), so the gradients are {self.args.gradient_accumulation_steps} times those of the mean loss; "
                "use transformers >= 4.48 (or < 4.46)",
                UserWarning,
                stacklevel=2,
            )
        if criterion is None:
            options = dict(loss_kwargs or {})
            criterion = self._class_balanced_loss(class_counts, beta, loss, gamma, options, label_column)
        elif getattr(self.args, "label_smoothing_factor", 0.0):
            raise ValueError(
                "with criterion=, give the loss its own label_smoothing= (TrainingArguments.label_smoothing_factor "
                "would not be applied)"
            )
        self.criterion = criterion.to(self.args.device)

    def _class_balanced_loss(
        self, counts: Any, beta: float, loss: str, gamma: float, options: dict[str, Any], label_column: str
    ) -> ClassBalancedLoss:
        if counts is None:
            if self.train_dataset is None:
                raise ValueError("ClassBalancedTrainer needs class_counts= or a train_dataset to count the labels of")
            num_labels = getattr(getattr(self.model, "config", None), "num_labels", None)
            if not isinstance(num_labels, int):
                raise ValueError("pass class_counts= (the model has no config.num_labels to size the counts by)")
            counts = counts_from_dataset(self.train_dataset, label_column, num_classes=num_labels)
        smoothing = float(getattr(self.args, "label_smoothing_factor", 0.0) or 0.0)
        if smoothing:
            options.setdefault("label_smoothing", smoothing)
            self.label_smoother = None  # the loss smooths; Trainer's own smoother is never called
        options.setdefault("ignore_index", IGNORE_INDEX)
        return ClassBalancedLoss(counts, beta=beta, loss=loss, gamma=gamma, **options)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        """The class-balanced loss of ``model(**inputs without labels).logits`` and ``inputs["labels"]``.

        A batch without ``labels`` goes to ``Trainer.compute_loss`` (the model's own loss, if any).
        ``num_items_in_batch`` is accepted and ignored (see the class docstring).
        """
        if "labels" not in inputs:
            extra = {} if num_items_in_batch is None else {"num_items_in_batch": num_items_in_batch}
            return super().compute_loss(model, inputs, return_outputs=return_outputs, **extra)
        inputs = dict(inputs)  # the caller's batch keeps its labels
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = _logits_of(outputs)
        loss = self._criterion_loss(logits, labels)
        return (loss, outputs) if return_outputs else loss

    def _criterion_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weight = getattr(self.criterion, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.device != logits.device:
            self.criterion.to(logits.device)
        labels = labels.to(logits.device)
        if labels.shape == logits.shape and (labels.is_floating_point() or labels.dtype == torch.bool):
            return self.criterion(logits, labels.to(logits.dtype))  # multi-hot targets (multi-label)
        if logits.shape[:-1] != labels.shape:
            raise ValueError(
                f"the logits {tuple(logits.shape)} must have the labels' shape {tuple(labels.shape)} plus the class "
                "dimension last (N, C) / (N, L, C), or, for multi-label, the labels' own shape"
            )
        num_classes = logits.shape[-1]
        return self.criterion(logits.reshape(-1, num_classes), labels.reshape(-1))


def _unscaled_accumulation(version: str) -> bool:
    """Whether this transformers version's Trainer leaves our per-batch mean unscaled under gradient accumulation."""
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) in ((4, 46), (4, 47))


def _logits_of(outputs: Any) -> torch.Tensor:
    logits = getattr(outputs, "logits", None)
    if logits is None and isinstance(outputs, Mapping):
        logits = outputs.get("logits")
    if logits is None and isinstance(outputs, (tuple, list)) and outputs:
        logits = outputs[0]  # return_dict=False: the logits come first when no loss was computed
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"the model's outputs must have logits (outputs.logits); got {type(outputs).__name__}")
    return logits
