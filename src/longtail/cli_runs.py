"""The ``longtail`` commands that use finished runs: ``report``, ``evaluate`` and ``predict``.

:func:`add_run_commands` adds them to the parser of :mod:`longtail.cli`; :data:`RUN_COMMANDS` maps each to its
handler. The work is done by :mod:`longtail.runs`; this module only parses and prints. Bad values raise
``ValueError`` / ``TypeError`` / ``OSError``, which ``longtail.cli.main``
prints as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    return value


def _formats(text: str) -> list[str]:
    from .runs import FORMATS

    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names or any(n not in FORMATS for n in names):
        raise argparse.ArgumentTypeError(f"must be one or more of {','.join(FORMATS)}, comma-separated; got {text!r}")
    return names


def add_run_commands(commands: Any, field_option: Callable[..., None]) -> None:
    """Adds ``report``, ``evaluate`` and ``predict`` to ``commands`` (the subparsers of ``longtail``);
    ``field_option(parser, name, prefix=...)`` adds the option of a training configuration field as ``longtail train``
    declares it (``--data-dir``, ``--device``: one default and one help each)."""
    report = commands.add_parser(
        "report",
        help="compare runs: one table (Markdown, CSV) and plots over run folders",
        description="One table over the run folders (a row per complete run: configuration, test accuracy, "
        "balanced accuracy, macro F1, many/medium/few-shot accuracy, validation score, wall time), written as "
        "report.md and report.csv and printed as Markdown; with matplotlib, plots of per-class accuracy from head "
        "to tail, each run's confusion matrix and the learning curves. Folders without a complete run are skipped "
        "with a warning.",
    )
    report.add_argument("runs", nargs="+", metavar="RUN_DIR", type=Path, help="run folders (a result.json each)")
    report.add_argument("--out", type=Path, default=None,
                        help="folder for the report (default: report/ in the runs' common parent folder)")
    report.add_argument("--overwrite", action="store_true", help="replace report files that --out holds already")
    report.add_argument("--format", type=_formats, default=["md", "csv"], metavar="md,csv",
                        help="the tables to write, comma-separated (default: md,csv)")
    report.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                        help="write the plots when matplotlib is installed (default: yes)")

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a run's model again on its test or validation split",
        description="Loads the run's checkpoint, rebuilds its data split from its configuration and reports the "
        "model on it, post-hoc adjustment included (on the test split: the accuracy of result.json). Shot groups "
        "by the run's training counts and its many/few thresholds.",
    )
    evaluate.add_argument("run", metavar="RUN_DIR", type=Path, help="a run folder, or its checkpoint.pt")
    evaluate.add_argument("--split", choices=("test", "val"), default="test", help="default: test")
    field_option(evaluate, "data_dir", prefix="in place of the run's: ")
    field_option(evaluate, "device")
    evaluate.add_argument("--json", type=Path, default=None, metavar="FILE",
                          help="write the full report (per class, confusion matrix) to FILE as JSON")
    evaluate.add_argument("--overwrite", action="store_true", help="replace --json's file if it exists")

    predict = commands.add_parser(
        "predict",
        help="predict the classes of images (or a table's rows) with a run's model",
        description="Predicts the class of every image of --images with the run's model (post-hoc adjustment "
        "included) and writes CSV: index, class_index, class_name, probability (the softmax of the predicted "
        "class). Images: uint8 pixels or floats in [0, 1], shaped (N, H, W) or (N, C, H, W), in a .npy file, a "
        ".pt file (a tensor saved with torch.save) or an IDX file (gzipped or not); or a folder of image files "
        "(any depth) or one image file, decoded as --dataset folder decodes them (the CSV then names each file). "
        "A run trained on --dataset table takes --table FILE.csv instead (its feature columns; the target may be "
        "absent).",
    )
    predict.add_argument("run", metavar="RUN_DIR", type=Path, help="a run folder, or its checkpoint.pt")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, metavar="PATH",
                        help=".npy, .pt or IDX file, or a folder of image files, or one image file")
    source.add_argument("--table", type=Path, metavar="FILE.csv", help="a table, for a run trained on a table")
    predict.add_argument("--out", type=Path, default=None, metavar="FILE.csv", help="CSV file (default: stdout)")
    predict.add_argument("--overwrite", action="store_true", help="replace --out's file if it exists")
    predict.add_argument("--batch-size", type=_positive_int, default=1024, metavar="N", help="default: 1024")
    field_option(predict, "device")


def _warn(command: str) -> Callable[[str], None]:
    return lambda message: sys.stderr.write(f"longtail {command}: warning: {message}\n")


def _cmd_report(args: argparse.Namespace) -> int:
    from .runs import default_report_folder, load_runs, markdown_table, report_files, report_rows, write_report_files

    out = args.out if args.out is not None else default_report_folder(args.runs)
    files = report_files(out, overwrite=args.overwrite, formats=args.format, plots=args.plots, warn=_warn("report"),
                         option=("--out", "--overwrite"))  # before any work
    records = load_runs(args.runs, warn=_warn("report"))
    if not records:
        raise ValueError(f"RUN_DIR must name at least one folder with a complete run (a result.json with status "
                       f"'complete'); got none among the {len(args.runs)} given")
    written = write_report_files(records, files)
    print(markdown_table(report_rows(records)))
    print()
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .io import write_json
    from .runs import check_new_files, evaluate_run
    from .runs import format_metric as _fmt

    if args.json is not None:
        check_new_files([args.json], args.overwrite, "--json", "--overwrite")  # before the work
    report = evaluate_run(args.run, args.split, data_dir=args.data_dir, device=args.device)
    posthoc = report["posthoc"]
    adjusted = f", post-hoc {posthoc['method']} (tau {posthoc['tau']:g})" if posthoc else ""
    print(f"{report['run']}: {args.split} split, {report['num_samples']} images{adjusted}")
    print(f"  accuracy {_fmt(report['accuracy'])}  balanced accuracy {_fmt(report['balanced_accuracy'])}  "
          f"macro F1 {_fmt(report['macro_f1'])}")
    shots, sizes, limits = report["shot_accuracy"], report["shot_num_classes"], report["shot_thresholds"]
    ranges = {"many": f">{limits['many']:g}", "medium": f"{limits['few']:g}..{limits['many']:g}",
              "few": f"<{limits['few']:g}"}
    print("  " + "  ".join(f"{g} {_fmt(shots[g])} ({sizes[g]} classes, {ranges[g]} train images)"
                           for g in ("many", "medium", "few")))
    if args.json is not None:
        print(f"  report: {write_json(args.json, report)}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .io import write_text
    from .predict import read_inputs
    from .runs import check_new_files, predict_rows, predictions_csv
    from .train.device import resolve_device
    from .train.inference import load_model

    if args.out is not None:
        if args.out.is_dir():
            raise ValueError(f"--out must be a file name; got {str(args.out)!r}, a folder")
        check_new_files([args.out], args.overwrite, "--out", "--overwrite")
    trained = load_model(args.run, resolve_device(args.device))
    inputs, names = read_inputs(trained, images=args.images, table=args.table)
    text = predictions_csv(predict_rows(trained, inputs, args.batch_size, names))
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_text(args.out, text)
        print(f"{args.out}: {text.count(chr(10)) - 1} predictions")
    return 0


#: The handlers of the commands :func:`add_run_commands` adds, by name.
RUN_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "report": _cmd_report,
    "evaluate": _cmd_evaluate,
    "predict": _cmd_predict,
}

__all__ = ["RUN_COMMANDS", "add_run_commands"]
