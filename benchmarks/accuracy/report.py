"""Writes the accuracy report (Markdown + plots) from the matrix's result files.

    python benchmarks/accuracy/report.py [--results benchmarks/results/accuracy] [--docs docs/benchmarks]

Statistics: mean +- sample standard deviation over seeds; differences against softmax CE are paired
by seed (same long-tailed draw, same initialisation), reported with a 95% t confidence interval.
The "best" class-balanced configuration is chosen by *validation* error (the held-out balanced
split), never by test error, so its test number is not selected on the test set.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from matrix import (  # noqa: E402
    BETAS,
    IMBALANCES,
    PRECISION_NAMES,
    RECIPE,
    SEEDS,
    UNIFORM_WEIGHTS,
    cells,
    config_for,
    omitted,
    same_recipe,
    train_counts,
    weight_spread,
    tuning_is_current,
)

# two-sided 95% t quantiles by degrees of freedom
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086}


def t95(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom: the table to 20, then the Cornish-Fisher
    expansion around the normal quantile (within 0.001 of the exact value from df 21 on)."""
    if df in _T95:
        return _T95[df]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


# The class-balanced families: the four losses with the official reduction, and the softmax with PyTorch's.
CB_FAMILIES = ("cb_softmax", "cb_sigmoid", "cb_focal", "cb_softmax_focal", "cb_softmax_wm")


def load(results: Path, grid: Any = cells) -> dict[tuple[float, str], dict[int, dict[str, Any]]]:
    """Finished runs whose configuration is the grid's current one (stale recipes are left out).

    A matrix cell left out at an imbalance (:func:`matrix.omitted`: its weights are uniform there) and not run gets
    its equivalent's runs, the same object (:func:`is_alias` tells them apart), so choosing by validation, the plots
    and tune-beta's grid cost see it as the loss it trains."""
    from longtail.train import TrainConfig

    by_name = {c.name: c for c in grid()}
    runs: dict[tuple[float, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    for path in sorted(results.glob("runs/rho*/*/seed*/result.json")):
        result = json.loads(path.read_text())
        rho, name, seed = float(path.parts[-4][3:]), path.parts[-3], int(path.parts[-2][4:])
        if result.get("status") != "complete" or name not in by_name:
            continue
        expected = TrainConfig(**config_for(by_name[name], rho, seed, results)).to_dict()
        if not same_recipe(TrainConfig.from_dict(result["config"]).to_dict(), expected, result.get("autocast")):
            continue
        runs[(rho, name)][seed] = result
    if grid is cells:
        for rho in {rho for rho, _ in runs}:
            for name, equivalent in omitted(rho).items():
                if (rho, name) not in runs and (rho, equivalent) in runs:
                    runs[(rho, name)] = runs[(rho, equivalent)]
    return runs


def is_alias(runs: dict, rho: float, name: str | None) -> bool:
    """Whether ``runs[(rho, name)]`` are the runs of the cell ``name`` is left out for (see :func:`load`)."""
    equivalent = omitted(rho).get(name) if name else None
    return equivalent is not None and (rho, name) in runs and runs[(rho, name)] is runs.get((rho, equivalent))


def shown(runs: dict, rho: float, name: str) -> str:
    """A cell's name as the report prints it: a left-out cell names the cell whose runs stand for it."""
    return f"`{name}` (= `{omitted(rho)[name]}`)" if is_alias(runs, rho, name) else f"`{name}`"


def _metric(result: dict[str, Any], name: str) -> float | None:
    final = result["final"]
    if name == "error":
        return 100.0 * (1.0 - final["accuracy"])
    if name == "val_error":
        posthoc = final.get("posthoc")
        if posthoc is not None:  # the chosen tau's validation score (balanced split: accuracy = balanced accuracy)
            return 100.0 * (1.0 - max(v for v in posthoc["val_balanced_accuracy"] if v is not None))
        val = result["history"][-1].get("val") if result["history"] else None
        return None if val is None else 100.0 * (1.0 - val["accuracy"])
    if name in ("many", "medium", "few"):
        value = final["shot_accuracy"][name]
        return None if value is None else 100.0 * value
    return 100.0 * final[name]


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def fmt(values: list[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    m, s = mean_std(present)
    return f"{m:.2f}" if math.isnan(s) else f"{m:.2f} ± {s:.2f}"


def paired_interval(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]],
                    name: str) -> tuple[float, float, float] | None:
    """(mean, low, high): the mean of (a - b) over common seeds and its 95% t interval; None under 2 common seeds."""
    seeds = sorted(set(a) & set(b))
    diffs = [_metric(a[s], name) - _metric(b[s], name) for s in seeds]  # type: ignore[operator]
    if len(diffs) < 2:
        return None
    m, s = mean_std(diffs)
    half = t95(len(diffs) - 1) * s / math.sqrt(len(diffs))
    return m, m - half, m + half


def paired_difference(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]], name: str) -> str:
    """mean of (a - b) over common seeds with a 95% t interval."""
    interval = paired_interval(a, b, name)
    if interval is None:
        return "-"
    m, low, high = interval
    return f"{m:+.2f} [{low:+.2f}, {high:+.2f}]"


def _mean_val(seeds: dict[int, dict[str, Any]]) -> float:
    """The mean validation error over a cell's seeds of the matrix (``SEEDS``; inf without one). The headline rows'
    extra seeds are left out, so every candidate is scored on the same seeds: with them, adding seeds 3 and 4 to the
    chosen cell at imbalance 100 moved its mean and handed the choice to another cell."""
    vals = [v for v in (_metric(r, "val_error") for k, r in seeds.items() if k in SEEDS) if v is not None]
    return statistics.fmean(vals) if vals else math.inf


def best_by_validation(runs: dict, rho: float, names: list[str]) -> str | None:
    scored = [(_mean_val(runs.get((rho, name), {})), name) for name in names]
    scored = [(v, name) for v, name in scored if v != math.inf]
    return min(scored)[1] if scored else None


# Every method group against CE (paired by seed); a group with several cells is represented by its best cell by
# validation error. The group with the lowest validation error at an imbalance is what the numbers say to use there.
TOOLBOX_GROUPS = (
    ("focal loss", lambda c: c.name.startswith("focal_")),
    ("class-balanced loss", lambda c: c.family in CB_FAMILIES),
    ("CDB, the paper's form", lambda c: c.family == "cdb"),
    ("stable CDB (ours)", lambda c: c.family == "cdb_extension"),
    ("per-class betas (ours)", lambda c: c.name == "cb_softmax_per_class_beta"),
    ("sampler (CE)", lambda c: c.family == "sampler"),
    ("cRT", lambda c: c.name == "crt"),
    ("LWS", lambda c: c.name == "lws"),
    ("tau-normalisation", lambda c: c.name == "tau_norm"),
    ("weight balancing", lambda c: c.family == "weight_balancing"),
    ("balanced softmax", lambda c: c.name == "balanced_softmax"),
    ("logit adjustment, in training", lambda c: c.name.startswith("logit_adjusted")),
    ("post-hoc logit adjustment", lambda c: c.name == "ce_posthoc_la"),
    ("LDAM-DRW", lambda c: c.name == "ldam_drw"),
    ("CE, cosine head", lambda c: c.name == "ce_cosine"),
)


def toolbox_summary(runs: dict, grid: list, rhos: list[float]) -> list[str]:
    """One row per method group and imbalance: its best cell by validation, test error and Δ vs CE; the group with the
    lowest validation error at each imbalance is marked."""
    rows = []
    for rho in rhos:
        ce = runs.get((rho, "ce"), {})
        chosen_by_group = []
        for label, member in TOOLBOX_GROUPS:
            best = best_by_validation(runs, rho, [c.name for c in grid if member(c)])
            if best is not None:
                chosen_by_group.append((label, best, runs[(rho, best)], _mean_val(runs[(rho, best)])))
        if not chosen_by_group:
            continue
        lowest = min(val for *_, val in chosen_by_group)
        for label, best, chosen, val in chosen_by_group:
            mark = " **(lowest val)**" if val == lowest and len(chosen_by_group) > 1 else ""
            rows.append(f"| {rho:g} | {label}{mark} | {shown(runs, rho, best)} | {len(chosen)} | {fmt(_errors(chosen))} "
                        f"| {fmt([_metric(r, 'val_error') for r in chosen.values()])} "
                        f"| {paired_difference(chosen, ce, 'error') if ce else '-'} | "
                        f"{fmt([_metric(r, 'few') for r in chosen.values()])} |")
    if not rows:
        return []
    return ["## The toolbox side by side", "",
            "Each method group's best cell by validation error (one cell: that cell), against CE paired by seed; "
            "**(lowest val)** marks the group with the lowest validation error at that imbalance, the choice a user "
            "without the test set would make (the validation split has 250 images, so groups within about a point "
            "of it are not told apart). `ldam_drw` against `ce_cosine` separates LDAM-DRW's margin (and deferred "
            "re-weighting) from its cosine head, which the LDAM-DRW row alone confounds.", "",
            "| imbalance | method | cell | seeds | test error % | val error % | Δ test error vs CE | few % |",
            "|---|---|---|---|---|---|---|---|", *rows, ""]


PAPER_GRID_FAMILIES = ("cb_softmax", "cb_sigmoid", "cb_focal")  # longtail.tune.paper_grid()'s 20 configurations


def load_tuning(results: Path) -> dict[tuple[float, int], dict[str, Any]]:
    """The ``tune_beta`` cells' results (``tune_beta.json``) by (imbalance, seed), for the current recipe and
    selection rule."""
    from longtail.train import TrainConfig

    by_name = {c.name: c for c in cells()}
    found = {}
    for path in sorted(results.glob("runs/rho*/tune_beta/seed*/tune_beta.json")):
        rho, seed = float(path.parts[-4][3:]), int(path.parts[-2][4:])
        saved = json.loads(path.read_text())
        expected = TrainConfig(**config_for(by_name["tune_beta"], rho, seed, results)).to_dict()
        if tuning_is_current(saved, expected):
            ce = path.parent / "ce" / "result.json"  # the CE run its features came from (committed with it)
            if ce.exists():
                saved["ce_result"] = json.loads(ce.read_text())
            found[(rho, seed)] = saved
    return found


def own_ce_note(tuning: dict[str, Any], ce: dict[str, Any] | None) -> str | None:
    """A line where a ``tune_beta`` cell's CE run is not the table's CE run of its seed (it was trained again on
    another machine, whose rounding gives other weights): both runs' machines and test errors."""
    own = tuning.get("ce_result")
    if own is None or ce is None or own.get("final") == ce.get("final"):
        return None
    from longtail.train.device import describe_hardware

    def machine(result: dict[str, Any]) -> str:
        return describe_hardware(result["hardware"]) if result.get("hardware") else "a machine it does not record"

    return (f"its CE run was trained again on {machine(own)} ({_metric(own, 'error'):.2f} % test error), the "
            f"table's CE run on {machine(ce)} ({_metric(ce, 'error'):.2f} %): the choice is that of a CE run of the "
            "same recipe and seed, not of the table's")


def grid_cell_of(chosen: dict[str, Any]) -> str:
    """The matrix cell that trains ``tune_beta``'s chosen candidate end to end."""
    if chosen.get("beta") is None:
        return "cb_softmax_per_class_beta"
    family = {"softmax": "cb_softmax", "sigmoid": "cb_sigmoid", "focal": "cb_focal",
              "softmax_focal": "cb_softmax_focal"}[chosen["loss"]]
    gamma = f"_g{chosen['gamma']:g}" if chosen["loss"] in ("focal", "softmax_focal") else ""
    return f"{family}_b{chosen['beta']:g}{gamma}"


def weight_swings(result: dict[str, Any]) -> tuple[float | None, float | None]:
    """How a CDB run's weights moved: the largest ``|w_c(t) - w_c(t-1)|`` over classes, mean over epochs, and the
    share of (epoch, class) weights that were exactly 0 (the paper's weight of a class at 100 % validation
    accuracy). ``(None, None)`` for a run without ``cdb_weights`` in its history."""
    weights = [h["cdb_weights"] for h in result["history"] if "cdb_weights" in h]
    if not weights:
        return None, None
    moves = [max(abs(a - b) for a, b in zip(w1, w0)) for w0, w1 in zip(weights, weights[1:])]
    zeros = sum(v == 0.0 for w in weights for v in w) / sum(len(w) for w in weights)
    return (statistics.fmean(moves) if moves else None), zeros


def _errors(seeds: dict[int, dict[str, Any]]) -> list[float]:
    return [_metric(r, "error") for r in seeds.values()]  # type: ignore[misc]


def cdb_and_beta_section(runs: dict, tuning: dict, rhos: list[float]) -> list[str]:
    """The CDB/beta issue's acceptance: stable CDB against CE and the best class-balanced configuration, the paper's
    CDB as it is, tune-beta's choice against the grid's, per-class betas against the best single beta."""
    from longtail.tune import choose_row

    grid = cells()
    lines = ["## CDB and beta from the data (the extensions beyond the papers)", "",
             "Every number is a full training on the recipe above unless it says *refit*. *Best by validation*: the "
             "cell with the lowest mean validation error over its seeds (the 250-image balanced validation split), "
             "never the test set. *> 2 std*: the gain over CE against twice the larger of the two cells' seed "
             "standard deviations.", ""]
    cb_all = [c.name for c in grid if c.family in CB_FAMILIES]
    paper = [c.name for c in grid if c.family in PAPER_GRID_FAMILIES]
    rows = ["| imbalance | cell | seeds | test error % | Δ vs CE [95% CI] | Δ vs best class-balanced [95% CI] | "
            "gain > 2 std? | CDB weights: mean max move / epoch, share exactly 0 |", "|---|---|---|---|---|---|---|---|"]
    beta_rows = ["| imbalance | seed | tune-beta's choice, the paper grid (refit val / test bal. acc.) | its "
                 "full-training error % | its choice with the per-class candidates (`--per-class-beta`) | its "
                 "full-training error % | cost s (ratio to the grid's) |", "|---|---|---|---|---|---|---|"]
    summary_rows: list[str] = []
    own_notes: list[str] = []
    for rho in rhos:
        ce = runs.get((rho, "ce"), {})
        best_cb = best_by_validation(runs, rho, cb_all)
        best_paper = best_by_validation(runs, rho, paper)
        cb = runs.get((rho, best_cb), {})
        for name in ("ce", best_cb, "cdb_tau1.5", "cdb_dynamic", "cdb_stable", "cdb_stable_wm", "cdb_stable_focal"):
            seeds = runs.get((rho, name), {}) if name else {}
            if not seeds:
                continue
            label = f"`{name}`" + (" (best class-balanced by val)" if name == best_cb else "")
            verdict = "-"
            if name not in ("ce", best_cb) and len(seeds) > 1 and len(ce) > 1:
                common = sorted(set(seeds) & set(ce))
                gain = statistics.fmean(_metric(ce[k], "error") - _metric(seeds[k], "error") for k in common)
                spread = max(mean_std(_errors(seeds))[1], mean_std(_errors(ce))[1])
                verdict = f"{'yes' if gain > 2 * spread else 'no'} ({gain:+.2f} vs 2 x {spread:.2f})"
            swings = [weight_swings(r) for r in seeds.values()]
            moved = [m for m, _ in swings if m is not None]
            swing = "" if not moved else (f"{statistics.fmean(moved):.3f}, "
                                          f"{100 * statistics.fmean(z for _, z in swings if z is not None):.1f} %")
            rows.append(f"| {rho:g} | {label} | {len(seeds)} | {fmt(_errors(seeds))} | "
                        f"{paired_difference(seeds, ce, 'error') if name != 'ce' else ''} | "
                        f"{paired_difference(seeds, cb, 'error') if name not in (best_cb,) and cb else ''} | "
                        f"{verdict} | {swing} |")
        # tune-beta's choice (by default among the paper grid's 20), and its choice with the per-class candidates
        # too (the benchmark's tuning runs have both), trained end to end, against the paper grid's best by
        # validation
        picks: dict[str, list[tuple[int, float]]] = {"grid": [], "with_per_class": []}
        for seed in sorted(k for (r, k) in tuning if r == rho):
            t = tuning[(rho, seed)]
            # Only the grid runs trained in the tuning's precision (its CE run's) count: float32 runs from a CPU
            # without native bfloat16 take about twice as long and would shrink the ratio.
            precision = runs.get((rho, "ce"), {}).get(seed, {}).get("autocast")
            grid_seconds = [r.get("wall_seconds") if r.get("autocast") == precision else None
                            for r in (runs.get((rho, n), {}).get(seed, {}) for n in paper)]
            grid_cost = sum(v for v in grid_seconds if v is not None)
            finished = sum(v is not None for v in grid_seconds)
            cost = t["cost"]["total_seconds"]
            ce_wall = t["cost"]["ce_wall_seconds"]
            if finished == len(paper) and grid_cost:
                ratio = f"{cost / grid_cost:.3f}"
            elif 2 * finished >= len(paper):  # the finished runs' sum bounds the grid's cost from below, so the
                # ratio from above (a bound worth stating once half the grid has run)
                ratio = (f"at most {cost / grid_cost:.3f}: {finished} of the grid's {len(paper)} runs are finished in "
                         "its precision; "
                         f"{cost / (len(paper) * ce_wall):.3f} against {len(paper)} x the CE run's time")
            else:
                ratio = (f"{cost / (len(paper) * ce_wall):.3f} against {len(paper)} x the CE run's time; {finished} of "
                         f"the grid's {len(paper)} runs are finished in its precision")
            columns = []
            for kind, chosen in (("grid", choose_row(t["candidates"], ("grid",))),
                                 ("with_per_class", choose_row(t["candidates"], ("grid", "per_class_beta")))):
                cell = grid_cell_of(chosen)
                full = runs.get((rho, cell), {}).get(seed)
                if full is not None:
                    picks[kind].append((seed, _metric(full, "error")))
                scores = (f" ({chosen['val_balanced_accuracy']:.3f} / {chosen['test_balanced_accuracy']:.4f})"
                          if kind == "grid" else "")
                columns += [f"`{cell}`{scores}", "-" if full is None else f"{_metric(full, 'error'):.2f}"]
            beta_rows.append(f"| {rho:g} | {seed} | {' | '.join(columns)} | {cost:.0f} ({ratio}) |")
            note = own_ce_note(t, ce.get(seed))
            if note:
                own_notes.append(f"- Imbalance {rho:g}, seed {seed}: {note}.")
        bp = runs.get((rho, best_paper), {})
        for kind, what in (("grid", "tune-beta's choices (the paper grid, its default)"),
                           ("with_per_class", "its choices with the per-class candidates too (`--per-class-beta`)")):
            common = [(k, e) for k, e in picks[kind] if k in bp]
            if common:
                diff = statistics.fmean(e - _metric(bp[k], "error") for k, e in common)
                summary_rows.append(f"- Imbalance {rho:g}: {what} trained end to end average "
                                    f"{statistics.fmean(e for _, e in common):.2f} % test error over seeds "
                                    f"{[k for k, _ in common]}; the paper grid's best by validation, `{best_paper}`, "
                                    f"{fmt([_metric(bp[k], 'error') for k, _ in common])} on the same seeds: "
                                    f"difference {diff:+.2f} points (the issue asks for at most +0.5).")
        per_class = runs.get((rho, "cb_softmax_per_class_beta"), {})
        best_softmax = best_by_validation(runs, rho, [c.name for c in grid if c.family == "cb_softmax"])
        if per_class and best_softmax:
            single = runs[(rho, best_softmax)]
            summary_rows.append(f"- Imbalance {rho:g}: per-class betas (covering numbers, radius chosen on validation "
                                f"by the refits) {fmt(_errors(per_class))} % against the best single beta of the same "
                                f"loss by validation, `{best_softmax}`, {fmt(_errors(single))}: paired difference "
                                f"{paired_difference(per_class, single, 'error')}.")
    lines += rows + [""]
    if len(beta_rows) > 2:
        lines += ["### Beta chosen by `tune_beta` (refits on the CE run's frozen features)", "",
                  "The cost is the CE run plus features, covering numbers and the 30 head refits; the grid's is the "
                  "sum of the wall times of its 20 full trainings for the same seed.", "", *beta_rows, "",
                  *own_notes, *([""] if own_notes else [])]
    lines += summary_rows + ([""] if summary_rows else [])
    return lines


def _section(title: str, intro: str, rows: list[str]) -> list[str]:
    """A report section: its title, its introduction and its table (header and rule first); nothing without a row."""
    return [] if len(rows) <= 2 else [f"## {title}", "", intro, "", *rows, ""]


def _verdict(interval: tuple[float, float, float] | None, claim: str = "lower") -> str:
    """The verdict on a claim about (a - b), a's test error minus b's. ``"lower"`` (a beats b) holds where the whole
    interval is below 0 and fails where it is wholly above; ``"no worse"`` (a does as well as b) fails only where the
    whole interval is above 0. Otherwise these seeds do not settle it."""
    if interval is None:
        return "not run yet"
    _, low, high = interval
    if low > 0:
        return "does not hold"
    if claim == "no worse":
        return "not refuted (the interval holds 0)" if high >= 0 else "holds (a is better)"
    return "holds" if high < 0 else "not settled (the interval holds 0)"


def claims_section(runs: dict, rhos: list[float]) -> list[str]:
    """Each seed paper's claims tested on this data, per imbalance: the measured paired difference and a verdict."""
    grid = cells()
    beta_of = {c.name: c.beta for c in grid}
    cb_paper = [c.name for c in grid if c.family in PAPER_GRID_FAMILIES]
    gains = []
    rows = ["| claim (paper) | imbalance | compared | Δ test error [95% CI] | verdict |", "|---|---|---|---|---|"]
    for rho in rhos:
        ce = runs.get((rho, "ce"), {})
        best_cb = best_by_validation(runs, rho, cb_paper)
        cb = runs.get((rho, best_cb), {})
        cdb, dynamic = runs.get((rho, "cdb_tau1.5"), {}), runs.get((rho, "cdb_dynamic"), {})
        # Cui et al.'s focal comparison: each side's gamma (and the class-balanced side's beta) chosen on validation.
        best_focal = best_by_validation(runs, rho, [c.name for c in grid if c.name.startswith("focal_")])
        best_cb_focal = best_by_validation(runs, rho, [c.name for c in grid if c.family == "cb_focal"])
        focal = runs.get((rho, best_focal), {})
        cb_focal = runs.get((rho, best_cb_focal), {})
        tests = [
            ("The class-balanced loss, its configuration chosen on validation, beats softmax CE (Cui et al.)",
             f"`{best_cb}` - `ce`", cb, ce, "lower"),
            ("Class-balanced re-weighting improves the focal loss, each tuned on validation (Cui et al.)",
             f"`{best_cb_focal}` - `{best_focal}`", cb_focal, focal, "lower"),
            ("CDB with tau 1.5 beats softmax CE (Sinha et al.)", "`cdb_tau1.5` - `ce`", cdb, ce, "lower"),
            ("CDB beats the class-balanced loss (Sinha et al.)", f"`cdb_tau1.5` - `{best_cb}`", cdb, cb, "lower"),
            ("CDB's dynamic tau does as well as the fixed tau 1.5 (Sinha et al.)", "`cdb_dynamic` - `cdb_tau1.5`",
             dynamic, cdb, "no worse"),
        ]
        for claim, compared, a, b, kind in tests:
            if a and b:
                rows.append(f"| {claim} | {rho:g} | {compared} | {paired_difference(a, b, 'error')} | "
                            f"{_verdict(paired_interval(a, b, 'error'), kind)} |")
        # the paper's beta claim only where the finished cells offer a choice of beta
        if best_cb and len({beta_of[n] for n in cb_paper if runs.get((rho, n))}) > 1:
            beta = beta_of[best_cb]
            rows.append(f"| On a 10-class dataset the best beta is 0.9999 (Cui et al., CIFAR-10-LT) | {rho:g} | "
                        f"best by validation: `{best_cb}` | | {'holds' if beta == 0.9999 else 'does not hold'} "
                        f"(beta {beta:g}; chosen among the finished cells) |")
        gain = paired_interval(cb, ce, "error") if cb and ce else None
        if gain is not None:
            gains.append((rho, gain))
    if len(gains) >= 2:
        (lo_rho, lo), (hi_rho, hi) = gains[0], gains[-1]
        # the gain is -(Δ): larger at the larger imbalance where its interval lies wholly beyond the smaller one's
        verdict = ("holds" if hi[2] < lo[1] else "does not hold" if hi[1] > lo[2] else
                   "not settled (the intervals overlap)")
        rows.append(f"| The class-balanced gain over CE grows with the imbalance (Cui et al., Table 2) | "
                    f"{lo_rho:g} and {hi_rho:g} | best class-balanced - `ce` at each | "
                    f"{lo[0]:+.2f} [{lo[1]:+.2f}, {lo[2]:+.2f}] at {lo_rho:g}; {hi[0]:+.2f} [{hi[1]:+.2f}, "
                    f"{hi[2]:+.2f}] at {hi_rho:g} | {verdict} |")
    return _section("The seed papers' claims, tested here",
                    "Each claim as the paper makes it, measured on this benchmark: Δ is the first cell's test error "
                    "minus the second's, paired by seed, with a 95% t interval. *Holds*: the interval lies wholly on "
                    "the claimed side of 0; *does not hold*: wholly on the other side; otherwise these seeds do not "
                    "settle it. The class-balanced configuration is the paper grid's (softmax, sigmoid and focal over "
                    "its betas and gammas) best by validation error among the finished cells.", rows)


def reductions_section(runs: dict, rhos: list[float]) -> list[str]:
    """The class-balanced softmax with the official reduction (weighted sum / N) against PyTorch's (weighted sum /
    sum of weights), per imbalance and beta, paired by seed."""
    rows = ["| imbalance | beta | official `mean`: test / val error % | PyTorch's `weighted_mean`: test / val error % "
            "| `weighted_mean` - `mean` [95% CI] |", "|---|---|---|---|---|"]
    for rho in rhos:
        for beta in BETAS:
            mean, wm = runs.get((rho, f"cb_softmax_b{beta:g}"), {}), runs.get((rho, f"cb_softmax_wm_b{beta:g}"), {})
            if mean and wm and not any(is_alias(runs, rho, f"{form}_b{beta:g}") for form in ("cb_softmax",
                                                                                             "cb_softmax_wm")):
                rows.append(f"| {rho:g} | {beta:g} | {fmt(_errors(mean))} / "
                            f"{fmt([_metric(r, 'val_error') for r in mean.values()])} | {fmt(_errors(wm))} / "
                            f"{fmt([_metric(r, 'val_error') for r in wm.values()])} | "
                            f"{paired_difference(wm, mean, 'error')} |")
    return _section("The two reductions of the class-balanced softmax",
                    "The official code divides the weighted sum by the batch size N, which scales the gradient by the "
                    "batch's mean weight; PyTorch's `F.cross_entropy(weight=w)` divides by the sum of the weights. "
                    "Same learning rate (the recipe's) for both. The 20-epoch comparison, with the official form's "
                    "learning rate rescaled as well, is in [the convergence study](convergence.md).", rows)


def omitted_section(runs: dict, rhos: list[float]) -> list[str]:
    """The cells left out (matrix.omitted), the spread of their weights, and the check of the rule where such cells
    ran before it: each paired by seed with the cell that stands for it."""
    rows = ["| imbalance | cell | weights max / min - 1 | stands for it | Δ test error, the cell - its stand-in "
            "[95% CI] |", "|---|---|---|---|---|"]
    beta_of = {c.name: c.beta for c in cells()}
    for rho in IMBALANCES:
        for name, equivalent in omitted(rho).items():
            seeds = runs.get((rho, name), {})
            ran = seeds and not is_alias(runs, rho, name) and runs.get((rho, equivalent))
            check = paired_difference(seeds, runs[(rho, equivalent)], "error") if ran else "not run (left out)"
            rows.append(f"| {rho:g} | `{name}` | {weight_spread(beta_of[name], rho):.2g} | `{equivalent}` | {check} |")
    intro = (f"A class-balanced cell whose weights at an imbalance's training counts are uniform to within "
             f"{100 * UNIFORM_WEIGHTS:g} % trains its unweighted loss, which another cell already trains: CE for the "
             "softmax (either reduction), the focal loss of the same gamma for the softmax focal form, and the "
             "smallest beta of the sigmoid forms (which have no unweighted cell). Such a cell is not trained; the "
             "tables, the choice by validation and the plots use its stand-in's runs. Where such cells ran before "
             "the rule (beta 0.9 at imbalance 100 and 50), they are paired with their stand-in as its check.")
    return _section("Cells left out: uniform weights", intro, rows)


def _train_size(rho: float) -> int:
    """Fashion-MNIST-LT's training images at imbalance ``rho`` (6000 a class, the validation split held out)."""
    return sum(train_counts(rho))


def cost_estimate(runs: dict) -> str:
    """The whole planned matrix's wall time on 2 cores at the measured rate of its finished full runs (each run one
    thread; two at a time on the 2 cores), scaled to each imbalance by its number of training images, for each
    precision the runs trained in (bfloat16 autocast on a CPU with native bfloat16, float32 on one without: the
    rates differ about 2x here, so one average over both would describe neither machine)."""
    full: dict[str, list[tuple[float, float]]] = {}
    for (rho, name), seeds in runs.items():
        if is_alias(runs, rho, name):
            continue
        for r in seeds.values():
            if r["config"].get("stage", "joint") == "joint" and r["config"]["epochs"] == RECIPE["epochs"]:
                full.setdefault(r.get("autocast", "bfloat16"), []).append((rho, r["wall_seconds"]))
    if not full:
        return ""
    joint = [c for c in cells() if c.kind == "train" and not c.starts_from_parent]
    rates, totals = [], []
    for name in sorted(full):
        label = f"in {PRECISION_NAMES.get(name, name)}"
        per_image = statistics.fmean(seconds / _train_size(rho) for rho, seconds in full[name])
        rates.append(f"{statistics.fmean(s for _, s in full[name]):.0f} s on average over the {len(full[name])} "
                     f"finished {label} ({1e3 * per_image:.2f} ms per training image for the 80 epochs)")
        seconds = sum(per_image * _train_size(rho) * len([c for c in joint if c.name not in omitted(rho)])
                      for rho in IMBALANCES) * len(SEEDS)
        totals.append(f"**{seconds / 2 / 3600:.0f} hours {label}**")
    return (f"**Cost.** A full run (80 epochs, one thread, two runs sharing the 2 cores) took {'; '.join(rates)}; "
            f"scaled by each imbalance's training-set size "
            f"({', '.join(f'{_train_size(r)} images at {r:g}' for r in IMBALANCES)}). "
            f"The {len(joint)} cells that train from scratch, x {len(IMBALANCES)} imbalances x {len(SEEDS)} seeds "
            f"(less the {sum(len(omitted(r)) for r in IMBALANCES)} (imbalance, cell) pairs left out), "
            f"so take about {' or '.join(totals)} on a 2-core machine (the second stages, post-hoc cells and "
            "tune-beta add a few percent): far more than the 3 hours the benchmark issue asks for, so the matrix "
            "is trained over several sessions (resumable), the acceptance cells first.")


def _short_command(command: str, keep: int = 3) -> str:
    """The command with a long ``--only`` list cut to its first cells and a count (the lists run to 30 cells)."""
    words = command.split()
    for i, word in enumerate(words[:-1]):
        if word == "--only":
            names = words[i + 1].split(",")
            if len(names) > keep:
                words[i + 1] = ",".join(names[:keep]) + f",... ({len(names)} cells)"
    return " ".join(words)


def session_lines(sessions: list[dict[str, Any]]) -> list[str]:
    """One line per invocation of the runner that trained something; the ones that found their cells finished
    (a restarted ``run_matrix.sh`` walks its finished steps again) are counted in one line, not listed."""
    lines, idle = [], 0
    for session in sessions:
        count = session.get("cells_trained")
        if count == 0:
            idle += 1
            continue
        machine = session.get("machine", {})
        lines.append(
            f"- Run `{_short_command(session['command'])}` on {session['started']}: "
            f"{'?' if count is None else count} runs in "
            f"{session['wall_seconds'] / 60:.0f} min wall ({session['workers']} workers; {machine.get('cpu', '?')}, "
            f"{machine.get('cores', '?')} cores, torch {machine.get('torch', '?')})."
            + (" Stopped part-way (or still running when this report was made); resumed by a later run."
               if session.get("finished") is False else "")
            + (f" {session['note']}" if session.get("note") else "")
        )
    if idle:
        lines.append(f"- {idle} more invocations found every cell they asked for finished and trained nothing.")
    return lines


def precision_note(precisions: set[str | None]) -> list[str]:
    """The line under an imbalance's heading that says which precision its runs trained in (``autocast`` of their
    result files): every one bfloat16, every one float32, or a mix whose float32 cells the table marks."""
    if precisions == {"off"}:
        return ["Every run trained in float32, on a machine without native bfloat16 (the other imbalances' runs are "
                "mostly bfloat16 autocast; [the convergence study](convergence.md) pairs the two at this recipe).", ""]
    if "off" in precisions:
        return ["Cells marked *float32* have runs trained in float32 on a machine without native bfloat16, the "
                "others bfloat16 autocast ([the convergence study](convergence.md) pairs the two at this recipe).", ""]
    return ["Every run trained with bfloat16 autocast.", ""] if precisions == {"bfloat16"} else []


def write_report(results: Path, docs: Path) -> Path:
    runs = load(results)
    grid = cells()
    rhos = sorted({rho for rho, _ in runs})
    docs.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((results / "manifest.json").read_text()) if (results / "manifest.json").exists() else {}
    lines = ["# Accuracy benchmark: Fashion-MNIST-LT", ""]
    left_out = {rho: omitted(rho) for rho in IMBALANCES}
    planned = sum(len(grid) - len(left_out[rho]) for rho in IMBALANCES) * len(SEEDS)
    done = sum(k in SEEDS for (rho, name), v in runs.items() if name not in left_out.get(rho, {}) for k in v)
    done += sum(seed in SEEDS for _, seed in load_tuning(results))  # the tune_beta cells write tune_beta.json
    headline = sum(k not in SEEDS for (rho, name), v in runs.items() if not is_alias(runs, rho, name) for k in v)
    extra = sum(len(v) for (rho, name), v in runs.items() if name in left_out.get(rho, {})
                and not is_alias(runs, rho, name))
    more = ([f"; plus {extra} runs of such cells, trained before the rule, which check it"] if extra else []) + (
        [f"; plus {headline} runs of the headline rows' seeds beyond {max(SEEDS)}"] if headline else [])
    lines += [
        f"> **The converged recipe** (the `fmnist-lt` preset: width 16, 80 epochs, the plateau of "
        f"[the convergence study](convergence.md)). **Status: {done} of the {planned} planned runs are finished** "
        f"({len(grid)} cells x imbalances {', '.join(f'{r:g}' for r in IMBALANCES)} x seeds "
        f"{', '.join(map(str, SEEDS))}, less the {sum(map(len, left_out.values()))} (imbalance, cell) pairs "
        f"[left out](#cells-left-out-uniform-weights) because their weights are uniform there"
        f"{''.join(more)}); "
        "a table shows only finished runs, with their number of seeds. The earlier "
        "matrix on the unconverged recipe (width 8, 5 epochs) is kept in [w8_e5/accuracy.md](w8_e5/accuracy.md).",
        "",
    ]
    lines += [
        "Generated by `python benchmarks/accuracy/report.py` from the result files of "
        "`python benchmarks/accuracy/run.py` (resumable; finished cells are not re-run). "
        "Result files: `benchmarks/results/accuracy/runs/rho<imbalance>/<cell>/seed<k>/result.json`.",
        "",
        "**Recipe (fixed for every cell).** " + ", ".join(f"{k}={v}" for k, v in RECIPE.items()) + ". "
        "Balanced test set (10,000 images); the seed sets the long-tailed draw, the initialisation and the data "
        "order. Every loss trains on the same training set for a given (imbalance, seed): the balanced "
        "validation split CDB needs (25 images per class, carved out before the imbalance) is held out for all.",
        "",
        "**Statistics.** mean ± sample std over seeds. Δ vs CE: paired by seed, mean and 95% t interval. "
        "The best class-balanced configuration per imbalance is chosen by validation error, not test error. "
        "Error = 100 − top-1 accuracy on the balanced test set (= 100 − balanced accuracy, since the test set "
        f"is balanced). Shot groups: many > {RECIPE['many_threshold']} training images, few < "
        f"{RECIPE['few_threshold']}, medium in between.",
        "",
    ]
    lines += session_lines(manifest.get("sessions", []))
    all_runs = [r for (rho, name), seeds in runs.items() if not is_alias(runs, rho, name) for r in seeds.values()]
    estimate = cost_estimate(runs)
    if estimate:
        lines += ["", estimate]
    lines.append(
        f"- {len(all_runs)} runs in the tables; their run times (`wall_seconds` in the result files) add up to "
        f"{sum(r['wall_seconds'] for r in all_runs) / 3600:.1f} hours on one thread each."
    )
    lines.append("")

    summary = ["## Summary", "", "| imbalance | CE error | best class-balanced (by val) | its error | Δ vs CE | "
               "best CDB (by val) | its error | Δ vs CE |", "|---|---|---|---|---|---|---|---|"]
    for rho in rhos:
        ce = runs.get((rho, "ce"), {})
        cb_names = [c.name for c in grid if c.family in CB_FAMILIES]
        best_cb = best_by_validation(runs, rho, cb_names)
        best_cdb = best_by_validation(runs, rho, [c.name for c in grid if c.family == "cdb"])
        row = [f"{rho:g}", fmt([_metric(r, "error") for r in ce.values()])]
        for best in (best_cb, best_cdb):
            chosen = runs.get((rho, best), {})
            row += [f"`{best}`" if best else "-", fmt([_metric(r, "error") for r in chosen.values()]),
                    paired_difference(chosen, ce, "error") if best and ce else "-"]
        summary.append("| " + " | ".join(row) + " |")
    lines += summary + [""]
    lines += claims_section(runs, rhos)
    lines += cdb_and_beta_section(runs, load_tuning(results), rhos)
    lines += reductions_section(runs, rhos)
    lines += omitted_section(runs, rhos)
    lines += toolbox_summary(runs, grid, rhos)
    findings = Path(__file__).with_name("FINDINGS.md")
    if findings.exists():  # the written reading of the numbers, kept next to the code that makes them
        lines += [findings.read_text().strip(), ""]

    for rho in rhos:
        ce = runs.get((rho, "ce"), {})
        lines += [f"## Imbalance {rho:g}", ""]
        first = next(iter(next(iter(runs[(rho, n)] for n in [c.name for c in grid] if (rho, n) in runs)).values()))
        lines.append(f"Training images per class: {first['train_counts']} (total {sum(first['train_counts'])}).")
        lines.append("")
        precisions = {r.get("autocast") for (r_, _), seeds in runs.items() if r_ == rho for r in seeds.values()}
        lines += precision_note(precisions)
        mixed = len(precisions) > 1  # only a mix marks its float32 cells; the note names a single precision
        lines.append("| loss | seeds | error % | Δ error vs CE | balanced acc % | many % | medium % | few % | val error % |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for cell in grid:
            seeds = runs.get((rho, cell.name), {})
            if not seeds or is_alias(runs, rho, cell.name):
                continue
            rs = list(seeds.values())
            fp32 = sum(r.get("autocast") == "off" for r in rs) if mixed else 0
            lines.append(
                f"| `{cell.name}`{f' (float32: {fp32} of {len(rs)} seeds)' if fp32 else ''} | {len(rs)} | "
                f"{fmt([_metric(r, 'error') for r in rs])} | "
                f"{paired_difference(seeds, ce, 'error') if cell.name != 'ce' and ce else ''} | "
                f"{fmt([_metric(r, 'accuracy') for r in rs])} | {fmt([_metric(r, 'many') for r in rs])} | "
                f"{fmt([_metric(r, 'medium') for r in rs])} | {fmt([_metric(r, 'few') for r in rs])} | "
                f"{fmt([_metric(r, 'val_error') for r in rs])} |"
            )
        lines.append("")
        here = [name for name in omitted(rho) if is_alias(runs, rho, name) or (rho, name) not in runs]
        if here:
            lines += [f"Left out at this imbalance (uniform weights; [why](#cells-left-out-uniform-weights)): "
                      + ", ".join(f"`{name}` (= `{omitted(rho)[name]}`)" for name in here) + ".", ""]

    plots = make_plots(runs, rhos, docs)
    if plots:
        lines += ["## Plots", ""]
        for title, name in plots:
            lines += [f"### {title}", "", f"![{title}]({name})", ""]
    path = docs / "accuracy.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_imbalance(runs: dict, rhos: list[float]) -> float:
    """The imbalance the plots show: the one with the most finished runs, the larger on a tie (an imbalance with a
    few cells run does not replace a fuller one's plots)."""
    return max(rhos, key=lambda rho: (sum(len(seeds) for (r, _), seeds in runs.items() if r == rho), rho))


def make_plots(runs: dict, rhos: list[float], docs: Path) -> list[tuple[str, str]]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    import torch

    from longtail import BetaRangeWarning, class_balanced_weights, effective_number

    grid = cells()
    made: list[tuple[str, str]] = []
    rho = plot_imbalance(runs, rhos)

    # 1. per-class accuracy, CE vs best CB vs best CDB, head to tail
    cb_names = [c.name for c in grid if c.family in CB_FAMILIES]
    chosen = [("ce", "softmax CE")]
    best_cb = best_by_validation(runs, rho, cb_names)
    best_cdb = best_by_validation(runs, rho, [c.name for c in grid if c.family == "cdb"])
    chosen += [(best_cb, f"best class-balanced: {best_cb}")] if best_cb else []
    chosen += [(best_cdb, f"best CDB: {best_cdb}")] if best_cdb else []
    best_stable = best_by_validation(runs, rho, [c.name for c in grid if c.family == "cdb_extension"])
    chosen += [(best_stable, f"best stable CDB (extension): {best_stable}")] if best_stable else []
    best_peer = best_by_validation(runs, rho, [c.name for c in grid if c.family == "peer"])
    chosen += [(best_peer, f"best peer: {best_peer}")] if best_peer else []
    first = next(iter(runs[(rho, "ce")].values())) if (rho, "ce") in runs else None
    if first is not None:
        counts = first["train_counts"]
        order = sorted(range(len(counts)), key=lambda c: -counts[c])
        fig, ax = plt.subplots(figsize=(11, 5))
        width = 0.8 / len(chosen)
        for k, (name, label) in enumerate(chosen):
            per_seed = [[100 * (r["final"]["per_class_accuracy"][c] or 0.0) for c in order] for r in runs[(rho, name)].values()]
            means = [statistics.fmean(col) for col in zip(*per_seed)]
            stds = [statistics.stdev(col) if len(col) > 1 else 0.0 for col in zip(*per_seed)]
            xs = [i + (k - (len(chosen) - 1) / 2) * width for i in range(len(order))]
            ax.bar(xs, means, width, yerr=stds, capsize=2, label=label, error_kw={"elinewidth": 0.8})
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([f"{first['classes'][c]}\n{counts[c]}" for c in order], fontsize=8)
        ax.set_xlabel("class (training images), head to tail")
        ax.set_ylabel("test accuracy (%), mean ± std over seeds")
        ax.set_ylim(0, 100)
        ax.set_title(f"Fashion-MNIST-LT, imbalance {rho:g}: per-class accuracy (best of each family by validation)",
                     pad=28)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(chosen), fontsize=8, frameon=False)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(docs / "per_class_accuracy.png", dpi=110)
        plt.close(fig)
        made.append((f"Per-class accuracy at imbalance {rho:g}", "per_class_accuracy.png"))

        # 2. effective number and weights for each beta
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        n = torch.tensor(sorted(counts, reverse=True), dtype=torch.float64)
        for beta in (*BETAS, 1.0):
            ax1.plot(range(len(n)), effective_number(n, beta).tolist(), marker="o", label=f"β={beta:g}")
            with warnings.catch_warnings():  # the plot shows the nearly uniform betas on purpose
                warnings.simplefilter("ignore", BetaRangeWarning)
                weights = class_balanced_weights(n, beta, dtype=torch.float64)
            ax2.plot(range(len(n)), weights.tolist(), marker="o", label=f"β={beta:g}")
        ax1.plot(range(len(n)), n.tolist(), "k--", label="n (raw count)")
        ax1.set_yscale("log")
        ax1.set_xlabel("class, head to tail")
        ax1.set_ylabel("effective number E(n)")
        ax2.set_yscale("log")
        ax2.set_xlabel("class, head to tail")
        ax2.set_ylabel("class-balanced weight (sums to C)")
        ax1.legend(fontsize=8)
        ax2.legend(fontsize=8)
        fig.suptitle(f"Effective number and weights for Fashion-MNIST-LT, imbalance {rho:g}")
        fig.tight_layout()
        fig.savefig(docs / "effective_number_and_weights.png", dpi=110)
        plt.close(fig)
        made.append(("Effective number and class-balanced weights per beta", "effective_number_and_weights.png"))

    # 3. error against beta, one panel per imbalance
    fig, axes = plt.subplots(1, len(rhos), figsize=(4.5 * len(rhos), 4), squeeze=False)
    left_out_shown = False
    for ax, r in zip(axes[0], rhos):
        for family in CB_FAMILIES:
            xs, ms, ss, stand_in = [], [], [], []
            for beta in BETAS:
                gamma = "_g1" if family in ("cb_focal", "cb_softmax_focal") else ""  # the focal forms at gamma 1
                name = f"{family}_b{beta:g}{gamma}"
                errs = [_metric(x, "error") for x in runs.get((r, name), {}).values()]
                if errs:
                    m, s = mean_std(errs)
                    xs.append(beta)
                    ms.append(m)
                    ss.append(0.0 if math.isnan(s) else s)
                    stand_in.append(is_alias(runs, r, name))
            if xs:
                line = ax.errorbar([1 - x for x in xs], ms, yerr=ss, marker="o", capsize=3,
                                   label=family + (" (gamma 1)" if family in ("cb_focal", "cb_softmax_focal") else ""))
                # a left-out cell (uniform weights) is drawn at its stand-in's error, hollow
                hollow = [(1 - x, m) for x, m, a in zip(xs, ms, stand_in) if a]
                if hollow:
                    ax.plot(*zip(*hollow), "o", markerfacecolor="white", color=line[0].get_color(), zorder=3)
                    left_out_shown = True
        ce = [_metric(x, "error") for x in runs.get((r, "ce"), {}).values()]
        if ce:
            ax.axhline(statistics.fmean(ce), color="k", linestyle="--", label="softmax CE")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("1 − β (log; right = closer to inverse frequency)")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"imbalance {r:g}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if left_out_shown:
        fig.text(0.01, 0.01, "hollow: a cell left out (uniform weights), at the error of the cell that trains the same "
                 "loss", fontsize=8)
    fig.tight_layout(rect=(0, 0.04 if left_out_shown else 0, 1, 1))
    fig.savefig(docs / "error_vs_beta.png", dpi=110)
    plt.close(fig)
    made.append(("Test error against beta", "error_vs_beta.png"))

    # 4. every CDB form's weight per class and epoch (seed 0 at the largest imbalance with CDB runs)
    from cdb_weights_plot import paper_title, plot_runs, stable_title

    for r in sorted(rhos, reverse=True):
        forms = [(name, runs.get((r, name), {}).get(0)) for name in ("cdb_tau1.5", "cdb_dynamic", "cdb_stable")]
        panels = [(res, stable_title(res) if name == "cdb_stable" else paper_title(res)) for name, res in forms
                  if res is not None]
        if len(panels) > 1:
            plot_runs(panels, docs / "cdb_weights_matrix.png")
            made.append((f"CDB weights per class and epoch, imbalance {r:g}, seed 0", "cdb_weights_matrix.png"))
            break
    return made


# The headline rows, which get 5 seeds (the others 3): CE and each family's best cell by validation.
HEADLINE_FAMILIES = (CB_FAMILIES, ("cdb",), ("cdb_extension",), ("peer",))


def headline_cells(runs: dict, rho: float) -> list[str]:
    """CE, the best class-balanced, paper-CDB, stable-CDB and peer cells by validation at ``rho`` (those with runs)."""
    grid = cells()
    names = ["ce"]
    for families in HEADLINE_FAMILIES:
        best = best_by_validation(runs, rho, [c.name for c in grid if c.family in families])
        if best is not None:
            names.append(omitted(rho).get(best, best) if is_alias(runs, rho, best) else best)
    return list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/accuracy"))
    parser.add_argument("--docs", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--headline", type=float, default=None, metavar="RHO",
                        help="print the headline cells at this imbalance, comma-separated (with their parents), and "
                             "write no report")
    args = parser.parse_args(argv)
    if args.headline is not None:
        names = headline_cells(load(args.results), args.headline)
        parents = [c.parent for c in cells() if c.name in names and c.parent is not None]
        print(",".join(dict.fromkeys(parents + names)))
        return 0
    print(write_report(args.results, args.docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
