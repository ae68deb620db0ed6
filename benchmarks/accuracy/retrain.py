"""Retrains committed runs from their recorded configuration and compares the metrics bit for bit.

    python benchmarks/accuracy/retrain.py RUN_DIR [RUN_DIR ...] --out /tmp/retrain [--against OTHER_OUT]

Each RUN_DIR holds a committed ``result.json``; its ``config`` is retrained into ``--out/<n>`` (a run whose
``init_from`` names a parent is skipped: the parent would have to be retrained first). The script prints, per run,
whether the retrained ``history`` and ``final`` metrics equal the committed ones exactly, or the largest difference;
with ``--against`` it compares the new runs with an earlier retraining (the same machine before and after a change
of code, which is what a restructuring must leave bit-identical) instead of with the committed files, whose CPU kind
may differ (float32 training is not bit-reproducible across CPU kinds: docs/benchmarks/accuracy.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from longtail.train import TrainConfig, train
from longtail.train.device import describe_hardware, hardware

TIMING_KEYS = {"train_seconds", "eval_seconds", "wall_seconds"}


def metrics(result: dict[str, Any]) -> dict[str, Any]:
    """What must be bit-identical: every epoch's numbers and the final report (timings left out)."""
    return {"history": result["history"], "final": {k: v for k, v in result["final"].items() if k not in TIMING_KEYS}}


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}/{k}: only in one" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += differences(a[k], b[k], f"{where}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: lengths {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--against", type=Path, default=None, help="compare with this earlier --out instead")
    args = parser.parse_args(argv)
    print(f"hardware: {describe_hardware(hardware(torch.device('cpu')))}")
    failed = 0
    for i, run in enumerate(args.runs):
        committed = json.loads((run / "result.json").read_text())
        config = TrainConfig.from_dict(committed["config"])
        if config.init_from is not None:
            print(f"{run}: skipped (starts from a parent run)")
            continue
        result = train(config, args.out / str(i), overwrite=True, verbose=0)
        reference = committed if args.against is None else json.loads((args.against / str(i) / "result.json").read_text())
        diff = differences(metrics(reference), metrics(result))
        failed += bool(diff)
        label = "committed" if args.against is None else str(args.against / str(i))
        print(f"{run}: {'bit-identical to' if not diff else f'{len(diff)} differences from'} {label}"
              f" (test balanced accuracy {result['final']['balanced_accuracy']!r}, {result['wall_seconds']:.0f} s)")
        for line in diff[:5]:
            print(f"    {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
