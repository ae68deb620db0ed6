"""Prior bias initialisation for sigmoid-based losses (Lin et al. 2017; Cui et al. 2019, section 4)."""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import nn

from .checks import as_counts, check_real


def init_prior_bias(linear_or_bias: nn.Linear | torch.Tensor, prior: Any = None) -> torch.Tensor:
    r"""Sets the classifier bias to :math:`b_c = -\log((1 - \pi_c) / \pi_c)`, in place.

    With sigmoid or focal losses every one-vs-all output starts at probability :math:`\pi`
    instead of 0.5, so the first steps are not dominated by the ``C - 1`` negatives. The paper's
    code uses :math:`\pi = 1/C`, i.e. :math:`b = -\log(C - 1)`. Exclude this bias from weight decay
    (the paper does; the trainer's parameter groups do it).

    Args:
        linear_or_bias: an ``nn.Linear`` (or any module with a ``bias``) or the bias tensor ``(C,)``.
        prior: ``None`` for :math:`1/C`; a float in ``(0, 1)`` for every class; or per-class
            priors ``(C,)`` in ``(0, 1)``, e.g. ``counts / counts.sum()``.

    Returns:
        The bias tensor, modified in place.

    Example:
        >>> layer = nn.Linear(8, 5)
        >>> init_prior_bias(layer)
        Parameter containing:
        tensor([-1.3863, -1.3863, -1.3863, -1.3863, -1.3863], requires_grad=True)
    """
    bias = linear_or_bias if isinstance(linear_or_bias, torch.Tensor) else getattr(linear_or_bias, "bias", None)
    if bias is None:
        raise ValueError(
            "linear_or_bias must be a module with a bias or a bias tensor; "
            f"got a {type(linear_or_bias).__name__} that has no bias (was it built with bias=False?)"
        )
    if bias.dim() != 1:
        raise ValueError(f"bias must be 1-D (one value per class); got shape {tuple(bias.shape)}")
    num_classes = bias.numel()
    if prior is None:
        if num_classes < 2:
            raise ValueError(
                "prior must be given for a bias with fewer than 2 classes (the default 1/C needs C >= 2); "
                f"got prior=None with C={num_classes}"
            )
        priors = torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64)
    elif isinstance(prior, numbers.Real) and not isinstance(prior, bool):
        value = check_real("prior", prior, low=0.0, high=1.0, low_open=True, high_open=True)
        priors = torch.full((num_classes,), value, dtype=torch.float64)
    else:
        priors = as_counts(prior, name="prior")
        if priors.numel() != num_classes:
            raise ValueError(f"prior must have one value per class ({num_classes}); got {priors.numel()} values")
        if bool((priors <= 0).any()) or bool((priors >= 1).any()):
            raise ValueError(f"prior must be in (0, 1) for every class; got {priors.tolist()}")
    values = torch.log(priors) - torch.log1p(-priors)
    with torch.no_grad():
        bias.copy_(values.to(dtype=bias.dtype, device=bias.device))
    return bias
