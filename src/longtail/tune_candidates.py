"""The candidates :func:`longtail.tune_beta` chooses among, and the rule that chooses.

A :class:`Candidate` is one class-balanced ``loss`` with one ``beta`` for every class (and focal's ``gamma``), or
with per-class ``betas``. :func:`paper_grid` is Cui et al.'s grid (CVPR 2019) in the fixed order that breaks the
last ties. :func:`choose` picks the best validation balanced accuracy, ties (within :data:`TIE_TOLERANCE`) going
to the lowest calibrated balanced NLL and then to the earlier candidate (:data:`SELECTION_RULE`, saved in every
``tune_beta.json``); :func:`choose_row` applies it to the rows of a :class:`longtail.tune.TuneResult`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .checks import as_counts, check_beta, check_choice, check_focal_gamma, check_real
from .loss_families import FAMILY_NAMES, PAPER_LOSSES, PRIOR_BIAS_LOSSES
from .weights import per_class_weights
from .weights.class_balanced import _class_balanced_weights, _regime

PAPER_BETAS = (0.9, 0.99, 0.999, 0.9999)
PAPER_GAMMAS = (0.5, 1.0, 2.0)
# Every loss family is a candidate; PAPER_LOSSES and PRIOR_BIAS_LOSSES (the sigmoid families, whose heads start at
# the prior bias) come from the same table, longtail.loss_families.
CANDIDATE_LOSSES = FAMILY_NAMES
TIE_TOLERANCE = 1e-9
# Saved in every tune_beta.json ("order"); the benchmark reruns a file whose rule differs: change it only with the
# rule.
SELECTION_RULE = ("the best validation balanced accuracy; ties (within 1e-9) to the lowest temperature-calibrated "
                  "balanced validation NLL, then to the earlier candidate in the paper grid order (softmax, sigmoid "
                  "for beta ascending; focal for beta ascending, gamma ascending within), then per-class betas by "
                  "radius ascending")

__all__ = [
    "CANDIDATE_LOSSES",
    "Candidate",
    "PAPER_BETAS",
    "PAPER_GAMMAS",
    "PAPER_LOSSES",
    "PRIOR_BIAS_LOSSES",
    "SELECTION_RULE",
    "TIE_TOLERANCE",
    "as_candidate",
    "choose",
    "choose_row",
    "paper_grid",
]


def paper_grid() -> list[tuple[str, float, float]]:
    """The paper's grid as ``(loss, beta, gamma)`` in the fixed order that breaks the ties left after the calibrated
    NLL: softmax then sigmoid for each beta ascending (gamma 0), then focal for each beta ascending and, within it,
    gamma ascending (20)."""
    grid = [(loss, beta, 0.0) for loss in ("softmax", "sigmoid") for beta in PAPER_BETAS]
    return grid + [("focal", beta, gamma) for beta in PAPER_BETAS for gamma in PAPER_GAMMAS]


@dataclass(frozen=True)
class Candidate:
    """One refit: a class-balanced ``loss`` with one ``beta`` for every class, or per-class ``betas``
    (``beta`` None; found at covering ``radius``). ``kind``: ``"grid"``, ``"per_class_beta"`` or ``"reference"``
    (reported, never chosen)."""

    loss: str
    beta: float | None
    gamma: float = 0.0
    betas: tuple[float, ...] | None = None
    radius: float | None = None
    kind: str = "grid"

    @property
    def label(self) -> str:
        beta = f"beta {self.beta:g}" if self.beta is not None else f"per-class beta (r={self.radius:.4g})"
        return f"{self.loss} {beta}" + (f" gamma {self.gamma:g}" if self.loss in ("focal", "softmax_focal") else "")

    def weights(self, counts: torch.Tensor) -> torch.Tensor:
        """The float32 class weights ``(C,)`` of this candidate for the training ``counts`` (no warning: the grid is
        meant to span every regime)."""
        if self.beta is None:
            return per_class_weights(counts, list(self.betas or ()))
        return _class_balanced_weights(as_counts(counts), self.beta, normalize=True, zero_counts="error").float()

    def regime(self, counts: torch.Tensor) -> str:
        """What the weights are for these counts (:func:`longtail.beta_regime`); ``"per_class"`` for per-class betas."""
        if self.beta is None:
            return "per_class"
        n = as_counts(counts)
        return _regime(n, self.beta, _class_balanced_weights(n, self.beta, normalize=True, zero_counts="error"))[0]


def as_candidate(value: Any, index: int) -> Candidate:
    """``candidates[index]`` of :func:`longtail.tune_beta` as a :class:`Candidate`: one already, a
    ``(loss, beta[, gamma])`` tuple or a dict of those keys (checked)."""
    if isinstance(value, Candidate):
        return value
    if isinstance(value, dict):
        value = (value.get("loss"), value.get("beta"), value.get("gamma", 0.0))
    if not isinstance(value, (tuple, list)) or len(value) not in (2, 3):
        raise TypeError(f"candidates[{index}] must be (loss, beta) or (loss, beta, gamma); got {value!r}")
    loss = check_choice(f"candidates[{index}] loss", value[0], CANDIDATE_LOSSES)
    beta = check_beta(value[1])
    gamma = check_focal_gamma(value[2] if len(value) == 3 else 0.0, loss)
    return Candidate(loss, beta, gamma)


def choose(scores: Sequence[float], tiebreak: Sequence[float] | None = None, *,
           tolerance: float = TIE_TOLERANCE) -> int:
    """The index of the best (highest) score. Scores within ``tolerance`` of the best tie (balanced accuracies that
    count the same images can differ in the last bits, by the order of their sums); among tied ones, the lowest
    ``tiebreak`` (a loss; NaN counts as the worst) and then the earliest index win.

    >>> choose([0.9, 0.92, 0.92])
    1
    >>> choose([0.9, 0.92, 0.92 + 1e-12], tiebreak=[0.1, 0.5, 0.4])
    2
    """
    if not scores:
        raise ValueError("scores must hold at least one score; got none")
    if tiebreak is not None and len(tiebreak) != len(scores):
        raise ValueError(f"tiebreak must hold one value per score ({len(scores)}); got {len(tiebreak)}")
    tolerance = check_real("tolerance", tolerance, low=0.0, finite=True)
    best = max(scores)
    tied = [i for i, s in enumerate(scores) if s >= best - tolerance]
    if tiebreak is None:
        return tied[0]
    return min(tied, key=lambda i: (math.inf if math.isnan(tiebreak[i]) else tiebreak[i], i))


def choose_row(rows: Sequence[dict[str, Any]], kinds: Collection[str] | None = None) -> dict[str, Any]:
    """The candidate row (:attr:`longtail.tune.TuneResult.candidates`' form) that :func:`choose` picks by validation
    balanced accuracy and, on ties, validation NLL, among ``rows`` or those of the given ``kinds`` (``"grid"``: the
    paper grid's alone)."""
    pool = [r for r in rows if kinds is None or r["kind"] in kinds]
    if not pool:
        raise ValueError(f"rows must hold a candidate of kind {sorted(kinds or [])}; got none")
    return pool[choose([r["val_balanced_accuracy"] for r in pool], [r["val_balanced_nll"] for r in pool])]
