"""Post-hoc classifier adjustments (``longtail train --posthoc``), their tau chosen on the validation split.

After the last epoch (or, with ``epochs = 0`` and ``init_from``, on a parent's model with no
training), the classifier is adjusted for every ``tau`` of the method's grid, each candidate is
evaluated on the balanced validation split, and the one with the highest balanced validation
accuracy is kept (ties: the earliest in the grid, i.e. the smaller adjustment). The test set is
never looked at for the choice. ``result.json`` reports, under ``final.posthoc``, the method, the
chosen tau, every candidate's validation score and the unadjusted model's test summary.

- ``tau_norm`` (Kang et al., ICLR 2020): ``w_k <- w_k / ||w_k||**tau``, bias dropped
  (:class:`longtail.models.TauNormalized`), tau in 0, 0.1, ..., 1; a linear classifier only.
- ``logit_adjust`` (Menon et al., ICLR 2021): ``z - tau * log prior``
  (:class:`longtail.models.PriorAdjusted`), tau in 0, 0.25, ..., 2; any head.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..functional import class_log_prior
from ..models import PriorAdjusted, TauNormalized

HeadFactory = Callable[[nn.Module, torch.Tensor, float], nn.Module]


@dataclass(frozen=True)
class PostHocSpec:
    """One post-hoc adjustment: ``head(classifier, counts, tau)`` -> the adjusted classifier module."""

    summary: str
    grid: tuple[float, ...]
    head: HeadFactory
    linear_only: bool = False

    def describe(self) -> str:
        return f"{self.summary}; tau in {self.grid[0]:g}..{self.grid[-1]:g} ({len(self.grid)} values) on validation"


def _tau_norm(classifier: nn.Module, counts: torch.Tensor, tau: float) -> nn.Module:
    return TauNormalized(classifier, tau)


def _logit_adjust(classifier: nn.Module, counts: torch.Tensor, tau: float) -> nn.Module:
    weight = next(classifier.parameters(), None)
    log_prior = class_log_prior(counts)
    if weight is not None:
        log_prior = log_prior.to(weight.device)
    return PriorAdjusted(classifier, log_prior, tau)


# name -> spec ("none" is no adjustment). Order is the order of `longtail train --help`.
POSTHOC: dict[str, PostHocSpec] = {
    "tau_norm": PostHocSpec("tau-normalised classifier w_k / ||w_k||**tau, bias dropped (Kang et al.)",
                            tuple(round(0.1 * i, 10) for i in range(11)), _tau_norm, linear_only=True),
    "logit_adjust": PostHocSpec("post-hoc logit adjustment z - tau log prior (Menon et al.)",
                                tuple(0.25 * i for i in range(9)), _logit_adjust),
}


def adjusted_model(model: nn.Module, method: str, counts: torch.Tensor, tau: float) -> nn.Module:
    """A copy of ``model`` whose classifier ``fc`` is adjusted by ``method`` at ``tau`` (``model`` unchanged)."""
    adjusted = copy.deepcopy(model)
    adjusted.fc = POSTHOC[method].head(adjusted.fc, counts, tau)
    return adjusted


__all__ = ["POSTHOC", "PostHocSpec", "adjusted_model"]
