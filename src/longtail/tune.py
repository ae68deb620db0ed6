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
features (:mod:`longtail.effective`), one per radius of :func:`longtail.effective.radius_grid`, each refit with the
class-balanced softmax loss. The unweighted softmax refit (beta 0) and inverse frequency (beta 1) are reported as
references, not candidates. ``docs/beta_from_data.md`` has a measured run and what it does and does not show.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checks import as_counts, check_beta, check_choice, check_focal_gamma, check_int, check_real, check_seed
from .effective import estimate_prototypes, per_class_betas, per_class_weights, radius_grid
from .functional.class_balanced import class_balanced_loss
from .weights import _class_balanced_weights, _regime

PAPER_LOSSES = ("softmax", "sigmoid", "focal")
PAPER_BETAS = (0.9, 0.99, 0.999, 0.9999)
PAPER_GAMMAS = (0.5, 1.0, 2.0)
CANDIDATE_LOSSES = ("softmax", "sigmoid", "focal", "softmax_focal")
PRIOR_BIAS_LOSSES = ("sigmoid", "focal")
RESULT_FILE = "tune_beta.json"
CE_FOLDER = "ce"
TIE_TOLERANCE = 1e-9
# log2-spaced from 1/16 to 16 (49 points): the temperatures of calibrated_balanced_nll.
TEMPERATURES = tuple(2.0 ** (k / 6) for k in range(-24, 25))
# Saved in every tune_beta.json ("order"); the benchmark reruns a file whose rule differs: change it only with the
# rule.
SELECTION_RULE = ("the best validation balanced accuracy; ties (within 1e-9) to the lowest temperature-calibrated "
                  "balanced validation NLL, then to the earlier candidate in the paper grid order (softmax, sigmoid "
                  "for beta ascending; focal for beta ascending, gamma ascending within), then per-class betas by "
                  "radius ascending")

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


def _as_candidate(value: Any, index: int) -> Candidate:
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


@dataclass(frozen=True)
class HeadSettings:
    """How every head is refit: ``epochs`` over the cached training features in minibatches of ``batch_size``
    (seeded order), AdamW at ``lr`` with a cosine decay to 0 and decoupled ``weight_decay`` (never on a prior
    bias), the loss reduced with ``reduction`` (the trainer's). ``seed`` fixes the initialisation and the order."""

    epochs: int = 30
    batch_size: int = 256
    lr: float = 0.01
    weight_decay: float = 5e-4
    reduction: str = "mean"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "epochs", check_int("head_epochs", self.epochs, low=1))
        object.__setattr__(self, "batch_size", check_int("head_batch_size", self.batch_size, low=1))
        object.__setattr__(self, "lr", check_real("head_lr", self.lr, low=0.0, low_open=True, finite=True))
        object.__setattr__(self, "weight_decay", check_real("weight_decay", self.weight_decay, low=0.0, finite=True))
        object.__setattr__(self, "reduction", check_choice("reduction", self.reduction, ("mean", "weighted_mean")))
        object.__setattr__(self, "seed", check_seed(self.seed))


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """One intra-op thread on the CPU while the refits and covers run (restored after). Their matrices are small
    (a 256 x D batch against K x C heads); on a shared 2-core machine, OpenMP's barrier waits made two threads 7x
    slower than one (measured: 3 refit epochs of the 20 paper candidates 13.8 s against 2.0 s)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    """The candidate row (:attr:`TuneResult.candidates`' form) that :func:`choose` picks by validation balanced
    accuracy and, on ties, validation NLL, among ``rows`` or those of the given ``kinds`` (``"grid"``: the paper
    grid's alone)."""
    pool = [r for r in rows if kinds is None or r["kind"] in kinds]
    if not pool:
        raise ValueError(f"rows must hold a candidate of kind {sorted(kinds or [])}; got none")
    return pool[choose([r["val_balanced_accuracy"] for r in pool], [r["val_balanced_nll"] for r in pool])]


def balanced_accuracy(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean per-class recall of every column of ``predictions`` ``(N, K)`` (float64 ``(K,)``), over the classes
    that ``labels`` holds."""
    correct = (predictions == labels[:, None]).double()
    per_class = torch.zeros(num_classes, predictions.shape[1], dtype=torch.float64, device=correct.device)
    per_class.index_add_(0, labels, correct)
    totals = torch.bincount(labels, minlength=num_classes).double()
    present = totals > 0
    return (per_class[present] / totals[present, None]).mean(0).cpu()


def calibrated_balanced_nll(logits: torch.Tensor, labels: torch.Tensor, num_classes: int, *,
                            chunk: int = 256) -> torch.Tensor:
    r"""The temperature-calibrated balanced NLL of every head in ``logits`` ``(N, C, K)`` (float64 ``(K,)``).

    .. math::
        \min_{T \in \mathcal{T}} \frac{1}{|C'|} \sum_{c \in C'} \frac{1}{n_c} \sum_{i: y_i = c}
        -\log \operatorname{softmax}(z_i / T)_{c}

    over the classes ``C'`` that ``labels`` holds and the fixed grid ``TEMPERATURES`` (2^(k/6), k = -24..24). The
    class average matches balanced accuracy; the temperature makes the score blind to each head's overall logit scale
    (sigmoid and focal heads are trained one-vs-rest, softmax heads jointly), so it measures how well a head ranks
    the true class, not how its family is calibrated. Computed in float64 in chunks of ``chunk`` rows.

    >>> logits = torch.tensor([[[2.0], [0.0]], [[1.0], [0.0]]])  # two images, two classes, one head
    >>> round(calibrated_balanced_nll(logits, torch.tensor([0, 1]), 2).item(), 4)  # at T = 2^(8/6)
    0.6421
    """
    if logits.ndim != 3 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (N, C, K) and labels (N,); got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    n, _, k = logits.shape
    temperatures = torch.tensor(TEMPERATURES, dtype=torch.float64, device=logits.device)
    per_class = torch.zeros(num_classes, k, temperatures.numel(), dtype=torch.float64, device=logits.device)
    for start in range(0, n, chunk):
        z = logits[start : start + chunk].double()[..., None] / temperatures  # (b, C, K, T)
        y = labels[start : start + chunk]
        true = torch.log_softmax(z, dim=1).gather(1, y[:, None, None, None].expand(-1, 1, k, z.shape[-1]))
        per_class.index_add_(0, y, -true[:, 0])
    totals = torch.bincount(labels, minlength=num_classes).double()
    present = totals > 0
    return (per_class[present] / totals[present, None, None]).mean(0).min(1).values.cpu()


def refit_heads(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    candidates: Sequence[Candidate],
    counts: Any,
    eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]],
    settings: HeadSettings | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Fits one linear head per candidate on the cached ``train_features`` ``(N, D)`` and returns, for every
    ``eval_sets`` entry ``name: (features, labels)``, ``{"balanced_accuracy": [...], "balanced_nll": [...]}``: each
    candidate's balanced accuracy and :func:`calibrated_balanced_nll` (in order).

    Every head starts from the same seeded initialisation (PyTorch's ``nn.Linear`` uniform bounds); sigmoid and
    focal heads start their bias at ``-log(C - 1)`` (:func:`longtail.init_prior_bias`'s default). The K fits run as
    one: stacked weights, one shared minibatch order, the sum of the K losses (each head's gradient is its own
    loss's), AdamW per parameter. On the CPU they run on one intra-op thread (``torch.set_num_threads(1)``,
    restored after; process-wide while it runs).
    """
    settings = settings or HeadSettings()
    if not candidates:
        raise ValueError("candidates must hold at least one candidate; got none")
    with _one_cpu_thread(train_features.device):
        return _refit_heads(train_features, train_labels, candidates, counts, eval_sets, settings)


def _refit_heads(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    candidates: Sequence[Candidate],
    counts: Any,
    eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]],
    settings: HeadSettings,
) -> dict[str, dict[str, list[float]]]:
    x, y = train_features.float(), train_labels
    device = x.device
    n, dim = x.shape
    counts_t = as_counts(counts)
    num_classes = counts_t.numel()
    k = len(candidates)
    weights = torch.stack([c.weights(counts_t) for c in candidates]).to(device)  # (K, C)
    prior = torch.tensor([c.loss in PRIOR_BIAS_LOSSES for c in candidates], device=device)
    groups: dict[tuple[str, float], list[int]] = {}
    for i, c in enumerate(candidates):
        groups.setdefault((c.loss, c.gamma), []).append(i)
    group_index = [(loss, gamma, torch.tensor(ix, device=device)) for (loss, gamma), ix in groups.items()]

    gen = torch.Generator().manual_seed(settings.seed)
    bound = 1.0 / math.sqrt(dim)
    w0 = torch.empty(num_classes, dim).uniform_(-bound, bound, generator=gen)
    b0 = torch.empty(num_classes).uniform_(-bound, bound, generator=gen)
    weight = w0.expand(k, num_classes, dim).clone().to(device).requires_grad_(True)
    bias = b0.expand(k, num_classes).clone()
    if num_classes > 1:
        bias[prior.cpu()] = -math.log(num_classes - 1)
    bias = bias.to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([weight, bias], lr=settings.lr)
    bias_decay = (~prior).float()[:, None]
    ones = torch.ones(num_classes, device=device)
    order_gen = torch.Generator(device=device).manual_seed(settings.seed)
    steps = math.ceil(n / settings.batch_size)
    total = settings.epochs * steps
    step = 0
    for _ in range(settings.epochs):
        perm = torch.randperm(n, generator=order_gen, device=device)
        for start in range(0, n, settings.batch_size):
            lr = settings.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
            for group in optimizer.param_groups:
                group["lr"] = lr
            index = perm[start : start + settings.batch_size]
            xb, yb = x[index], y[index]
            logits = torch.einsum("bd,kcd->bck", xb, weight) + bias.T.unsqueeze(0)  # (B, C, K)
            sample_weight = weights[:, yb].T  # (B, K): each candidate's w_y
            loss = logits.new_zeros(())
            for name, gamma, ix in group_index:
                per = class_balanced_loss(logits[:, :, ix], yb[:, None].expand(-1, len(ix)), ones, loss=name,
                                          gamma=gamma, reduction="none", sample_weight=sample_weight[:, ix])
                denominator = per.new_tensor(float(len(index))) if settings.reduction == "mean" else \
                    sample_weight[:, ix].sum(0).clamp_min(torch.finfo(torch.float32).tiny)
                loss = loss + (per.sum(0) / denominator).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if settings.weight_decay:
                with torch.no_grad():
                    weight.mul_(1.0 - lr * settings.weight_decay)
                    bias.mul_(1.0 - lr * settings.weight_decay * bias_decay)
            step += 1
    scores: dict[str, dict[str, list[float]]] = {}
    with torch.no_grad():
        for name, (features, labels) in eval_sets.items():
            logits = torch.cat([torch.einsum("bd,kcd->bck", chunk, weight) + bias.T.unsqueeze(0)
                                for chunk in features.float().split(4096)])  # (N, C, K)
            scores[name] = {"balanced_accuracy": balanced_accuracy(logits.argmax(1), labels, num_classes).tolist(),
                            "balanced_nll": calibrated_balanced_nll(logits, labels, num_classes).tolist()}
    return scores


@torch.no_grad()
def extract_features(model: torch.nn.Module, images: torch.Tensor, *, batch_size: int = 1024,
                     autocast: bool = False) -> torch.Tensor:
    """``model.forward_features`` of ``images`` in eval mode, without augmentation, as float32 ``(N, D)``."""
    model.eval()
    out = []
    for chunk in images.split(batch_size):
        with torch.autocast(chunk.device.type, dtype=torch.bfloat16, enabled=autocast):
            out.append(model.forward_features(chunk.contiguous(memory_format=torch.channels_last)).float())
    return torch.cat(out)


def per_class_beta_candidates(
    train_features: torch.Tensor, train_labels: torch.Tensor, counts: Any, radii: Sequence[float] | None = None
) -> tuple[list[Candidate], dict[str, Any]]:
    """One class-balanced softmax candidate per radius, its betas ``(N_c - 1) / N_c`` from the covering numbers
    ``N_c`` of the training features (:func:`longtail.effective.estimate_prototypes`), and what was found: the
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
        radii: their radii (default :func:`longtail.effective.radius_grid` of the training features).
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
    grid = [_as_candidate(c, i) for i, c in enumerate(paper_grid() if candidates is None else candidates)]
    if not grid and not per_class_beta:
        raise ValueError("candidates must hold at least one candidate (or per_class_beta=True); got none")
    settings = HeadSettings(head_epochs, head_batch_size, head_lr, config.weight_decay, config.reduction, config.seed)
    out = None
    if out_dir is not None:
        from .checks import check_output_folder

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
