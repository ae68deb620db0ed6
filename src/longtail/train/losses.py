"""The losses the trainer and ``longtail train --loss`` accept, by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..losses import ClassBalancedLoss, FocalLoss

if TYPE_CHECKING:
    from .config import TrainConfig

Builder = Callable[["TrainConfig", torch.Tensor], nn.Module]


def _cb(loss: str, reweight: bool) -> Builder:
    # beta = 0 gives weight 1 for every class: the plain loss with the official reduction.
    return lambda cfg, counts: ClassBalancedLoss(counts, beta=cfg.beta if reweight else 0.0, loss=loss, gamma=cfg.gamma)


def _cdb(loss: str) -> Builder:
    def build(cfg: TrainConfig, counts: torch.Tensor) -> nn.Module:
        from ..losses.cdb import CDBLoss

        gamma = cfg.gamma if loss == "softmax_focal" else 0.0
        return CDBLoss(len(counts), tau=cfg.tau, loss=loss, gamma=gamma, floor=cfg.cdb_floor)

    return build


def _ldam(cfg: TrainConfig, counts: torch.Tensor) -> nn.Module:
    from ..losses.ldam import LDAMLoss

    # The official LDAM-DRW code normalises by the sum of the weights (F.cross_entropy(weight=...)).
    return LDAMLoss(counts, max_margin=cfg.max_margin, scale=cfg.scale, reduction="weighted_mean")


def _balanced_softmax(cfg: TrainConfig, counts: torch.Tensor) -> nn.Module:
    from ..losses.logit_adjusted import BalancedSoftmaxLoss

    return BalancedSoftmaxLoss(counts)


def _logit_adjusted(cfg: TrainConfig, counts: torch.Tensor) -> nn.Module:
    from ..losses.logit_adjusted import LogitAdjustedLoss

    tau = 1.0 if cfg.tau == "dynamic" else float(cfg.tau)
    return LogitAdjustedLoss(counts, tau=tau)


# name -> (what it is, builder). Order is the order of `longtail train --help`.
LOSSES: dict[str, tuple[str, Builder]] = {
    "ce": ("softmax cross-entropy", _cb("softmax", False)),
    "focal": ("softmax focal loss (gamma)", lambda cfg, counts: FocalLoss(gamma=cfg.gamma)),
    "sigmoid": ("one-vs-all sigmoid cross-entropy", _cb("sigmoid", False)),
    "sigmoid_focal": ("sigmoid focal loss (gamma)", _cb("focal", False)),
    "cb_softmax": ("class-balanced softmax CE (beta)", _cb("softmax", True)),
    "cb_sigmoid": ("class-balanced sigmoid CE (beta)", _cb("sigmoid", True)),
    "cb_focal": ("class-balanced sigmoid focal, the paper's focal (beta, gamma)", _cb("focal", True)),
    "cb_softmax_focal": ("class-balanced softmax focal (beta, gamma)", _cb("softmax_focal", True)),
    "cdb": ("class-wise difficulty-balanced CE (tau; needs val_per_class)", _cdb("softmax")),
    "cdb_focal": ("class-wise difficulty-balanced softmax focal (tau, gamma)", _cdb("softmax_focal")),
    "ldam": ("LDAM margin loss with a cosine head (max_margin, scale); add drw_epoch for LDAM-DRW", _ldam),
    "balanced_softmax": ("balanced softmax: CE on z + log prior", _balanced_softmax),
    "logit_adjusted": ("logit-adjusted CE: CE on z + tau log prior (tau)", _logit_adjusted),
}

SIGMOID_LOSSES = ("sigmoid", "sigmoid_focal", "cb_sigmoid", "cb_focal")
COSINE_HEAD_LOSSES = ("ldam",)


def build_loss(config: TrainConfig, counts: torch.Tensor) -> nn.Module:
    if config.loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {config.loss!r}")
    return LOSSES[config.loss][1](config, counts)
