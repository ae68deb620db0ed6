"""``BalancedSoftmaxLoss`` and ``LogitAdjustedLoss``: cross-entropy on prior-shifted logits, log prior in a buffer."""

from __future__ import annotations

from typing import Any

import torch

from ..checks import REDUCTIONS, check_choice, check_ignore_index, check_label_smoothing, check_tau
from ..functional.logit_adjusted import class_log_prior, logit_adjusted_loss
from ._base import WeightedLoss


class LogitAdjustedLoss(WeightedLoss):
    r"""Logit-adjusted loss of Menon et al. (ICLR 2021): :math:`\mathrm{CE}(z + \tau \log \pi, y)`.

    The log prior :math:`\log \pi_c = \log(n_c / \sum_k n_k)` is computed once (float64) and kept in
    the float32 buffer ``log_prior``: it follows ``.to()`` and ``state_dict``. Counts must all be
    positive (a zero count would put ``-inf`` in the loss; add a pseudo-count). A per-class
    ``weight`` (all ones by default; :meth:`set_weight` replaces it, e.g. deferred re-weighting)
    multiplies each sample's loss. See
    :func:`longtail.functional.logit_adjusted_loss`; ``tau = 1`` is :class:`BalancedSoftmaxLoss`.

    Shapes: ``logits (N, C)`` or ``(N, C, d1, ...)``; ``target`` class indices ``(N,)`` /
    ``(N, d1, ...)`` or probabilities with the logits' shape.

    Args:
        counts: per-class training counts ``(C,)``, all positive.
        tau: ``>= 0``.
        weight: per-class weight ``(C,)``, finite and non-negative; None for all ones.
        reduction: ``"mean"``, ``"weighted_mean"`` (the same as ``"mean"`` while the weight is all
            ones), ``"sum"`` or ``"none"``.
        ignore_index: class-index targets equal to it are skipped.
        label_smoothing: ``eps`` in ``[0, 1)``: cross-entropy on the adjusted logits against
            ``(1 - eps) onehot(y) + eps / C``, weighted by ``w_y`` (the unsmoothed label's weight).

    ``forward(logits, target, sample_weight=None)``: per-sample weights ``(N,)`` / ``(N, d1, ...)``, finite
    and ``>= 0``, multiplying each sample's loss with ``w_y``.

    Example:
        >>> criterion = LogitAdjustedLoss([90, 9, 1], tau=0.5)
        >>> criterion(torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]]), torch.tensor([0, 2]))
        tensor(0.3032)
    """

    log_prior: torch.Tensor

    def __init__(
        self,
        counts: Any,
        tau: float = 1.0,
        reduction: str = "mean",
        ignore_index: int = -100,
        *,
        weight: Any = None,
        label_smoothing: float = 0.0,
    ) -> None:
        log_prior = class_log_prior(counts)
        super().__init__(weight, log_prior.numel())
        self.tau = check_tau(tau, allow_dynamic=False, allow_zero=True)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.ignore_index = check_ignore_index(ignore_index)
        self.label_smoothing = check_label_smoothing(label_smoothing)
        self.register_buffer("log_prior", log_prior)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, sample_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return logit_adjusted_loss(
            logits, target, self.log_prior, self.tau, weight=self.weight, reduction=self.reduction,
            ignore_index=self.ignore_index, label_smoothing=self.label_smoothing, sample_weight=sample_weight,
        )

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, tau={self.tau}, reduction={self.reduction!r}, "
            f"ignore_index={self.ignore_index}{self._smoothing_repr()}"
        )


class BalancedSoftmaxLoss(LogitAdjustedLoss):
    r"""Balanced Softmax loss of Ren et al. (NeurIPS 2020): :math:`\mathrm{CE}(z + \log \pi, y)`.

    The logit-adjusted loss at ``tau = 1`` (it is a :class:`LogitAdjustedLoss` with ``tau`` fixed);
    predict with the raw logits. See :func:`longtail.functional.balanced_softmax_loss`.

    Args:
        counts: per-class training counts ``(C,)``, all positive.
        reduction: ``"mean"``, ``"weighted_mean"``, ``"sum"`` or ``"none"``.
        ignore_index: class-index targets equal to it are skipped.
        weight: per-class weight ``(C,)``; None for all ones.
        label_smoothing: ``eps`` in ``[0, 1)``, as in :class:`LogitAdjustedLoss`.

    Example:
        >>> criterion = BalancedSoftmaxLoss([90, 9, 1])
        >>> criterion(torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]]), torch.tensor([0, 2]))
        tensor(0.9472)
    """

    def __init__(
        self,
        counts: Any,
        reduction: str = "mean",
        ignore_index: int = -100,
        *,
        weight: Any = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(
            counts, tau=1.0, reduction=reduction, ignore_index=ignore_index, weight=weight,
            label_smoothing=label_smoothing,
        )

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, reduction={self.reduction!r}, ignore_index={self.ignore_index}"
            f"{self._smoothing_repr()}"
        )


__all__ = ["BalancedSoftmaxLoss", "LogitAdjustedLoss"]
