"""The loss families of the class-balanced and CDB losses, one row each, and what every list of them derives from.

A family is the ``loss=`` of :func:`longtail.functional.class_balanced_loss`: the per-sample loss that the class
weights multiply. Its traits decide what the losses and the checks accept:

- ``kind``: ``"softmax"`` (one softmax over the classes: label smoothing applies, :class:`longtail.losses.CDBLoss`
  takes it) or ``"sigmoid"`` (one-vs-all terms: ``pos_weight`` applies, and the classifier bias starts at the
  prior ``-log(C - 1)``, :func:`longtail.init_prior_bias`, as the paper does for its sigmoid losses);
- ``focal``: has a focal term ``(1 - p)**gamma`` (a non-zero ``gamma`` is refused for the others);
- ``paper``: one of the three losses of Cui et al. (CVPR 2019); the softmax focal loss is an extension.

Example:
    >>> FAMILIES["softmax_focal"]
    LossFamily(name='softmax_focal', kind='softmax', focal=True, paper=False)
    >>> SIGMOID_LOSSES
    ('sigmoid', 'focal')
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FAMILIES",
    "FAMILY_NAMES",
    "FOCAL_LOSSES",
    "LossFamily",
    "PAPER_LOSSES",
    "PRIOR_BIAS_LOSSES",
    "SIGMOID_LOSSES",
    "SOFTMAX_LOSSES",
]


@dataclass(frozen=True)
class LossFamily:
    """One loss family: its name (the ``loss=`` value), ``"softmax"`` or ``"sigmoid"`` kind, whether it has a focal
    term, and whether the class-balanced paper uses it."""

    name: str
    kind: str
    focal: bool
    paper: bool

    @property
    def prior_bias(self) -> bool:
        """Whether the classifier bias starts at the prior ``-log(C - 1)``: the sigmoid losses."""
        return self.kind == "sigmoid"


#: The families, in the order every derived tuple (and every error message listing them) keeps.
FAMILIES: dict[str, LossFamily] = {
    family.name: family
    for family in (
        LossFamily("softmax", kind="softmax", focal=False, paper=True),
        LossFamily("sigmoid", kind="sigmoid", focal=False, paper=True),
        LossFamily("focal", kind="sigmoid", focal=True, paper=True),
        LossFamily("softmax_focal", kind="softmax", focal=True, paper=False),
    )
}

FAMILY_NAMES = tuple(FAMILIES)
FOCAL_LOSSES = tuple(name for name, family in FAMILIES.items() if family.focal)
SOFTMAX_LOSSES = tuple(name for name, family in FAMILIES.items() if family.kind == "softmax")
SIGMOID_LOSSES = tuple(name for name, family in FAMILIES.items() if family.kind == "sigmoid")
PRIOR_BIAS_LOSSES = tuple(name for name, family in FAMILIES.items() if family.prior_bias)
PAPER_LOSSES = tuple(name for name, family in FAMILIES.items() if family.paper)
