"""``longtail demo``: cross-entropy against the class-balanced loss on Fashion-MNIST-LT.

Each configuration of the demo (dataset, imbalance, epochs, ...) trains in its own folder,
``<out>/<dataset>-rho<imbalance>-<epochs>ep-seed<seed>-<digest>/<loss>``, the digest covering every
field that changes the result: rerunning a configuration reuses (or resumes) its runs, and a demo with
other options trains its own next to them instead of failing to resume a run of another configuration.
``--overwrite`` trains a configuration again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from .io import write_bytes
from .run_plots import matplotlib_available
from .run_plots import plot_per_class as per_class_png
from .runs import RunRecord, format_metric
from .train import TrainConfig, train
from .train.presets import preset_config

DEMO_LOSSES = {"ce": "softmax CE", "cb_softmax": "class-balanced softmax"}


def comparison_table(results: dict[str, dict[str, Any]]) -> str:
    """Side-by-side accuracy table (percent): overall, balanced, shot groups, then per class head to tail."""
    names = list(results)
    first = results[names[0]]
    header = f"{'':<24}" + "".join(f"{DEMO_LOSSES.get(n, n):>24}" for n in names)
    lines = [header, "-" * len(header)]

    def row(label: str, values: list[float | None]) -> None:
        lines.append(f"{label:<24}" + "".join(f"{format_metric(v, percent=True):>24}" for v in values))

    row("accuracy (balanced test)", [results[n]["final"]["accuracy"] for n in names])
    row("macro F1", [results[n]["final"]["macro_f1"] for n in names])
    thresholds = first["final"].get("shot_thresholds", {})
    groups = first["final"].get("shot_num_classes", {})
    for group in ("many", "medium", "few"):
        label = {"many": f"many-shot (>{thresholds.get('many', 100):g})", "medium": "medium-shot",
                 "few": f"few-shot (<{thresholds.get('few', 20):g})"}[group]
        row(f"{label} [{groups.get(group, 0)}]", [results[n]["final"]["shot_accuracy"][group] for n in names])
    lines.append("")
    lines.append(f"{'class (train images)':<24}" + "".join(f"{'':>24}" for _ in names))
    for c, (name, count) in enumerate(zip(first["classes"], first["train_counts"])):
        row(f"{name[:14]} ({count})", [results[n]["final"]["per_class_accuracy"][c] for n in names])
    return "\n".join(lines)


def plot_per_class(results: dict[str, dict[str, Any]], path: Path) -> Path | None:
    """Per-class test accuracy of each loss, classes sorted head to tail (the report's plot,
    :func:`longtail.run_plots.plot_per_class`), written to ``path``; None without matplotlib."""
    if not matplotlib_available():
        return None
    records = [RunRecord(path.parent / name, f"{DEMO_LOSSES.get(name, name)} (balanced acc "
                         f"{100 * result['final']['accuracy']:.1f}%)", result) for name, result in results.items()]
    cfg = next(iter(results.values()))["config"]
    title = f"{cfg['dataset']}-LT, imbalance {cfg['imbalance']:g}, {cfg['epochs']} epochs, seed {cfg['seed']}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes(path, per_class_png(records, title))


def configuration_folder(configs: list[TrainConfig]) -> str:
    """The subfolder of a demo configuration: readable fields, then a digest of every field that changes
    the results (execution-only fields such as the device are left out: they change only how it runs)."""
    skip = set(TrainConfig.execution_only_fields())
    fields = [{k: v for k, v in c.to_dict().items() if k not in skip} for c in configs]
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]
    c = configs[0]
    return f"{c.dataset}-rho{c.imbalance:g}-{c.epochs}ep-seed{c.seed}-{digest}"


def run_demo(args: argparse.Namespace) -> int:
    results: dict[str, dict[str, Any]] = {}
    configs: dict[str, TrainConfig] = {}
    for loss in DEMO_LOSSES:
        # The benchmark's recipe (the fmnist-lt preset: width 16, its learning rate and validation split), shortened
        # to --epochs (20: a quarter of the preset's 80, so both runs take a few minutes on 2 CPU cores).
        configs[loss] = preset_config(
            "fmnist-lt",
            dataset=args.dataset,
            data_dir=args.data_dir,
            download=args.download,
            n_max=args.n_max,
            imbalance=args.imbalance,
            loss=loss,
            beta=args.beta,
            epochs=args.epochs,
            seed=args.seed,
            device=args.device,
            many_threshold=args.many_threshold,  # None: relative to the head class, as train
            few_threshold=args.few_threshold,
        )
    folder = args.out / configuration_folder(list(configs.values()))
    overwrite = getattr(args, "overwrite", False)
    for loss, config in configs.items():
        print(f"== {DEMO_LOSSES[loss]} ({loss}) ==", flush=True)
        results[loss] = train(config, folder / loss, resume=not overwrite, overwrite=overwrite,
                              verbose=1 if args.quiet else 2)
    first = results["ce"]
    print()
    print(f"{args.dataset}-LT, imbalance {args.imbalance:g}: {sum(first['train_counts'])} training images, "
          f"balanced test set of {first['final']['num_samples']}; accuracy in %")
    print(comparison_table(results))
    plot = plot_per_class(results, folder / "per_class_accuracy.png")
    print()
    print(f"results: {folder}/<loss>/result.json" + (f"; plot: {plot}" if plot else "; (no matplotlib: no plot)"))
    return 0
