"""The ``longtail`` command: ``train``, ``weights`` and ``demo`` (the others: ``cli_runs``, ``cli_tune``,
``cli_counts``)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``longtail <command>: error: ...``, exit 2), like every other error."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class CliError(Exception):
    """A bad argument: reported as one line, exit status 2."""


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> ``int``; other annotations unchanged."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return args[0] if len(args) == 1 else annotation
    return annotation


class _DeclaredImbalance(float):
    """The declared default of ``--imbalance``, told apart from the same value given: a dataset that is used as it is
    (``DatasetSpec.draw_long_tail=False``) then trains at 1, its own tail; one given draws a tail from it."""


class _DeclaredAugment:
    """The declared default of ``--augment`` (on), told apart from ``--augment`` given: a dataset whose inputs are
    not images (``DatasetSpec.augmentable=False``, a table) then trains without augmentation; one given is refused."""

    def __repr__(self) -> str:
        return "True"


_DECLARED_AUGMENT = _DeclaredAugment()


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers; got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers; got {text!r}") from None


@functools.cache
def _config_types() -> dict[str, Any]:
    """TrainConfig's field types (its annotations are strings, PEP 563: resolved once)."""
    from .train.config import TrainConfig

    return typing.get_type_hints(TrainConfig)


def _field_option(parser: argparse.ArgumentParser, name: str, default: Any = dataclasses.MISSING,
                  prefix: str = "") -> None:
    """``--<name>`` for the TrainConfig field ``name``: the help, type, choices and default declared beside the field
    (``default`` replaces the declared one where a preset or a config file gives another; ``prefix`` starts the help
    where a command uses the field for one purpose, e.g. ``"with --dataset: "``)."""
    from .train.config import TrainConfig

    f = next(f for f in dataclasses.fields(TrainConfig) if f.name == name)
    if default is dataclasses.MISSING:
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        default = _DeclaredImbalance(default) if name == "imbalance" else default
        default = _DECLARED_AUGMENT if name == "augment" and default is True else default
    flag = "--" + f.name.replace("_", "-")
    kind = _base_type(_config_types()[f.name])
    help_text = prefix + f.metadata["help"]
    if f.metadata["choices"] is not None:
        help_text += ": " + ", ".join(f.metadata["choices"]())
    if kind is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        return
    if f.name == "milestones":
        kind = _int_list
    elif f.name == "class_betas":
        kind = _float_list
    elif kind not in (int, float, str):  # a union such as CDB's tau (number or "dynamic"): the field parses it
        kind = str
    # A field whose help says what its default means ("default: all it has") shows no "(default: None)" too.
    shown = "" if default is None or "default" in help_text else f" (default: {default})"
    parser.add_argument(flag, type=kind, default=default, help=help_text + shown)


def _add_config_arguments(parser: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """One option per TrainConfig field (:func:`_field_option`), ``defaults`` (a preset's, a config file's) over the
    declared ones."""
    from .train.config import TrainConfig

    for f in dataclasses.fields(TrainConfig):
        _field_option(parser, f.name, (defaults or {}).get(f.name, dataclasses.MISSING))
    # Removed in 0.2 (one meaning per field): refused by TrainConfig with a message that names the new flags.
    parser.add_argument("--tau", default=None, help=argparse.SUPPRESS)


def _config_from(args: argparse.Namespace) -> Any:
    from .train.config import TrainConfig

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    from .data.registry import DATASETS

    spec = DATASETS.get(values["dataset"])
    if isinstance(values["imbalance"], _DeclaredImbalance):  # no --imbalance (nor a preset's, a config file's)
        # A dataset of yours (folder, arrays, table): its natural tail, at 1.
        values["imbalance"] = 1.0 if spec is not None and not spec.draw_long_tail else float(values["imbalance"])
    if values["augment"] is _DECLARED_AUGMENT:  # no --augment / --no-augment: images are augmented, tables are not
        values["augment"] = spec is None or spec.augmentable
    try:
        return TrainConfig(**values, tau=args.tau)
    except (TypeError, ValueError) as exc:
        raise CliError(str(exc)) from None


def _default_out(config: Any) -> Path:
    """``runs/<dataset>[-<stage>]-<loss>[-<field><value> for the fields the loss reads][-<sampler>][-<posthoc>]
    -rho<imbalance>-seed<seed>``, the stage, sampler and post-hoc parts only where they are not the defaults."""
    from .train.losses import loss_spec

    def part(name: str) -> str:
        value = getattr(config, name)
        if value is None:  # an unset optional field (class_betas): nothing
            return ""
        if isinstance(value, list):  # per-class values: named, not spelled out
            return f"-{name}"
        return f"-{name}{value}" if isinstance(value, str) else f"-{name}{value:g}"

    fields = "".join(part(name) for name in loss_spec(config.loss).reads)
    from .train.stages import stage_spec

    stage = "" if config.stage == "joint" else f"-{config.stage}"
    sampler = "" if config.sampler == stage_spec(config.stage).sampler else f"-{config.sampler}"
    posthoc = "" if config.posthoc == "none" else f"-{config.posthoc}"
    return Path("runs") / (f"{config.dataset}{stage}-{config.loss}{fields}{sampler}{posthoc}-rho{config.imbalance:g}"
                           f"-seed{config.seed}")


def _preset_names() -> list[str]:
    from .train.presets import PRESETS

    return list(PRESETS)


def _registry_lists() -> str:
    """The epilog of ``longtail train --help``: every registry's names with their one-line summaries (a plugin's
    included: plugins are loaded before the parser is built)."""
    from .data.registry import DATASETS
    from .models.registry import MODELS
    from .train.losses import LOSSES
    from .train.posthoc import POSTHOC
    from .train.samplers import SAMPLERS
    from .train.stages import STAGES

    sections = [("datasets (--dataset)", DATASETS), ("models (--model)", MODELS), ("losses (--loss)", LOSSES),
                ("stages (--stage)", STAGES), ("samplers (--sampler)", SAMPLERS),
                ("post-hoc adjustments (--posthoc)", POSTHOC)]
    return "\n\n".join(title + ":\n" + "\n".join(f"  {name:<18} {spec.describe()}" for name, spec in registry.items())
                       for title, registry in sections)


def _dataset_names() -> str:
    from .data.registry import DATASETS

    return ", ".join(DATASETS)


def build_parser(train_defaults: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="longtail", description="Train and evaluate classifiers on long-tailed data.")
    parser.add_argument("--version", action="version", version=f"longtail {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    train = commands.add_parser(
        "train",
        help="train a model on a long-tailed dataset with one of the losses",
        description="Train a model on a long-tailed dataset; writes result.json and checkpoint.pt to --out.",
        epilog=_registry_lists(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--preset", default=None, help="start from a named recipe: " + ", ".join(_preset_names())
                       + " (explicit options override it)")
    train.add_argument("--config", default=None, metavar="FILE", help="a TOML (or YAML, with PyYAML) file of "
                       "configuration fields, e.g. a run's config.toml; explicit options override it, and it overrides "
                       "--preset")
    _add_config_arguments(train, train_defaults)
    train.add_argument("--out", type=Path, default=None, help="output folder (default: runs/<dataset>-<loss>-<the loss's "
                       "fields>-rho<imbalance>-seed<seed>); one run at a time: a run locks it (its file .lock), and a "
                       "second run on it stops at once")
    again = train.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint "
                       "(a finished run: its result, rebuilt from the checkpoint if result.json is damaged)")
    again.add_argument("--overwrite", action="store_true", help="replace the run that --out holds (without --resume "
                       "or --overwrite, a folder that holds a run is refused)")
    train.add_argument("--quiet", action="store_true", help="no progress bars: one line per epoch, for logs")

    weights = commands.add_parser(
        "weights",
        help="print class-balanced or CDB weights",
        description="Print class-balanced weights for given counts (or a long-tailed dataset), or CDB weights "
        "for given per-class accuracies.",
    )
    source = weights.add_mutually_exclusive_group(required=True)
    source.add_argument("--counts", type=_float_list, help="per-class training counts, comma-separated")
    source.add_argument("--dataset", help="a long-tailed dataset to count: " + _dataset_names())
    source.add_argument("--accuracy", type=_float_list, help="per-class validation accuracies (CDB weights)")
    weights.add_argument("--beta", type=_float_list, default=[0.9, 0.99, 0.999, 0.9999], help="betas, comma-separated")
    weights.add_argument("--zero-counts", choices=("error", "ignore"), default="error",
                         help="a class with count 0: 'error' refuses it, 'ignore' gives it weight 0 (default: error)")
    weights.add_argument("--tau", default="dynamic", help="CDB tau with --accuracy: a positive number or 'dynamic' "
                         "(the paper's; default: dynamic)")
    for name in ("imbalance", "profile", "n_max", "data_dir"):
        _field_option(weights, name, prefix="with --dataset: ")

    demo = commands.add_parser(
        "demo",
        help="train CE and the class-balanced loss on Fashion-MNIST-LT and compare them",
        description="Trains softmax cross-entropy and the class-balanced softmax loss on Fashion-MNIST-LT, prints "
        "a side-by-side table (overall, many/medium/few-shot, per class) and writes a per-class plot.",
    )
    for name in ("dataset", "n_max", "imbalance", "seed", "data_dir", "download", "device"):
        _field_option(demo, name)
    demo.add_argument("--epochs", type=int, default=20, help="training epochs of each of the two runs, on the fmnist-lt "
                      "preset's recipe otherwise (default: 20, a quarter of the preset's)")
    demo.add_argument("--beta", type=float, default=0.9999, help="beta of the class-balanced run (default: 0.9999)")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"),
                      help="parent folder: each configuration gets its own subfolder, which a rerun of the same "
                      "configuration reuses (default: runs/demo)")
    demo.add_argument("--overwrite", action="store_true", help="train again even where this configuration's runs "
                      "are already there")
    _field_option(demo, "many_threshold")
    _field_option(demo, "few_threshold")
    demo.add_argument("--quiet", action="store_true", help="one line per epoch, no progress bars")
    from .cli_runs import add_run_commands

    add_run_commands(commands, _field_option)  # report, evaluate, predict
    from .cli_tune import add_tune_command

    add_tune_command(commands, _add_config_arguments, _config_from, train_defaults)  # tune-beta
    from .cli_counts import add_counts_command

    add_counts_command(commands, _float_list)  # counts
    from .plugins import PLUGIN_ENV, PLUGIN_GROUP

    for command in commands.choices.values():  # read before the parser is built (_load_plugins); here for --help
        command.add_argument("--plugin", action="append", default=[], metavar="FILE_OR_MODULE",
                             help=f"import this .py file or module first (repeatable; also ${PLUGIN_ENV}, "
                             f"{os.pathsep}-separated, and the entry points of group {PLUGIN_GROUP!r}): its "
                             "register_loss / register_dataset / register_model calls add to the lists here")
    return parser


def _cmd_train(args: argparse.Namespace) -> int:
    from .checks import check_output_folder
    from .train import train

    config = _config_from(args)
    out = args.out or _default_out(config)
    try:
        check_output_folder(out, "--out")  # before any work (train checks it too, as out_dir)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    result = train(config, out, resume=args.resume, overwrite=args.overwrite, verbose=1 if args.quiet else 2)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary (rank 0's)
        final = result["final"]
        print(f"{out}: accuracy {final['accuracy']:.4f}, balanced accuracy {final['balanced_accuracy']:.4f}, "
              f"train {result['train_seconds']:.1f}s; result in {out / 'result.json'}")
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    import torch

    if args.accuracy is not None:
        from .weights import cdb_weights, dynamic_tau
        from .checks import DYNAMIC, check_tau

        accuracy = torch.tensor(args.accuracy, dtype=torch.float64)
        tau = check_tau(args.tau)
        weights = cdb_weights(accuracy, tau=tau)
        print(f"CDB weights, tau = {dynamic_tau(accuracy) if tau == DYNAMIC else tau:.4f}"
              + (" (dynamic)" if tau == DYNAMIC else ""))
        print(f"{'class':>5} {'accuracy':>9} {'weight':>9}")
        for c, (a, w) in enumerate(zip(accuracy.tolist(), weights.tolist())):
            print(f"{c:>5} {a:>9.4f} {w:>9.4f}")
        return 0
    if args.counts is not None:
        counts = torch.tensor(args.counts, dtype=torch.float64)
    else:
        from .data.registry import load_dataset, training_split

        labels = load_dataset(args.dataset, args.data_dir, train=True).labels
        counts = training_split(args.dataset, labels, args.imbalance, args.profile, n_max=args.n_max).counts.double()
    from .cli_counts import print_weights_table  # the table that longtail counts prints too

    print_weights_table(counts, args.beta, zero_counts=args.zero_counts, command="weights")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


def _load_plugins(argv: Sequence[str] | None) -> None:
    """Imports the plugins (:func:`longtail.plugins.load_plugins`: installed ones, ``$LONGTAIL_PLUGINS``, then every
    ``--plugin`` of ``argv``) before the parser is built, so their names are in ``--help`` and accepted."""
    from .plugins import PluginError, load_plugins

    pre = _Parser(prog="longtail", add_help=False)  # a --plugin without its value: one line, exit 2
    pre.add_argument("--plugin", action="append", default=[])
    try:
        load_plugins(pre.parse_known_args(argv)[0].plugin)
    except PluginError as exc:
        raise CliError(str(exc)) from None


def _train_defaults(argv: Sequence[str] | None) -> dict[str, Any] | None:
    """The values of ``--preset NAME``, then of ``--config FILE`` over them: they become the defaults, which
    explicit options override (defaults < preset < config file < options)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset")
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.preset is None and known.config is None:
        return None
    from .train.config import load_config_file
    from .train.presets import PRESETS

    defaults: dict[str, Any] = {}
    if known.preset is not None:
        if known.preset not in PRESETS:
            raise CliError(f"preset must be one of {', '.join(PRESETS)}; got {known.preset!r}")
        defaults.update(PRESETS[known.preset])
    if known.config is not None:
        try:
            defaults.update(load_config_file(known.config))
        except (ValueError, OSError) as exc:
            raise CliError(" ".join(str(exc).split())) from None
    return defaults


def main(argv: Sequence[str] | None = None) -> int:
    try:
        _load_plugins(argv)
    except CliError as exc:
        sys.stderr.write(f"longtail: error: {exc}\n")
        return 2
    try:
        parser = build_parser(_train_defaults(argv))
    except CliError as exc:
        sys.stderr.write(f"longtail train: error: {exc}\n")
        return 2
    args = parser.parse_args(argv)
    handlers = {"train": _cmd_train, "weights": _cmd_weights, "demo": _cmd_demo}
    from .cli_runs import RUN_COMMANDS

    handlers.update(RUN_COMMANDS)
    from .cli_tune import TUNE_COMMANDS

    handlers.update(TUNE_COMMANDS)
    from .cli_counts import COUNTS_COMMANDS

    handlers.update(COUNTS_COMMANDS)
    try:
        return handlers[args.command](args)
    except CliError as exc:
        parser.exit(2, f"longtail {args.command}: error: {exc}\n")
    except Exception as exc:
        # Bad values and files (exit 2), and the trainer's own errors, which carry their exit status: a run folder
        # in use or holding a run (2), a diverged run (1). Anything else is a bug: its traceback is kept.
        status = getattr(exc, "exit_status", None)
        expected = status is not None or isinstance(exc, (ValueError, TypeError, OSError))
        if os.environ.get("LONGTAIL_DEBUG") or not expected:
            raise
        message = " ".join(str(exc).split())
        parser.exit(status if status is not None else 2, f"longtail {args.command}: error: {message}\n")
    except KeyboardInterrupt:
        parser.exit(130, "longtail: interrupted\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
