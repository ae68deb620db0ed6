"""Issue 38's acceptance: an image folder trains as the same images do through the built-in dataset.

    python benchmarks/data_sources/folder_parity.py --out benchmarks/results/data_sources [--seeds 0,1,2]

Builds, from Fashion-MNIST (Debian's copy), an image folder with a natural tail: the training images that
``--dataset fashion_mnist --imbalance 100 --n-max 1000`` trains on (ten classes, 1000 to 10 images) as PNG files in
``train/<class>/``, its 25 validation images a class in ``val/<class>/`` and the whole test set in ``test/<class>/``.
Then, per seed, trains the ``fmnist-lt`` preset on both (the folder with its natural tail, imbalance 1) and records
the test errors, their paired differences, the first (decoding) and second (cached) load times of the folder, and the
CPU. Results go to ``<out>/folder_parity.json`` (written atomically, with the runs under ``<out>/runs``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from longtail.data import load_dataset, read_image_folder, training_split
from longtail.io import write_json
from longtail.train import train
from longtail.train.device import describe_hardware, hardware
from longtail.train.presets import preset_config

N_MAX, IMBALANCE, VAL_PER_CLASS = 1000, 100.0, 25


def build_folder(root: Path) -> None:
    from PIL import Image

    full = load_dataset("fashion_mnist", None, train=True)
    test = load_dataset("fashion_mnist", None, train=False)
    split = training_split("fashion_mnist", full.labels, IMBALANCE, n_max=N_MAX, seed=0,
                           val_per_class=VAL_PER_CLASS, num_classes=10)
    for name, images, labels, indices in (("train", full.images, full.labels, split.train_indices),
                                          ("val", full.images, full.labels, split.val_indices),
                                          ("test", test.images, test.labels, torch.arange(len(test.labels)))):
        for i in indices.tolist():
            folder = root / name / f"{int(labels[i]):02d}-{full.classes[int(labels[i])].replace('/', '-')}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i, 0].numpy(), mode="L").save(folder / f"{i:05d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    root = args.out / "fmnist-lt-folder"
    if not (root / "test").is_dir():
        build_folder(root)
    t0 = time.perf_counter()
    read_image_folder(root)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    read_image_folder(root)
    second = time.perf_counter() - t0
    rows = []
    for seed in seeds:
        builtin = preset_config("fmnist-lt", imbalance=IMBALANCE, n_max=N_MAX, seed=seed, subset_seed=0, amp="off")
        folder = preset_config("fmnist-lt", dataset="folder", data_dir=str(root), imbalance=1.0, seed=seed, amp="off")
        a = train(builtin, args.out / "runs" / f"builtin-seed{seed}", resume=True, verbose=0)
        b = train(folder, args.out / "runs" / f"folder-seed{seed}", resume=True, verbose=0)
        assert a["train_counts"] == b["train_counts"], (a["train_counts"], b["train_counts"])
        rows.append({"seed": seed, "builtin_error": 100 * (1 - a["final"]["accuracy"]),
                     "folder_error": 100 * (1 - b["final"]["accuracy"]), "train_counts": a["train_counts"]})
        print(rows[-1], flush=True)
    diff = np.array([r["folder_error"] - r["builtin_error"] for r in rows])
    summary = {"cpu": describe_hardware(hardware(torch.device("cpu"))), "first_load_seconds": first,
               "cached_load_seconds": second, "runs": rows, "mean_difference_points": float(diff.mean()),
               "sd_difference_points": float(diff.std(ddof=1)) if len(diff) > 1 else None}
    write_json(args.out / "folder_parity.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
