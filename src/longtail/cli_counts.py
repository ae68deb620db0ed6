"""The ``longtail counts`` command, and the table of class-balanced weights that it and ``longtail weights`` print.

``longtail counts --dataset {folder,table,arrays} --data-dir PATH`` counts a dataset on disk without decoding it
(:mod:`longtail.data.counting`); ``--dataset NAME`` of a registered dataset counts its training labels as they are
on disk. :func:`add_counts_command` adds the command to the parser of :mod:`longtail.cli` (this module imports
nothing from it, so there is no import cycle); :data:`COUNTS_COMMANDS` maps it to its handler;
:func:`print_weights_table` is the one printing of the weights table. Bad values raise ``ValueError`` /
``TypeError`` / ``OSError``, which ``longtail.cli.main`` prints as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

#: The ``--dataset`` values counted from files (the others are registered datasets).
FILE_SOURCES = ("folder", "table", "arrays")
DEFAULT_BETAS = [0.9, 0.99, 0.999, 0.9999]


def print_weights_table(counts: Any, betas: Sequence[float], *, zero_counts: str, command: str,
                        names: Sequence[str] | None = None, order: Sequence[int] | None = None,
                        columns: Mapping[str, Sequence[int]] | None = None) -> None:
    """Prints one row per class (``order``: the row order, default the class order): its name (``names``, default
    its index), count, the ``columns`` beside the count (e.g. other splits' counts), its class-balanced weight at
    each of ``betas`` and its effective number at the largest; then, on stderr, a line for each beta outside
    :func:`longtail.weights.beta_range` whose weights are nearly uniform or nearly inverse frequency."""
    import torch

    from .weights import BetaRangeWarning, beta_range, beta_range_message, beta_regime, class_balanced_weights
    from .weights import effective_number

    if not betas:  # --beta "" parses to an empty list
        raise ValueError("beta must be one or more comma-separated numbers in [0, 1]; got an empty list")
    counts = torch.as_tensor(counts, dtype=torch.float64)
    try:
        with warnings.catch_warnings():  # said once per beta below, as a line of its own
            warnings.simplefilter("ignore", BetaRangeWarning)
            table = [class_balanced_weights(counts, b, zero_counts=zero_counts, dtype=torch.float64) for b in betas]
    except ValueError as exc:
        # The library's hint names its keyword argument; on the command line it is an option.
        raise ValueError(str(exc).replace("pass zero_counts='ignore'", "pass --zero-counts ignore")) from None
    labels = [str(c) for c in range(len(counts))] if names is None else list(names)
    width = max([5, *map(len, labels)])
    columns = dict(columns or {})
    print("class-balanced weights (sum to C); effective number E(n) at the largest beta in the last column")
    print(f"{'class':>{width}} {'count':>8}" + "".join(f" {name:>8}" for name in columns)
          + "".join(f" {'w(' + format(b, 'g') + ')':>11}" for b in betas) + f" {'E(n)':>10}")
    effective = effective_number(counts, max(betas))
    for c in order if order is not None else range(len(counts)):
        row = f"{labels[c]:>{width}} {counts[c].item():>8g}" + "".join(f" {v[c]:>8g}" for v in columns.values())
        print(row + "".join(f" {w[c].item():>11.4f}" for w in table) + f" {effective[c].item():>10.1f}")
    # Beyond the paper: a line (on stderr, after the table) for each beta outside the range where the weights
    # interpolate between uniform and inverse frequency; 0 and 1 are deliberate.
    low, high = beta_range(counts)
    for b in betas:
        outside = 0.0 < b < 1.0 and not low <= b <= high
        if outside and beta_regime(counts, b, zero_counts=zero_counts) != "balanced":
            message = beta_range_message(counts, b, zero_counts=zero_counts)
            sys.stderr.write(f"longtail {command}: beta {b:g} is outside the range: {message}\n")


def add_counts_command(commands: Any, float_list: Callable[[str], list[float]]) -> None:
    """Adds ``counts`` to ``commands`` (the subparsers of ``longtail``); ``float_list`` parses ``--beta`` as
    ``longtail weights`` does."""
    from .data.counting import IMAGE_EXTENSIONS
    from .data.registry import DATASETS

    registered = ", ".join(name for name in DATASETS if name not in FILE_SOURCES)
    counts = commands.add_parser(
        "counts",
        help="print the per-class counts of a dataset, without training or decoding it, with the class-balanced "
        "weights they give",
        description="Print the count of each class (largest first) and the imbalance ratio, the class-balanced "
        "weights the counts give and the beta range where those weights interpolate between uniform and inverse "
        "frequency. An image folder is counted from its file names (extensions " + " ".join(IMAGE_EXTENSIONS)
        + "), a table from its label column, a .npz from its label arrays: nothing is decoded.",
    )
    counts.add_argument("--dataset", required=True, help="folder (an image folder: one folder per class, or "
                        "train/ val/ test/ folders of class folders), table (a .csv, .tsv or .parquet file; with "
                        "--target), arrays (a .npz with y, optional y_test and classes), or a registered dataset, "
                        "counted from its training labels as they are on disk: " + registered)
    counts.add_argument("--data-dir", default=None, metavar="PATH", help="the folder or file to count (with a "
                        "registered dataset: where its files are, as for train)")
    counts.add_argument("--target", default=None, metavar="COLUMN", help="the label column of a table")
    counts.add_argument("--beta", type=float_list, default=DEFAULT_BETAS, help="betas of the weights shown, "
                        "comma-separated (default: " + ",".join(map(str, DEFAULT_BETAS)) + ")")
    counts.add_argument("--zero-counts", choices=("error", "ignore"), default="error",
                        help="a class with count 0: 'error' refuses it, 'ignore' gives it weight 0 (default: error)")


def _count(args: argparse.Namespace) -> Any:
    from .data.counting import ClassCounts, folder_counts, npz_counts, table_counts

    if args.dataset in FILE_SOURCES:
        if args.data_dir is None:
            raise ValueError(f"--data-dir PATH is needed with --dataset {args.dataset} (the "
                             + {"folder": "image folder", "table": "table file", "arrays": ".npz file"}[args.dataset]
                             + " to count)")
        if args.dataset == "folder":
            return folder_counts(args.data_dir)
        if args.dataset == "table":
            try:
                return table_counts(args.data_dir, args.target)
            except ValueError as exc:  # the library's argument is an option here
                raise ValueError(str(exc).replace("(target)", "(--target COLUMN)")) from None
        return npz_counts(args.data_dir)
    import torch

    from .data.registry import DATASETS, load_dataset

    if args.dataset not in DATASETS:
        raise ValueError(f"--dataset must be one of {', '.join(FILE_SOURCES)} (files) or a registered dataset ("
                         + ", ".join(name for name in DATASETS if name not in FILE_SOURCES) + f"); got {args.dataset!r}")
    data = load_dataset(args.dataset, args.data_dir, train=True)
    counts = tuple(torch.bincount(data.labels, minlength=len(data.classes)).tolist())
    return ClassCounts(tuple(data.classes), counts, f"dataset {args.dataset!r} (its training labels as they are "
                       "on disk; longtail weights --dataset draws its long tail)", {"train": counts})


def _cmd_counts(args: argparse.Namespace) -> int:
    from .weights import beta_range

    found = _count(args)
    total = sum(found.counts)
    print(f"{found.source}: {len(found.classes)} classes, {total} samples"
          + (" in the training split" if len(found.splits) > 1 else "")
          + f"; imbalance ratio {found.imbalance_ratio:.4g} (largest / smallest count)")
    for note in found.notes:
        print(note)
    order = sorted(range(len(found.classes)), key=lambda k: (-found.counts[k], k))  # largest first; ties by index
    others = {split: values for split, values in found.splits.items() if split != "train"}
    print_weights_table(found.counts, args.beta, zero_counts=args.zero_counts, command="counts",
                        names=found.classes, order=order, columns=others)
    present = [n for n in found.counts if n > 0]
    low, high = beta_range(found.counts)
    digits = max(3, int(math.log10(max(present))) + 2)
    print(f"beta range [{low:.{digits}g}, {high:.{digits}g}]: 1/(1 - beta) between the smallest and the largest count "
          f"({min(present)} and {max(present)}); below it the weights are nearly uniform, above it nearly inverse "
          "frequency (longtail.beta_range)")
    return 0


COUNTS_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"counts": _cmd_counts}

__all__ = ["COUNTS_COMMANDS", "FILE_SOURCES", "add_counts_command", "print_weights_table"]
