"""Class-Balanced loss (Cui et al., CVPR 2019) on softmax, sigmoid and focal losses."""

from __future__ import annotations

from typing import Any

import torch

from ..checks import check_choice, check_focal_gamma, check_label_smoothing, check_pos_weight_loss
from ..loss_families import FAMILIES, FAMILY_NAMES
from ._core import check_multilabel_weight, sigmoid_loss, softmax_loss
from ._prepare import prepare


def class_balanced_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    *,
    loss: str = "softmax",
    gamma: float = 0.0,
    reduction: str = "mean",
    ignore_index: int = -100,
    multilabel_weight: str = "average",
    label_smoothing: float = 0.0,
    sample_weight: torch.Tensor | None = None,
    pos_weight: Any = None,
) -> torch.Tensor:
    r"""Class-balanced loss: the weight of a sample's true class times that sample's whole loss.

    .. math::
        \mathrm{CB}(z, y) = w_y \, L(z, y), \qquad
        w_c = \frac{1 - \beta}{1 - \beta^{n_c}} \ \text{(normalised to sum to } C\text{)}

    with ``weight`` from :func:`longtail.class_balanced_weights` and ``L`` one of

    - ``"softmax"``: cross-entropy ``-log p_y``;
    - ``"sigmoid"``: ``sum_{i=1..C} BCE(z_i, 1[i == y])``, all one-vs-all terms, negatives included;
    - ``"focal"``: the paper's sigmoid focal loss, ``sum_i (1 - p^t_i)**gamma BCE(z_i, 1[i == y])``;
    - ``"softmax_focal"``: ``-(1 - p_y)**gamma log p_y``.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``; float16/bfloat16 are computed in float32.
        target: class indices ``(N,)`` / ``(N, d1, ...)``, or float targets with the logits' shape:
            probabilities (mixup, label smoothing) for every loss, multi-hot labels for ``sigmoid``
            and ``focal``. Softmax losses with soft targets are linear in the target
            (``sum_c t_c w_c L(z, c)``); sigmoid losses weight a float-target sample by
            ``sum_c t_c w_c / sum_c t_c`` (``multilabel_weight="average"``) or each term ``i`` by
            ``w_i`` (``"by_class"``).
        weight: per-class weights ``(C,)`` on the logits' device.
        loss: ``"softmax"``, ``"sigmoid"``, ``"focal"`` or ``"softmax_focal"``.
        gamma: focal parameter (``"focal"`` and ``"softmax_focal"``), ``>= 0``; must stay 0 with ``"softmax"``
            and ``"sigmoid"``, which have no focal term (as :class:`longtail.ClassBalancedLoss`).
        reduction: ``"mean"`` (the official code: weighted sum / number of non-ignored samples),
            ``"weighted_mean"`` (PyTorch's: weighted sum / sum of the samples' weights), ``"sum"``,
            or ``"none"`` (one value per sample, 0 where ignored).
        ignore_index: class-index targets equal to it contribute nothing and are not counted.
        multilabel_weight: see ``target``.
        label_smoothing: ``eps`` in ``[0, 1)``, softmax losses only (a non-zero value raises ValueError with
            ``"sigmoid"`` and ``"focal"``). The per-sample term becomes ``sum_c q_c L_c`` with
            ``q = (1 - eps) onehot(y) + eps / C`` (probability targets: ``(1 - eps) t + eps / C``, as
            PyTorch) and ``L_c`` the loss of class ``c`` (``-log p_c``, or ``-(1 - p_c)**gamma log p_c``),
            while the sample's weight stays ``w_y``, that of its unsmoothed label:
            ``w_y [(1 - eps) L_y + eps / C sum_c L_c]``. Each sample's loss is then minimised at
            ``p = q`` whatever the weights; PyTorch instead weighs the smoothing term of class ``c`` by
            ``w_c`` (pytorch/pytorch#104776), so the two agree only without class weights. Probability
            targets with class weights: ``(1 - eps) sum_c t_c w_c L_c + eps / C (sum_c t_c w_c) sum_c L_c``.
            ``eps = 0`` is the loss without smoothing, bit for bit. See ``docs/conventions.md``.
        sample_weight: optional per-sample weights ``s`` of the per-sample shape ``(N,)`` / ``(N, d1, ...)``
            (a float tensor on the logits' device, finite and ``>= 0``), multiplying each sample's loss
            with its class weight: ``"none"`` gives ``s_n w_n l_n``, ``"sum"`` their sum, ``"mean"`` that
            sum over the number of non-ignored samples, ``"weighted_mean"`` over ``sum_n s_n w_n``.
        pos_weight: optional ``(C,)`` finite positive weights of the positive terms, sigmoid losses only
            (as ``BCEWithLogitsLoss``): BCE becomes ``-[pw_c t log sigma(z) + (1 - t) log(1 - sigma(z))]``
            and the sigmoid focal term of a positive ``pw_c (1 - p)**gamma (-log p)``; negatives unchanged.
            A tensor on the logits' device, or a list / array.

    Returns:
        A scalar, or ``(N, d1, ...)`` for ``reduction="none"``, in the logits' dtype.

    Example:
        >>> import longtail
        >>> w = longtail.class_balanced_weights([100, 10, 1], beta=0.99)
        >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
        >>> class_balanced_loss(logits, torch.tensor([0, 2]), w)
        tensor(0.1518)
    """
    check_choice("loss", loss, FAMILY_NAMES)
    # A focal parameter for a loss without a focal term would be ignored silently: refused instead.
    gamma = check_focal_gamma(gamma, loss)
    check_multilabel_weight(multilabel_weight)
    # Label smoothing is defined for the softmax losses, pos_weight for the sigmoid ones: refused elsewhere.
    label_smoothing = check_label_smoothing(label_smoothing, loss)
    check_pos_weight_loss(pos_weight, loss)
    if weight is None:
        raise TypeError("weight must be a tensor of per-class weights; got None (use focal_loss or F.cross_entropy)")
    p = prepare(logits, target, weight, ignore_index, reduction, sample_weight=sample_weight, pos_weight=pos_weight)
    family = FAMILIES[loss]
    focal_gamma = gamma if family.focal else None
    if family.kind == "sigmoid":
        return sigmoid_loss(p, focal_gamma, reduction, logits.dtype, multilabel_weight)
    return softmax_loss(p, focal_gamma, reduction, logits.dtype, label_smoothing)


__all__ = ["class_balanced_loss"]
