"""Runs you can compare and use: one report over many run folders, and a run's model evaluated or applied again.

- :func:`write_run_report` reads the ``result.json`` of each run folder and writes one table over them
  (``report.md``, ``report.csv``) and, when matplotlib is importable, plots: per-class accuracy from head to
  tail, each run's confusion matrix and the learning curves (``longtail report``).
- :func:`evaluate_run` loads a run's checkpoint, rebuilds its data split and reports the model on it, post-hoc
  adjustment included, exactly as the trainer did (``longtail evaluate``).
- :func:`read_images` and :func:`predict_rows` read an image file (``.npy``, ``.pt`` or IDX) and give the
  predicted class and its probability per image (``longtail predict``).

To load a model for your own code, see :func:`longtail.train.load_model` and ``docs/using_runs.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .io import write_bytes

__all__ = [
    "FORMATS",
    "PLOTS",
    "REPORT_COLUMNS",
    "RunRecord",
    "check_new_files",
    "default_report_folder",
    "evaluate_run",
    "load_runs",
    "markdown_table",
    "predict_rows",
    "predictions_csv",
    "read_images",
    "report_rows",
    "report_files",
    "write_report_files",
    "write_run_report",
]

#: The columns of the report table: (key, Markdown header). The CSV header is the keys.
REPORT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run", "run"),
    ("dataset", "dataset"),
    ("imbalance", "imbalance"),
    ("loss", "loss"),
    ("stage", "stage"),
    ("sampler", "sampler"),
    ("posthoc", "posthoc"),
    ("posthoc_tau", "posthoc tau"),
    ("seed", "seed"),
    ("epochs", "epochs"),
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced acc"),
    ("macro_f1", "macro F1"),
    ("many", "many"),
    ("medium", "medium"),
    ("few", "few"),
    ("val_balanced_accuracy", "val balanced acc"),
    ("wall_seconds", "wall s"),
)

FORMATS = ("md", "csv")
PLOTS = ("per_class_accuracy", "confusion_matrices", "learning_curves")
_FILES = {"md": "report.md", "csv": "report.csv", **{name: f"{name}.png" for name in PLOTS}}


def _stderr_warning(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


# --- reading runs --------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """A complete run: its folder, its name in the report and its ``result.json``."""

    path: Path
    name: str
    result: dict[str, Any]


def _complete_result(folder: Path) -> tuple[dict[str, Any] | None, str]:
    from .train.run_folder import RESULT, read_result

    if not folder.is_dir():
        return None, "not a folder" if folder.exists() else "no such folder"
    result, why = read_result(folder / RESULT)
    if result is None:
        return None, f"{RESULT} {why}"
    if result.get("status") != "complete":
        return None, f"{RESULT} has status {result.get('status')!r} (not a complete run)"
    for key, kind in (("config", dict), ("final", dict), ("history", list), ("train_counts", list)):
        if not isinstance(result.get(key), kind) or (key == "final" and not result[key]):
            return None, f"{RESULT} lacks its {key!r} entry"
    return result, ""


def _names(paths: Sequence[Path]) -> list[str]:
    """Each folder's path relative to the folders' common path (the folder name for one run)."""
    if len(paths) == 1:
        return [paths[0].name or str(paths[0])]
    try:
        common = Path(os.path.commonpath([str(p) for p in paths]))
    except ValueError:  # different drives (Windows)
        return [str(p) for p in paths]
    # A run folder inside another given one: the outer is named by its folder name, not ".".
    return [p.name if p == common else p.relative_to(common).as_posix() for p in paths]


def load_runs(run_dirs: Iterable[str | os.PathLike[str]],
              warn: Callable[[str], None] | None = None) -> list[RunRecord]:
    """The complete runs among ``run_dirs`` (in the order given, each once); every other folder is skipped
    with one ``warn`` line saying why (default: a line on stderr)."""
    warn = warn or _stderr_warning
    folders: list[Path] = []
    results: list[dict[str, Any]] = []
    seen: set[Path] = set()
    for given in run_dirs:
        folder = Path(given).expanduser()
        key = folder.resolve()
        if key in seen:
            continue
        seen.add(key)
        result, why = _complete_result(folder)
        if result is None:
            warn(f"skipping {folder}: {why}")
            continue
        folders.append(key)
        results.append(result)
    return [RunRecord(path, name, result) for path, name, result in zip(folders, _names(folders), results)]


def _val_balanced_accuracy(result: dict[str, Any]) -> float | None:
    """The validation balanced accuracy of the model the run reports: the post-hoc tau's (chosen on validation),
    else the last epoch's."""
    posthoc = result["final"].get("posthoc")
    if isinstance(posthoc, dict):
        grid, scores = posthoc.get("grid") or [], posthoc.get("val_balanced_accuracy") or []
        if posthoc.get("tau") in grid and grid.index(posthoc["tau"]) < len(scores):
            return scores[grid.index(posthoc["tau"])]
    for entry in reversed(result["history"]):
        if isinstance(entry, dict) and isinstance(entry.get("val"), dict):
            return entry["val"].get("balanced_accuracy")
    return None


def _row(record: RunRecord) -> dict[str, Any]:
    result, config, final = record.result, record.result["config"], record.result["final"]
    shots = final.get("shot_accuracy") or {}
    posthoc = final.get("posthoc")
    return {
        "run": record.name,
        "dataset": config.get("dataset"),
        "imbalance": config.get("imbalance"),
        "loss": config.get("loss"),
        "stage": config.get("stage", "joint"),
        "sampler": config.get("sampler"),
        "posthoc": config.get("posthoc", "none"),
        "posthoc_tau": posthoc.get("tau") if isinstance(posthoc, dict) else None,
        "seed": config.get("seed"),
        "epochs": config.get("epochs"),
        "accuracy": final.get("accuracy"),
        "balanced_accuracy": final.get("balanced_accuracy"),
        "macro_f1": final.get("macro_f1"),
        "many": shots.get("many"),
        "medium": shots.get("medium"),
        "few": shots.get("few"),
        "val_balanced_accuracy": _val_balanced_accuracy(result),
        "wall_seconds": result.get("wall_seconds"),
    }


def report_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One dict per run, keyed by the keys of :data:`REPORT_COLUMNS` (values as in ``result.json``; None where a
    run has no value)."""
    return [_row(r) for r in records]


# --- tables --------------------------------------------------------------------------------------


def _md_cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value).replace("|", "\\|")
    if key == "wall_seconds":
        return f"{value:.1f}"
    if key in ("imbalance", "posthoc_tau", "seed", "epochs"):
        return f"{value:g}"
    return f"{value:.4f}"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table (metrics as fractions, 4 decimals; ``-`` where a run has no value)."""
    lines = ["| " + " | ".join(header for _, header in REPORT_COLUMNS) + " |",
             "|" + "|".join("---" for _ in REPORT_COLUMNS) + "|"]
    lines += ["| " + " | ".join(_md_cell(key, row[key]) for key, _ in REPORT_COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def _csv_text(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([key for key, _ in REPORT_COLUMNS])
    for row in rows:  # numbers in full precision (repr), so they read back equal to result.json's
        writer.writerow(["" if row[key] is None else row[key] for key, _ in REPORT_COLUMNS])
    return buffer.getvalue()


def _markdown_report(records: Sequence[RunRecord], rows: Sequence[dict[str, Any]], plots: Sequence[str]) -> str:
    thresholds = {(t.get("many"), t.get("few")) for t in (r.result["final"].get("shot_thresholds") or {} for r in records)}
    shots = ("many-shot classes have more than {0:g} training images, few-shot fewer than {1:g}, medium-shot the "
             "rest".format(*next(iter(thresholds))) if len(thresholds) == 1 and None not in next(iter(thresholds))
             else "shot groups by each run's own thresholds (`shot_thresholds` in its result.json)")
    lines = [
        "# Run report", "",
        f"{len(records)} runs. Metrics on each run's test split, as fractions (post-hoc adjusted where the run "
        f"has `posthoc`); {shots}. `val balanced acc`: the post-hoc tau's validation score, else the last "
        "epoch's.", "",
        markdown_table(rows), "",
        "Run folders:", "",
        *[f"- `{r.name}`: `{r.path}`" for r in records], "",
    ]
    titles = {"per_class_accuracy": "Per-class test accuracy, head to tail",
              "confusion_matrices": "Confusion matrices (rows normalised)",
              "learning_curves": "Learning curves"}
    for name in plots:
        lines += [f"## {titles[name]}", "", f"![{titles[name]}]({_FILES[name]})", ""]
    return "\n".join(lines)


# --- plots ---------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # no pyplot: the user's backend is left alone

    return Figure(figsize=(width, height), layout="constrained")


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _plot_per_class(records: Sequence[RunRecord]) -> bytes:
    """One panel per distinct (classes, training counts): one bar group per class, one bar per run."""
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
    return _png(fig)


def _plot_confusions(records: Sequence[RunRecord]) -> bytes:
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


def _plot_learning_curves(records: Sequence[RunRecord]) -> bytes:
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


_PLOTTERS: dict[str, Callable[[Sequence[RunRecord]], bytes]] = {
    "per_class_accuracy": _plot_per_class,
    "confusion_matrices": _plot_confusions,
    "learning_curves": _plot_learning_curves,
}


def _matplotlib_available() -> bool:
    import importlib

    try:
        importlib.import_module("matplotlib.figure")
    except ImportError:
        return False
    return True


# --- the report ----------------------------------------------------------------------------------


def check_new_files(paths: Iterable[Path], overwrite: bool, name: str = "out_dir", hint: str = "overwrite=True") -> None:
    """Refuses (``FileExistsError``, nothing written) to replace files that exist, unless ``overwrite``; ``name``
    and ``hint`` are the option and the way to allow it, for the message."""
    if overwrite:
        return
    existing = [p for p in paths if p.exists() or p.is_symlink()]
    if existing:
        raise FileExistsError(
            f"{name} must not name existing files (pass {hint} to replace them); got existing "
            + ", ".join(str(p) for p in existing))




def default_report_folder(run_dirs: Sequence[str | os.PathLike[str]]) -> Path:
    """``report`` beside the runs: in the common parent folder of ``run_dirs``."""
    parents = [str(Path(p).expanduser().resolve().parent) for p in run_dirs]
    try:
        return Path(os.path.commonpath(parents)) / "report"
    except ValueError:
        return Path("report")


def report_files(
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    formats: Sequence[str] = FORMATS,
    plots: bool = True,
    warn: Callable[[str], None] | None = None,
    option: tuple[str, str] = ("out_dir", "overwrite=True"),
) -> dict[str, Path]:
    """The files a report in ``out_dir`` will write (see :func:`write_run_report`), checked before any work:
    ``out_dir`` can be a folder, no file exists yet (unless ``overwrite``), the formats are known. ``option``
    names the folder's argument and the way to allow replacing files, for the messages."""
    warn = warn or _stderr_warning
    formats = list(dict.fromkeys(formats))
    if not formats or any(f not in FORMATS for f in formats):
        raise ValueError(f"formats must be one or more of {', '.join(FORMATS)}; got {', '.join(formats) or 'none'}")
    from .checks import check_output_folder

    out = check_output_folder(out_dir, option[0])
    plot_names: list[str] = []
    if plots:
        if _matplotlib_available():
            plot_names = list(PLOTS)
        else:
            warn("matplotlib is not installed: no plots (pip install 'longtail[plot]'); the tables are written")
    files = {key: out / _FILES[key] for key in [*formats, *plot_names]}
    check_new_files(files.values(), overwrite, *option)
    return files


def write_report_files(records: Sequence[RunRecord], files: dict[str, Path]) -> dict[str, Path]:
    """Writes the report of ``records`` (see :func:`load_runs`) to ``files`` (see :func:`report_files`),
    each atomically; returns ``files``."""
    if not records:
        raise ValueError("records must hold at least one complete run; got none")
    rows = report_rows(records)
    plot_names = [name for name in PLOTS if name in files]
    contents: dict[str, bytes] = {name: _PLOTTERS[name](records) for name in plot_names}
    if "md" in files:
        contents["md"] = _markdown_report(records, rows, plot_names).encode("utf-8") + b"\n"
    if "csv" in files:
        contents["csv"] = _csv_text(rows).encode("utf-8")
    return {key: write_bytes(path, contents[key]) for key, path in files.items()}


def write_run_report(
    run_dirs: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    formats: Sequence[str] = FORMATS,
    plots: bool = True,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Writes one report over the complete runs among ``run_dirs`` to ``out_dir``; returns the files written.

    The keys of the returned dict: ``"md"`` (``report.md``) and ``"csv"`` (``report.csv``) as ``formats`` asks,
    and, when ``plots`` and matplotlib is importable, ``"per_class_accuracy"``, ``"confusion_matrices"`` and
    ``"learning_curves"`` (PNG files of those names). Every file is written atomically.

    Folders that hold no complete run (``result.json`` missing, unreadable or not ``"complete"``) are skipped,
    each with one ``warn`` line (default: stderr); so is the lack of matplotlib.

    Raises:
        ValueError: no complete run among ``run_dirs``, or an unknown format.
        FileExistsError: a file of the report exists already in ``out_dir`` and ``overwrite`` is False (checked
            first: nothing is read or written then).
    """
    files = report_files(out_dir, overwrite=overwrite, formats=formats, plots=plots, warn=warn)
    given = [Path(p) for p in run_dirs]
    records = load_runs(given, warn)
    if not records:
        raise ValueError(f"run folders must hold at least one complete run (a result.json with status 'complete'); "
                         f"got none among {len(given)}: {', '.join(map(str, given)) or 'no folders'}")
    return write_report_files(records, files)


# --- evaluate and predict ------------------------------------------------------------------------


def evaluate_run(
    run: str | os.PathLike[str],
    split: str = "test",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    device: Any = "cpu",
) -> dict[str, Any]:
    """The report of a run's model (post-hoc adjustment included) on its ``"test"`` or ``"val"`` split, rebuilt.

    ``run`` is a run folder or its ``checkpoint.pt``. The split is drawn again from the run's configuration
    (dataset, imbalance, subset seed, ``val_per_class``), with ``data_dir`` in place of the run's when given,
    and evaluated as the trainer evaluates: the test split's accuracy equals ``result.json``'s
    ``final.accuracy``. Shot groups are by the run's training counts and its thresholds (as the trainer's
    :func:`~longtail.train.trainer.shot_thresholds`).

    Returns the dict of :meth:`longtail.metrics.ConfusionMeter.report` (accuracy, balanced_accuracy, macro_f1,
    per_class_accuracy, shot_accuracy, shot_thresholds, confusion_matrix, ...) with ``run``, ``split``, ``classes`` and
    ``posthoc`` (the adjustment applied, or None) in front.

    Raises:
        ValueError: a bad split, a run without a validation split for ``"val"``, data that is not the run's.
        FileNotFoundError: no checkpoint at ``run``.
    """
    import torch

    from .checks import check_choice
    from .train.data import prepare_data
    from .train.device import resolve_device
    from .train.inference import checkpoint_path, load_model
    from .train.trainer import evaluate, shot_thresholds

    check_choice("split", split, ("test", "val"))
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    trained = load_model(run, dev)
    config = trained.config
    if data_dir is not None:
        config = dataclasses.replace(config, data_dir=os.fspath(data_dir))
    data = prepare_data(config, dev)
    if data.classes != trained.classes or not torch.allclose(
            torch.tensor(data.mean, dtype=torch.float64), trained.mean.flatten().cpu().double(), atol=1e-5):
        raise ValueError(f"the data must be the run's training data (its classes and normalisation statistics); got "
                         f"data of dataset {config.dataset!r}" + (f" under {data_dir}" if data_dir else "")
                         + " that differs from the checkpoint's")
    part = data.test if split == "test" else data.val
    if part is None:
        raise ValueError(f"split must be 'test' for a run without a validation split (val_per_class "
                         f"{config.val_per_class}); got 'val'")
    meter = evaluate(trained.model, part, len(trained.classes), config)
    report = meter.report(train_counts=data.counts, **shot_thresholds(config, data.counts))
    return {"run": str(checkpoint_path(run).parent), "split": split, "classes": list(trained.classes),
            "posthoc": trained.posthoc, **report}


def read_images(path: str | os.PathLike[str]) -> Any:
    """Images from a file: ``.npy`` (numpy, no pickles), ``.pt`` / ``.pth`` (a tensor saved with ``torch.save``,
    loaded with ``weights_only=True``) or, any other name, an IDX file (plain or gzipped). Returns a CPU tensor;
    its shape and dtype are checked by :meth:`longtail.train.TrainedModel.preprocess`."""
    import numpy as np
    import torch

    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FileNotFoundError(f"images must be a file (.npy, .pt or IDX); got {str(path)!r}, "
                                + ("a folder" if path.is_dir() else "which does not exist"))
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"images must be a .npy file of numbers; got {path}: {str(exc).splitlines()[0]}") from None
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
            kind = getattr(array, "dtype", type(array).__name__)
            raise TypeError(f"images must be uint8 pixels or floats in [0, 1]; got dtype {kind} in {path}")
        return torch.from_numpy(np.ascontiguousarray(array))
    if suffix in (".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except OSError:
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"images must be a tensor saved with torch.save; got {path}: {first}") from None
        if not isinstance(obj, torch.Tensor):
            raise TypeError(f"images must be a tensor saved with torch.save; got a {type(obj).__name__} in {path}")
        return obj
    from .data.idx import read_idx

    return read_idx(path)


def _check_float_range(images: Any) -> None:
    import torch

    x = torch.as_tensor(images)
    if x.is_floating_point() and x.numel():
        low, high = float(x.min()), float(x.max())
        if not (0.0 <= low and high <= 1.0):  # NaN fails both
            raise ValueError(f"images must be uint8 pixels or floats in [0, 1]; got floats in [{low:g}, {high:g}]")


def predict_rows(trained: Any, images: Any, batch_size: int = 1024) -> list[tuple[int, int, str, float]]:
    """``(index, class_index, class_name, probability)`` per image: the predicted class (as
    :meth:`~longtail.train.TrainedModel.predict`) and its softmax probability."""
    _check_float_range(images)
    logits = trained.logits(images, batch_size)
    predicted = logits.argmax(1)
    probability = logits.softmax(1).gather(1, predicted[:, None])[:, 0]
    return [(i, c, trained.classes[c], p) for i, (c, p) in enumerate(zip(predicted.tolist(), probability.tolist()))]


def predictions_csv(rows: Iterable[tuple[int, int, str, float]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "class_index", "class_name", "probability"])
    writer.writerows((i, c, name, f"{p:.6f}") for i, c, name, p in rows)
    return buffer.getvalue()
