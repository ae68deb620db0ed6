"""Prior-adjusted softmax: Balanced Softmax (Ren et al., NeurIPS 2020) and logit adjustment (Menon et al., ICLR 2021).

Both are cross-entropy on logits shifted by the log class prior ``log pi_c = log(n_c / sum_k n_k)``:
training on ``z + tau * log pi`` makes the model learn (roughly) balanced-class scores, and the
post-hoc form subtracts ``tau * log pi`` from a model trained with plain cross-entropy.

Zero counts: ``log pi_c = -inf`` for a class with no samples would make the loss infinite or NaN
(``0 * -inf`` in soft targets, ``tau = 0``), so a zero count is an error and a non-finite
``log_prior`` tensor is refused. Add a pseudo-count (``counts + 1``, or a fraction) for a class that
is genuinely absent.
"""

from __future__ import annotations

from typing import Any

import torch

from ..checks import (
    as_counts,
    check_class_weight,
    check_finite_per_class,
    check_label_smoothing,
    check_logits,
    check_tau,
    is_compiling,
)
from ._core import softmax_loss
from ._prepare import class_dim_view, compute_dtype, prepare


def class_log_prior(counts: Any, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""Log class prior :math:`\log \pi_c = \log n_c - \log \sum_k n_k`, computed in float64.

    Args:
        counts: per-class training counts ``(C,)`` (list, array or tensor), over the whole training set.
        dtype: floating dtype of the result.

    Returns:
        Tensor of shape ``(C,)``, every entry finite and ``<= 0``.

    Raises:
        ValueError: for a zero count (its log prior would be ``-inf``); add a pseudo-count instead.

    Example:
        >>> class_log_prior([90, 9, 1])
        tensor([-0.1054, -2.4079, -4.6052])
    """
    n = as_counts(counts)
    if not bool((n > 0).all()):
        missing = torch.nonzero(n == 0).flatten().tolist()
        raise ValueError(
            f"counts must be positive for every class (log prior of a class with no samples is -inf); got 0 for "
            f"classes {missing}. Add a pseudo-count, e.g. counts + 1, if a class is absent"
        )
    return (torch.log(n) - torch.log(n.sum())).to(dtype)


def _resolve_log_prior(
    counts: Any, log_prior: torch.Tensor | None, logits: torch.Tensor, caller: str, *, check_values: bool = True
) -> torch.Tensor:
    """The log prior ``(C,)`` on the logits' device in the compute dtype, from exactly one of the two forms.

    ``check_values=False`` leaves the finiteness of a given ``log_prior`` tensor to the caller (the losses
    merge it into :func:`~longtail.functional._prepare.prepare`'s one value check)."""
    if (counts is None) == (log_prior is None):
        raise TypeError(f"{caller} needs exactly one of counts and log_prior; got {'both' if counts is not None else 'neither'}")
    num_classes = logits.shape[1]
    dtype = compute_dtype(logits.dtype)
    if counts is not None:
        lp = class_log_prior(counts, dtype=torch.float64)
        if lp.numel() != num_classes:
            raise ValueError(f"counts must have one value per class ({num_classes}); got {lp.numel()}")
        return lp.to(device=logits.device, dtype=dtype)
    lp = check_class_weight(log_prior, num_classes, logits.device, name="log_prior").to(dtype)
    if check_values:
        check_finite_per_class("log_prior", lp)
    return lp


def _prior_adjusted_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    counts: Any,
    log_prior: torch.Tensor | None,
    caller: str,
    tau: float,
    weight: torch.Tensor | None,
    reduction: str,
    ignore_index: int,
    label_smoothing: float,
    sample_weight: torch.Tensor | None,
) -> torch.Tensor:
    if not is_compiling():
        label_smoothing = check_label_smoothing(label_smoothing)
    check_logits(logits)
    lp = _resolve_log_prior(counts, log_prior, logits, caller, check_values=False)
    # A given log_prior's values join prepare's one merged value check (counts were checked on the host).
    per_class = [] if log_prior is None else [("log_prior", lp, False)]
    p = prepare(logits, target, weight, ignore_index, reduction, sample_weight=sample_weight, per_class=per_class)
    adjusted = p.logits + tau * class_dim_view(lp, p.logits.dim())
    return softmax_loss(p._replace(logits=adjusted), None, reduction, logits.dtype, label_smoothing)


def logit_adjusted_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    log_prior: torch.Tensor,
    tau: float = 1.0,
    *,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Logit-adjusted loss (Menon et al., ICLR 2021): cross-entropy on :math:`z + \tau \log \pi`.

    .. math::
        \ell_n = -w_{y_n} \log \frac{e^{z_{n,y_n} + \tau \log \pi_{y_n}}}{\sum_j e^{z_{n,j} + \tau \log \pi_j}}

    ``tau = 1`` is :func:`balanced_softmax_loss` (the same value and gradient); ``tau = 0`` is plain
    cross-entropy. Adding a constant to ``log_prior`` changes nothing (softmax is shift invariant),
    so unnormalised log counts work too.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``; float16/bfloat16 are computed in float32 and the
            result is returned in the logits' dtype.
        target: class indices ``(N,)`` / ``(N, d1, ...)``, or probabilities with the logits' shape
            (mixup, label smoothing): ``-sum_c t_c w_c log softmax(z + tau log pi)_c``.
        log_prior: ``(C,)`` float, finite (see :func:`class_log_prior`), on the logits' device.
        tau: ``>= 0``; the paper's default is 1.
        weight: optional per-class weight ``(C,)``.
        reduction: ``"mean"``, ``"weighted_mean"``, ``"sum"`` or ``"none"`` (see
            :func:`longtail.functional.focal_loss`).
        ignore_index: class-index targets equal to it contribute nothing and are not counted.
        label_smoothing: ``eps`` in ``[0, 1)``: cross-entropy on the adjusted logits against
            ``q = (1 - eps) onehot(y) + eps / C`` (probability targets: ``(1 - eps) t + eps / C``); the
            sample's weight stays ``w_y`` (see :func:`longtail.functional.class_balanced_loss`).
        sample_weight: optional per-sample weights ``(N,)`` / ``(N, d1, ...)``, finite and ``>= 0``,
            multiplying each sample's loss with its class weight (``"weighted_mean"`` divides by
            ``sum_n s_n w_n``, ``"mean"`` by the number of non-ignored samples).

    Returns:
        A scalar, or ``(N, d1, ...)`` for ``reduction="none"``.

    Example:
        >>> lp = class_log_prior([90, 9, 1])
        >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
        >>> logit_adjusted_loss(logits, torch.tensor([0, 2]), lp, tau=0.5)
        tensor(0.3032)
    """
    if not is_compiling():
        # Skipped while tracing: dynamo may turn a module's float attribute into a symbolic float.
        tau = check_tau(tau, allow_dynamic=False, allow_zero=True)
    return _prior_adjusted_loss(
        logits, target, None, log_prior, "logit_adjusted_loss", tau, weight, reduction, ignore_index,
        label_smoothing, sample_weight,
    )


def balanced_softmax_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    counts: Any = None,
    *,
    log_prior: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Balanced Softmax loss (Ren et al., NeurIPS 2020): cross-entropy on :math:`z + \log \pi`.

    .. math::
        \ell_n = -\log \frac{n_{y_n} e^{z_{n,y_n}}}{\sum_j n_j e^{z_{n,j}}}
        = \mathrm{CE}(z_n + \log \pi,\ y_n), \qquad \pi_c = n_c / \textstyle\sum_k n_k

    It equals :func:`logit_adjusted_loss` at ``tau = 1``. Predict with the raw logits ``z``: the
    adjustment is for training only.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``.
        target: class indices or probabilities, as in :func:`logit_adjusted_loss`.
        counts: per-class training counts ``(C,)`` (list, array or tensor; all positive). Converted
            on every call; give ``log_prior`` instead (or use :class:`longtail.losses.BalancedSoftmaxLoss`)
            in a training loop or under ``torch.compile``.
        log_prior: precomputed :func:`class_log_prior` ``(C,)`` on the logits' device. Exactly one of
            ``counts`` and ``log_prior``.
        weight: optional per-class weight ``(C,)``.
        reduction: ``"mean"``, ``"weighted_mean"``, ``"sum"`` or ``"none"``.
        ignore_index: class-index targets equal to it contribute nothing.
        label_smoothing: ``eps`` in ``[0, 1)``, as in :func:`logit_adjusted_loss`.
        sample_weight: optional per-sample weights ``(N,)`` / ``(N, d1, ...)``, as in
            :func:`logit_adjusted_loss`.

    Returns:
        A scalar, or ``(N, d1, ...)`` for ``reduction="none"``.

    Example:
        >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
        >>> balanced_softmax_loss(logits, torch.tensor([0, 2]), [90, 9, 1])
        tensor(0.9472)
    """
    return _prior_adjusted_loss(
        logits, target, counts, log_prior, "balanced_softmax_loss", 1.0, weight, reduction, ignore_index,
        label_smoothing, sample_weight,
    )


def logit_adjust(
    logits: torch.Tensor, counts: Any = None, tau: float = 1.0, *, log_prior: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Post-hoc logit adjustment (Menon et al., ICLR 2021): :math:`z - \tau \log \pi`, for prediction.

    Applied to the logits of a model trained with plain cross-entropy, ``argmax`` of the result is
    the balanced-error (Bayes-optimal for a balanced test set, at ``tau = 1``) prediction. Do not
    apply it to a model trained with :func:`logit_adjusted_loss` or :func:`balanced_softmax_loss`:
    those already learned adjusted scores.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``; computed in float32 for half inputs, returned in
            the logits' dtype. Gradients flow through (it is a shift).
        counts: per-class training counts ``(C,)``, all positive; or give ``log_prior``.
        tau: ``>= 0``; the paper tunes it on held-out data, 1 is the default.
        log_prior: precomputed :func:`class_log_prior` ``(C,)`` on the logits' device.

    Returns:
        The adjusted logits, same shape and dtype as ``logits``.

    Example:
        >>> logits = torch.tensor([[2.0, 0.5, -1.0]])
        >>> logit_adjust(logits, [90, 9, 1])
        tensor([[2.1054, 2.9079, 3.6052]])
    """
    tau = check_tau(tau, allow_dynamic=False, allow_zero=True)
    check_logits(logits)
    lp = _resolve_log_prior(counts, log_prior, logits, "logit_adjust")
    z = logits.to(lp.dtype)
    return (z - tau * class_dim_view(lp, z.dim())).to(logits.dtype)


__all__ = ["balanced_softmax_loss", "class_log_prior", "logit_adjust", "logit_adjusted_loss"]
