"""Training throughput of ``longtail.train`` against a bare PyTorch loop, in images per second.

    .venv/bin/python benchmarks/ops/bench_trainer.py --out docs/benchmarks/ops_trainer.json

The trainer candidates are the trainer itself: each is a :func:`longtail.train.build_run` of a
configuration (the model, channels-last, its SGD parameter groups, the loss, the padding) and one
epoch is one :func:`longtail.train.train_one_epoch` of it. The bare loop gets the same data (a
Fashion-MNIST-LT training split held as tensors in memory, or the synthetic set when Fashion-MNIST
is not installed), the same initial weights (copied from the trainer's model), the same channels-last
model and batches, batch size and optimizer settings, and does only ``randperm``, index, forward,
``F.cross_entropy``, ``zero_grad``, backward, step. Epochs of the candidates are interleaved
round-robin in shuffled order; the ratio of throughputs is taken within each round.

Candidates: the trainer with ``loss="ce"`` and augmentation off (like for like with the bare loop), the
trainer with its default augmentation (pad-and-crop + flip on the batch), the trainer with the
class-balanced focal loss (``cb_focal``), for the cost of the loss inside a training step, and the bare
loop with batches copied into channels-last strides (one channel: ``.contiguous(channels_last)`` keeps
NCHW strides, which select other convolution kernels).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import default_device, interleaved_times, machine, quantiles

from longtail.train import TrainConfig, build_run, prepare_data, train_one_epoch


def _load(n_max: int, device: torch.device) -> tuple[Any, str]:
    for dataset in ("fashion_mnist", "synthetic"):
        try:
            config = TrainConfig(dataset=dataset, imbalance=100.0, n_max=n_max if dataset != "synthetic" else None,
                                 device=str(device))
            return prepare_data(config, device), dataset
        except (FileNotFoundError, OSError, ValueError) as exc:
            print(f"{dataset} unavailable ({exc}); trying the next", file=sys.stderr)
    raise RuntimeError("no dataset available")


def bare_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor,
               batch_size: int, generator: torch.Generator, force_channels_last: bool = False) -> None:
    model.train()
    order = torch.randperm(len(labels), generator=generator, device=images.device)
    for start in range(0, len(labels), batch_size):
        idx = order[start : start + batch_size]
        if len(idx) < 2:
            break
        batch = images[idx]
        if force_channels_last:  # strides (HWC, 1, WC, C): with one channel, .contiguous(channels_last) keeps NCHW's
            batch = torch.empty_like(batch, memory_format=torch.channels_last).copy_(batch)
        else:  # what the trainer does
            batch = batch.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(batch), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/benchmarks/ops_trainer.json")
    parser.add_argument("--reps", type=int, default=6, help="timed rounds (one epoch per candidate each)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--n-max", type=int, default=1000, help="head-class size of the long-tailed split (rho 100)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU (0 keeps torch's default)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else default_device()

    data, dataset = _load(args.n_max, device)
    images, labels = data.train.images, data.train.labels
    n = len(labels)
    base = TrainConfig(dataset=dataset, loss="ce", batch_size=args.batch_size, augment=False, epochs=100,
                       warmup_epochs=0.0, schedule="constant", device=str(device))
    configs = {
        "trainer (ce, no augmentation)": base,
        "trainer (ce, augmentation)": TrainConfig(**{**base.to_dict(), "augment": True}),
        "trainer (cb_focal, no augmentation)": TrainConfig(**{**base.to_dict(), "loss": "cb_focal"}),
    }
    runs = {name: build_run(config, data, device) for name, config in configs.items()}
    epochs = dict.fromkeys(runs, 0)
    steps: dict[str, Any] = {}
    for name, run in runs.items():
        def step(name: str = name, run: Any = run) -> None:
            train_one_epoch(run, epochs[name])
            epochs[name] += 1

        steps[name] = step
    bare = "bare PyTorch loop (F.cross_entropy)"
    reference = runs["trainer (ce, no augmentation)"]
    for name, force in ((bare, False), ("bare loop, forced channels-last strides", True)):
        model = copy.deepcopy(reference.model)  # the trainer's initial weights, channels-last
        optimizer = torch.optim.SGD(model.parameters(), lr=base.lr, momentum=base.momentum, nesterov=base.nesterov,
                                    weight_decay=base.weight_decay)
        gen = torch.Generator(device=device).manual_seed(0)
        steps[name] = (lambda model=model, optimizer=optimizer, gen=gen, force=force:
                       bare_epoch(model, optimizer, images, labels, args.batch_size, gen, force))
    print(f"[trainer] {dataset}-LT, {n} training images, batch {args.batch_size}, {args.reps} rounds", flush=True)
    times = interleaved_times(steps, reps=args.reps, warmup=args.warmup, device=device)
    # Images actually trained per epoch: full batches of the trainer and the bare loop alike (both skip a
    # final batch of fewer than 2 images).
    per_epoch = n - (n % args.batch_size if n % args.batch_size < 2 else 0)
    result: dict[str, Any] = {
        "machine": machine(device),
        "dataset": f"{dataset}-LT (rho 100, n_max {args.n_max})" if dataset != "synthetic" else "synthetic",
        "train_images": n,
        "batch_size": args.batch_size,
        "model": "small_cnn (width 16)",
        "reps": args.reps,
        "candidates": {},
    }
    for name, t in times.items():
        ips = [per_epoch / s for s in t]
        ratio = quantiles([b / a for a, b in zip(t, times[bare])])  # throughput ratio = bare time / candidate time
        result["candidates"][name] = {
            "images_per_s": quantiles(ips),
            "epoch_s": quantiles(t),
            "throughput_vs_bare": ratio,
        }
        print(f"  {name:<40} {quantiles(ips)['median']:8.0f} img/s  x{ratio['median']:.3f} of bare "
              f"[{ratio['q1']:.3f}, {ratio['q3']:.3f}]", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
