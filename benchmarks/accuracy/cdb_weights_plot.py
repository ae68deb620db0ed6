"""Every class's CDB weight per epoch: the paper's CDB beside the stable CDB (an extension beyond the paper).

    python benchmarks/accuracy/cdb_weights_plot.py [--paper benchmarks/results/cdb_stable/cdb/result.json]
        [--stable benchmarks/results/cdb_stable/<the sweep's chosen run>/result.json] [--out docs/benchmarks/cdb_weights.png]

Reads two trainer result files whose history holds the per-epoch ``cdb_weights`` (the weights set after each
validation pass, used by the next epoch) and draws one line per class, coloured from the head (most training
images) to the tail, on a log scale, the two runs side by side with a shared axis. Epoch 0 is the uniform start
(the first epoch is plain cross-entropy). A weight of exactly 0 (the paper's weight of a class at 100 % validation
accuracy) cannot sit on a log axis: it is drawn at the bottom edge, ``ZERO``, and marked by a cross.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import cm  # noqa: E402

ZERO = 1e-3  # where a weight of 0 is drawn
RESULTS = Path("benchmarks/results/cdb_stable")


def _weights(result: dict[str, Any]) -> list[list[float]]:
    """Per epoch (0 = the uniform start), the weights of every class."""
    rows = [h["cdb_weights"] for h in result["history"] if "cdb_weights" in h]
    if not rows:
        raise ValueError(f"result of loss {result['config']['loss']!r} must have cdb_weights in its history; got none")
    return [[1.0] * len(rows[0])] + rows


def _panel(ax: Any, result: dict[str, Any], title: str) -> None:
    weights = _weights(result)
    counts = result["train_counts"]
    order = sorted(range(len(counts)), key=lambda c: -counts[c])  # head first
    colours = cm.viridis([i / max(1, len(order) - 1) for i in range(len(order))])
    epochs = list(range(len(weights)))
    for rank, c in enumerate(order):
        values = [w[c] for w in weights]
        shown = [max(v, ZERO) for v in values]
        ax.plot(epochs, shown, color=colours[rank], marker="o", markersize=3, linewidth=1.4,
                label=f"class {c} ({counts[c]} images)")
        zeros = [e for e, v in zip(epochs, values) if v <= 0.0]
        ax.plot(zeros, [ZERO] * len(zeros), linestyle="none", marker="x", markersize=7, color=colours[rank])
    history = result["history"]
    val = history[-1]["val"]["balanced_accuracy"]
    test_error = 1.0 - result["final"]["accuracy"]
    ax.set_yscale("log")
    ax.set_ylim(ZERO * 0.8, 12)
    ax.set_xlabel("epoch (weights set after it, used by the next)")
    ax.set_title(f"{title}\nfinal val balanced acc {100 * val:.1f} %, test error {100 * test_error:.1f} %", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")


def paper_title(result: dict[str, Any]) -> str:
    return f"paper's CDB (tau {result['config']['cdb_tau']})"


def stable_title(result: dict[str, Any]) -> str:
    cfg = result["config"]
    return (f"stable CDB (extension): prior a=b={cfg['cdb_prior']:g}, momentum {cfg['cdb_momentum']:g}, "
            f"max ratio {cfg['cdb_max_ratio']:g}, {cfg['cdb_difficulty']}")


def plot_runs(panels: list[tuple[dict[str, Any], str]], out: Path) -> Path:
    """One panel per (result, title), side by side with a shared weight axis; written to ``out``."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.8), sharey=True, squeeze=False)
    for ax, (result, title) in zip(axes[0], panels):
        _panel(ax, result, title)
    axes[0][0].set_ylabel(f"class weight (log; x = exactly 0, drawn at {ZERO:g})")
    axes[0][-1].legend(fontsize=7, loc="lower left", ncol=2, title="head (dark) to tail (yellow)", title_fontsize=7)
    data = panels[0][0]["config"]
    fig.suptitle(f"CDB weights per epoch: {data['dataset']}-LT rho {data['imbalance']:g}, {data['val_per_class']} "
                 f"validation images per class, width {data['width']}, {data['epochs']} epochs, seed {data['seed']}",
                 fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _default_stable() -> Path:
    summary = RESULTS / "summary.json"
    if summary.exists():
        return RESULTS / json.loads(summary.read_text())["chosen"] / "result.json"
    raise SystemExit(f"--stable is needed: {summary} (written by cdb_stable_sweep.py) names the chosen run")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper", type=Path, default=RESULTS / "cdb" / "result.json", help="the paper's CDB run")
    parser.add_argument("--stable", type=Path, default=None, help="the stable CDB run (default: the sweep's choice)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/cdb_weights.png"), help="the PNG to write")
    args = parser.parse_args(argv)
    stable_path = args.stable if args.stable is not None else _default_stable()
    paper, stable = (json.loads(Path(p).read_text()) for p in (args.paper, stable_path))
    plot_runs([(paper, paper_title(paper)), (stable, stable_title(stable))], args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
