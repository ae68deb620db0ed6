"""``LDAMLoss``: the LDAM loss with its margins and its (replaceable) class weight in buffers."""

from __future__ import annotations

from typing import Any

import torch

from ..checks import REDUCTIONS, check_choice, check_ignore_index, check_label_smoothing, check_real
from ..functional.ldam import ldam_loss, ldam_margins
from ._base import WeightedLoss


class LDAMLoss(WeightedLoss):
    r"""LDAM loss of Cao et al. (NeurIPS 2019) for fixed training counts.

    :math:`\ell = w_y \,\mathrm{CE}(s\,(z - m_y e_y), y)` with margins :math:`m_c \propto n_c^{-1/4}`,
    the largest equal to ``max_margin``; see :func:`longtail.functional.ldam_loss`.

    Buffers: ``margins`` ``(C,)`` (float32) and ``weight`` ``(C,)`` (all ones unless given); both
    follow ``.to()`` and ``state_dict``. ``set_weight`` replaces the weight between epochs, which is
    how deferred re-weighting (LDAM-DRW) switches it on::

        drw = longtail.drw.DeferredReweighting(counts, start_epoch=160)
        criterion = LDAMLoss(counts, reduction="weighted_mean")  # the official DRW normaliser
        for epoch in range(200):
            criterion.set_weight(drw.weight_for_epoch(epoch))  # None (all ones) before epoch 160
            ...

    Shapes: ``logits (N, C)`` or ``(N, C, d1, ...)``, ideally from a cosine (normalised-linear) head;
    ``target`` class indices ``(N,)`` / ``(N, d1, ...)``.

    Args:
        counts: per-class training counts ``(C,)``, all positive.
        max_margin: largest margin (the rarest class's), ``>= 0``.
        scale: logit scale ``s > 0``.
        weight: per-class weight ``(C,)``, finite and non-negative; None for all ones.
        reduction: ``"mean"``, ``"weighted_mean"``, ``"sum"`` or ``"none"``.
        ignore_index: targets equal to it are skipped.
        label_smoothing: ``eps`` in ``[0, 1)``: cross-entropy against ``(1 - eps) onehot(y) + eps / C`` on the
            margin-shifted, scaled logits, weighted by ``w_y`` (see :func:`longtail.functional.ldam_loss`).

    ``forward(logits, target, sample_weight=None)``: per-sample weights ``(N,)`` / ``(N, d1, ...)``, finite
    and ``>= 0``, multiplying each sample's loss with ``w_y``.

    Example:
        >>> criterion = LDAMLoss([100, 10, 1], scale=10.0)
        >>> criterion.margins
        tensor([0.1581, 0.2812, 0.5000])
        >>> criterion(torch.tensor([[0.8, 0.1, -0.3], [0.2, -0.5, 0.6]]), torch.tensor([0, 2]))
        tensor(0.6592)
    """

    margins: torch.Tensor
    weight: torch.Tensor

    def __init__(
        self,
        counts: Any,
        max_margin: float = 0.5,
        scale: float = 30.0,
        weight: Any = None,
        reduction: str = "mean",
        ignore_index: int = -100,
        *,
        label_smoothing: float = 0.0,
    ) -> None:
        max_margin = check_real("max_margin", max_margin, low=0.0, finite=True)
        margins = ldam_margins(counts, max_margin)
        super().__init__(weight, margins.numel())
        self.max_margin = max_margin
        self.scale = check_real("scale", scale, low=0.0, low_open=True, finite=True)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.ignore_index = check_ignore_index(ignore_index)
        self.label_smoothing = check_label_smoothing(label_smoothing)
        self.register_buffer("margins", margins)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, sample_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return ldam_loss(
            logits, target, self.margins, scale=self.scale, weight=self.weight, reduction=self.reduction,
            ignore_index=self.ignore_index, label_smoothing=self.label_smoothing, sample_weight=sample_weight,
        )

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, max_margin={self.max_margin}, scale={self.scale}, "
            f"reduction={self.reduction!r}, ignore_index={self.ignore_index}{self._smoothing_repr()}"
        )


__all__ = ["LDAMLoss"]
