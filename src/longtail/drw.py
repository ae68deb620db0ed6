"""Deferred re-weighting (DRW; Cao et al., NeurIPS 2019): unweighted training first, class-balanced weights late.

The schedule is separate from the loss: any loss with a per-class ``weight`` can follow it. A
trainer asks for the weight of the coming epoch and hands it to the loss before the epoch runs::

    drw = DeferredReweighting(counts, start_epoch=160, beta=0.9999)
    criterion = longtail.losses.LDAMLoss(counts, reduction="weighted_mean")
    for epoch in range(200):                        # epochs count from 0
        drw.apply(criterion, epoch)                 # or criterion.set_weight(drw.weight_for_epoch(epoch))
        train_one_epoch(model, criterion, ...)

``apply`` calls the loss's ``set_weight`` (every weighted loss of this library is a
:class:`longtail.losses.WeightedLoss`: the weight is copied into its buffer in place, on the loss's
device, so a compiled loss sees it without a recompile). PyTorch's own weighted losses
(``nn.CrossEntropyLoss``, ...) get their ``weight`` attribute assigned instead.

The official LDAM-DRW code divides the weighted loss by the sum of the batch's weights
(``F.cross_entropy(weight=w)``): use ``reduction="weighted_mean"`` to reproduce it, ``"mean"`` to
divide by the number of samples instead.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .checks import check_beta, check_int
from .weights import class_balanced_weights


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
        self.start_epoch = check_int("start_epoch", start_epoch, low=0)
        self.beta = check_beta(beta)
        self.weight = class_balanced_weights(counts, self.beta, zero_counts=zero_counts)

    @property
    def num_classes(self) -> int:
        return self.weight.numel()

    def is_active(self, epoch: int) -> bool:
        """Whether ``epoch`` (counting from 0) uses the class-balanced weights."""
        return check_int("epoch", epoch, low=0) >= self.start_epoch

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
    """Replaces a loss's per-class weight; ``None`` restores the unweighted loss.

    A loss with ``set_weight`` (every :class:`longtail.losses.WeightedLoss`) is given the weight
    through it, which keeps the loss's device and dtype. A PyTorch loss with a ``weight`` buffer
    (``nn.CrossEntropyLoss``, ``nn.NLLLoss``, ...) has it assigned: placed like its current weight,
    or left where it is when the loss had none.
    """
    setter = getattr(criterion, "set_weight", None)
    if callable(setter):
        setter(weight)
        return
    if not isinstance(criterion, nn.Module) or not hasattr(criterion, "weight"):
        raise TypeError(
            f"{type(criterion).__name__} has neither set_weight() nor a weight buffer; DRW needs a loss that takes a "
            "per-class weight"
        )
    current = criterion.weight
    if weight is not None:
        weight = weight.detach().clone()
        if isinstance(current, torch.Tensor):
            weight = weight.to(current)
    criterion.weight = weight  # nn.Module keeps an assigned buffer a buffer
