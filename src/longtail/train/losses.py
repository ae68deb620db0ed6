"""The losses of the trainer and of ``longtail train --loss``: one registry of specs.

A :class:`LossSpec` says everything the trainer, the configuration and the command line need to know
about a loss, so none of them names a loss: how to build it, the configuration fields it reads, the
classifier head it wants, whether it starts from the prior bias, whether it needs the validation
split, whether deferred re-weighting applies, whether validation must sum the true-class probabilities,
and the hooks the trainer calls around an epoch.

Adding a loss costs its own file and one :func:`register_loss` call in it: ``longtail train --plugin FILE``
(or ``$LONGTAIL_PLUGINS``, or the ``longtail.plugins`` entry points: :mod:`longtail.plugins`) imports it before
the parser is built, so ``--help`` lists it and ``--loss`` takes it. A loss of the library itself has its entry
in :data:`LOSSES` below; ``docs/adding_a_loss.md`` walks through both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..checks import check_registration
from ..loss_families import FAMILIES
from ..metrics import ConfusionMeter, nan_to_none
from ..losses import (
    BalancedSoftmaxLoss,
    CDBLoss,
    ClassBalancedLoss,
    FocalLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    StableCDBLoss,
)

HEADS = ("linear", "cosine")

EpochHook = Callable[[nn.Module, int], None]
ValidationHook = Callable[[nn.Module, ConfusionMeter], dict[str, Any]]


@dataclass(frozen=True)
class LossSpec:
    """What the harness knows about one loss.

    Attributes:
        summary: its line in ``longtail train --help``.
        build: ``build(counts, **fields)`` -> the loss module, with ``counts`` the ``(C,)`` training
            counts and ``fields`` the values of the configuration fields named in ``reads`` (and only
            those: a builder cannot read a field it did not declare).
        reads: the configuration fields the loss reads (each field's meaning, bounds and help are
            declared once, beside the field in :class:`longtail.train.TrainConfig`).
        head: ``"linear"`` or ``"cosine"`` (:class:`longtail.models.NormedLinear`, LDAM's head).
        prior_bias: start the classifier bias at the prior ``b = -log(C - 1)`` and keep weight decay
            off it (the sigmoid losses, Cui et al. section 4).
        needs_validation: needs a balanced validation split (``val_per_class >= 1``).
        deferred_reweighting: whether ``drw_epoch`` applies. It needs a loss whose ``weight`` is
            unweighted until DRW switches it on; losses whose weight is their method (class-balanced,
            CDB) refuse it rather than lose their weights.
        on_epoch_start: ``hook(criterion, epoch)`` called before every epoch (epochs count from 0).
        after_validation: ``hook(criterion, meter)`` called after each validation pass with the
            per-class counter (summed over processes); returns entries for the epoch's history.
        needs_confidence: ``needs_confidence(config)`` -> whether the validation pass must also sum each
            class's true-class probability (``ConfusionMeter(confidence=True)``, for a loss that weights
            by it: stable CDB with ``cdb_difficulty="confidence"``); None: never (only the losses that
            read the probabilities pay for them). The trainer asks once, when it builds the run.
    """

    summary: str
    build: Callable[..., nn.Module]
    reads: tuple[str, ...] = ()
    head: str = "linear"
    prior_bias: bool = False
    needs_validation: bool = False
    deferred_reweighting: bool = True
    on_epoch_start: EpochHook | None = None
    after_validation: ValidationHook | None = None
    needs_confidence: Callable[[Any], bool] | None = None

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(map(repr, HEADS))}; got {self.head!r}")

    def build_loss(self, config: Any, counts: torch.Tensor) -> nn.Module:
        """The loss for ``config`` (any object with the fields in ``reads``) and the training ``counts``."""
        return self.build(counts, **{name: getattr(config, name) for name in self.reads})

    def describe(self) -> str:
        notes = []
        if self.reads:
            notes.append("reads " + ", ".join(self.reads))
        if self.needs_validation:
            notes.append("needs val_per_class")
        if self.head != "linear":
            notes.append(f"{self.head} head")
        return self.summary + (f" [{'; '.join(notes)}]" if notes else "")


def _cdb_after_validation(criterion: nn.Module, meter: ConfusionMeter) -> dict[str, Any]:
    """CDB: the validation pass's per-class accuracy sets the next epoch's weights (the README's loop)."""
    weights = criterion.update_from(meter)
    return {
        "val_class_accuracy": [nan_to_none(v) for v in criterion.last_accuracy.tolist()],
        "cdb_weights": weights.tolist(),
        "cdb_tau": float(criterion.last_tau),
    }


def _stable_cdb_after_validation(criterion: nn.Module, meter: ConfusionMeter) -> dict[str, Any]:
    """Stable CDB (an extension beyond the paper): the keys of CDB's history, plus the accuracies the weights were
    computed from (``cdb_class_accuracy``: posterior means or confidences) and the target before damping."""
    weights = criterion.update_from(meter)
    return {
        "val_class_accuracy": [nan_to_none(v) for v in meter.accuracy().tolist()],  # top-1, as for every CDB loss
        "cdb_class_accuracy": [nan_to_none(v) for v in criterion.last_accuracy.tolist()],
        "cdb_target_weights": criterion.target_weight.tolist(),
        "cdb_weights": weights.tolist(),
        "cdb_tau": float(criterion.last_tau),
    }


def _confidence_difficulty(config: Any) -> bool:
    """Stable CDB: its ``difficulty="confidence"`` weights by the mean true-class probability of validation."""
    return config.cdb_difficulty == "confidence"


def _cb(loss: str) -> Callable[..., nn.Module]:
    # class_betas (per-class betas, an extension beyond the paper) replace beta when given.
    return lambda counts, beta, class_betas, reduction, gamma=0.0: ClassBalancedLoss(
        counts, beta=beta if class_betas is None else class_betas, loss=loss, gamma=gamma, reduction=reduction
    )


def _plain(loss: str) -> Callable[..., nn.Module]:
    # beta = 0 gives weight 1 for every class: the plain loss (both reductions agree without weights).
    return lambda counts, gamma=0.0: ClassBalancedLoss(counts, beta=0.0, loss=loss, gamma=gamma)


def _family(summary: str, family: str, build: Callable[[str], Callable[..., nn.Module]], reads: tuple[str, ...] = (),
            **traits: Any) -> LossSpec:
    """The spec of a loss on one of :data:`longtail.loss_families.FAMILIES`: a focal family also reads ``gamma``,
    and a sigmoid one starts from the prior bias (the family's traits, stated once there)."""
    traits_of = FAMILIES[family]
    return LossSpec(summary, build(family), reads=(*reads, "gamma") if traits_of.focal else reads,
                    prior_bias=traits_of.prior_bias, **traits)


def _cdb(loss: str) -> Callable[..., nn.Module]:
    return lambda counts, cdb_tau, cdb_floor, reduction, gamma=0.0: CDBLoss(
        len(counts), tau=cdb_tau, loss=loss, gamma=gamma, floor=cdb_floor, reduction=reduction
    )


def _stable_cdb(loss: str) -> Callable[..., nn.Module]:
    def build(counts: torch.Tensor, cdb_tau: Any, cdb_floor: float, cdb_prior: float, cdb_difficulty: str,
              cdb_momentum: float, cdb_max_ratio: float, reduction: str, gamma: float = 0.0) -> nn.Module:
        return StableCDBLoss(len(counts), tau=cdb_tau, loss=loss, gamma=gamma, floor=cdb_floor, reduction=reduction,
                             prior=cdb_prior, difficulty=cdb_difficulty, momentum=cdb_momentum, max_ratio=cdb_max_ratio)

    return build


_CLASS_BALANCED = dict(deferred_reweighting=False)
_CB_READS = ("beta", "class_betas", "reduction")
_CDB = dict(needs_validation=True, deferred_reweighting=False, after_validation=_cdb_after_validation)
_STABLE_CDB = dict(needs_validation=True, deferred_reweighting=False, after_validation=_stable_cdb_after_validation,
                   needs_confidence=_confidence_difficulty)
_STABLE_READS = ("cdb_tau", "cdb_floor", "cdb_prior", "cdb_difficulty", "cdb_momentum", "cdb_max_ratio", "reduction")

# name -> spec. Order is the order of `longtail train --help`.
LOSSES: dict[str, LossSpec] = {
    "ce": _family("softmax cross-entropy", "softmax", _plain),
    "focal": LossSpec("softmax focal loss", lambda counts, gamma: FocalLoss(gamma=gamma, num_classes=len(counts)),
                      reads=("gamma",)),
    "sigmoid": _family("one-vs-all sigmoid cross-entropy", "sigmoid", _plain),
    "sigmoid_focal": _family("sigmoid focal loss", "focal", _plain),
    "cb_softmax": _family("class-balanced softmax CE", "softmax", _cb, _CB_READS, **_CLASS_BALANCED),
    "cb_sigmoid": _family("class-balanced sigmoid CE", "sigmoid", _cb, _CB_READS, **_CLASS_BALANCED),
    "cb_focal": _family("class-balanced sigmoid focal, the paper's focal", "focal", _cb, _CB_READS, **_CLASS_BALANCED),
    "cb_softmax_focal": _family("class-balanced softmax focal", "softmax_focal", _cb, _CB_READS, **_CLASS_BALANCED),
    "cdb": LossSpec("class-wise difficulty-balanced CE", _cdb("softmax"), reads=("cdb_tau", "cdb_floor", "reduction"),
                    **_CDB),
    "cdb_focal": LossSpec("class-wise difficulty-balanced softmax focal", _cdb("softmax_focal"),
                          reads=("cdb_tau", "cdb_floor", "gamma", "reduction"), **_CDB),
    "cdb_stable": LossSpec("CDB CE with stable weights (an extension beyond the paper: posterior accuracy, damped "
                           "and ratio-bounded weights)", _stable_cdb("softmax"), reads=_STABLE_READS, **_STABLE_CDB),
    "cdb_stable_focal": LossSpec("CDB softmax focal with stable weights (an extension beyond the paper)",
                                 _stable_cdb("softmax_focal"), reads=(*_STABLE_READS, "gamma"), **_STABLE_CDB),
    # The official LDAM-DRW code normalises by the sum of the weights (F.cross_entropy(weight=...)).
    "ldam": LossSpec("LDAM margin loss; add drw_epoch for LDAM-DRW",
                     lambda counts, max_margin, scale: LDAMLoss(counts, max_margin=max_margin, scale=scale,
                                                                reduction="weighted_mean"),
                     reads=("max_margin", "scale"), head="cosine"),
    # LDAM's head and scale without its margins: separates LDAM-DRW's margin from its cosine classifier.
    "ce_cosine": LossSpec("softmax CE on the cosine head, logits scaled by scale (LDAM without margins)",
                          lambda counts, scale: LDAMLoss(counts, max_margin=0.0, scale=scale, reduction="weighted_mean"),
                          reads=("scale",), head="cosine"),
    "balanced_softmax": LossSpec("balanced softmax: CE on z + log prior", lambda counts: BalancedSoftmaxLoss(counts)),
    "logit_adjusted": LossSpec("logit-adjusted CE: CE on z + la_tau log prior",
                               lambda counts, la_tau: LogitAdjustedLoss(counts, tau=la_tau), reads=("la_tau",)),
}


def register_loss(name: str, spec: LossSpec, *, replace: bool = False) -> None:
    """Adds ``spec`` to :data:`LOSSES` under ``name`` (the trainer, the config and the CLI then know it)."""
    LOSSES[check_registration(LOSSES, "loss", name, spec, LossSpec, replace)] = spec


def loss_spec(name: str) -> LossSpec:
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}; got {name!r}")
    return LOSSES[name]


def build_loss(config: Any, counts: torch.Tensor) -> nn.Module:
    """The loss of ``config.loss`` for ``config`` and the training ``counts``."""
    return loss_spec(config.loss).build_loss(config, counts)


__all__ = ["HEADS", "LOSSES", "LossSpec", "build_loss", "loss_spec", "register_loss"]
