"""Report of the convergence study: test error against epochs and width, bfloat16 against float32, reductions.

    python benchmarks/accuracy/run.py --grid convergence --imbalances 100 --out benchmarks/results/convergence
    python benchmarks/accuracy/convergence_report.py   # -> docs/benchmarks/convergence.md and convergence.png

Fashion-MNIST-LT at imbalance 100, CE and the class-balanced softmax (beta 0.9999), 3 seeds (the seed sets the
long-tailed draw, the initialisation and the data order). The plateau rule: the smallest number of epochs after
which doubling them moves CE's mean test error by no more than CE's seed standard deviation.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from matrix import PRECISION, cells, convergence_cells, precision_cells, recipe_cells  # noqa: E402
from report import _metric, fmt, load, mean_std, paired_difference  # noqa: E402

RHO = 100.0
EPOCHS = (5, 10, 20, 40, 80, 160)
WIDTHS = (8, 16, 32)
LOSSES = {"ce": "CE", "cb_softmax": "CB softmax (beta 0.9999)"}


def _errors(runs: dict, name: str, metric: str = "error") -> list[float]:
    return [v for v in (_metric(r, metric) for r in runs.get((RHO, name), {}).values()) if v is not None]


def _seconds(runs: dict, name: str) -> str:
    values = [r["wall_seconds"] for r in runs.get((RHO, name), {}).values()]
    return f"{statistics.fmean(values):.0f}" if values else "-"


def plateau(runs: dict) -> tuple[int | None, str]:
    """The plateau rule on CE at width 16, with the numbers it used."""
    notes = []
    for short, long in zip(EPOCHS, EPOCHS[1:]):
        a, b = _errors(runs, f"ce_w16_e{short}"), _errors(runs, f"ce_w16_e{long}")
        if len(a) < 2 or len(b) < 2:
            notes.append(f"{long} epochs not run yet")
            break
        move = abs(statistics.fmean(b) - statistics.fmean(a))
        std = max(statistics.stdev(a), statistics.stdev(b))
        notes.append(f"{short} -> {long} epochs: CE moves {move:.2f} points, seed std {std:.2f}")
        if move <= std:
            return short, "; ".join(notes)
    return None, "; ".join(notes)


def plot(runs: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for loss, label in LOSSES.items():
        for ax, xs, names in [(left, EPOCHS, [f"{loss}_w16_e{e}" for e in EPOCHS]),
                              (right, WIDTHS, [f"{loss}_w{w}_e20" for w in WIDTHS])]:
            points = [(x, *mean_std(_errors(runs, name))) for x, name in zip(xs, names) if _errors(runs, name)]
            ax.errorbar([p[0] for p in points], [p[1] for p in points],
                        yerr=[0.0 if math.isnan(p[2]) else p[2] for p in points], marker="o", capsize=3, label=label)
    from matplotlib.ticker import NullLocator

    left.set(xlabel="epochs (width 16)", ylabel="test error (%)", title="error against epochs")
    right.set(xlabel="width (20 epochs)", title="error against width")
    for ax, ticks in ((left, EPOCHS), (right, WIDTHS)):
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    fig.suptitle("Fashion-MNIST-LT, imbalance 100: mean ± std over 3 seeds (bfloat16 autocast)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(results: Path, docs: Path, precision: Path | None = None, matrix: Path | None = None) -> Path:
    runs = load(results, convergence_cells)
    lines = ["# Convergence study: Fashion-MNIST-LT at imbalance 100", "",
             "The plateau found here, width 16 x 80 epochs, is the `fmnist-lt` preset and the accuracy matrix's "
             "recipe ([accuracy.md](accuracy.md)).", "",
             "Produced by `python benchmarks/accuracy/run.py --grid convergence --imbalances 100 --out "
             "benchmarks/results/convergence` and `python benchmarks/accuracy/convergence_report.py`. Every cell is "
             "the `fmnist-lt` recipe of the time (SGD + Nesterov, LR 0.05, wd 5e-4, batch 128, 1 warm-up epoch then "
             "cosine, pad-and-crop + flip, 25 validation images per class held out) with the epochs, width and "
             "precision named; test error in % on the balanced 10,000-image test set, mean ± std over seeds 0, 1, 2; "
             "`s` is the wall time of one run with two runs sharing the 2 cores.", ""]
    lines += ["## Error against epochs and width", "", "| run | " + " | ".join(LOSSES.values()) + " | s (CE) |",
              "|---|" + "---|" * (len(LOSSES) + 1)]
    for width, epochs in [(16, e) for e in EPOCHS] + [(8, 20), (32, 20), (32, 40)]:
        row = [fmt(_errors(runs, f"{loss}_w{width}_e{epochs}")) for loss in LOSSES]
        lines.append(f"| width {width}, {epochs} epochs | " + " | ".join(row) + f" | {_seconds(runs, f'ce_w{width}_e{epochs}')} |")
    at, notes = plateau(runs)
    lines += ["", f"Plateau rule (CE, width 16): {notes}. "
              + (f"**Plateau at {at} epochs.**" if at else "**No plateau within the epochs run.**"), ""]
    screen = load(results, recipe_cells)
    ref = runs.get((RHO, "ce_w16_e40"), {}).get(0)
    if screen and ref is not None:
        lines += ["## A screen for a cheaper route to the plateau (CE, 40 epochs, seed 0 only)", "",
                  "| batch, LR | test error % | validation error % | s |", "|---|---|---|---|",
                  f"| 128, 0.05 (the study's) | {_metric(ref, 'error'):.2f} | {_metric(ref, 'val_error'):.2f} | "
                  f"{ref['wall_seconds']:.0f} |"]
        for cell in recipe_cells():
            r = screen.get((RHO, cell.name), {}).get(0)
            if r is not None:
                lines.append(f"| {cell.overrides['batch_size']}, {cell.overrides['lr']:g} | {_metric(r, 'error'):.2f} | "
                             f"{_metric(r, 'val_error'):.2f} | {r['wall_seconds']:.0f} |")
        lines += ["", "Twice the learning rate at 40 epochs does not reach the 80-epoch plateau "
                  f"({fmt(_errors(runs, 'ce_w16_e80'))}), and a larger batch is worse at the same number of epochs; "
                  "on this CPU it is not faster per image either (a bare bfloat16 training step of the width-16 CNN, one "
                  "thread: about 4,400 to 4,500 images/s at batch 128, 256 and 512 alike). The preset therefore keeps "
                  "batch 128, LR 0.05 and takes the plateau: **width 16, 80 epochs** (`longtail train --preset "
                  "fmnist-lt`). The screen ran with two runs sharing the 2 cores and other work, so its seconds are "
                  "slower than the study's.", ""]
    lines += ["## bfloat16 autocast against float32 (width 16, 20 epochs, paired by seed)", "",
              "| loss | float32 | bfloat16 | bfloat16 - float32 [95% CI] | s float32 | s bfloat16 |", "|---|---|---|---|---|---|"]
    for loss, label in LOSSES.items():
        a, b = runs.get((RHO, f"{loss}_w16_e20"), {}), runs.get((RHO, f"{loss}_w16_e20_fp32"), {})
        lines.append(f"| {label} | {fmt(_errors(runs, f'{loss}_w16_e20_fp32'))} | {fmt(_errors(runs, f'{loss}_w16_e20'))} "
                     f"| {paired_difference(a, b, 'error')} | {_seconds(runs, f'{loss}_w16_e20_fp32')} | "
                     f"{_seconds(runs, f'{loss}_w16_e20')} |")
    if precision is not None and matrix is not None:
        lines += precision_section(load(precision, precision_cells), load(matrix, cells), _machines(precision),
                                   _machines(matrix, native_bfloat16=True))
    lines += ["", "## The two reductions of the class-balanced softmax (width 16, 20 epochs)", "",
              "| reduction | test error | validation error | minus official `mean` [95% CI] |", "|---|---|---|---|"]
    official = runs.get((RHO, "cb_softmax_w16_e20"), {})
    for name, label in [("cb_softmax_w16_e20", "`mean` (official: weighted sum / N), LR 0.05"),
                        ("cb_softmax_w16_e20_weighted_mean", "`weighted_mean` (PyTorch's: / sum of weights), LR 0.05"),
                        ("cb_softmax_w16_e20_mean_lr_rescaled", "`mean`, LR rescaled by 1 / E[w_y] = 0.291")]:
        diff = "-" if name == "cb_softmax_w16_e20" else paired_difference(runs.get((RHO, name), {}), official, "error")
        lines.append(f"| {label} | {fmt(_errors(runs, name))} | {fmt(_errors(runs, name, 'val_error'))} | {diff} |")
    docs.mkdir(parents=True, exist_ok=True)
    figure = plot(runs, docs / "convergence.png")
    if figure is not None:
        lines += ["", f"![convergence]({figure.name})"]
    out = docs / "convergence.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def _machines(results: Path, native_bfloat16: bool | None = None) -> list[str]:
    """The CPUs named in a results folder's manifest (result files do not record the machine), only those with (or
    without) native bfloat16 when ``native_bfloat16`` is given: the matrix's float32 runs of ``--mixed-precision``
    sessions ran on another CPU than its bfloat16 runs."""
    path = results / "manifest.json"
    sessions = json.loads(path.read_text())["sessions"] if path.exists() else []
    return sorted({s.get("machine", {}).get("cpu", "?") for s in sessions if s.get("cells_trained")
                   and (native_bfloat16 is None or s.get("machine", {}).get("native_bfloat16") == native_bfloat16)})


def precision_section(fp32: dict, bf16: dict, machines: list[str], matrix_machines: list[str]) -> list[str]:
    """The converged recipe's cells in float32 (``--grid precision``) against the matrix's runs of the same cells
    (bfloat16 autocast), paired by seed."""
    rows, all_a, all_b = [], {}, {}
    for name in PRECISION:
        a, b = bf16.get((RHO, name), {}), fp32.get((RHO, f"{name}_fp32"), {})
        if not b:
            continue
        all_a.update({(name, k): r for k, r in a.items()})
        all_b.update({(name, k): r for k, r in b.items()})
        rows.append(f"| `{name}` | {len(b)} | {fmt([_metric(r, 'error') for r in b.values()])} | "
                    f"{fmt([_metric(a[k], 'error') for k in b if k in a])} | {paired_difference(a, b, 'error')} | "
                    f"{paired_difference(a, b, 'val_error')} |")
    if not rows:
        return []
    if len(rows) > 1:  # every (cell, seed) pair as one replicate of a precision effect common to the losses
        pairs = len(set(all_a) & set(all_b))
        rows.append(f"| all {len(rows)} cells, pooled | {pairs} pairs | | | "
                    f"{paired_difference(all_a, all_b, 'error')} | {paired_difference(all_a, all_b, 'val_error')} |")
    return ["", "## bfloat16 autocast against float32 at the converged recipe (80 epochs, paired by seed)", "",
            "The accuracy matrix's cells (`amp=auto`: bfloat16 autocast on a CPU with native bfloat16) against the "
            "same cells, seeds and data in float32 (`python benchmarks/accuracy/run.py --grid precision --imbalances "
            "100 --out benchmarks/results/precision`). The float32 runs ran on "
            f"{', '.join(machines) or 'a machine not recorded'}, the matrix's on "
            f"{', '.join(matrix_machines) or 'a machine not recorded'}, so the difference is precision and machine "
            "together; their seconds are not comparable with the matrix's and are left out.", "",
            "| cell | seeds | float32 test error % | bfloat16 test error % | bfloat16 - float32, test [95% CI] | "
            "bfloat16 - float32, validation [95% CI] |", "|---|---|---|---|---|---|", *rows,
            *_pooled_verdict(all_a, all_b)]


def _pooled_verdict(a: dict, b: dict) -> list[str]:
    """One sentence on the pooled ``(cell, seed)`` pairs: the bound it puts on the precision's effect, stated only
    where every cell's own interval holds 0 (else the effect may differ between losses and pooling hides it)."""
    from report import paired_interval

    names = sorted({name for name, _ in a})
    pooled = paired_interval(a, b, "error") if len(names) > 1 else None
    if pooled is None:
        return []
    m, low, high = pooled
    head = (f"Pooled over the {len(set(a) & set(b))} pairs, bfloat16 autocast minus float32 is {m:+.2f} "
            f"[{low:+.2f}, {high:+.2f}] points of test error")
    own = [paired_interval({k: v for k, v in a.items() if k[0] == n}, {k: v for k, v in b.items() if k[0] == n},
                           "error") for n in names]
    if all(iv is None or iv[1] <= 0 <= iv[2] for iv in own):
        return ["", f"{head}: at this recipe the precision moves the error by at most {max(abs(low), abs(high)):.2f} "
                "points either way (the pooling takes the effect to be common to the losses; every cell's own "
                "interval holds 0)."]
    return ["", f"{head}; at least one cell's own interval excludes 0, so the effect may differ between losses."]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/convergence"))
    parser.add_argument("--docs", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--precision", type=Path, default=Path("benchmarks/results/precision"),
                        help="the float32 runs of --grid precision")
    parser.add_argument("--matrix", type=Path, default=Path("benchmarks/results/accuracy"),
                        help="the accuracy matrix's runs they are paired with")
    args = parser.parse_args(argv)
    print(write(args.results, args.docs, args.precision, args.matrix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
