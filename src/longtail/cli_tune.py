"""The ``longtail tune-beta`` command: choose the class-balanced loss, beta and gamma from one CE training.

:func:`add_tune_command` adds it to the parser of :mod:`longtail.cli`, which passes in its own helpers for the
training options (this module imports nothing from :mod:`longtail.cli`, so there is no import cycle);
:data:`TUNE_COMMANDS` maps it to its handler. The work is :func:`longtail.tune_beta`'s; this module parses and
prints. Bad values raise ``ValueError`` / ``TypeError`` / ``OSError``, which ``longtail.cli.main`` prints as one
line, exit status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cli_runs import _positive_int  # the argparse type of both command modules

#: Validation images per class when neither an option, a preset nor a config file sets val_per_class (the CDB
#: CIFAR protocol's 25): the candidates are chosen on that split.
DEFAULT_VAL_PER_CLASS = 25


def add_tune_command(
    commands: Any,
    add_config_arguments: Callable[[argparse.ArgumentParser, dict[str, Any] | None], None],
    config_from: Callable[[argparse.Namespace], Any],
    train_defaults: dict[str, Any] | None = None,
) -> None:
    """Adds ``tune-beta`` to ``commands`` (the subparsers of ``longtail``): the train command's configuration
    options (``add_config_arguments``, with ``train_defaults`` from ``--preset`` / ``--config``), turned into a
    configuration by ``config_from``, plus the tuning's own options."""
    from .head_refit import HeadSettings

    tune = commands.add_parser(
        "tune-beta",
        help="choose the class-balanced loss, beta and gamma on validation from one CE run (beyond the paper)",
        description="An extension beyond the paper, whose beta needs manual tuning per dataset: trains the "
        "configuration once with cross-entropy, freezes the backbone, caches the training / validation / test "
        "features (eval mode, no augmentation) and refits only the linear classifier for every candidate of the "
        "paper's grid (softmax, sigmoid, focal x beta 0.9, 0.99, 0.999, 0.9999 x focal gamma 0.5, 1, 2) (with "
        "--per-class-beta, also for per-class betas from covering numbers of the features); chooses by validation "
        "balanced accuracy (ties: the lower temperature-calibrated balanced validation NLL, then the earlier "
        "candidate). Prints the table, the "
        "choice and the cost beside a full-training grid's estimate, and writes tune_beta.json to --out (the CE run "
        "in <out>/ce, reused by a rerun).",
    )
    tune.add_argument("--preset", default=None, help="start from a named recipe (as train); explicit options "
                      "override it")
    tune.add_argument("--config", default=None, metavar="FILE", help="a TOML (or YAML) file of configuration fields "
                      "(as train); explicit options override it")
    defaults = {"val_per_class": DEFAULT_VAL_PER_CLASS, **(train_defaults or {})}
    add_config_arguments(tune, defaults)
    tune.add_argument("--out", type=Path, default=None, help="output folder for tune_beta.json and the CE run "
                      "(<out>/ce) (default: runs/<dataset>-tune_beta-rho<imbalance>-seed<seed>)")
    tune.add_argument("--overwrite", action="store_true", help="replace the tune_beta.json that --out holds (without "
                      "it, one is refused); a finished CE run of the same configuration in <out>/ce is reused either "
                      "way (remove the folder to retrain it)")
    tune.add_argument("--head-epochs", type=_positive_int, default=HeadSettings.epochs, metavar="N",
                      help=f"epochs of every classifier refit on the cached features (default: {HeadSettings.epochs})")
    tune.add_argument("--per-class-beta", action=argparse.BooleanOptionalAction, default=False,
                      help="also try per-class betas from covering numbers of the features (default: no; on the "
                      "Fashion-MNIST-LT benchmark they did not beat the best single beta, docs/beta_from_data.md)")
    tune.add_argument("--quiet", action="store_true", help="no progress bars: one line per epoch, for logs")
    tune.set_defaults(tune_config_from=config_from)


def _default_out(config: Any) -> Path:
    return Path("runs") / f"{config.dataset}-tune_beta-rho{config.imbalance:g}-seed{config.seed}"


def _cmd_tune_beta(args: argparse.Namespace) -> int:
    from .checks import check_output_folder
    from .tune import RESULT_FILE, tune_beta

    config = args.tune_config_from(args)
    out = args.out if args.out is not None else _default_out(config)
    check_output_folder(out, "--out")
    if (out / RESULT_FILE).exists() and not args.overwrite:  # before any work (tune_beta checks it too)
        raise FileExistsError(f"--out must not hold {RESULT_FILE} already (pass --overwrite to replace it); got "
                              f"{str(out)!r}, which does")
    result = tune_beta(config, head_epochs=args.head_epochs, out_dir=out, overwrite=args.overwrite,
                       per_class_beta=args.per_class_beta, verbose=1 if args.quiet else 2)
    print(result.table())
    print()
    print(result.summary())
    if result.per_class_beta is not None:
        info = result.per_class_beta
        index = info["radii"].index(info["best_radius"])
        print(f"per-class beta from covering numbers: best radius {info['best_radius']:.4g}, N_c = "
              f"{info['prototypes'][index]}")
    print(f"wrote {out / RESULT_FILE}")
    return 0


#: The handler of the command :func:`add_tune_command` adds, by name.
TUNE_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"tune-beta": _cmd_tune_beta}

__all__ = ["DEFAULT_VAL_PER_CLASS", "TUNE_COMMANDS", "add_tune_command"]
