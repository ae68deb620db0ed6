"""The accuracy benchmark matrix: Fashion-MNIST-LT x imbalance x loss x seed, one fixed recipe.

Every loss trains on the same long-tailed training set for a given (imbalance, seed): the balanced
validation split that CDB needs (25 images per class, carved out before the imbalance) is held
out for every loss, so the comparison is like for like. The seed sets both the long-tailed draw
and the model's initialisation and data order.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longtail.train.presets import PRESETS

IMBALANCES = (10, 50, 100, 200)
SEEDS = (0, 1, 2)
BETAS = (0.9, 0.99, 0.999, 0.9999)
GAMMAS = (0.5, 1.0, 2.0)  # the class-balanced paper's focal grid

# The fixed recipe: the `fmnist-lt` preset, the convergence study's plateau (docs/benchmarks/convergence.md: a
# width-16 CNN for 80 epochs, bfloat16 autocast where the CPU has it), with the library's defaults for everything
# else (SGD + nesterov, batch 128, wd 5e-4, cosine after a 1-epoch warm-up, pad-and-crop + flip); the shot groups
# are scaled up for Fashion-MNIST-LT, whose tail is larger than CIFAR's. The test set is evaluated once, at the end.
# The earlier, unconverged recipe (width 8, 5 epochs, float32) and its matrix are kept in
# benchmarks/results/accuracy_w8_e5 and docs/benchmarks/w8_e5.
RECIPE: dict[str, Any] = {
    **PRESETS["fmnist-lt"],
    "device": "cpu",
    "eval_every": PRESETS["fmnist-lt"]["epochs"],
}


@dataclass(frozen=True)
class Cell:
    """One loss configuration of the matrix; ``name`` is its folder and its row in the report.

    ``parent`` names the cell whose finished run (same imbalance and seed) a later stage starts from
    (``init_from``); the runner trains parents first. ``kind`` is ``"train"`` (a run of the trainer) or
    ``"tune_beta"`` (:func:`longtail.tune_beta` on the parent's finished CE run: refits only, its result in
    ``tune_beta.json``). ``derive="class_betas"``: a run from scratch whose ``class_betas`` are the per-class betas
    that its parent, a ``tune_beta`` cell, chose on validation (the parent is an input, not an ``init_from``).
    """

    name: str
    family: str
    overrides: dict[str, Any] = field(default_factory=dict)
    beta: float | None = None
    parent: str | None = None
    gamma: float | None = None
    kind: str = "train"
    derive: str | None = None

    @property
    def starts_from_parent(self) -> bool:
        return self.parent is not None and self.kind == "train" and self.derive is None


# A second stage (cRT, LWS, weight balancing's classifier stage) trains a quarter of the first stage's epochs, at
# least 2 (Kang et al.: 10 after 90 on ImageNet-LT; the weight-balancing code: 10 after 320 on CIFAR).
STAGE2_EPOCHS = max(2, RECIPE["epochs"] // 4)
# LDAM-DRW re-weights from 80 % of the run on (Cao et al.: epoch 160 of 200).
DRW_EPOCH = RECIPE["epochs"] * 4 // 5
WB_WEIGHT_DECAYS = (1e-3, 2e-3, 5e-3, 1e-2)

# The cells behind the issue "CDB that works on any data, and beta chosen from the data", in the order the
# runner should train them when time is short (CE and the paper's class-balanced grid first).
PAPER_CB_FAMILIES = (("cb_softmax", "cb_softmax", None), ("cb_sigmoid", "cb_sigmoid", None),
                     ("cb_focal", "cb_focal", GAMMAS))


def cb_cell(family: str, loss: str, beta: float, gamma: float | None, **extra: Any) -> Cell:
    suffix = "" if gamma is None else f"_g{gamma:g}"
    tag = "_wm" if extra.get("reduction") == "weighted_mean" else ""
    # gamma only where the loss reads it (the softmax and sigmoid forms ignore the field).
    focal = {} if gamma is None else {"gamma": gamma}
    return Cell(f"{family}{tag}_b{beta:g}{suffix}", family if not tag else f"{family}{tag}",
                dict(loss=loss, beta=beta, **focal, **extra), beta=beta, gamma=gamma)


def cells() -> list[Cell]:
    grid = [Cell("ce", "baseline", dict(loss="ce"))]
    grid += [Cell(f"focal_g{g:g}", "baseline", dict(loss="focal", gamma=g)) for g in GAMMAS]
    # The class-balanced paper's grid: softmax and sigmoid over beta, (sigmoid) focal over beta x gamma ...
    for family, loss, gammas in PAPER_CB_FAMILIES:
        for beta in BETAS:
            for gamma in gammas or (None,):
                grid.append(cb_cell(family, loss, beta, gamma))
    # ... the softmax focal form (the official code's fourth), and the softmax with PyTorch's reduction.
    grid += [cb_cell("cb_softmax_focal", "cb_softmax_focal", beta, gamma) for beta in BETAS for gamma in GAMMAS]
    grid += [cb_cell("cb_softmax", "cb_softmax", beta, None, reduction="weighted_mean") for beta in BETAS]
    grid += [
        Cell("cdb_tau1.5", "cdb", dict(loss="cdb", cdb_tau=1.5)),
        Cell("cdb_dynamic", "cdb", dict(loss="cdb", cdb_tau="dynamic")),
        # Not in the paper: the stable CDB (posterior/confidence difficulty, EMA damping, bounded ratio), its defaults
        # chosen on validation (docs/cdb_stable.md).
        Cell("cdb_stable", "cdb_extension", dict(loss="cdb_stable")),
        Cell("cdb_stable_focal", "cdb_extension", dict(loss="cdb_stable_focal", gamma=1.0)),
        # Its weights average 1 over classes, not over samples, so the official `mean` reduction scales its gradient
        # down as it does the class-balanced loss's: PyTorch's reduction too, as for the class-balanced softmax.
        Cell("cdb_stable_wm", "cdb_extension", dict(loss="cdb_stable", reduction="weighted_mean")),
        # Not in the paper: the paper's grid scored by classifier refits on the CE run's frozen features
        # (longtail.tune_beta); its choice's full-training error is the grid cell of the same configuration. Then a
        # full training with the per-class betas (covering numbers of the features) it found best on validation.
        Cell("tune_beta", "tuned_beta", dict(loss="ce"), parent="ce", kind="tune_beta"),
        Cell("cb_softmax_per_class_beta", "tuned_beta", dict(loss="cb_softmax"), parent="tune_beta",
             derive="class_betas"),
        Cell("ldam_drw", "peer", dict(loss="ldam", drw_epoch=DRW_EPOCH)),
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
    # Weight balancing (Alshammari et al.): stage 1 CE with a larger weight decay, tuned (values around their CIFAR
    # choice, 5e-3; the best chosen on validation like every other hyperparameter), then the classifier fine-tuned
    # with the CB softmax, weight decay 0.1 and MaxNorm (their released stage-2 recipe: lr 0.01, relative threshold
    # 0.1). 1e-3 was added after the first three had run at imbalance 100: the best on validation was the grid's edge,
    # 2e-3 (val error 10.9 % against 12.4 and 23.5 for 5e-3 and 1e-2; 1e-2's first stage reaches only 26.8 % test error
    # at the preset's lr 0.05, CE's default weight decay being 5e-4), so the grid goes past that edge.
    for wd in WB_WEIGHT_DECAYS:
        grid += [
            Cell(f"wb_stage1_wd{wd:g}", "weight_balancing_stage1", dict(loss="ce", weight_decay=wd)),
            Cell(f"wb_wd{wd:g}", "weight_balancing", dict(stage="classifier", loss="cb_softmax", beta=0.9999,
                                                          weight_decay=0.1, lr=0.01, max_norm=0.1,
                                                          epochs=STAGE2_EPOCHS), parent=f"wb_stage1_wd{wd:g}"),
        ]
    return grid


# Cells left out with a stated reason. A class-balanced cell whose weights at an imbalance's training counts are
# uniform to within UNIFORM_WEIGHTS (max / min - 1) trains its unweighted loss, which another cell already trains: at
# imbalance 10 (597 to 5975 images a class) beta 0.9 gives weights of exactly 1.0 in float64 (1 - 0.9**597 rounds to
# 1) and beta 0.99 weights within 0.25 % of 1. The rule was checked where such cells had run before it: beta 0.9 at
# imbalance 100 (weights within 0.20 %) and 50 (4e-6), 3 seeds each, every one level with its equivalent (the
# report's "Cells left out" section). The sigmoid forms have no unweighted cell of their own, so their smallest beta
# is kept as one and their other uniform betas point to it. Nothing at imbalance 200 (beta 0.9: 4.9 %) is left out.
UNIFORM_WEIGHTS = 0.005


def train_counts(imbalance: float) -> list[int]:
    """Fashion-MNIST-LT's training images per class at ``imbalance`` (6000 a class, the validation split held out),
    as the trainer draws them (``longtail.data.long_tailed_counts`` with the recipe's profile)."""
    from longtail.data import long_tailed_counts

    return long_tailed_counts(10, 6000 - RECIPE["val_per_class"], imbalance, RECIPE.get("profile", "exp"))


def weight_spread(beta: float, imbalance: float) -> float:
    """``max / min - 1`` of the class-balanced weights for ``beta`` at ``imbalance``'s training counts (0: uniform)."""
    import warnings

    import torch

    from longtail import BetaRangeWarning, class_balanced_weights

    with warnings.catch_warnings():  # nearly uniform weights are what this measures
        warnings.simplefilter("ignore", BetaRangeWarning)
        weights = class_balanced_weights(train_counts(imbalance), beta, dtype=torch.float64)
    return float(weights.max() / weights.min() - 1)


# The cell that trains a class-balanced family's loss with uniform weights: CE for the softmax (either reduction:
# with all weights 1 both divide by N), the focal loss of the same gamma for the softmax focal; the sigmoid forms'
# smallest beta (they have no unweighted cell).
def _unweighted_cell(cell: Cell) -> str | None:
    if cell.family in ("cb_softmax", "cb_softmax_wm"):
        return "ce"
    if cell.family == "cb_softmax_focal":
        return f"focal_g{cell.gamma:g}"
    if cell.family in ("cb_sigmoid", "cb_focal"):
        smallest = cb_cell(cell.family, cell.overrides["loss"], min(BETAS), cell.gamma).name
        return None if smallest == cell.name else smallest
    return None


def omitted(imbalance: float) -> dict[str, str]:
    """The cells left out at ``imbalance`` (their weights are uniform there), each with the cell that trains the same
    loss: ``{cell: equivalent}``. The runner does not train them; the report shows the equivalent in their place."""
    return dict(_omitted(float(imbalance)))


@functools.lru_cache(maxsize=None)
def _omitted(imbalance: float) -> tuple[tuple[str, str], ...]:
    out = []
    for cell in cells():
        if cell.beta is None or cell.kind != "train" or cell.parent is not None:
            continue
        equivalent = _unweighted_cell(cell)
        if equivalent is not None and weight_spread(cell.beta, imbalance) < UNIFORM_WEIGHTS:
            out.append((cell.name, equivalent))
    return tuple(out)


# The cells of the CDB/beta issue's acceptance (CE, every CDB form, the paper's class-balanced grid and the softmax
# with PyTorch's reduction), trained first.
def acceptance_cells() -> list[str]:
    return [c.name for c in cells() if c.name == "ce" or c.family in ("cdb", "cdb_extension", "cb_softmax",
                                                                        "cb_sigmoid", "cb_focal", "cb_softmax_wm")]


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


# A screen for a cheaper route to the plateau (one seed): the 40-epoch CE run with twice the learning rate, at batch
# 128 and 256. Neither reached the 80-epoch plateau (docs/benchmarks/convergence.md), and larger batches are not
# faster per image on this CPU, so the preset kept batch 128, LR 0.05 and 80 epochs.
RECIPE_SEARCH = [(128, 0.1), (256, 0.1)]


def recipe_cells() -> list[Cell]:
    grid = []
    for batch, lr in RECIPE_SEARCH:
        for epochs in (40,):
            grid.append(Cell(f"ce_w16_e{epochs}_b{batch}_lr{lr:g}", "ce",
                             dict(loss="ce", width=16, epochs=epochs, eval_every=epochs, amp="auto",
                                  batch_size=batch, lr=lr)))
    return grid


# The newcomer's subset (one command, at most 5 minutes on 2 cores): CE, the best class-balanced configuration by
# validation, the stable CDB and the best peer, at imbalance 100, one seed, on the preset's recipe shortened to 20
# epochs (a quarter of the plateau's; the convergence study has CE's and the CB softmax's 20-epoch numbers over 3
# seeds to compare with). The choices: the class-balanced softmax at beta 0.9999, level at imbalance 100 with the
# converged matrix's best class-balanced cell by validation (the sigmoid at the same beta: 11.28 against 11.26 %) and
# the form whose 20-epoch numbers the convergence study has; and LDAM-DRW, the best peer by validation of the earlier
# (unconverged) matrix, until the converged matrix has run its peers.
QUICK_EPOCHS = 20
QUICK = ("ce", "cb_softmax_b0.9999", "cdb_stable", "ldam_drw")


def quick_cells() -> list[Cell]:
    by_name = {c.name: c for c in cells()}
    grid = []
    for name in QUICK:
        overrides = {**by_name[name].overrides, "epochs": QUICK_EPOCHS, "eval_every": QUICK_EPOCHS}
        if "drw_epoch" in overrides:  # deferred re-weighting from 80 % of the run on, as in the matrix
            overrides["drw_epoch"] = QUICK_EPOCHS * 4 // 5
        grid.append(Cell(f"{name}_e{QUICK_EPOCHS}", by_name[name].family, overrides, beta=by_name[name].beta))
    return grid


# bfloat16 against float32 at the converged recipe (the convergence study compared them at 20 epochs): the matrix's
# cells that carry its headline comparisons, CE, the best class-balanced cell by validation at imbalance 100, the
# stable CDB (whose weights follow validation accuracy, so a precision change could move them) and the class-balanced
# softmax (the quick subset's), again in float32. Paired by seed with the matrix's runs (bfloat16 autocast where the
# CPU has it) in benchmarks/results/precision.
PRECISION = ("ce", "cb_sigmoid_b0.9999", "cdb_stable", "cb_softmax_b0.9999")


def precision_cells() -> list[Cell]:
    by_name = {c.name: c for c in cells()}
    return [Cell(f"{name}_fp32", by_name[name].family, {**by_name[name].overrides, "amp": "off"},
                 beta=by_name[name].beta, gamma=by_name[name].gamma) for name in PRECISION]


GRIDS = {"matrix": cells, "convergence": convergence_cells, "recipe": recipe_cells, "quick": quick_cells,
         "precision": precision_cells}


# A run's precision as its result file records it (``autocast``), in words: the runner's refusal and the report.
PRECISION_NAMES = {"off": "float32", "bfloat16": "bfloat16 autocast"}


# The precision an imbalance's cells train in, where it is not amp="auto"'s choice for the machine. Imbalance 200's
# first 33 runs (2026-12-03) trained on an AMD EPYC without native bfloat16, where "auto" is float32; the other
# imbalances' on CPUs with native bfloat16. Pinning 200 to float32 lets any machine add to it without mixing two
# precisions in one comparison (about 1.5x the bfloat16 time on a CPU with AMX: docs/benchmarks/ops.md).
AMP_BY_IMBALANCE: dict[float, dict[str, str]] = {200.0: {"amp": "off"}}


def precision_of(amp: str, device: str = "cpu") -> str:
    """What ``amp`` trains in on ``device`` of this machine, as ``result.json`` records it (``"bfloat16"`` or
    ``"off"``): ``longtail.train.device.autocast_enabled``, the trainer's own rule."""
    import torch

    from longtail.train.device import autocast_enabled

    return "bfloat16" if autocast_enabled(amp, torch.device(device)) else "off"


def run_folder(out: str | Path, imbalance: float, name: str, seed: int) -> Path:
    return Path(out) / "runs" / f"rho{imbalance:g}" / name / f"seed{seed}"


TUNE_FILE = "tune_beta.json"


def tuning_is_current(saved: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Whether a ``tune_beta.json`` is this cell's: its configuration (``expected``, a ``TrainConfig.to_dict()``) and
    the selection rule of the installed ``longtail.tune`` (a file chosen by an older rule is run again)."""
    from longtail.train import TrainConfig
    from longtail.tune import SELECTION_RULE

    return saved.get("order") == SELECTION_RULE and TrainConfig.from_dict(saved["config"]).to_dict() == expected


def chosen_class_betas(out: str | Path, imbalance: float, tune_cell: str, seed: int) -> list[float] | None:
    """The per-class betas that the ``tune_beta`` cell's run chose on validation (the best radius), or None before
    it has run."""
    path = run_folder(out, imbalance, tune_cell, seed) / TUNE_FILE
    if not path.exists():
        return None
    info = json.loads(path.read_text())["per_class_beta"]
    return info["betas"][info["radii"].index(info["best_radius"])]


def config_for(cell: Cell, imbalance: float, seed: int, out: str | Path | None = None) -> dict[str, Any]:
    """The cell's configuration; a later stage's ``init_from`` is its parent's folder under ``out``
    (``None`` without ``out``: compare configurations without it, as the report does); a derived cell's
    ``class_betas`` come from its parent's ``tune_beta.json`` under ``out``."""
    config = {**RECIPE, **AMP_BY_IMBALANCE.get(float(imbalance), {}), **cell.overrides, "imbalance": float(imbalance),
              "seed": seed, "subset_seed": seed}
    if cell.starts_from_parent:
        config["init_from"] = str(run_folder(out, imbalance, cell.parent, seed)) if out is not None else None
    if cell.derive == "class_betas":
        config["class_betas"] = chosen_class_betas(out, imbalance, cell.parent, seed) if out is not None else None
    return config


def same_recipe(saved: dict[str, Any], expected: dict[str, Any], autocast: str | None = None) -> bool:
    """Whether a saved configuration is the cell's (``init_from``, a path that depends on where results live,
    aside: a later stage's parent is checked by its own record).

    ``amp`` is compared as the precision it names: a run saved with ``amp="auto"`` whose result recorded ``autocast``
    (``"off"`` or ``"bfloat16"``) is a run of a cell that pins that precision (``AMP_BY_IMBALANCE``), so the float32
    runs that a CPU without native bfloat16 trained under ``"auto"`` stay finished once the imbalance pins float32."""
    same_amp = saved.get("amp") == expected.get("amp") or (
        saved.get("amp") == "auto" and expected.get("amp") != "auto" and autocast is not None
        and precision_of(expected["amp"]) == autocast)
    aside = {"init_from": None, "amp": None}
    return same_amp and {**saved, **aside} == {**expected, **aside}
