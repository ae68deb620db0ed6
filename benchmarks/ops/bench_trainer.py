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

Candidates, each against the bare loop of the same precision: the trainer in float32 and in bfloat16
autocast (``loss="ce"``, augmentation off: like for like), the trainer with its augmentation (pad-and-crop
+ flip on the batch), with the class-balanced focal loss (``cb_focal``: the cost of the loss inside a
step) and with ``torch.compile`` (after its first, compiling epoch, whose cost is reported apart).
Throughput is also set against the hardware: the training FLOPs per image (forward and backward,
counted by ``torch.utils.flop_counter``) times images per second, as a fraction of the GEMM throughput
measured in the same process for the same precision.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import default_device, interleaved_times, machine, quantiles, synchronize

from longtail.train import TrainConfig, build_run, prepare_data, train_one_epoch


def _load(n_max: int | None, device: torch.device) -> tuple[Any, str]:
    for dataset in ("fashion_mnist", "synthetic"):
        try:
            config = TrainConfig(dataset=dataset, imbalance=100.0, n_max=n_max if dataset != "synthetic" else None,
                                 device=str(device))
            return prepare_data(config, device), dataset
        except (FileNotFoundError, OSError, ValueError) as exc:
            print(f"{dataset} unavailable ({exc}); trying the next", file=sys.stderr)
    raise RuntimeError("no dataset available")


def bare_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor,
               batch_size: int, generator: torch.Generator, autocast: bool = False) -> None:
    """The bare loop: the trainer's batch layout and precision, nothing else."""
    model.train()
    order = torch.randperm(len(labels), generator=generator, device=images.device)
    for start in range(0, len(labels), batch_size):
        idx = order[start : start + batch_size]
        if len(idx) < 2:
            break
        batch = images[idx].contiguous(memory_format=torch.channels_last)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(batch)
        loss = F.cross_entropy(logits.float(), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def training_flops_per_image(model: torch.nn.Module, image: torch.Tensor) -> dict[str, float]:
    """FLOPs of one training step per image (forward and backward), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model).train()
    batch = image.expand(8, *image.shape[1:]).contiguous(memory_format=torch.channels_last)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(batch), torch.zeros(8, dtype=torch.long, device=batch.device)).backward()
    by_op = counter.get_flop_counts()["Global"]
    total = sum(by_op.values())
    conv = sum(v for k, v in by_op.items() if "convolution" in str(k))
    return {"total": total / 8, "convolution": conv / 8}


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """Measured GEMM throughput in this process: the practical ceiling the convolutions are set against."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/benchmarks/ops_trainer.json")
    parser.add_argument("--reps", type=int, default=6, help="timed rounds (one epoch per candidate each)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--n-max", type=int, default=None,
                        help="head-class size of the long-tailed split (rho 100); default: all of the head class's "
                             "training images, as the fmnist-lt preset (about 15,000 images)")
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
                       warmup_epochs=0.0, schedule="constant", device=str(device), amp="off")
    variants = {
        "trainer fp32 (ce)": {},
        "trainer bf16 (ce)": {"amp": "bf16"},
        "trainer bf16 (ce, augmentation)": {"amp": "bf16", "augment": True},
        "trainer bf16 (cb_focal)": {"amp": "bf16", "loss": "cb_focal"},
        "trainer bf16 (ce, torch.compile)": {"amp": "bf16", "compile": True},
    }
    runs = {name: build_run(TrainConfig(**{**base.to_dict(), **extra}), data, device) for name, extra in variants.items()}
    epochs = dict.fromkeys(runs, 0)
    steps: dict[str, Any] = {}
    for name, run in runs.items():
        def step(name: str = name, run: Any = run) -> None:
            train_one_epoch(run, epochs[name])
            epochs[name] += 1

        steps[name] = step
    # torch.compile's one-time cost: its first epoch against an eager bf16 epoch.
    compile_first = time.perf_counter()
    steps["trainer bf16 (ce, torch.compile)"]()
    compile_first = time.perf_counter() - compile_first
    bare = {"fp32": "bare loop fp32 (F.cross_entropy)", "bf16": "bare loop bf16 (F.cross_entropy)"}
    reference = runs["trainer fp32 (ce)"]
    for precision, name in bare.items():
        model = copy.deepcopy(reference.model)  # the trainer's initial weights, channels-last
        optimizer = torch.optim.SGD(model.parameters(), lr=base.lr, momentum=base.momentum, nesterov=base.nesterov,
                                    weight_decay=base.weight_decay)
        gen = torch.Generator(device=device).manual_seed(0)
        steps[name] = (lambda model=model, optimizer=optimizer, gen=gen, amp=precision == "bf16":
                       bare_epoch(model, optimizer, images, labels, args.batch_size, gen, amp))
    print(f"[trainer] {dataset}-LT, {n} training images, batch {args.batch_size}, {args.reps} rounds", flush=True)
    times = interleaved_times(steps, reps=args.reps, warmup=args.warmup, device=device)
    # Images actually trained per epoch: full batches of the trainer and the bare loop alike (both skip a
    # final batch of fewer than 2 images).
    per_epoch = n - (n % args.batch_size if n % args.batch_size < 2 else 0)
    flops = training_flops_per_image(reference.model, images[:1])
    ceiling = {"fp32": matmul_gflops(device, torch.float32), "bf16": matmul_gflops(device, torch.bfloat16)}
    eager_epoch = quantiles(times["trainer bf16 (ce)"])["median"]
    result: dict[str, Any] = {
        "machine": machine(device),
        "threads": torch.get_num_threads(),
        "dataset": f"{dataset}-LT (rho 100, n_max {int(data.counts.max())})" if dataset != "synthetic" else "synthetic",
        "train_images": n,
        "batch_size": args.batch_size,
        "model": "small_cnn (width 16)",
        "reps": args.reps,
        "training_flops_per_image": flops,
        "matmul_gflops": ceiling,
        "compile_first_epoch_s": compile_first,
        "compile_overhead_s": compile_first - eager_epoch,
        "candidates": {},
    }
    for name, t in times.items():
        precision = "fp32" if "fp32" in name else "bf16"
        ips = [per_epoch / s for s in t]
        reference_times = times[bare[precision]]
        ratio = quantiles([b / a for a, b in zip(t, reference_times)])  # throughput ratio = bare time / candidate time
        achieved = quantiles(ips)["median"] * flops["total"] / 1e9
        result["candidates"][name] = {
            "images_per_s": quantiles(ips),
            "epoch_s": quantiles(t),
            "throughput_vs_bare_same_precision": ratio,
            "achieved_gflops": achieved,
            "fraction_of_matmul_gflops": achieved / ceiling[precision],
        }
        print(f"  {name:<36} {quantiles(ips)['median']:7.0f} img/s  x{ratio['median']:.3f} of bare {precision} "
              f"[{ratio['q1']:.3f}, {ratio['q3']:.3f}]  {achieved:6.1f} GFLOP/s = "
              f"{100 * achieved / ceiling[precision]:4.1f}% of {precision} matmul", flush=True)
    print(f"  training FLOPs per image: {flops['total'] / 1e6:.1f} M ({100 * flops['convolution'] / flops['total']:.0f}% "
          f"convolutions); matmul ceiling fp32 {ceiling['fp32']:.0f}, bf16 {ceiling['bf16']:.0f} GFLOP/s; "
          f"torch.compile first epoch {compile_first:.1f}s (eager bf16 epoch {eager_epoch:.2f}s)", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
