"""Effective number of samples and class-balanced weights (Cui et al., CVPR 2019)."""

from __future__ import annotations

from typing import Any

import torch

from .checks import as_counts, check_beta, check_choice

ZERO_COUNT_POLICIES = ("error", "ignore")


def _one_minus_beta_pow(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """``1 - beta**n`` in float64 without cancellation: ``-expm1(n * log(beta))``.

    ``beta**n`` rounds to 1 long before beta does when beta is close to 1, so the naive form loses
    every digit; expm1/log1p keep full relative precision for any beta in [0, 1).
    """
    if beta == 0.0:
        # 0**0 = 1 (a class with no samples covers nothing); log(0) would give 0 * -inf = NaN.
        return (counts > 0).to(torch.float64)
    log_beta = torch.log1p(torch.tensor(-(1.0 - beta), dtype=torch.float64))
    return -torch.expm1(counts * log_beta)


def effective_number(counts: Any, beta: float, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""Effective number of samples per class, :math:`E(n) = (1 - \beta^n) / (1 - \beta)`.

    :math:`E(n) = 1` for :math:`n \ge 1` at ``beta = 0`` (all samples overlap) and
    :math:`E(n) \to n` as :math:`\beta \to 1`; ``beta = 1`` returns that limit, ``n`` itself.
    Computed in float64 with the stable form of ``1 - beta**n``.

    Args:
        counts: per-class sample counts, shape ``(C,)`` (list, numpy array or tensor), non-negative.
        beta: in ``[0, 1]``; the paper writes ``beta = (N - 1) / N`` for ``N`` unique prototypes.
        dtype: floating dtype of the result.

    Returns:
        Tensor of shape ``(C,)``.

    Example:
        >>> effective_number([1, 10, 100], beta=0.9)
        tensor([1.0000, 6.5132, 9.9997], dtype=torch.float64)
    """
    n = as_counts(counts)
    beta = check_beta(beta)
    if beta == 1.0:
        return n.to(dtype)
    return (_one_minus_beta_pow(n, beta) / (1.0 - beta)).to(dtype)


def class_balanced_weights(
    counts: Any,
    beta: float,
    *,
    normalize: bool = True,
    zero_counts: str = "error",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    r"""Class-balanced weights :math:`w_c = (1 - \beta) / (1 - \beta^{n_c}) = 1 / E(n_c)`.

    With ``normalize=True`` (the paper's section 4 and the official code) the weights are rescaled
    to sum to the number of classes, so the loss keeps the scale of the unweighted loss:
    ``beta = 0`` gives all ones and ``beta = 1`` gives inverse frequency rescaled to sum to ``C``.

    Args:
        counts: per-class training counts, shape ``(C,)``. Counts over the whole training set,
            never a batch (see :func:`longtail.class_counts`).
        beta: in ``[0, 1]``.
        normalize: rescale to ``sum(w) == C`` (or the number of present classes, see below).
        zero_counts: what to do with a class that has no samples (its weight would be infinite):
            ``"error"`` raises; ``"ignore"`` gives it weight 0 and normalises over the present
            classes only, so the weights sum to the number of present classes.
        dtype: floating dtype of the result (computed in float64).

    Returns:
        Tensor of shape ``(C,)``.

    Example:
        >>> class_balanced_weights([100, 10, 1], beta=0.99)
        tensor([0.0422, 0.2800, 2.6777])
    """
    n = as_counts(counts)
    beta = check_beta(beta)
    check_choice("zero_counts", zero_counts, ZERO_COUNT_POLICIES)
    present = n > 0
    if not bool(present.all()):
        if zero_counts == "error":
            missing = torch.nonzero(~present).flatten().tolist()
            raise ValueError(
                f"counts must be positive for every class, got 0 for classes {missing}; pass "
                "zero_counts='ignore' to give absent classes weight 0"
            )
        if not bool(present.any()):
            raise ValueError("counts must have at least one positive class; got all zeros")
    safe_n = torch.where(present, n, torch.ones_like(n))
    if beta == 1.0:
        weight = 1.0 / safe_n
    else:
        weight = (1.0 - beta) / _one_minus_beta_pow(safe_n, beta)
    weight = torch.where(present, weight, torch.zeros_like(weight))
    if normalize:
        weight = weight * (present.sum() / weight.sum())
    return weight.to(dtype)
