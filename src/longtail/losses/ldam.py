"""``LDAMLoss``: the LDAM loss with its margins (and an optional, replaceable class weight) in buffers."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..checks import REDUCTIONS, as_class_weight, check_choice
from ..functional.ldam import _check_max_margin, _check_scale, ldam_loss, ldam_margins


def _weight_like(weight: Any, num_classes: int, like: torch.Tensor) -> torch.Tensor | None:
    """A per-class weight as a ``(C,)`` tensor with ``like``'s dtype and device (None stays None)."""
    checked = as_class_weight(weight, num_classes)
    return None if checked is None else checked.to(device=like.device, dtype=like.dtype)


class LDAMLoss(nn.Module):
    r"""LDAM loss of Cao et al. (NeurIPS 2019) for fixed training counts.

    :math:`\ell = w_y \,\mathrm{CE}(s\,(z - m_y e_y), y)` with margins :math:`m_c \propto n_c^{-1/4}`,
    the largest equal to ``max_margin``; see :func:`longtail.functional.ldam_loss`.

    Buffers: ``margins`` ``(C,)`` (float32) and ``weight`` (``None`` or ``(C,)``); both follow
    ``.to()`` and ``state_dict``. ``set_weight`` replaces the weight between epochs, which is how
    deferred re-weighting (LDAM-DRW) switches it on::

        drw = longtail.drw.DeferredReweighting(counts, start_epoch=160)
        criterion = LDAMLoss(counts, reduction="weighted_mean")  # the official DRW normaliser
        for epoch in range(200):
            criterion.set_weight(drw.weight_for_epoch(epoch))  # None before epoch 160
            ...

    A checkpoint taken with a weight loads into a fresh module (weight ``None``) and vice versa:
    the weight buffer takes whatever the state dict holds.

    Shapes: ``logits (N, C)`` or ``(N, C, d1, ...)``, ideally from a cosine (normalised-linear) head;
    ``target`` class indices ``(N,)`` / ``(N, d1, ...)``.

    Args:
        counts: per-class training counts ``(C,)``, all positive.
        max_margin: largest margin (the rarest class's), ``>= 0``.
        scale: logit scale ``s > 0``.
        weight: optional per-class weight ``(C,)``, finite and non-negative.
        reduction: ``"mean"``, ``"weighted_mean"``, ``"sum"`` or ``"none"``.
        ignore_index: targets equal to it are skipped.

    Example:
        >>> criterion = LDAMLoss([100, 10, 1], scale=10.0)
        >>> criterion.margins
        tensor([0.1581, 0.2812, 0.5000])
        >>> criterion(torch.tensor([[0.8, 0.1, -0.3], [0.2, -0.5, 0.6]]), torch.tensor([0, 2]))
        tensor(0.6592)
    """

    margins: torch.Tensor
    weight: torch.Tensor | None

    def __init__(
        self,
        counts: Any,
        max_margin: float = 0.5,
        scale: float = 30.0,
        weight: Any = None,
        reduction: str = "mean",
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        self.max_margin = _check_max_margin(max_margin)
        self.scale = _check_scale(scale)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.ignore_index = ignore_index
        margins = ldam_margins(counts, self.max_margin)
        self.register_buffer("margins", margins)
        self.register_buffer("weight", _weight_like(weight, margins.numel(), margins))

    @property
    def num_classes(self) -> int:
        return self.margins.numel()

    def set_weight(self, weight: Any) -> None:
        """Replaces the per-class weight (``None`` removes it); moved to the margins' device and dtype."""
        self.weight = _weight_like(weight, self.num_classes, self.margins)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ldam_loss(
            logits,
            target,
            self.margins,
            scale=self.scale,
            weight=self.weight,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
        )

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # The weight buffer is None or a tensor depending on the epoch (DRW), so a checkpoint may
        # hold a weight this module lacks or lack one it has: take the checkpoint's state as it is.
        key = prefix + "weight"
        if key in state_dict:
            value = state_dict[key]
            self.weight = torch.empty(value.shape, dtype=self.margins.dtype, device=self.margins.device)
        else:
            self.weight = None
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, max_margin={self.max_margin}, scale={self.scale}, "
            f"weighted={self.weight is not None}, reduction={self.reduction!r}, ignore_index={self.ignore_index}"
        )


__all__ = ["LDAMLoss"]
