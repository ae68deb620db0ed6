"""Deferred re-weighting (DRW; Cao et al., NeurIPS 2019): unweighted training first, class-balanced weights late.

The schedule is separate from the loss: any loss with a per-class ``weight`` can follow it. A
trainer asks for the weight of the coming epoch and hands it to the loss before the epoch runs::

    drw = DeferredReweighting(counts, start_epoch=160, beta=0.9999)
    criterion = longtail.losses.LDAMLoss(counts, reduction="weighted_mean")
    for epoch in range(200):                        # epochs count from 0
        drw.apply(criterion, epoch)                 # or criterion.set_weight(drw.weight_for_epoch(epoch))
        train_one_epoch(model, criterion, ...)

``apply`` calls the loss's ``set_weight`` when it has one (:class:`longtail.losses.LDAMLoss`) and
otherwise assigns its ``weight`` attribute (``nn.CrossEntropyLoss``, :class:`longtail.FocalLoss`,
...). If the loss is compiled, the switch from ``None`` to a tensor recompiles it once.

The official LDAM-DRW code divides the weighted loss by the sum of the batch's weights
(``F.cross_entropy(weight=w)``): use ``reduction="weighted_mean"`` to reproduce it, ``"mean"`` to
divide by the number of samples instead.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch

from .checks import check_beta
from .weights import class_balanced_weights


def _check_epoch(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer epoch index; got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 (epochs count from 0); got {value}")
    return int(value)


class DeferredReweighting:
    r"""DRW schedule: no class weight before ``start_epoch``, class-balanced weights from it on.

    From ``start_epoch`` the weight is :func:`longtail.class_balanced_weights` ``(counts, beta)``,
    :math:`w_c \propto (1 - \beta) / (1 - \beta^{n_c})` normalised to sum to ``C``; before it the loss
    is unweighted (``None``, which equals all-ones weights). The official schedule is
    ``start_epoch=160`` of 200 epochs with ``beta=0.9999`` (its ``idx = epoch // 160`` with epochs
    counted from 0).

    Args:
        counts: per-class training counts ``(C,)``, over the whole training set.
        start_epoch: first epoch (counting from 0) that uses the weights, ``>= 0``.
        beta: in ``[0, 1]``; 1 is inverse frequency.
        zero_counts: ``"error"`` or ``"ignore"``, as in :func:`longtail.class_balanced_weights`.

    Example:
        >>> drw = DeferredReweighting([100, 10, 1], start_epoch=2, beta=0.99)
        >>> drw.weight_for_epoch(1) is None
        True
        >>> drw.weight_for_epoch(2)
        tensor([0.0422, 0.2800, 2.6777])
    """

    def __init__(self, counts: Any, start_epoch: int, beta: float = 0.9999, *, zero_counts: str = "error") -> None:
        self.start_epoch = _check_epoch("start_epoch", start_epoch)
        self.beta = check_beta(beta)
        self.weight = class_balanced_weights(counts, self.beta, zero_counts=zero_counts)

    @property
    def num_classes(self) -> int:
        return self.weight.numel()

    def is_active(self, epoch: int) -> bool:
        """Whether ``epoch`` (counting from 0) uses the class-balanced weights."""
        return _check_epoch("epoch", epoch) >= self.start_epoch

    def weight_for_epoch(self, epoch: int) -> torch.Tensor | None:
        """``None`` before ``start_epoch``, else a fresh float32 CPU copy of the class-balanced weights ``(C,)``."""
        return self.weight.clone() if self.is_active(epoch) else None

    def apply(self, criterion: Any, epoch: int) -> torch.Tensor | None:
        """Gives ``criterion`` the weight of ``epoch`` (see :func:`set_class_weight`); returns it (or None)."""
        weight = self.weight_for_epoch(epoch)
        set_class_weight(criterion, weight)
        return weight

    def __repr__(self) -> str:
        return f"DeferredReweighting(num_classes={self.num_classes}, start_epoch={self.start_epoch}, beta={self.beta})"


def set_class_weight(criterion: Any, weight: torch.Tensor | None) -> None:
    """Replaces a loss's per-class weight, keeping the device and dtype of the weight it had.

    ``None`` restores the unweighted loss. A loss with a ``set_weight`` method is given the weight
    through it; a loss whose ``weight`` buffer is a tensor (``ClassBalancedLoss``, a weighted
    ``FocalLoss``) has it overwritten in place (``None``: all ones); a loss whose ``weight`` buffer is
    ``None`` gets the weight on the device of its other buffers.
    """
    setter = getattr(criterion, "set_weight", None)
    if callable(setter):
        setter(weight)
        return
    current = getattr(criterion, "weight", None)
    if isinstance(current, torch.Tensor):
        with torch.no_grad():
            current.copy_(torch.ones_like(current) if weight is None else weight.to(current))
        return
    buffers = getattr(criterion, "_buffers", None)
    if buffers is None or "weight" not in buffers:
        raise TypeError(
            f"{type(criterion).__name__} has neither set_weight() nor a weight buffer; DRW needs a loss that takes a "
            "per-class weight"
        )
    if weight is not None:
        others = [b for b in buffers.values() if isinstance(b, torch.Tensor)]
        weight = weight.detach().clone().to(others[0].device if others else weight.device)
    buffers["weight"] = weight
