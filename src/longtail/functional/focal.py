"""Focal losses (Lin et al., ICCV 2017): softmax (multi-class) and sigmoid (one-vs-all)."""

from __future__ import annotations

from typing import Any

import torch

from ..checks import check_gamma, check_label_smoothing, check_real
from ._core import check_multilabel_weight, sigmoid_loss, softmax_loss
from ._prepare import prepare


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    gamma: float = 2.0,
    reduction: str = "mean",
    ignore_index: int = -100,
    *,
    label_smoothing: float = 0.0,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Softmax focal loss, :math:`\ell_n = -w_{y_n} (1 - p_{n,y_n})^\gamma \log p_{n,y_n}`.

    ``p = softmax(logits)`` over the class dimension. ``gamma = 0`` is cross-entropy, in value and
    gradient. The modulator is computed as ``exp(gamma * log(1 - p))`` with a stable
    ``log(1 - p)``, so gradients stay finite for ``gamma < 1`` and for ``p -> 1``.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``. float16/bfloat16 are computed in float32.
        target: class indices ``(N,)`` / ``(N, d1, ...)`` (integer), or probabilities with the
            logits' shape (float). Soft targets give ``-sum_c t_c w_c (1 - p_c)**gamma log p_c``.
        weight: optional per-class weight ``(C,)`` (the focal ``alpha``): a sample's loss is
            multiplied by the weight of its class.
        gamma: focusing parameter, ``>= 0``.
        reduction: ``"mean"`` (weighted sum / number of non-ignored samples), ``"weighted_mean"``
            (weighted sum / sum of the samples' weights, as ``F.cross_entropy``), ``"sum"`` or
            ``"none"`` (one value per sample, 0 where ignored).
        ignore_index: class-index targets equal to it contribute nothing.
        label_smoothing: ``eps`` in ``[0, 1)``: the loss becomes
            ``w_y sum_c q_c (-(1 - p_c)**gamma log p_c)`` with ``q = (1 - eps) onehot(y) + eps / C``
            (probability targets: ``(1 - eps) t + eps / C``); the weight stays ``w_y``, that of the
            unsmoothed label (see :func:`longtail.functional.class_balanced_loss`).
        sample_weight: optional per-sample weights ``(N,)`` / ``(N, d1, ...)``, finite and ``>= 0``,
            multiplying each sample's loss with its class weight (``"weighted_mean"`` divides by
            ``sum_n s_n w_n``, ``"mean"`` by the number of non-ignored samples).

    Returns:
        A scalar, or ``(N, d1, ...)`` for ``reduction="none"``, in the logits' dtype.

    Example:
        >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
        >>> focal_loss(logits, torch.tensor([0, 1]), gamma=2.0)
        tensor(1.3061)
    """
    gamma = check_gamma(gamma)
    label_smoothing = check_label_smoothing(label_smoothing)
    p = prepare(logits, target, weight, ignore_index, reduction, sample_weight=sample_weight)
    return softmax_loss(p, gamma, reduction, logits.dtype, label_smoothing)


def sigmoid_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    gamma: float = 2.0,
    alpha: float | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    multilabel_weight: str = "average",
    *,
    pos_weight: Any = None,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Sigmoid (one-vs-all) focal loss summed over classes.

    :math:`\ell_n = w_n \sum_{i=1}^{C} (1 - p^t_{n,i})^\gamma \,\mathrm{BCE}(z_{n,i}, t_{n,i})` with
    :math:`p^t = \sigma(z)` for a positive and :math:`1 - \sigma(z)` for a negative; the modulator is
    ``exp(gamma * logsigmoid(-z_t))``, finite for any logit. ``gamma = 0`` is BCE-with-logits summed
    over classes, in value and gradient.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``.
        target: class indices (one positive per sample: the paper's single-label setting), or
            multi-hot / soft targets with the logits' shape.
        weight: optional per-class weight ``(C,)``. Class-index target: ``w_y`` multiplies all ``C``
            terms of the sample (not BCE's per-column ``weight`` nor ``pos_weight``). Float targets:
            see ``multilabel_weight``.
        gamma: focusing parameter, ``>= 0``.
        alpha: optional torchvision-style balance in ``[0, 1]``: positives weighted by ``alpha``,
            negatives by ``1 - alpha``.
        reduction: as in :func:`focal_loss`; ``"mean"`` divides the sum over all ``N * C`` terms by
            ``N`` (the official CB code), not by ``N * C`` as ``BCEWithLogitsLoss``.
        ignore_index: for class-index targets.
        multilabel_weight: rule for float targets. ``"average"``: the sample weight is
            ``sum_c t_c w_c / sum_c t_c``, the mean weight of its positive labels (``w_y`` for a
            one-hot row, the mean class weight for a row with no positive); ``"by_class"``: term
            ``i`` is weighted by ``w_i`` (``weighted_mean`` then divides by ``N * mean(w)``).
        pos_weight: optional ``(C,)`` finite positive weights of the positive terms (as
            ``BCEWithLogitsLoss``): ``BCE_pw = -[pw_i t log sigma(z) + (1 - t) log(1 - sigma(z))]`` in place
            of BCE, so a positive's focal term is ``pw_i (1 - p)**gamma (-log p)``, a negative's unchanged.
            A tensor on the logits' device, or a list / array.
        sample_weight: optional per-sample weights ``(N,)`` / ``(N, d1, ...)``, finite and ``>= 0``,
            multiplying each sample's loss with its weight (``"weighted_mean"`` divides by their product's
            sum, ``"mean"`` by the number of non-ignored samples).

    Returns:
        A scalar, or ``(N, d1, ...)`` for ``reduction="none"``, in the logits' dtype.

    Example:
        >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
        >>> sigmoid_focal_loss(logits, torch.tensor([0, 1]), gamma=2.0)
        tensor(1.7473)
    """
    gamma = check_gamma(gamma)
    if alpha is not None:
        alpha = check_real("alpha", alpha, low=0.0, high=1.0)
    check_multilabel_weight(multilabel_weight)
    p = prepare(logits, target, weight, ignore_index, reduction, sample_weight=sample_weight, pos_weight=pos_weight)
    return sigmoid_loss(p, gamma, reduction, logits.dtype, multilabel_weight, alpha)
