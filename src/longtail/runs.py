"""Runs you can compare: one report over many run folders, and the way back to a run's model.

- :func:`write_run_report` reads the ``result.json`` of each run folder (:func:`load_runs`) and writes one table
  over them (``report.md``, ``report.csv``) and, when matplotlib is importable, the plots of
  :mod:`longtail.run_plots`: per-class accuracy from head to tail, each run's confusion matrix and the learning
  curves (``longtail report``).
- :func:`evaluate_run`, :func:`read_images` and :func:`predict_rows` (``longtail evaluate`` and
  ``longtail predict``) live in :mod:`longtail.predict` and are importable from here.

To load a model for your own code, see :func:`longtail.train.load_model` and ``docs/using_runs.md``.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .io import write_bytes
from .predict import evaluate_run, predict_rows, predictions_csv, read_images
from .run_plots import PLOTTERS
from .run_plots import matplotlib_available as _matplotlib_available  # by this name: tests turn it off

__all__ = [
    "FORMATS",
    "PLOTS",
    "REPORT_COLUMNS",
    "RunRecord",
    "check_new_files",
    "default_report_folder",
    "evaluate_run",
    "format_metric",
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


def format_metric(value: float | None, *, percent: bool = False) -> str:
    """A metric as the tables print it: ``-`` for a missing value (None), else a fraction with 4 decimals or, with
    ``percent``, a percentage with 1.

    >>> format_metric(0.93124), format_metric(0.93124, percent=True), format_metric(None)
    ('0.9312', '93.1', '-')
    """
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if percent else f"{value:.4f}"


def _md_cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value).replace("|", "\\|")
    if key == "wall_seconds":
        return f"{value:.1f}"
    if key in ("imbalance", "posthoc_tau", "seed", "epochs"):
        return f"{value:g}"
    return format_metric(value)


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
    contents: dict[str, bytes] = {name: PLOTTERS[name](records) for name in plot_names}
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
