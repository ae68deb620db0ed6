"""The accuracy benchmark matrix: Fashion-MNIST-LT x imbalance x loss x seed, one fixed recipe.

Every loss trains on the same long-tailed training set for a given (imbalance, seed): the balanced
validation split that CDB needs (25 images per class, carved out before the imbalance) is held
out for every loss, so the comparison is like for like. The seed sets both the long-tailed draw
and the model's initialisation and data order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from longtail.train.presets import PRESETS

IMBALANCES = (10, 50, 100)
SEEDS = (0, 1, 2)
BETAS = (0.9, 0.99, 0.999, 0.9999)

# The fixed recipe: the `fmnist-lt` preset (a small CNN and a few epochs, so the whole matrix fits a
# 2-core CPU machine) with the library's defaults for everything else (SGD + nesterov, wd 5e-4,
# cosine after a 1-epoch warm-up, pad-and-crop + flip); the shot groups are scaled up for
# Fashion-MNIST-LT, whose tail is larger than CIFAR's.
RECIPE: dict[str, Any] = {
    **PRESETS["fmnist-lt"],
    "device": "cpu",
    "eval_every": PRESETS["fmnist-lt"]["epochs"],  # the test set once, at the end
}


@dataclass(frozen=True)
class Cell:
    """One loss configuration of the matrix; ``name`` is its folder and its row in the report."""

    name: str
    family: str
    overrides: dict[str, Any] = field(default_factory=dict)
    beta: float | None = None


def cells() -> list[Cell]:
    grid = [
        Cell("ce", "baseline", dict(loss="ce")),
        Cell("focal_g1", "baseline", dict(loss="focal", gamma=1.0)),
    ]
    for family, loss, gamma in [
        ("cb_softmax", "cb_softmax", 0.0),
        ("cb_sigmoid", "cb_sigmoid", 0.0),
        ("cb_focal", "cb_focal", 1.0),
        ("cb_softmax_focal", "cb_softmax_focal", 1.0),
    ]:
        for beta in BETAS:
            grid.append(Cell(f"{family}_b{beta:g}", family, dict(loss=loss, beta=beta, gamma=gamma), beta=beta))
    grid += [
        Cell("cdb_tau1.5", "cdb", dict(loss="cdb", cdb_tau=1.5)),
        Cell("cdb_dynamic", "cdb", dict(loss="cdb", cdb_tau="dynamic")),
        Cell("cdb_tau0.5", "cdb", dict(loss="cdb", cdb_tau=0.5)),
        # Not in the paper: a minimum difficulty keeps classes that reach 100% validation accuracy in the loss.
        Cell("cdb_tau1.5_floor0.1", "cdb_extension", dict(loss="cdb", cdb_tau=1.5, cdb_floor=0.1)),
        Cell("ldam_drw", "peer", dict(loss="ldam", drw_epoch=4)),
        Cell("balanced_softmax", "peer", dict(loss="balanced_softmax")),
        Cell("logit_adjusted_t1.5", "peer", dict(loss="logit_adjusted", la_tau=1.5)),
    ]
    return grid


def config_for(cell: Cell, imbalance: float, seed: int) -> dict[str, Any]:
    return {**RECIPE, **cell.overrides, "imbalance": float(imbalance), "seed": seed, "subset_seed": seed}
