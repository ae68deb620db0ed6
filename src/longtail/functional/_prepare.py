"""Input preparation shared by every loss in :mod:`longtail.functional`.

Layout: logits ``z`` are ``(N, C)`` or ``(N, C, d1, ...)`` with the class dimension at 1 (as in
``F.cross_entropy``); no transpose is made, so dense inputs cost no copy. A "sample" is one
position ``(n, d1, ...)``: per-sample tensors have shape ``(N, d1, ...)``.

:func:`prepare` validates the arguments and brings logits and class weights to the compute dtype
(:func:`compute_dtype`: float32, float64 inputs stay float64) and the target to a common form
(:class:`Prepared`); :func:`class_dim_view` broadcasts a per-class ``(C,)`` tensor against the logits.

The checks on tensor *values* (class weights, ``sample_weight`` and ``pos_weight`` finite and in range,
labels in ``[0, C)``, float targets in ``[0, 1]``, and per-class tensors of the caller such as LDAM's
margins) are merged into one 0-dim flag read back once: at most one host sync per call, none while
``torch.compile`` traces. Only when that flag says something is wrong do the detailed checks run, in a
fixed order, to raise the message of the first bad argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from ..checks import (
    REDUCTIONS,
    check_choice,
    check_class_weight,
    check_finite_per_class,
    check_ignore_index,
    check_label_values,
    check_logits,
    check_pos_weight,
    check_pos_weight_values,
    check_sample_weight,
    check_sample_weight_values,
    check_target,
    check_target_values,
    is_compiling,
    pos_weight_values_ok,
    sample_weight_values_ok,
    value_checks_enabled,
)


class Prepared(NamedTuple):
    logits: torch.Tensor  # float32 or float64, (N, C, *)
    target: torch.Tensor  # int64 (N, *) with ignored entries replaced by 0, or float (N, C, *)
    valid: torch.Tensor | None  # bool (N, *) for class-index targets, None for float targets
    weight: torch.Tensor | None  # (C,) in the compute dtype
    hard: bool  # class-index target
    sample_weight: torch.Tensor | None = None  # (N, *) in the compute dtype, per-sample weights
    pos_weight: torch.Tensor | None = None  # (C,) in the compute dtype, the sigmoid losses' positive weight


#: A caller's per-class tensor whose values are checked with the rest: (name, tensor, non_negative).
PerClassCheck = tuple[str, torch.Tensor, bool]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def prepare(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
    *,
    sample_weight: Any = None,
    pos_weight: Any = None,
    per_class: Sequence[PerClassCheck] = (),
) -> Prepared:
    """Validates the arguments and brings them to the compute dtype and a common form.

    ``sample_weight`` (``(N, *)``, see :func:`longtail.checks.check_sample_weight`) and ``pos_weight``
    (``(C,)``) are optional; ``per_class`` names further per-class tensors of the caller (already on the
    device, in the compute dtype) whose values join the one merged value check.
    """
    check_logits(logits)
    check_choice("reduction", reduction, REDUCTIONS)
    if not is_compiling():  # a module's int attribute may reach a traced graph as a symbolic int
        ignore_index = check_ignore_index(ignore_index)
    hard = check_target(logits, target)
    num_classes = logits.shape[1]
    dtype = compute_dtype(logits.dtype)
    if weight is not None:
        weight = check_class_weight(weight, num_classes, logits.device).to(dtype)
    if sample_weight is not None:
        sample_weight = check_sample_weight(sample_weight, logits).to(dtype)
    if pos_weight is not None:
        pos_weight = check_pos_weight(pos_weight, num_classes, logits.device).to(dtype)
    z = logits.to(dtype)
    if hard:
        target = target.long()
        valid = target != ignore_index
        # Ignored positions get a valid index (0) so gathers stay in range; their loss is masked out.
        safe = torch.where(valid, target, 0)
        _check_values(weight, safe, target, True, num_classes, ignore_index, sample_weight, pos_weight, per_class)
        return Prepared(z, safe, valid, weight, True, sample_weight, pos_weight)
    if not target.is_floating_point():  # bool or integer multi-hot: 0 and 1 (checked with the other values)
        target = target.to(dtype)
    _check_values(weight, target, target, False, num_classes, ignore_index, sample_weight, pos_weight, per_class)
    return Prepared(z, target.to(dtype), None, weight, False, sample_weight, pos_weight)


def _check_values(
    weight: torch.Tensor | None,
    safe: torch.Tensor,
    target: torch.Tensor,
    hard: bool,
    num_classes: int,
    ignore_index: int,
    sample_weight: torch.Tensor | None,
    pos_weight: torch.Tensor | None,
    per_class: Sequence[PerClassCheck],
) -> None:
    """The value checks of every argument, merged into one 0-dim flag and one host sync (eager mode only).

    Each flag is True where its argument is fine: a NaN or negative weight would give a NaN or negative
    loss without a word; labels must lie in ``[0, C)`` (one ``aminmax`` over the labels with the ignored ones
    replaced by 0) or equal ``ignore_index``; float targets in ``[0, 1]``. When the merged flag is False the
    detailed checks run in a fixed order (weight, target, sample_weight, pos_weight, ``per_class``) and
    the first bad argument raises its message.
    """
    if is_compiling() or not value_checks_enabled():
        return
    flags: list[torch.Tensor] = []
    if weight is not None:
        flags.append((torch.isfinite(weight) & (weight >= 0)).all())
    if safe.numel():
        if hard:
            low, high = torch.aminmax(safe)
            flags.append((low >= 0) & (high < num_classes))
        else:
            low, high = torch.aminmax(target.detach().float())
            flags.append((low >= 0) & (high <= 1))
    if sample_weight is not None:
        flags.append(sample_weight_values_ok(sample_weight))
    if pos_weight is not None:
        flags.append(pos_weight_values_ok(pos_weight))
    for _, values, non_negative in per_class:
        ok = torch.isfinite(values)
        flags.append((ok & (values >= 0) if non_negative else ok).all())
    if not flags:
        return
    if bool(flags[0] if len(flags) == 1 else torch.stack(flags).all()):  # the one host sync
        return
    if weight is not None:
        check_finite_per_class("weight", weight, non_negative=True)
    if hard:
        check_label_values(target, num_classes, ignore_index)
    else:
        check_target_values(target)
    if sample_weight is not None:
        check_sample_weight_values(sample_weight)
    if pos_weight is not None:
        check_pos_weight_values(pos_weight)
    for name, values, non_negative in per_class:
        check_finite_per_class(name, values, non_negative=non_negative)


def class_dim_view(weight: torch.Tensor, ndim: int) -> torch.Tensor:
    """(C,) -> (1, C, 1, ...) to broadcast against (N, C, d1, ...)."""
    return weight.view((1, -1) + (1,) * (ndim - 2))


__all__ = [
    "PerClassCheck",
    "Prepared",
    "class_dim_view",
    "compute_dtype",
    "prepare",
]
