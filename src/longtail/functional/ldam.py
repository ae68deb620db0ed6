"""LDAM: label-distribution-aware margin loss (Cao, Wei, Gaidon, Arechiga, Ma; NeurIPS 2019)."""

from __future__ import annotations

from typing import Any

import torch

from ..checks import (
    as_counts,
    check_class_weight,
    check_index_target,
    check_label_smoothing,
    check_logits,
    check_real,
    is_compiling,
)
from ._core import softmax_loss
from ._prepare import compute_dtype, prepare


def ldam_margins(counts: Any, max_margin: float = 0.5, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""Per-class LDAM margins :math:`m_c = C' / n_c^{1/4}`, with :math:`C'` such that :math:`\max_c m_c` is ``max_margin``.

    The rarest class gets ``max_margin`` and a class ``k`` times as frequent gets ``max_margin / k**(1/4)``
    (the official code: ``m = 1 / sqrt(sqrt(n)); m *= max_m / max(m)``). Computed in float64.

    A class with no training samples would need an infinite margin, so a zero count is an error;
    add a pseudo-count (e.g. ``counts + 1``) if a class is genuinely absent.

    Args:
        counts: per-class training counts ``(C,)`` over the whole training set (list, array or tensor).
        max_margin: the largest margin, ``>= 0``; the paper tunes it, 0.5 is the official default.
            ``0`` gives all-zero margins (LDAM becomes cross-entropy on ``scale * z``).
        dtype: floating dtype of the result.

    Returns:
        Tensor of shape ``(C,)``.

    Example:
        >>> ldam_margins([10000, 100, 1])
        tensor([0.0500, 0.1581, 0.5000])
    """
    n = as_counts(counts)
    max_margin = check_real("max_margin", max_margin, low=0.0, finite=True)
    if not bool((n > 0).all()):
        missing = torch.nonzero(n == 0).flatten().tolist()
        raise ValueError(
            f"counts must be positive for every class (a class with no samples would need an infinite margin); "
            f"got 0 for classes {missing}. Add a pseudo-count, e.g. counts + 1, if a class is absent"
        )
    raw = n.pow(-0.25)
    return (raw * (max_margin / raw.max())).to(dtype)


def ldam_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    margins: torch.Tensor,
    *,
    scale: float = 30.0,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""LDAM loss: cross-entropy on scaled logits with the true class's logit lowered by its margin.

    .. math::
        \ell_n = -w_{y_n} \log \frac{e^{s (z_{n,y_n} - m_{y_n})}}
                 {e^{s (z_{n,y_n} - m_{y_n})} + \sum_{j \ne y_n} e^{s z_{n,j}}}
        = w_{y_n} \, \mathrm{CE}\big(s\,(z_n - m_{y_n} e_{y_n}),\ y_n\big)

    with margins ``m`` from :func:`ldam_margins` and scale ``s``. The official code feeds logits from a
    normalised-linear (cosine) head, so ``z`` lies in ``[-1, 1]`` and ``s = 30`` sets the softmax
    temperature; with an ordinary linear head the scale and margins lose that meaning.

    For deferred re-weighting (LDAM-DRW) pass ``weight`` from epoch ``start_epoch`` on (see
    :class:`longtail.drw.DeferredReweighting`). The official code then uses ``F.cross_entropy``'s
    mean, which divides by the sum of the samples' weights: ``reduction="weighted_mean"`` here.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``; float16/bfloat16 are computed in float32 and the
            result is returned in the logits' dtype (a float16 loss above 65504, e.g. ``s * |z|``
            that large, becomes ``inf``; the gradient stays finite).
        target: class indices ``(N,)`` / ``(N, d1, ...)``. Float (soft) targets raise ``TypeError``:
            the margin belongs to one true class.
        margins: ``(C,)`` float, finite, ``>= 0``, on the logits' device.
        scale: ``s > 0``.
        weight: optional per-class weight ``(C,)``; a sample's loss is multiplied by ``w_y``.
        reduction: ``"mean"`` (weighted sum / number of non-ignored samples), ``"weighted_mean"``
            (weighted sum / sum of the samples' weights, as ``F.cross_entropy``), ``"sum"`` or
            ``"none"`` (one value per sample, 0 where ignored).
        ignore_index: targets equal to it contribute nothing and are not counted.
        label_smoothing: ``eps`` in ``[0, 1)``: cross-entropy against ``q = (1 - eps) onehot(y) + eps / C``
            on the margin-shifted, scaled logits ``u = s (z - m_y e_y)``,
            ``w_y [-(1 - eps) log softmax(u)_y - eps / C sum_c log softmax(u)_c]``; the weight stays
            ``w_y`` (see :func:`longtail.functional.class_balanced_loss`).
        sample_weight: optional per-sample weights ``(N,)`` / ``(N, d1, ...)``, finite and ``>= 0``,
            multiplying each sample's loss with ``w_y`` (``"weighted_mean"`` divides by ``sum_n s_n w_n``).

    Returns:
        A scalar, or ``(N, d1, ...)`` for ``reduction="none"``.

    Example:
        >>> m = ldam_margins([100, 10, 1])
        >>> cosine = torch.tensor([[0.8, 0.1, -0.3], [0.2, -0.5, 0.6]])
        >>> ldam_loss(cosine, torch.tensor([0, 2]), m, scale=10.0)
        tensor(0.6592)
    """
    if not is_compiling():
        # Skipped while tracing: dynamo may turn a module's float attribute into a symbolic float.
        scale = check_real("scale", scale, low=0.0, low_open=True, finite=True)
        label_smoothing = check_label_smoothing(label_smoothing)
    check_index_target(target, "ldam_loss")
    check_logits(logits)
    m = check_class_weight(margins, logits.shape[1], logits.device, name="margins").to(compute_dtype(logits.dtype))
    # The margins' values join prepare's one merged value check (one host sync per call).
    p = prepare(logits, target, weight, ignore_index, reduction, sample_weight=sample_weight,
                per_class=[("margins", m, True)])
    index = p.target.unsqueeze(1)
    # Subtract m_y at the true class only; scatter_add keeps the class dimension where it is, so
    # dense inputs (N, C, d1, ...) need no transpose. Ignored positions point at class 0 and are masked later.
    shifted = p.logits.scatter_add(1, index, -m[index])
    return softmax_loss(p._replace(logits=scale * shifted), None, reduction, logits.dtype, label_smoothing)


__all__ = ["ldam_loss", "ldam_margins"]
