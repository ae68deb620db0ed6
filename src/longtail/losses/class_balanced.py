"""``ClassBalancedLoss``: the class-balanced loss with its weights kept in a buffer."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..checks import (
    REDUCTIONS,
    as_counts,
    as_real_vector,
    as_pos_weight,
    check_beta,
    check_choice,
    check_focal_gamma,
    check_ignore_index,
    check_label_smoothing,
    check_pos_weight_loss,
)
from ..counts import class_counts
from ..functional._core import check_multilabel_weight
from ..functional.class_balanced import class_balanced_loss
from ..loss_families import FAMILY_NAMES
from ..weights.class_balanced import _class_balanced_weights, _warn_beta_range, per_class_weights
from ._base import WeightedLoss, _in_dtype


def _is_per_class(beta: Any) -> bool:
    """Whether ``beta`` is a vector of per-class betas (a list, tuple, array or tensor with a dimension)."""
    if isinstance(beta, torch.Tensor):
        return beta.ndim > 0
    return isinstance(beta, (list, tuple, np.ndarray)) and np.ndim(beta) > 0


class ClassBalancedLoss(WeightedLoss):
    r"""Class-balanced loss of Cui et al. (CVPR 2019) for fixed training counts.

    The weights :math:`w_c = (1 - \beta) / (1 - \beta^{n_c})`, normalised to sum to ``C``, are
    computed once (float64, stable) from ``counts`` and kept in the buffer ``weight`` (float32),
    next to the buffer ``counts``: both follow ``.to()`` and round-trip through ``state_dict``.
    :meth:`set_weight` replaces the weights (see :class:`longtail.losses.WeightedLoss`).
    See :func:`longtail.functional.class_balanced_loss` for the losses, targets and reductions.

    Args:
        counts: per-class training counts ``(C,)``, over the whole training set.
        beta: in ``[0, 1]``; 0 is the unweighted loss, 1 inverse frequency. The paper's grid is
            {0.9, 0.99, 0.999, 0.9999}. Or ``(C,)`` betas, one per class (**an extension beyond the paper**, which
            defines ``beta = (N - 1) / N`` from a class's number of prototypes ``N`` but uses one beta for all):
            ``w_c = (1 - beta_c) / (1 - beta_c ** n_c)`` (:func:`longtail.weights.per_class_weights`, e.g. from
            :func:`longtail.tune_beta`'s per-class candidate); ``beta`` then holds them as a tuple. Construction with
            one beta warns (:class:`longtail.BetaRangeWarning`, once; an
            extension beyond the paper) when the weights come out nearly uniform or nearly inverse frequency
            for these counts, naming the range of beta where they interpolate (:func:`longtail.beta_range`);
            :func:`longtail.tune_beta` chooses beta on a validation split.
        loss: ``"softmax"``, ``"sigmoid"``, ``"focal"`` (sigmoid focal) or ``"softmax_focal"``.
        gamma: focal parameter ``>= 0`` for ``"focal"`` and ``"softmax_focal"``; must stay 0 with
            ``"softmax"`` and ``"sigmoid"``, which have no focal term (a non-zero value raises ValueError).
        reduction: ``"mean"`` (official), ``"weighted_mean"`` (PyTorch's), ``"sum"`` or ``"none"``.
        ignore_index: class-index targets equal to it are skipped.
        zero_counts: ``"error"`` or ``"ignore"`` (absent classes get weight 0).
        multilabel_weight: rule for multi-hot targets with the sigmoid losses.
        label_smoothing: ``eps`` in ``[0, 1)`` for ``"softmax"`` and ``"softmax_focal"`` (refused with the
            sigmoid losses): ``w_y sum_c q_c L_c`` with ``q = (1 - eps) onehot(y) + eps / C``, the weight
            ``w_y`` that of the unsmoothed label, so each sample's loss is minimised at ``q`` (PyTorch
            weighs the smoothing term of class ``c`` by ``w_c`` instead, pytorch/pytorch#104776).
        pos_weight: ``(C,)`` finite positive weights of the positive terms for ``"sigmoid"`` and ``"focal"``
            (refused with the softmax losses), as ``BCEWithLogitsLoss``:
            ``-[pw_c t log sigma(z) + (1 - t) log(1 - sigma(z))]``, the focal term of a positive times
            ``pw_c``. Kept in the buffer ``pos_weight`` (``None`` when not given).

    ``forward(logits, target, sample_weight=None)``: ``sample_weight`` ``(N,)`` / ``(N, d1, ...)``, finite
    and ``>= 0``, multiplies each sample's loss with ``w_y`` (``"weighted_mean"`` divides by
    ``sum_n s_n w_{y_n}``, ``"mean"`` by the number of non-ignored samples).

    Example:
        >>> criterion = ClassBalancedLoss([500, 50, 5], beta=0.999, loss="focal", gamma=1.0)
        >>> criterion.weight
        tensor([0.0341, 0.2752, 2.6907])
        >>> criterion(torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([2]))
        tensor(9.2555)

        With label smoothing ``eps = 0.1`` the one sample's loss is
        ``w_2 [0.9 (-log p_2) + 0.1 / 3 sum_c (-log p_c)]``, still weighted by ``w_2`` alone:

        >>> smoothed = ClassBalancedLoss([500, 50, 5], beta=0.999, label_smoothing=0.1)
        >>> smoothed(torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([2]))
        tensor(8.3179)
    """

    weight: torch.Tensor
    counts: torch.Tensor
    pos_weight: torch.Tensor | None

    def __init__(
        self,
        counts: Any,
        beta: float = 0.9999,
        loss: str = "softmax",
        gamma: float = 0.0,
        reduction: str = "mean",
        ignore_index: int = -100,
        *,
        zero_counts: str = "error",
        multilabel_weight: str = "average",
        label_smoothing: float = 0.0,
        pos_weight: Any = None,
    ) -> None:
        n = as_counts(counts)
        per_class = _is_per_class(beta)
        if per_class:
            weight = per_class_weights(n, beta, normalize=True, zero_counts=zero_counts, dtype=torch.float64)
            beta = tuple(float(b) for b in as_real_vector(beta, "beta").tolist())
        else:
            beta = check_beta(beta)
            weight = _class_balanced_weights(n, beta, normalize=True, zero_counts=zero_counts)
        super().__init__(weight=weight.to(torch.float32))
        self.beta: float | tuple[float, ...] = beta
        self.loss = check_choice("loss", loss, FAMILY_NAMES)
        # A focal parameter for a loss without a focal term would be ignored silently: refused instead.
        self.gamma = check_focal_gamma(gamma, self.loss)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.ignore_index = check_ignore_index(ignore_index)
        self.multilabel_weight = check_multilabel_weight(multilabel_weight)
        self.label_smoothing = check_label_smoothing(label_smoothing, self.loss)
        check_pos_weight_loss(pos_weight, self.loss)
        self.register_buffer("counts", as_counts(counts))
        checked = as_pos_weight(pos_weight, self.num_classes)
        self.register_buffer("pos_weight", None if checked is None else _in_dtype(checked, torch.float32, "pos_weight", positive=True))
        # Beyond the paper: a beta that makes the weights nearly uniform / inverse frequency warns, once (after
        # every argument check, so a refused call does not warn first).
        if not per_class:
            _warn_beta_range(n, beta, weight, stacklevel=2)

    @classmethod
    def from_labels(cls, labels: Any, num_classes: int, **kwargs: Any) -> ClassBalancedLoss:
        """Counts the training labels (tensor, array or DataLoader) with :func:`longtail.class_counts`."""
        ignore_index = kwargs.get("ignore_index", -100)
        return cls(class_counts(labels, num_classes, ignore_index=ignore_index), **kwargs)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, sample_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return class_balanced_loss(
            logits, target, self.weight, loss=self.loss, gamma=self.gamma, reduction=self.reduction,
            ignore_index=self.ignore_index, multilabel_weight=self.multilabel_weight,
            label_smoothing=self.label_smoothing, sample_weight=sample_weight, pos_weight=self.pos_weight,
        )

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, beta={self.beta}, loss={self.loss!r}, gamma={self.gamma}, "
            f"reduction={self.reduction!r}{self._smoothing_repr()}"
        )
