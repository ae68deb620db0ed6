"""Why ``torch.compile`` is slower than eager for the benchmark's small CNN on this CPU: where a training step's time
goes, eager against compiled, from ``torch.profiler``.

    .venv/bin/python benchmarks/ops/profile_compile.py [--batch 256] [--steps 20] [--width 16]

One thread, bfloat16 autocast, channels-last, the width-16 SmallCNN on random 28x28 inputs, SGD with Nesterov; a
compiled step is profiled after its graphs are built. Each step's self CPU time is split into the convolutions
(oneDNN, forward and backward: the same kernels in both modes; inductor calls them as extern kernels) and everything
else: BatchNorm, ReLU, max-pooling and their backward, which eager runs as ATen operators and the compiled step as
inductor's generated C++ kernels. Prints the per-step milliseconds of each part and the throughput.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from longtail.models import SmallCNN

CONV = ("aten::convolution_backward", "aten::mkldnn_convolution", "aten::convolution", "aten::_convolution")


def _step_fn(model: torch.nn.Module, batch: int) -> tuple[object, torch.nn.Module]:
    x = torch.randn(batch, 1, 28, 28).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, model


def measure(compiled: bool, batch: int, steps: int, width: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = SmallCNN(10, 1, width).to(memory_format=torch.channels_last)
    step, _ = _step_fn(torch.compile(model) if compiled else model, batch)
    for _ in range(5):  # builds the graphs (compiled) / warms oneDNN's primitive cache (eager)
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - t
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    conv_names = {e.key for e in events if e.key in CONV}
    # self time of the convolution kernels; everything else is the rest of the step
    conv = sum(e.self_cpu_time_total for e in events if e.key in conv_names) / 1e3 / steps
    total = sum(e.self_cpu_time_total for e in events) / 1e3 / steps
    return {"images_per_s": batch * steps / seconds, "conv_ms": conv, "other_ms": total - conv, "total_ms": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--width", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = {mode: measure(mode == "compiled", args.batch, args.steps, args.width) for mode in ("eager", "compiled")}
    print(f"width {args.width}, batch {args.batch}, bfloat16 autocast, 1 thread, {args.steps} profiled steps")
    print(f"{'mode':<9} {'images/s':>9} {'conv ms/step':>13} {'other ms/step':>14} {'total ms/step':>14}")
    for mode, r in rows.items():
        print(f"{mode:<9} {r['images_per_s']:>9.0f} {r['conv_ms']:>13.1f} {r['other_ms']:>14.1f} {r['total_ms']:>14.1f}")


if __name__ == "__main__":
    main()
