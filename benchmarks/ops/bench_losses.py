"""Forward + backward time and peak memory of the longtail losses against native PyTorch and public packages.

    .venv/bin/python benchmarks/ops/bench_losses.py --out docs/benchmarks/ops_losses.json

Two cases, float32, on CUDA when available (else CPU):

- ``classification``: logits ``(4096, 1000)``, integer targets drawn from a long-tailed class distribution;
- ``dense``: logits ``(8, 19, 128, 128)``, targets ``(8, 128, 128)`` with about 10% ``ignore_index`` (-100).

Every candidate is one forward and one backward from a leaf tensor of the logits (``x.grad`` set to None
before each call, so allocating the gradient is part of every candidate). The references compute the
same number (checked: every candidate's value is converted to the official "mean" of the class-balanced
code, sum over valid samples / number of valid samples, and compared with ours); where a package lacks a
feature (per-sample weights, dense inputs), a benchmark-only adapter around its public function supplies
it and the adapter's extra work is counted against the package. Packages that cannot be imported are
skipped and listed in the output.

See ``common.py`` for how time (interleaved rounds, paired ratios) and peak memory are measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    check_peak_method,
    default_device,
    grouped_times,
    machine,
    peak_bytes,
    quantiles,
)

import longtail
from longtail.functional import class_balanced_loss, focal_loss, sigmoid_focal_loss
from longtail.losses import BalancedSoftmaxLoss, CDBLoss, LDAMLoss, LogitAdjustedLoss

BETA = 0.9999
IGNORE = -100


# --- optional packages ---------------------------------------------------------------------------


def _import_packages() -> tuple[dict[str, Any], dict[str, str]]:
    found: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for dist, module in (("balanced-loss", "balanced_loss"), ("cbloss", "cbloss"), ("kornia", "kornia")):
        try:
            mod = __import__(module)
            if module == "balanced_loss":
                import balanced_loss.losses  # noqa: F401
            if module == "cbloss":
                import cbloss.loss  # noqa: F401
            if module == "kornia":
                import kornia.losses  # noqa: F401
            found[dist] = mod
        except Exception as exc:  # noqa: BLE001 - any import failure means "benchmark without it"
            missing[dist] = f"{type(exc).__name__}: {exc}"
    return found, missing


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


# --- cases ---------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    logits: torch.Tensor  # (N, C, *)
    target: torch.Tensor  # (N, *) int64, IGNORE where ignored
    counts: torch.Tensor  # (C,) float64 CPU
    weight: torch.Tensor  # (C,) class-balanced weights on the device
    valid: torch.Tensor = field(init=False)
    safe_target: torch.Tensor = field(init=False)  # ignored -> 0
    onehot: torch.Tensor = field(init=False)  # (N, C, *) float, zeros where ignored
    onehot_ignore: torch.Tensor = field(init=False)  # (N, C, *) float, IGNORE where ignored
    sample_weight: torch.Tensor = field(init=False)  # (N, *) w_y, 0 where ignored
    n_valid: int = field(init=False)

    def __post_init__(self) -> None:
        self.valid = self.target != IGNORE
        self.safe_target = torch.where(self.valid, self.target, torch.zeros_like(self.target))
        c = self.num_classes
        onehot = F.one_hot(self.safe_target, c).movedim(-1, 1).to(self.logits.dtype)
        self.onehot = (onehot * self.valid.unsqueeze(1)).contiguous()
        # kornia's binary focal loss skips target entries equal to its ignore_index.
        self.onehot_ignore = torch.where(self.valid.unsqueeze(1), onehot, float(IGNORE)).contiguous()
        self.sample_weight = self.weight[self.safe_target] * self.valid
        self.n_valid = int(self.valid.sum())

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    @property
    def dense(self) -> bool:
        return self.logits.dim() > 2

    def class_view(self, v: torch.Tensor) -> torch.Tensor:
        return v.view((1, -1) + (1,) * (self.logits.dim() - 2))


def long_tailed_counts(num_classes: int, n_max: float, rho: float = 100.0) -> torch.Tensor:
    i = torch.arange(num_classes, dtype=torch.float64)
    return torch.floor(n_max * rho ** (-i / max(num_classes - 1, 1)))


def make_case(name: str, shape: tuple[int, ...], n_max: float, ignore_fraction: float, device: torch.device,
              scale: float = 2.0) -> Case:
    gen = torch.Generator().manual_seed(0)
    n, c, *spatial = shape
    counts = long_tailed_counts(c, n_max)
    target = torch.multinomial(counts / counts.sum(), n * int(torch.tensor(spatial).prod()) if spatial else n,
                               replacement=True, generator=gen).view(n, *spatial)
    if ignore_fraction > 0:
        ignored = torch.rand(target.shape, generator=gen) < ignore_fraction
        target = torch.where(ignored, torch.full_like(target, IGNORE), target)
    logits = scale * torch.randn(shape, generator=gen)
    weight = longtail.class_balanced_weights(counts, BETA)
    return Case(name, logits.to(device), target.to(device), counts, weight.to(device))


# --- candidates ----------------------------------------------------------------------------------

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Candidate:
    name: str
    family: str  # "ours", "native", "torch composite", or a package name
    computes: str  # the math, in words
    fn: Fn
    to_mean: Callable[[float], float] = lambda v: v  # value -> sum over valid samples / number of valid samples
    note: str = ""


@dataclass
class Comparison:
    ours: str
    ref: str
    kind: str  # "native" or "package" or "composite"
    target: str | None = None  # "T1", "T2", "T3"
    same_math: bool = True  # False: a speed yardstick computing a different loss (e.g. focal vs BCE)


def build(case: Case, packages: dict[str, Any]) -> tuple[list[Candidate], list[Comparison]]:
    t, w, c = case.target, case.weight, case.num_classes
    numel_per_class = case.logits.numel() // c  # samples, ignored included
    nv = case.n_valid
    sw = case.sample_weight
    sw_c = sw.unsqueeze(1)  # broadcast over classes
    sum_w = float(sw.sum())
    cands: list[Candidate] = []
    comps: list[Comparison] = []

    if "balanced-loss" in packages:
        from balanced_loss import Loss as BLLoss
        from balanced_loss.losses import focal_loss as bl_focal_fn
    if "cbloss" in packages:
        from cbloss.loss import ClassBalancedLoss as CBL
        from cbloss.loss import FocalLoss as CBFocal
    if "kornia" in packages:
        from kornia.losses import binary_focal_loss_with_logits as k_bfl
        from kornia.losses import focal_loss as k_fl

    def add(*items: Candidate) -> None:
        cands.extend(items)

    def cmp(ours: str, ref: str, kind: str, target: str | None = None, same_math: bool = True) -> None:
        comps.append(Comparison(ours, ref, kind, target, same_math))

    per_sample = (lambda v: v * numel_per_class / nv)  # a mean over every position -> mean over valid ones
    per_term = (lambda v: v * numel_per_class * c / nv)  # a mean over every (position, class) term

    # Native references.
    add(
        Candidate("native CE(weight=w)", "native", "weighted softmax CE, F.cross_entropy's weighted mean",
                  lambda x: F.cross_entropy(x, t, weight=w, ignore_index=IGNORE), lambda v: v * sum_w / nv),
        Candidate("native CE", "native", "softmax CE", lambda x: F.cross_entropy(x, t, ignore_index=IGNORE)),
        Candidate("native BCE(one-hot, weight=w_y)", "native",
                  "one-vs-all BCE with per-sample weights, one-hot target precomputed",
                  lambda x: F.binary_cross_entropy_with_logits(x, case.onehot, weight=sw_c), per_term),
        Candidate("native BCE(one-hot)", "native", "one-vs-all BCE, one-hot target precomputed, ignored masked",
                  lambda x: F.binary_cross_entropy_with_logits(x, case.onehot, weight=case.valid.unsqueeze(1).to(x.dtype))
                  if case.dense else F.binary_cross_entropy_with_logits(x, case.onehot), per_term),
    )

    # Class-balanced softmax and CDB.
    add(
        Candidate("CB softmax", "ours", "class-balanced softmax CE (official mean)",
                  lambda x: class_balanced_loss(x, t, w, loss="softmax", ignore_index=IGNORE)),
        Candidate("CB softmax (weighted_mean)", "ours", "class-balanced softmax CE, F.cross_entropy's mean",
                  lambda x: class_balanced_loss(x, t, w, loss="softmax", reduction="weighted_mean", ignore_index=IGNORE),
                  lambda v: v * sum_w / nv),
    )
    cmp("CB softmax", "native CE(weight=w)", "native", "T1")
    cmp("CB softmax (weighted_mean)", "native CE(weight=w)", "native", "T1")

    cdb = CDBLoss(c, tau="dynamic", ignore_index=IGNORE).to(case.logits.device)
    acc = torch.linspace(0.95, 0.2, c, dtype=torch.float64)
    cdb.update_weights(acc)
    cdb_w = cdb.weight
    cdb_sw = cdb_w[case.safe_target] * case.valid
    cdb_sum = float(cdb_sw.sum())
    add(
        Candidate("CDBLoss", "ours", "CDB-CE: softmax CE weighted by w_y (difficulty weights)", lambda x: cdb(x, t)),
        Candidate("native CE(weight=w_cdb)", "native", "weighted softmax CE with the CDB weights",
                  lambda x: F.cross_entropy(x, t, weight=cdb_w, ignore_index=IGNORE), lambda v: v * cdb_sum / nv),
    )
    cmp("CDBLoss", "native CE(weight=w_cdb)", "native")

    if "balanced-loss" in packages and not case.dense:
        counts_list = case.counts.tolist()
        bl_ce = BLLoss("cross_entropy", beta=BETA, samples_per_class=counts_list, class_balanced=True)
        add(Candidate("balanced-loss CB cross_entropy", "balanced-loss", "class-balanced softmax CE, mean over N",
                      lambda x: bl_ce(x, t)))
        cmp("CB softmax", "balanced-loss CB cross_entropy", "package", "T2")
    if "cbloss" in packages and not case.dense:
        cb_ce = CBL(case.counts.numpy(), BETA, c, torch.nn.CrossEntropyLoss(reduction="none"))
        cb_ce.weights = cb_ce.weights.to(case.logits.device)
        add(Candidate("cbloss ClassBalancedLoss(CE)", "cbloss", "class-balanced softmax CE, mean over N",
                      lambda x: cb_ce(x, t)))
        cmp("CB softmax", "cbloss ClassBalancedLoss(CE)", "package", "T2")

    # Class-balanced sigmoid.
    add(Candidate("CB sigmoid", "ours", "class-balanced one-vs-all BCE, summed over classes (official mean)",
                  lambda x: class_balanced_loss(x, t, w, loss="sigmoid", ignore_index=IGNORE)))
    cmp("CB sigmoid", "native BCE(one-hot, weight=w_y)", "native")
    if "balanced-loss" in packages and not case.dense:
        bl_bce = BLLoss("binary_cross_entropy", beta=BETA, samples_per_class=counts_list, class_balanced=True)
        add(Candidate("balanced-loss CB binary_cross_entropy", "balanced-loss",
                      "class-balanced one-vs-all BCE, mean over N*C", lambda x: bl_bce(x, t), per_term))
        cmp("CB sigmoid", "balanced-loss CB binary_cross_entropy", "package", "T2")

    # Class-balanced sigmoid focal (the paper's focal), and the unweighted sigmoid focal.
    gammas = (2.0, 0.5) if not case.dense else (2.0,)
    for g in gammas:
        ours = f"CB focal g={g:g}"
        add(Candidate(ours, "ours", f"class-balanced sigmoid focal, gamma {g:g} (official mean)",
                      lambda x, g=g: class_balanced_loss(x, t, w, loss="focal", gamma=g, ignore_index=IGNORE)))
        cmp(ours, "native BCE(one-hot, weight=w_y)", "native", "T3", same_math=False)
        if "balanced-loss" in packages and not case.dense:
            bl_f = BLLoss("focal_loss", beta=BETA, fl_gamma=g, samples_per_class=counts_list, class_balanced=True)
            add(Candidate(f"balanced-loss CB focal_loss g={g:g}", "balanced-loss",
                          f"class-balanced sigmoid focal, gamma {g:g}, sum / N", lambda x, f=bl_f: f(x, t)))
            cmp(ours, f"balanced-loss CB focal_loss g={g:g}", "package", "T2")
        if "kornia" in packages:
            add(Candidate(f"kornia binary focal g={g:g} x w_y (adapter)", "kornia",
                          f"sigmoid focal gamma {g:g} (reduction none) times w_y, summed / valid samples",
                          lambda x, g=g: (k_bfl(x, case.onehot, alpha=None, gamma=g, reduction="none") * sw_c).sum() / nv,
                          note="kornia has per-class, not per-sample weights: the weighting and sum are the adapter's"))
            cmp(ours, f"kornia binary focal g={g:g} x w_y (adapter)", "package", "T2")

    add(Candidate("sigmoid_focal_loss g=2", "ours", "sigmoid focal, gamma 2, summed over classes (mean over samples)",
                  lambda x: sigmoid_focal_loss(x, t, gamma=2.0, ignore_index=IGNORE)))
    cmp("sigmoid_focal_loss g=2", "native BCE(one-hot)", "native", "T3", same_math=False)
    if "kornia" in packages:
        add(Candidate("kornia binary_focal_loss_with_logits g=2", "kornia", "sigmoid focal, gamma 2, mean over N*C",
                      lambda x: k_bfl(x, case.onehot_ignore, alpha=None, gamma=2.0, reduction="mean",
                                      ignore_index=IGNORE), per_term))
        cmp("sigmoid_focal_loss g=2", "kornia binary_focal_loss_with_logits g=2", "package", "T2")
    if "balanced-loss" in packages and not case.dense:
        add(Candidate("balanced-loss focal_loss g=2", "balanced-loss", "sigmoid focal, gamma 2, sum / N",
                      lambda x: bl_focal_fn(x, case.onehot, alpha=None, gamma=2.0)))
        cmp("sigmoid_focal_loss g=2", "balanced-loss focal_loss g=2", "package", "T2")

    # Class-balanced softmax focal and the unweighted softmax focal.
    for g in gammas:
        ours = f"CB softmax_focal g={g:g}"
        add(Candidate(ours, "ours", f"class-balanced softmax focal, gamma {g:g} (official mean)",
                      lambda x, g=g: class_balanced_loss(x, t, w, loss="softmax_focal", gamma=g, ignore_index=IGNORE)))
        cmp(ours, "native CE(weight=w)", "native", same_math=False)
        if "cbloss" in packages and not case.dense:
            cb_f = CBL(case.counts.numpy(), BETA, c, CBFocal(c, gamma=g, reduction="none"))
            cb_f.weights = cb_f.weights.to(case.logits.device)
            add(Candidate(f"cbloss ClassBalancedLoss(FocalLoss) g={g:g}", "cbloss",
                          f"class-balanced softmax focal, gamma {g:g}, mean over N", lambda x, f=cb_f: f(x, t)))
            cmp(ours, f"cbloss ClassBalancedLoss(FocalLoss) g={g:g}", "package", "T2")
        if "kornia" in packages:
            add(Candidate(f"kornia focal_loss(weight=w) g={g:g}", "kornia",
                          f"softmax focal gamma {g:g} with per-class weight, sum / valid samples",
                          lambda x, g=g: k_fl(x, t, alpha=None, gamma=g, reduction="sum", weight=w, ignore_index=IGNORE) / nv))
            cmp(ours, f"kornia focal_loss(weight=w) g={g:g}", "package", "T2")

    add(Candidate("focal_loss g=2", "ours", "softmax focal, gamma 2 (mean over valid samples)",
                  lambda x: focal_loss(x, t, gamma=2.0, ignore_index=IGNORE)))
    cmp("focal_loss g=2", "native CE", "native", same_math=False)
    if "cbloss" in packages:
        cb_focal = CBFocal(c, gamma=2.0, reduction="mean")
        add(Candidate("cbloss FocalLoss g=2", "cbloss", "softmax focal, gamma 2, mean over every position",
                      lambda x: cb_focal(x, t), per_sample))
        cmp("focal_loss g=2", "cbloss FocalLoss g=2", "package", "T2")
    if "kornia" in packages:
        add(Candidate("kornia focal_loss g=2", "kornia", "softmax focal, gamma 2, mean over N*C (C times smaller)",
                      lambda x: k_fl(x, t, alpha=None, gamma=2.0, reduction="mean", ignore_index=IGNORE), per_term))
        cmp("focal_loss g=2", "kornia focal_loss g=2", "package", "T2")

    # LDAM, balanced softmax, logit adjustment: against the same CE in plain torch.
    # LDAM is meant for cosine logits in [-1, 1] (s = 30 sets the temperature): both sides get x / 8.
    ldam = LDAMLoss(case.counts, ignore_index=IGNORE).to(case.logits.device)
    m, s = ldam.margins, ldam.scale
    safe = case.safe_target.unsqueeze(1)
    add(
        Candidate("LDAMLoss", "ours", "LDAM: CE(s (z - m_y e_y), y), on z = x / 8", lambda x: ldam(x / 8, t)),
        Candidate("torch LDAM (scatter + CE)", "torch composite", "LDAM written with plain torch ops + F.cross_entropy",
                  lambda x: F.cross_entropy(s * (x / 8 - torch.zeros_like(x).scatter_(1, safe, m[safe])), t,
                                            ignore_index=IGNORE)),
    )
    cmp("LDAMLoss", "torch LDAM (scatter + CE)", "composite")
    cmp("LDAMLoss", "native CE", "native", same_math=False)
    bs = BalancedSoftmaxLoss(case.counts, ignore_index=IGNORE).to(case.logits.device)
    la = LogitAdjustedLoss(case.counts, tau=1.5, ignore_index=IGNORE).to(case.logits.device)
    lp = case.class_view(bs.log_prior)
    add(
        Candidate("BalancedSoftmaxLoss", "ours", "CE(z + log prior)", lambda x: bs(x, t)),
        Candidate("torch CE(z + log prior)", "torch composite", "F.cross_entropy on the shifted logits",
                  lambda x: F.cross_entropy(x + lp, t, ignore_index=IGNORE)),
        Candidate("LogitAdjustedLoss tau=1.5", "ours", "CE(z + 1.5 log prior)", lambda x: la(x, t)),
        Candidate("torch CE(z + 1.5 log prior)", "torch composite", "F.cross_entropy on the shifted logits",
                  lambda x: F.cross_entropy(x + 1.5 * lp, t, ignore_index=IGNORE)),
    )
    cmp("BalancedSoftmaxLoss", "torch CE(z + log prior)", "composite")
    cmp("BalancedSoftmaxLoss", "native CE", "native", same_math=False)
    cmp("LogitAdjustedLoss tau=1.5", "torch CE(z + 1.5 log prior)", "composite")
    return cands, comps


def _softmax_family(c: Candidate) -> bool:
    return c.name.startswith(("native CE", "CB softmax", "focal_loss", "cbloss", "kornia focal_loss",
                              "balanced-loss CB cross_entropy"))


# --- running -------------------------------------------------------------------------------------


def _step(fn: Fn, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        x.grad = None
        loss = fn(x)
        loss.backward()

    return step


def check_values(case: Case, cands: list[Candidate], comps: list[Comparison]) -> dict[str, dict[str, float]]:
    """Each candidate's value and gradient, converted to the official mean, against the ours of its comparisons."""
    x = case.logits.detach().clone().requires_grad_(True)
    values: dict[str, float] = {}
    grads: dict[str, torch.Tensor] = {}
    for cand in cands:
        x.grad = None
        loss = cand.fn(x)
        loss.backward()
        values[cand.name] = cand.to_mean(float(loss.detach().double()))
        scale = cand.to_mean(1.0)
        grads[cand.name] = x.grad.detach().double() * scale
    out: dict[str, dict[str, float]] = {}
    for comp in comps:
        if not comp.same_math:
            continue
        a, b = values[comp.ours], values[comp.ref]
        ga, gb = grads[comp.ours], grads[comp.ref]
        out[f"{comp.ours} | {comp.ref}"] = {
            "ours": a,
            "ref": b,
            "value_rel_diff": abs(a - b) / max(abs(a), 1e-30),
            "grad_max_abs_diff_rel": float((ga - gb).abs().max() / ga.abs().max().clamp_min(1e-30)),
        }
    return out


def run_case(case: Case, packages: dict[str, Any], reps: int, warmup: int, device: torch.device,
             keep: Callable[[Candidate], bool] | None = None) -> dict[str, Any]:
    cands, comps = build(case, packages)
    if keep is not None:
        cands = [c for c in cands if keep(c)]
        names = {c.name for c in cands}
        comps = [c for c in comps if c.ours in names and c.ref in names]
        compared = {c.ours for c in comps} | {c.ref for c in comps}
        cands = [c for c in cands if c.name in compared]
    checks = check_values(case, cands, comps)
    x = case.logits.detach().clone().requires_grad_(True)
    steps = {c.name: _step(c.fn, x) for c in cands}
    # One group per ours candidate: it and every reference it is compared with, run back to back.
    groups: dict[str, list[str]] = {}
    for comp in comps:
        groups.setdefault(comp.ours, [comp.ours])
        if comp.ref not in groups[comp.ours]:
            groups[comp.ours].append(comp.ref)
    t0 = time.perf_counter()
    group_times = grouped_times(steps, groups, reps=reps, warmup=warmup, device=device)
    elapsed = time.perf_counter() - t0
    times: dict[str, list[float]] = {c.name: [] for c in cands}  # every run of a candidate, for its median
    for (_, name), t in group_times.items():
        times[name].extend(t)
    memory = {}
    for cand in cands:
        steps[cand.name]()  # warm (first-call allocations, lazy inits)
        peaks = []
        for _ in range(2):
            x.grad = None  # freed outside the measured region

            def fwd_bwd(fn: Fn = cand.fn) -> None:
                fn(x).backward()

            peaks.append(peak_bytes(fwd_bwd, device))
        memory[cand.name] = max(peaks)
    x.grad = None
    candidates = {
        c.name: {
            "family": c.family,
            "computes": c.computes,
            "note": c.note,
            "time_ms": {k: v * 1e3 for k, v in quantiles(times[c.name]).items()},
            "peak_mib": memory[c.name] / 2**20,
        }
        for c in cands
    }
    comparisons = []
    for comp in comps:
        comparisons.append(
            {
                "ours": comp.ours,
                "ref": comp.ref,
                "kind": comp.kind,
                "target": comp.target,
                "time_ratio": quantiles([a / b for a, b in zip(group_times[(comp.ours, comp.ours)],
                                                               group_times[(comp.ours, comp.ref)])]),
                # The fastest run of each: the least disturbed by other load, a cross-check of the median.
                "time_ratio_of_minima": min(group_times[(comp.ours, comp.ours)])
                / min(group_times[(comp.ours, comp.ref)]),
                "memory_ratio": memory[comp.ours] / max(memory[comp.ref], 1),
                "same_math": comp.same_math,
                "check": checks.get(f"{comp.ours} | {comp.ref}"),
            }
        )
    return {
        "shape": list(case.logits.shape),
        "target_shape": list(case.target.shape),
        "ignored_fraction": 1.0 - case.n_valid / case.target.numel(),
        "input_mib": case.logits.numel() * case.logits.element_size() / 2**20,
        "reps": reps,
        "warmup": warmup,
        "seconds": elapsed,
        "candidates": candidates,
        "comparisons": comparisons,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/benchmarks/ops_losses.json", help="JSON results")
    parser.add_argument("--reps", type=int, default=25,
                        help="timed rounds of the classification case (dense: 1.6x, confident: half)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--cases", default="classification,dense,confident")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads on CPU (default 1, see the report; 0 keeps torch's default)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device) if args.device else default_device()
    torch.manual_seed(0)
    packages, missing = _import_packages()
    result: dict[str, Any] = {
        "machine": machine(device),
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else None,
        "packages": {k: _version(k) for k in packages},
        "packages_missing": missing,
        "peak_method_check": check_peak_method(device),
        "cases": {},
    }
    # name: shape, head-class count, ignored fraction, logit scale, candidates kept, rounds
    shapes = {
        "classification": ((4096, 1000), 5000.0, 0.0, 2.0, None, args.reps),
        "dense": ((8, 19, 128, 128), 1e6, 0.1, 2.0, None, args.reps * 8 // 5),  # fast: more rounds
        # A confident model: logits 30 x N(0, 1), log-probabilities down to about -300, where exp()
        # results are subnormal or zero (slow on x86 CPUs). The softmax family only.
        "confident": ((4096, 1000), 5000.0, 0.0, 30.0, _softmax_family, max(5, args.reps // 2)),
    }
    for name in args.cases.split(","):
        shape, n_max, ignore, scale, keep, reps = shapes[name]
        case = make_case(name, shape, n_max, ignore, device, scale)
        print(f"[{name}] {tuple(shape)} on {device}, {reps} rounds", flush=True)
        result["cases"][name] = run_case(case, packages, reps, args.warmup, device, keep)
        result["cases"][name]["logit_scale"] = scale
        for cname, cand in result["cases"][name]["candidates"].items():
            print(f"  {cname:<46} {cand['time_ms']['median']:8.2f} ms  {cand['peak_mib']:8.1f} MiB", flush=True)
        for comp in result["cases"][name]["comparisons"]:
            r = comp["time_ratio"]
            print(f"  {comp['ours']:<28} / {comp['ref']:<46} time {r['median']:.3f} "
                  f"[{r['q1']:.3f}, {r['q3']:.3f}]  memory {comp['memory_ratio']:.2f}", flush=True)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
