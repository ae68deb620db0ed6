"""Issue 38's acceptance for tables: a CSV made from a public table trains with ``--model mlp``, with CE and the
class-balanced loss, and the per-class figures come out.

    python benchmarks/data_sources/table_mlp.py --out benchmarks/results/data_sources [--seeds 0,1,2] [--epochs 30]

The table is scikit-learn's copy of the UCI handwritten digits (``sklearn.datasets.load_digits``: 1797 rows, 64
pixel-count features 0..16, 10 classes; shipped with the package, read offline), subsampled to a natural long tail
(imbalance 20, the CIFAR-LT exponential profile: 174 down to 8 rows a class, :func:`longtail.data.long_tailed_indices`
with seed 0) and written as ``digits-lt.csv`` (the features that are 0 in every row dropped: nothing to standardise).
Per seed, CE and ``cb_softmax`` (beta 0.99) train the MLP on it as ``longtail train --dataset table --target digit
--model mlp --no-augment`` would; the test split is a fifth of each class, carved once (``test_seed`` 0), so the
tail classes' per-class figures rest on 2 to 4 rows each. Results: ``<out>/table_mlp.json`` (balanced accuracy per
run, per-class accuracy, the mean over seeds), the runs under ``<out>/table_runs``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from longtail.data import long_tailed_indices
from longtail.io import write_json
from longtail.train import TrainConfig, train

IMBALANCE = 20.0


def build_csv(path: Path) -> list[int]:
    """Writes the long-tailed digits table to ``path``; returns its rows per class."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    split = long_tailed_indices(digits.target, IMBALANCE, seed=0)
    rows = split.train_indices.numpy()
    kept = np.flatnonzero(digits.data[rows].any(axis=0))  # a pixel 0 in every row is no feature
    header = [f"px{j}" for j in kept] + ["digit"]
    lines = [",".join(header)] + [",".join([*(str(int(v)) for v in digits.data[i, kept]), str(int(digits.target[i]))])
                                  for i in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return split.counts.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    table = args.out / "digits-lt.csv"
    counts = build_csv(table)
    print(f"{table}: {sum(counts)} rows, per class {counts}", flush=True)
    runs = []
    for loss in ("ce", "cb_softmax"):
        for seed in seeds:
            config = TrainConfig(dataset="table", data_dir=str(table), target="digit", model="mlp", augment=False,
                                 imbalance=1.0, loss=loss, beta=0.99, epochs=args.epochs, batch_size=64, seed=seed,
                                 device="cpu", amp="off")
            result = train(config, args.out / "table_runs" / f"{loss}-seed{seed}", resume=True, verbose=0)
            final = result["final"]
            runs.append({"loss": loss, "seed": seed, "accuracy": final["accuracy"],
                         "balanced_accuracy": final["balanced_accuracy"],
                         "per_class_accuracy": final["per_class_accuracy"],
                         "per_class_support": final["per_class_support"], "train_counts": result["train_counts"]})
            print(f"{loss:>10} seed {seed}: balanced accuracy {final['balanced_accuracy']:.4f}  per class "
                  + " ".join(f"{a:.2f}" for a in final["per_class_accuracy"]), flush=True)
    means = {loss: float(np.mean([r["balanced_accuracy"] for r in runs if r["loss"] == loss]))
             for loss in ("ce", "cb_softmax")}
    summary = {"table": str(table), "rows_per_class": counts, "epochs": args.epochs, "runs": runs,
               "mean_balanced_accuracy": means}
    write_json(args.out / "table_mlp.json", summary)
    print(json.dumps(summary["mean_balanced_accuracy"]))


if __name__ == "__main__":
    main()
