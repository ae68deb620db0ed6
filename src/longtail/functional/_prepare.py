"""Input preparation shared by every loss in :mod:`longtail.functional`.

Layout: logits ``z`` are ``(N, C)`` or ``(N, C, d1, ...)`` with the class dimension at 1 (as in
``F.cross_entropy``); no transpose is made, so dense inputs cost no copy. A "sample" is one
position ``(n, d1, ...)``: per-sample tensors have shape ``(N, d1, ...)``.

:func:`prepare` validates the arguments and brings logits and class weights to the compute dtype
(:func:`compute_dtype`: float32, float64 inputs stay float64) and the target to a common form
(:class:`Prepared`); :func:`class_dim_view` broadcasts a per-class ``(C,)`` tensor against the logits.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..checks import (
    REDUCTIONS,
    check_choice,
    check_class_weight,
    check_finite_per_class,
    check_ignore_index,
    check_label_values,
    check_logits,
    check_target,
    check_target_values,
    is_compiling,
)


class Prepared(NamedTuple):
    logits: torch.Tensor  # float32 or float64, (N, C, *)
    target: torch.Tensor  # int64 (N, *) with ignored entries replaced by 0, or float (N, C, *)
    valid: torch.Tensor | None  # bool (N, *) for class-index targets, None for float targets
    weight: torch.Tensor | None  # (C,) in the compute dtype
    hard: bool  # class-index target


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def prepare(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
) -> Prepared:
    """Validates the arguments and brings them to the compute dtype and a common form."""
    check_logits(logits)
    check_choice("reduction", reduction, REDUCTIONS)
    if not is_compiling():  # a module's int attribute may reach a traced graph as a symbolic int
        ignore_index = check_ignore_index(ignore_index)
    hard = check_target(logits, target)
    num_classes = logits.shape[1]
    dtype = compute_dtype(logits.dtype)
    if weight is not None:
        weight = check_class_weight(weight, num_classes, logits.device).to(dtype)
        # A NaN or negative weight would give a NaN or negative loss without a word (eager mode only: one sync).
        check_finite_per_class("weight", weight, non_negative=True)
    z = logits.to(dtype)
    if hard:
        target = target.long()
        valid = target != ignore_index
        # Ignored positions get a valid index (0) so gathers stay in range; their loss is masked out.
        safe = torch.where(valid, target, 0)
        _check_labels(safe, target, num_classes, ignore_index)
        return Prepared(z, safe, valid, weight, True)
    check_target_values(target)
    return Prepared(z, target.to(dtype), None, weight, False)


def _check_labels(safe: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """Labels in ``[0, C)`` or ``ignore_index``: one ``aminmax`` over the labels with the ignored ones
    replaced by 0; the detailed check (and its error message) only runs when that finds a bad label."""
    if is_compiling() or safe.numel() == 0:
        return
    low, high = torch.aminmax(safe)
    if bool(low < 0) or bool(high >= num_classes):
        check_label_values(target, num_classes, ignore_index)


def class_dim_view(weight: torch.Tensor, ndim: int) -> torch.Tensor:
    """(C,) -> (1, C, 1, ...) to broadcast against (N, C, d1, ...)."""
    return weight.view((1, -1) + (1,) * (ndim - 2))


__all__ = [
    "Prepared",
    "class_dim_view",
    "compute_dtype",
    "prepare",
]
