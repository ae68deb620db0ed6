"""Choosing the class-balanced loss's (loss, beta, gamma) from data, at a fraction of a training grid's cost.

**An extension beyond the paper.** Cui et al. (CVPR 2019) tune beta (and the loss, and focal's gamma) by hand per
dataset, over loss in {softmax, sigmoid, focal}, beta in {0.9, 0.99, 0.999, 0.9999} and gamma in {0.5, 1, 2}: 20
full trainings. :func:`tune_beta` trains once instead:

1. train the configuration with softmax cross-entropy (the trainer; the configuration's ``loss`` must be ``"ce"``
   and ``val_per_class >= 1``);
2. freeze the backbone and compute the features of the training, validation and test splits once, in eval mode and
   without augmentation (the trainer's evaluation pass: one deterministic feature per image, cheap to cache; the
   augmented passes the training loop sees are not reproduced, which makes the refits a little more prone to
   over-fitting the training features than the full runs they stand in for);
3. for every candidate, re-fit only the linear classifier from the same seeded initialisation (the sigmoid and
   focal candidates with the prior bias ``b = -log(C - 1)``, kept out of weight decay, as the trainer does) with
   that candidate's class-balanced loss on the cached features: minibatch AdamW with a cosine learning rate for a
   fixed number of epochs, all candidates in one vectorised pass (one stacked ``(K, C, D)`` weight, one backward
   per step; Adam's update is per parameter, so this is K independent fits), on one CPU thread (small matrices).
   AdamW makes each fit insensitive to its loss's overall scale (the official ``mean`` reduction multiplies the
   gradient by the batch's mean weight), so candidates are compared at their optimum, not at their effective
   learning rate;
4. choose by balanced accuracy on the validation split. Ties (within ``TIE_TOLERANCE``: a 250-image split moves
   in steps of 0.4 %, and several heads often land on the same count) go to the lowest temperature-calibrated
   balanced NLL on the validation split (:func:`calibrated_balanced_nll`: each class's mean negative log
   softmax probability of its true class, averaged over classes, at the best temperature of a fixed grid per head,
   so that a family's logit scale, one-vs-rest for sigmoid and focal, is not what decides), then to the earlier
   candidate in the fixed order of :func:`paper_grid` (softmax, sigmoid, focal; beta ascending; for focal, gamma
   ascending within each beta), then the per-class-beta candidates (radius ascending).

The test split's balanced accuracy and NLL of every refit are reported beside them, never used for the choice. With
``per_class_beta`` the search adds candidates whose betas are estimated per class from covering numbers of the
features (:mod:`longtail.prototypes`), one per radius of :func:`longtail.prototypes.radius_grid`, each refit with the
class-balanced softmax loss. The unweighted softmax refit (beta 0) and inverse frequency (beta 1) are reported as
references, not candidates. ``docs/beta_from_data.md`` has a measured run and what it does and does not show.

The candidates and the rule that chooses are :mod:`longtail.tune_candidates`; the features and the head refit,
:mod:`longtail.head_refit`; this module runs the steps and reports (:class:`TuneResult`).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checks import as_counts, check_output_folder, check_real
from .prototypes import estimate_prototypes, per_class_betas, radius_grid
# The candidates and the rule live in longtail.tune_candidates, the head refit in longtail.head_refit; their names
# (CANDIDATE_LOSSES, PRIOR_BIAS_LOSSES and TEMPERATURES included) stay importable from here, their first home.
from .head_refit import (
    TEMPERATURES,
    HeadSettings,
    _one_cpu_thread,
    balanced_accuracy,
    calibrated_balanced_nll,
    extract_features,
    refit_heads,
)
from .tune_candidates import (
    CANDIDATE_LOSSES,
    PAPER_BETAS,
    PAPER_GAMMAS,
    PAPER_LOSSES,
    PRIOR_BIAS_LOSSES,
    SELECTION_RULE,
    TIE_TOLERANCE,
    Candidate,
    as_candidate,
    choose,
    choose_row,
    paper_grid,
)

RESULT_FILE = "tune_beta.json"
CE_FOLDER = "ce"

__all__ = [
    "CE_FOLDER",
    "Candidate",
    "HeadSettings",
    "PAPER_BETAS",
    "PAPER_GAMMAS",
    "PAPER_LOSSES",
    "RESULT_FILE",
    "SELECTION_RULE",
    "TIE_TOLERANCE",
    "TuneResult",
    "balanced_accuracy",
    "calibrated_balanced_nll",
    "choose",
    "choose_row",
    "extract_features",
    "paper_grid",
    "per_class_beta_candidates",
    "per_class_beta_search",
    "refit_heads",
    "tune_beta",
]


def per_class_beta_candidates(
    train_features: torch.Tensor, train_labels: torch.Tensor, counts: Any, radii: Sequence[float] | None = None
) -> tuple[list[Candidate], dict[str, Any]]:
    """One class-balanced softmax candidate per radius, its betas ``(N_c - 1) / N_c`` from the covering numbers
    ``N_c`` of the training features (:func:`longtail.prototypes.estimate_prototypes`), and what was found: the
    radii, the ``N_c`` and betas of each, and the seconds it took."""
    t0 = time.perf_counter()
    features, labels = train_features.cpu(), train_labels.cpu()
    num_classes = as_counts(counts).numel()
    radii = radius_grid(features, labels, num_classes) if radii is None else \
        [check_real(f"radii[{i}]", r, low=0.0, finite=True) for i, r in enumerate(radii)]
    if not radii:
        raise ValueError("radii must hold at least one radius; got none")
    candidates, prototypes, betas = [], [], []
    for r in radii:
        with _one_cpu_thread(features.device):
            n_c = estimate_prototypes(features, labels, num_classes, r)
        b = per_class_betas(n_c.clamp_min(1))
        prototypes.append(n_c.tolist())
        betas.append(b.tolist())
        candidates.append(Candidate("softmax", None, 0.0, tuple(b.tolist()), float(r), "per_class_beta"))
    info = {"radii": [float(r) for r in radii], "prototypes": prototypes, "betas": betas,
            "seconds": time.perf_counter() - t0}
    return candidates, info


def per_class_beta_search(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    counts: Any,
    *,
    radii: Sequence[float] | None = None,
    settings: HeadSettings | None = None,
) -> dict[str, Any]:
    """The per-class betas from covering numbers with the radius chosen on the validation split (an extension
    beyond the paper): for each radius, betas from the training features' covering numbers, a class-balanced
    softmax head refit with their weights (:func:`refit_heads`), scored by validation balanced accuracy; the best
    (:func:`choose`: ties to the lower calibrated validation NLL, then the smaller radius) is returned with every
    radius's scores, ``N_c`` and betas."""
    candidates, info = per_class_beta_candidates(train_features, train_labels, counts, radii)
    val = refit_heads(train_features, train_labels, candidates, counts, {"val": (val_features, val_labels)},
                      settings)["val"]
    best = choose(val["balanced_accuracy"], val["balanced_nll"])
    return {**info, "val_balanced_accuracy": val["balanced_accuracy"], "val_balanced_nll": val["balanced_nll"],
            "radius": info["radii"][best],
            "chosen_prototypes": info["prototypes"][best], "chosen_betas": info["betas"][best],
            "weights": candidates[best].weights(as_counts(counts)).tolist()}


@dataclass
class TuneResult:
    """What :func:`tune_beta` found; every field is plain JSON (:meth:`to_dict`).

    ``chosen``: the candidate :func:`choose` picks (``order``: the rule) by validation balanced accuracy
    (``loss``, ``beta`` (None for per-class betas, then ``betas`` and ``radius``), ``gamma``, ``label``,
    ``val_balanced_accuracy``, ``val_balanced_nll``, ...). ``candidates``: every candidate in the fixed order with
    its validation and test balanced accuracy and :func:`calibrated_balanced_nll`, class weights and regime
    (:func:`longtail.beta_regime`). ``references``: the CE-trained head as it is, the unweighted softmax
    refit (beta 0) and inverse frequency (beta 1), never chosen. ``per_class_beta``: the covering-number search
    (radii, ``N_c`` and betas per radius) or None. ``cost``: seconds of the CE run, the features, the covering
    numbers and the refits, their total, and the estimated cost of the same grid with full trainings (candidates x
    the CE run's wall time) with the ratio of the two. ``grid_chosen``: the same rule's choice among the paper
    grid's candidates alone (:func:`choose_row`; None without them), which the per-class betas are set against.
    """

    chosen: dict[str, Any]
    candidates: list[dict[str, Any]]
    references: list[dict[str, Any]]
    per_class_beta: dict[str, Any] | None
    cost: dict[str, Any]
    head: dict[str, Any]
    config: dict[str, Any]
    train_counts: list[int]
    val_counts: list[int]
    ce_run: str | None
    grid_chosen: dict[str, Any] | None = None
    order: str = SELECTION_RULE
    note: str = "an extension beyond the paper: heads refit on a frozen CE backbone, chosen on validation"
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def table(self) -> str:
        """The candidates and references as a text table, the chosen one marked ``*`` (``val nll``: the calibrated
        balanced NLL that breaks ties; blank in files written before it existed)."""
        def nll(row: dict[str, Any]) -> str:
            return f"{row['val_balanced_nll']:.4f}" if row.get("val_balanced_nll") is not None else ""

        rows = [("", "candidate", "val bal acc", "val nll", "test bal acc", "weights")]
        for c in self.candidates:
            mark = "*" if c["index"] == self.chosen["index"] else ""
            rows.append((mark, c["label"], f"{c['val_balanced_accuracy']:.4f}", nll(c),
                         f"{c['test_balanced_accuracy']:.4f}", c["regime"].replace("_", " ")))
        for r in self.references:
            rows.append(("", f"({r['label']})", f"{r['val_balanced_accuracy']:.4f}", nll(r),
                         f"{r['test_balanced_accuracy']:.4f}", "reference, not a candidate"))
        widths = [max(len(row[i]) for row in rows) for i in range(6)]
        return "\n".join(f"{a:<{widths[0]}} {b:<{widths[1]}}  {c:>{widths[2]}}  {d:>{widths[3]}}  {e:>{widths[4]}}  {f}"
                         for a, b, c, d, e, f in rows)

    def summary(self) -> str:
        cost = self.cost
        chosen = self.chosen
        grid = "" if self.grid_chosen is None or self.grid_chosen["index"] == chosen["index"] else (
            f"; within the paper grid: {self.grid_chosen['label']} (validation "
            f"{self.grid_chosen['val_balanced_accuracy']:.4f})")
        return (f"chosen: {chosen['label']} (validation balanced accuracy {chosen['val_balanced_accuracy']:.4f}, "
                f"test {chosen['test_balanced_accuracy']:.4f}); cost {cost['total_seconds']:.1f}s (CE run "
                f"{cost['ce_wall_seconds']:.1f}s, features {cost['feature_seconds']:.1f}s, covering numbers "
                f"{cost['cover_seconds']:.1f}s, {cost['num_refits']} refits {cost['refit_seconds']:.1f}s) against "
                f"about {cost['full_grid_seconds_estimate']:.0f}s for the {cost['num_candidates']} candidates with "
                f"full trainings (ratio {cost['ratio']:.3f})" + grid)


def _check_config(config: Any) -> Any:
    from .train.config import TrainConfig

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a longtail.train.TrainConfig; got {type(config).__name__}")
    if config.loss != "ce":
        raise ValueError(f"config.loss must be 'ce' (tune_beta trains the backbone once with cross-entropy, then the "
                         f"candidates' losses refit the classifier); got {config.loss!r}")
    if config.stage != "joint" or config.init_from is not None:
        raise ValueError(f"config.stage must be 'joint' without init_from (tune_beta trains its own CE run); got "
                         f"stage={config.stage!r}, init_from={config.init_from!r}")
    if config.drw_epoch is not None:
        raise ValueError(f"config.drw_epoch must be None (the backbone is trained with plain CE); got "
                         f"{config.drw_epoch}")
    if config.val_per_class < 1:
        raise ValueError(f"config.val_per_class must be >= 1 (the candidates are chosen on the validation split; "
                         f"25 per class is the CIFAR protocol); got {config.val_per_class}")
    return config


def tune_beta(
    config: Any,
    *,
    candidates: Iterable[Any] | None = None,
    head_epochs: int = 30,
    out_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    per_class_beta: bool = False,
    radii: Sequence[float] | None = None,
    head_batch_size: int = 256,
    head_lr: float = 0.01,
    verbose: int = 0,
) -> TuneResult:
    """Chooses the class-balanced loss, beta and gamma on the validation split from one CE training (an
    extension beyond the paper; the module docstring has the method).

    Args:
        config: a :class:`longtail.train.TrainConfig` with ``loss="ce"``, ``stage="joint"`` and
            ``val_per_class >= 1``; it is trained once as it is.
        candidates: ``(loss, beta[, gamma])`` tuples (or dicts) in the order that breaks the ties left after the
            calibrated NLL; default :func:`paper_grid` (20). Losses: softmax, sigmoid, focal (sigmoid focal),
            softmax_focal.
        head_epochs: epochs of every head refit over the cached training features.
        out_dir: folder for the CE run (``<out_dir>/ce``: reused when it holds a finished run of this
            configuration, its execution-only fields aside, and resumed when interrupted; a run of another
            configuration is refused) and ``tune_beta.json`` (written atomically). Default: a temporary folder,
            removed afterwards, and no file.
        overwrite: replace an existing ``tune_beta.json`` (the CE run is still reused); without it an existing
            ``tune_beta.json`` is refused before any work.
        per_class_beta: add the candidates with per-class betas from covering numbers (one per radius). Off by
            default: on the Fashion-MNIST-LT benchmark (imbalance 50 and 100, 3 seeds each) the per-class betas,
            trained end to end, did not beat the best single beta, and where they won the refits they lost in full
            training (``docs/beta_from_data.md``).
        radii: their radii (default :func:`longtail.prototypes.radius_grid` of the training features).
        head_batch_size, head_lr: the refits' minibatch and AdamW learning rate (:class:`HeadSettings`).
        verbose: 0 silent, 1 one line per epoch of the CE run and per phase, 2 progress bars too.

    Returns:
        :class:`TuneResult`.
    """
    from .io import load_checkpoint, write_json
    from .runs import check_new_files
    from .train.data import prepare_data
    from .train.device import autocast_enabled, resolve_device, synchronize
    from .train.run_folder import CHECKPOINT, RESULT, read_result
    from .train.trainer import build_network, train

    config = _check_config(config)
    grid = [as_candidate(c, i) for i, c in enumerate(paper_grid() if candidates is None else candidates)]
    if not grid and not per_class_beta:
        raise ValueError("candidates must hold at least one candidate (or per_class_beta=True); got none")
    settings = HeadSettings(head_epochs, head_batch_size, head_lr, config.weight_decay, config.reduction, config.seed)
    out = None
    if out_dir is not None:
        out = check_output_folder(out_dir, "out_dir")
        check_new_files([out / RESULT_FILE], overwrite, "out_dir", "overwrite=True")

    def log(message: str) -> None:
        if verbose >= 1:
            print(message, flush=True)

    device = resolve_device(config.device)
    t0 = time.perf_counter()
    data = prepare_data(config, device)
    data_seconds = time.perf_counter() - t0
    temporary = tempfile.TemporaryDirectory(prefix="longtail-tune-") if out is None else None
    try:
        ce_dir = (Path(temporary.name) if temporary is not None else out) / CE_FOLDER  # type: ignore[operator]
        previous, _ = read_result(ce_dir / RESULT)
        reused = previous is not None and previous.get("status") == "complete"
        log(f"CE run in {ce_dir}" + (" (reusing its finished run)" if reused else ""))
        try:
            ce_result = train(config, ce_dir, resume=(ce_dir / CHECKPOINT).exists(), verbose=verbose, data=data)
        except ValueError as exc:
            if "cannot resume" not in str(exc):
                raise
            raise ValueError(f"out_dir must hold no CE run or one of this configuration; got {str(ce_dir)!r}, whose "
                             f"run cannot be reused ({exc}): use another out_dir, or remove that folder") from None
        model = build_network(config, data.num_classes, data.in_channels).to(device)
        model.load_state_dict(load_checkpoint(ce_dir / CHECKPOINT, map_location=device)["model"])
    finally:
        if temporary is not None:
            temporary.cleanup()

    assert data.val is not None  # val_per_class >= 1
    synchronize(device)
    t0 = time.perf_counter()
    amp = autocast_enabled(config.amp, device)
    feats = {name: extract_features(model, split.images, batch_size=config.eval_batch_size, autocast=amp)
             for name, split in (("train", data.train), ("val", data.val), ("test", data.test))}
    labels = {"train": data.train.labels, "val": data.val.labels, "test": data.test.labels}
    ce_head: dict[str, float] = {}
    with torch.no_grad():
        for name in ("val", "test"):
            logits = model.forward_head(feats[name]).float()[..., None]  # (N, C, 1)
            ce_head[name] = balanced_accuracy(logits.argmax(1), labels[name], data.num_classes).item()
            ce_head[f"{name}_nll"] = calibrated_balanced_nll(logits, labels[name], data.num_classes).item()
    synchronize(device)
    feature_seconds = time.perf_counter() - t0
    log(f"features: train {tuple(feats['train'].shape)}, val {tuple(feats['val'].shape)}, test "
        f"{tuple(feats['test'].shape)} in {feature_seconds:.1f}s")

    counts = data.counts
    cover_info = None
    cover_seconds = 0.0
    per_class: list[Candidate] = []
    if per_class_beta:
        per_class, cover_info = per_class_beta_candidates(feats["train"], labels["train"], counts, radii)
        cover_seconds = cover_info.pop("seconds")
        log(f"covering numbers at {len(per_class)} radii in {cover_seconds:.1f}s")
    references = [Candidate("softmax", 0.0, kind="reference"), Candidate("softmax", 1.0, kind="reference")]
    everything = grid + per_class + references
    synchronize(device)
    t0 = time.perf_counter()
    scores = refit_heads(feats["train"], labels["train"], everything, counts,
                         {"val": (feats["val"], labels["val"]), "test": (feats["test"], labels["test"])}, settings)
    synchronize(device)
    refit_seconds = time.perf_counter() - t0
    log(f"{len(everything)} heads refit ({settings.epochs} epochs each) in {refit_seconds:.1f}s")

    rows = []
    for i, c in enumerate(everything):
        row: dict[str, Any] = {
            "index": i if c.kind != "reference" else None, "label": c.label, "kind": c.kind, "loss": c.loss,
            "beta": c.beta, "gamma": c.gamma, "val_balanced_accuracy": scores["val"]["balanced_accuracy"][i],
            "val_balanced_nll": scores["val"]["balanced_nll"][i],
            "test_balanced_accuracy": scores["test"]["balanced_accuracy"][i],
            "test_balanced_nll": scores["test"]["balanced_nll"][i], "weights": c.weights(counts).tolist(),
            "regime": c.regime(counts),
        }
        if c.beta is None:
            row.update(betas=list(c.betas or ()), radius=c.radius)
        rows.append(row)
    eligible = rows[: len(grid) + len(per_class)]
    ce_row = {"index": None, "label": "CE-trained head, as it is", "kind": "reference", "loss": "ce", "beta": 0.0,
              "gamma": 0.0, "val_balanced_accuracy": ce_head["val"], "val_balanced_nll": ce_head["val_nll"],
              "test_balanced_accuracy": ce_head["test"], "test_balanced_nll": ce_head["test_nll"],
              "weights": [1.0] * data.num_classes, "regime": "uniform"}
    reference_rows = [ce_row, *rows[len(eligible):]]
    if cover_info is not None:
        offset = len(grid)
        cover_info["val_balanced_accuracy"] = [r["val_balanced_accuracy"] for r in eligible[offset:]]
        cover_info["val_balanced_nll"] = [r["val_balanced_nll"] for r in eligible[offset:]]
        cover_info["test_balanced_accuracy"] = [r["test_balanced_accuracy"] for r in eligible[offset:]]
        pick = choose_row(eligible, ("per_class_beta",))
        cover_info["best"] = pick["label"]
        cover_info["best_radius"] = pick["radius"]

    ce_wall = float(ce_result["wall_seconds"])
    total = data_seconds + ce_wall + feature_seconds + cover_seconds + refit_seconds
    estimate = len(eligible) * ce_wall
    cost = {
        "data_seconds": data_seconds,
        "ce_wall_seconds": ce_wall,
        "ce_train_seconds": float(ce_result["train_seconds"]),
        "ce_run_reused": reused,
        "feature_seconds": feature_seconds,
        "cover_seconds": cover_seconds,
        "refit_seconds": refit_seconds,
        "total_seconds": total,
        "num_candidates": len(eligible),
        "num_refits": len(everything),
        "full_grid_seconds_estimate": estimate,
        "ratio": total / estimate if estimate > 0 else None,
        "estimate_basis": "number of candidates x the CE run's wall time (data loading not counted in it)",
    }
    result = TuneResult(
        chosen=dict(choose_row(eligible)),
        candidates=eligible,
        references=reference_rows,
        per_class_beta=cover_info,
        cost=cost,
        head={"optimizer": "adam, decoupled weight decay (adamw), none on a prior bias", "schedule": "cosine",
              **dataclasses.asdict(settings),
              "features": "eval mode, no augmentation", "init": "seeded nn.Linear uniform; prior bias -log(C-1) "
              "for sigmoid and focal"},
        config=config.to_dict(),
        train_counts=counts.tolist(),
        val_counts=data.val_counts.tolist(),
        ce_run=None if out is None else str(out / CE_FOLDER),
        grid_chosen=dict(choose_row(eligible, ("grid",))) if grid else None,
        extras={"ce_val_balanced_accuracy": ce_head["val"], "ce_test_balanced_accuracy": ce_head["test"],
                "device": str(device)},
    )
    if out is not None:
        write_json(out / RESULT_FILE, result.to_dict())
        log(f"wrote {out / RESULT_FILE}")
    return result
