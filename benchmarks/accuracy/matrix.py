"""The accuracy benchmark matrix: Fashion-MNIST-LT x imbalance x loss x seed, one fixed recipe.

Every loss trains on the same long-tailed training set for a given (imbalance, seed): the balanced
validation split that CDB needs (25 images per class, carved out before the imbalance) is held
out for every loss, so the comparison is like for like. The seed sets both the long-tailed draw
and the model's initialisation and data order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
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
    "amp": "off",  # the recipe these results were measured with (float32)
    "eval_every": PRESETS["fmnist-lt"]["epochs"],  # the test set once, at the end
}


@dataclass(frozen=True)
class Cell:
    """One loss configuration of the matrix; ``name`` is its folder and its row in the report.

    ``parent`` names the cell whose finished run (same imbalance and seed) a later stage starts from
    (``init_from``); the runner trains parents first.
    """

    name: str
    family: str
    overrides: dict[str, Any] = field(default_factory=dict)
    beta: float | None = None
    parent: str | None = None


# A second stage (cRT, LWS, weight balancing's classifier stage) trains a quarter of the first stage's epochs, at
# least 2 (Kang et al.: 10 after 90 on ImageNet-LT; the weight-balancing code: 10 after 320 on CIFAR).
STAGE2_EPOCHS = max(2, RECIPE["epochs"] // 4)
WB_WEIGHT_DECAYS = (2e-3, 5e-3, 1e-2)


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
        # Not in the paper: the stable CDB (posterior/confidence difficulty, EMA damping, bounded ratio), its defaults
        # chosen on validation (docs/cdb_stable.md).
        Cell("cdb_stable", "cdb_extension", dict(loss="cdb_stable")),
        Cell("ldam_drw", "peer", dict(loss="ldam", drw_epoch=4)),
        Cell("balanced_softmax", "peer", dict(loss="balanced_softmax")),
        Cell("logit_adjusted_t1.5", "peer", dict(loss="logit_adjusted", la_tau=1.5)),
        # LDAM's cosine head and scale without its margins: what LDAM-DRW owes to its head rather than its margin.
        Cell("ce_cosine", "peer", dict(loss="ce_cosine")),
        # Post-hoc logit adjustment of the CE run, tau chosen on the validation split.
        Cell("ce_posthoc_la", "peer", dict(loss="ce", epochs=0, posthoc="logit_adjust"), parent="ce"),
    ]
    grid += [Cell(f"ce_sampler_{name}", "sampler", dict(loss="ce", sampler=name))
             for name in ("sqrt", "class_balanced", "progressive")]
    # Decoupling (Kang et al.): stage 2 on the CE run's frozen backbone.
    grid += [
        Cell("crt", "decoupled", dict(loss="ce", stage="crt", epochs=STAGE2_EPOCHS), parent="ce"),
        Cell("lws", "decoupled", dict(loss="ce", stage="lws", epochs=STAGE2_EPOCHS), parent="ce"),
        Cell("tau_norm", "decoupled", dict(loss="ce", epochs=0, posthoc="tau_norm"), parent="ce"),
    ]
    # Weight balancing (Alshammari et al.): stage 1 CE with a larger weight decay, tuned (three values around their
    # CIFAR choice, 5e-3; the best chosen on validation like every other hyperparameter), then the classifier
    # fine-tuned with the CB softmax, weight decay 0.1 and MaxNorm (their released stage-2 recipe: lr 0.01, relative
    # threshold 0.1).
    for wd in WB_WEIGHT_DECAYS:
        grid += [
            Cell(f"wb_stage1_wd{wd:g}", "weight_balancing_stage1", dict(loss="ce", weight_decay=wd)),
            Cell(f"wb_wd{wd:g}", "weight_balancing", dict(stage="classifier", loss="cb_softmax", beta=0.9999,
                                                          weight_decay=0.1, lr=0.01, max_norm=0.1,
                                                          epochs=STAGE2_EPOCHS), parent=f"wb_stage1_wd{wd:g}"),
        ]
    return grid


# The official `mean` reduction scales the gradient by the batch's mean weight E[w_y] = sum n_c w_c / sum n_c:
# 0.1718 for Fashion-MNIST-LT at imbalance 100 (25 validation images held out per class) with beta 0.9999,
# so "mean, LR rescaled" trains with 0.05 / 0.1718 = 0.291 (computed with longtail.class_balanced_weights).
MEAN_WEIGHT_RHO100 = 0.1718


def convergence_cells() -> list[Cell]:
    """The convergence study (issue: a converged benchmark): epochs and width for CE and the CB softmax at rho 100,
    bfloat16 against float32 (paired), and the two reductions of the CB softmax."""
    grid = []
    for loss in ("ce", "cb_softmax"):
        for width, epochs in [(16, 5), (16, 10), (16, 20), (16, 40), (8, 20), (32, 20), (16, 80), (32, 40), (16, 160)]:
            grid.append(Cell(f"{loss}_w{width}_e{epochs}", loss,
                             dict(loss=loss, width=width, epochs=epochs, eval_every=epochs, amp="auto")))
        grid.append(Cell(f"{loss}_w16_e20_fp32", loss, dict(loss=loss, width=16, epochs=20, eval_every=20, amp="off")))
    common = dict(loss="cb_softmax", width=16, epochs=20, eval_every=20, amp="auto")
    grid.append(Cell("cb_softmax_w16_e20_weighted_mean", "cb_softmax", {**common, "reduction": "weighted_mean"}))
    grid.append(Cell("cb_softmax_w16_e20_mean_lr_rescaled", "cb_softmax",
                     {**common, "lr": round(RECIPE["lr"] / MEAN_WEIGHT_RHO100, 4)}))
    return grid


GRIDS = {"matrix": cells, "convergence": convergence_cells}


def run_folder(out: str | Path, imbalance: float, name: str, seed: int) -> Path:
    return Path(out) / "runs" / f"rho{imbalance:g}" / name / f"seed{seed}"


def config_for(cell: Cell, imbalance: float, seed: int, out: str | Path | None = None) -> dict[str, Any]:
    """The cell's configuration; a later stage's ``init_from`` is its parent's folder under ``out``
    (``None`` without ``out``: compare configurations without it, as the report does)."""
    config = {**RECIPE, **cell.overrides, "imbalance": float(imbalance), "seed": seed, "subset_seed": seed}
    if cell.parent is not None:
        config["init_from"] = str(run_folder(out, imbalance, cell.parent, seed)) if out is not None else None
    return config


def same_recipe(saved: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Whether a saved configuration is the cell's (``init_from``, a path that depends on where results live,
    aside: a later stage's parent is checked by its own record)."""
    return {**saved, "init_from": None} == {**expected, "init_from": None}
