"""``nn.Module`` forms of the focal losses."""

from __future__ import annotations

from typing import Any

import torch

from ..checks import (
    REDUCTIONS,
    as_pos_weight,
    check_choice,
    check_gamma,
    check_ignore_index,
    check_label_smoothing,
    check_real,
)
from ..functional._core import check_multilabel_weight
from ..functional.focal import focal_loss, sigmoid_focal_loss
from ._base import WeightedLoss, _in_dtype


class FocalLoss(WeightedLoss):
    r"""Softmax focal loss, :math:`-w_y (1 - p_y)^\gamma \log p_y`; see :func:`longtail.functional.focal_loss`.

    ``weight`` (the per-class ``alpha``) is a buffer: it follows ``.to()`` and ``state_dict``, and
    :meth:`set_weight` replaces it (deferred re-weighting). Without ``weight`` it is all ones when
    ``num_classes`` is given, and empty (unweighted, sized by the first ``set_weight``) otherwise.

    Shapes: ``logits (N, C)`` or ``(N, C, d1, ...)``; ``target (N,)`` / ``(N, d1, ...)`` class
    indices or float probabilities of the logits' shape.

    ``label_smoothing`` ``eps`` in ``[0, 1)``: ``w_y sum_c q_c (-(1 - p_c)**gamma log p_c)`` with
    ``q = (1 - eps) onehot(y) + eps / C``, the weight that of the unsmoothed label.
    ``forward(logits, target, sample_weight=None)``: per-sample weights ``(N,)`` / ``(N, d1, ...)``,
    finite and ``>= 0``, multiplying each sample's loss with ``w_y``.

    Example:
        >>> criterion = FocalLoss(gamma=2.0)
        >>> criterion(torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([0]))
        tensor(0.0111)
    """

    weight: torch.Tensor

    def __init__(
        self,
        gamma: float = 2.0,
        weight: Any = None,
        reduction: str = "mean",
        ignore_index: int = -100,
        *,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(weight, num_classes)
        self.gamma = check_gamma(gamma)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.ignore_index = check_ignore_index(ignore_index)
        self.label_smoothing = check_label_smoothing(label_smoothing)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, sample_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return focal_loss(
            logits, target, self.class_weight(), self.gamma, self.reduction, self.ignore_index,
            label_smoothing=self.label_smoothing, sample_weight=sample_weight,
        )

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, reduction={self.reduction!r}, ignore_index={self.ignore_index}{self._smoothing_repr()}"


class SigmoidFocalLoss(WeightedLoss):
    r"""Sigmoid focal loss summed over classes; see :func:`longtail.functional.sigmoid_focal_loss`.

    ``pos_weight`` ``(C,)``, finite and positive (as ``BCEWithLogitsLoss``), multiplies the positive terms:
    a positive's focal term is ``pw_i (1 - p)**gamma (-log p)``; kept in the buffer ``pos_weight``
    (``None`` when not given). ``forward(logits, target, sample_weight=None)``: per-sample weights
    ``(N,)`` / ``(N, d1, ...)``, finite and ``>= 0``, multiplying each sample's loss with its weight.

    Example:
        >>> criterion = SigmoidFocalLoss(gamma=2.0)
        >>> criterion(torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([0]))
        tensor(0.4019)
    """

    weight: torch.Tensor
    pos_weight: torch.Tensor | None

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | None = None,
        weight: Any = None,
        reduction: str = "mean",
        ignore_index: int = -100,
        multilabel_weight: str = "average",
        *,
        num_classes: int | None = None,
        pos_weight: Any = None,
    ) -> None:
        super().__init__(weight, num_classes)
        self.gamma = check_gamma(gamma)
        self.alpha = None if alpha is None else check_real("alpha", alpha, low=0.0, high=1.0)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.ignore_index = check_ignore_index(ignore_index)
        self.multilabel_weight = check_multilabel_weight(multilabel_weight)
        checked = as_pos_weight(pos_weight, self.num_classes)
        self.register_buffer("pos_weight", None if checked is None else _in_dtype(checked, torch.float32, "pos_weight", positive=True))

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, sample_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return sigmoid_focal_loss(
            logits,
            target,
            self.class_weight(),
            self.gamma,
            self.alpha,
            self.reduction,
            self.ignore_index,
            self.multilabel_weight,
            pos_weight=self.pos_weight,
            sample_weight=sample_weight,
        )

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={self.alpha}, reduction={self.reduction!r}"
