"""The plots of a run report (:func:`longtail.runs.write_run_report`) and of ``longtail demo``: PNG bytes.

:func:`plot_per_class` draws per-class test accuracy from head to tail, one bar per run; the report also draws each
run's confusion matrix and the learning curves (:data:`PLOTTERS`, keyed by :data:`longtail.runs.PLOTS`). Each
takes the runs (:class:`longtail.runs.RunRecord`: a name and a ``result.json``) and returns a PNG. They use
matplotlib's ``Figure`` without pyplot, so the user's backend is left alone; :func:`matplotlib_available` says
whether they can run.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol


class RunRecord(Protocol):
    """What a plot reads of a run (:class:`longtail.runs.RunRecord` is one): its name and its ``result.json``."""

    name: str
    result: dict[str, Any]

__all__ = ["PLOTTERS", "matplotlib_available", "plot_confusions", "plot_learning_curves", "plot_per_class"]


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # no pyplot: the user's backend is left alone

    return Figure(figsize=(width, height), layout="constrained")


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def plot_per_class(records: Sequence[RunRecord], title: str | None = None) -> bytes:
    """Per-class test accuracy from head to tail: one panel per distinct (classes, training counts), one bar group
    per class (labelled with its training count), one bar per run (labelled with its name); ``title`` above."""
    groups: dict[tuple[Any, ...], list[RunRecord]] = {}
    for r in records:
        key = (tuple(r.result.get("classes") or range(len(r.result["train_counts"]))), tuple(r.result["train_counts"]))
        groups.setdefault(key, []).append(r)
    widest = max(len(counts) for _, counts in groups)
    fig = _figure(max(8.0, min(40.0, widest * (0.3 + 0.12 * len(records)))), 4.5 * len(groups))
    axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
    for ax, ((classes, counts), members) in zip(axes, groups.items()):
        order = sorted(range(len(counts)), key=lambda c: -counts[c])
        width = 0.8 / len(members)
        for k, r in enumerate(members):
            per_class = r.result["final"].get("per_class_accuracy") or []
            values = [100 * per_class[c] if c < len(per_class) and per_class[c] is not None else math.nan
                      for c in order]
            xs = [i + (k - (len(members) - 1) / 2) * width for i in range(len(order))]
            ax.bar(xs, values, width, label=r.name)
        ax.set_xticks(range(len(order)))
        many = len(order) > 30
        ax.set_xticklabels([f"{classes[c]}\n{counts[c]}" for c in order], fontsize=6 if many else 8,
                           rotation=90 if many else 0)
        ax.set_xlabel("class (training images), head to tail")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, ncol=min(len(members), 4), loc="upper right")
    if title is not None:
        fig.suptitle(title)
    return _png(fig)


def plot_confusions(records: Sequence[RunRecord]) -> bytes:
    import numpy as np

    n = len(records)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = _figure(4.6 * cols, 4.3 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    image = None
    for ax, r in zip(axes, records):
        cm = np.asarray(r.result["final"].get("confusion_matrix") or [[0]], dtype=np.float64)
        totals = cm.sum(axis=1, keepdims=True)
        normalised = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
        image = ax.imshow(normalised, vmin=0.0, vmax=1.0, cmap="Blues")
        classes = r.result.get("classes") or [str(c) for c in range(len(cm))]
        if len(cm) <= 20:
            ax.set_xticks(range(len(cm)))
            ax.set_yticks(range(len(cm)))
            ax.set_xticklabels(classes, rotation=90, fontsize=7)
            ax.set_yticklabels(classes, fontsize=7)
        if len(cm) <= 10:
            for i in range(len(cm)):
                for j in range(len(cm)):
                    ax.text(j, i, f"{normalised[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if normalised[i, j] > 0.5 else "black")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(r.name, fontsize=9)
    for ax in axes[n:]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=list(axes[:n]), shrink=0.8, label="fraction of the true class")
    return _png(fig)


def plot_learning_curves(records: Sequence[RunRecord]) -> bytes:
    fig = _figure(11, 4.2)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for k, r in enumerate(records):
        color = f"C{k % 10}"
        history = [{"epoch": i + 1, **e} for i, e in enumerate(r.result["history"]) if isinstance(e, dict)]
        points = [(e["epoch"], e["train_loss"]) for e in history if e.get("train_loss") is not None]
        if points:
            loss_ax.plot(*zip(*points), marker=".", color=color, label=r.name)
        for split, style in (("val", "-"), ("test", "--")):
            points = [(e["epoch"], e[split]["balanced_accuracy"]) for e in history
                      if isinstance(e.get(split), dict) and e[split].get("balanced_accuracy") is not None]
            if points:
                acc_ax.plot(*zip(*points), linestyle=style, marker="o" if split == "test" else ".", color=color,
                            label=f"{r.name} ({split})")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("balanced accuracy (solid: val, dashed: test)")
    from matplotlib.ticker import MaxNLocator

    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _png(fig)


#: The report's plots by name (the keys of :data:`longtail.runs.PLOTS`).
PLOTTERS: dict[str, Callable[[Sequence[RunRecord]], bytes]] = {
    "per_class_accuracy": plot_per_class,
    "confusion_matrices": plot_confusions,
    "learning_curves": plot_learning_curves,
}


def matplotlib_available() -> bool:
    """Whether matplotlib (its ``Figure``) can be imported: the plots need it."""
    import importlib

    try:
        importlib.import_module("matplotlib.figure")
    except ImportError:
        return False
    return True
