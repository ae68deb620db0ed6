"""Shared helpers of the ``benchmarks/ops`` scripts: interleaved timing, peak memory, machine description.

Timing: every candidate runs once per *round*, in a freshly shuffled order, so background load falls on all
candidates alike; a ratio is taken inside each round (``ours_r / reference_r``) and the median and
interquartile range of those paired ratios are reported. :func:`grouped_times` runs the candidates of one
comparison back to back inside the round, which pairs them more tightly.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was
allocated before the call. On CPU PyTorch keeps no peak counter, so the call runs once under
``torch.profiler.profile(profile_memory=True)``: the CPU allocator reports every allocation (+bytes) and free
(-bytes) with a timestamp; sorted by time, the running sum is the live memory the call added, and its maximum
is the peak. The allocator's own accounting, so it is exact and deterministic for what goes through PyTorch's
CPU allocator (every tensor); memory outside it (oneDNN scratch, thread stacks) is not seen.
"""

from __future__ import annotations

import gc
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from longtail.train.device import hardware

Step = Callable[[], Any]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def quantiles(values: Sequence[float]) -> dict[str, float]:
    """Median and quartiles (inclusive method, as numpy's default linear interpolation)."""
    if len(values) == 1:
        v = float(values[0])
        return {"median": v, "q1": v, "q3": v}
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": float(median), "q1": float(q1), "q3": float(q3)}


def interleaved_times(
    steps: dict[str, Step], *, reps: int, warmup: int, device: torch.device, seed: int = 0
) -> dict[str, list[float]]:
    """Seconds of each step, ``reps`` rounds after ``warmup`` rounds, shuffled round-robin.

    :func:`grouped_times` with every step in one group. Garbage collection is done between rounds
    and disabled inside them.
    """
    times = grouped_times(steps, {"all": list(steps)}, reps=reps, warmup=warmup, device=device, seed=seed)
    return {name: times[("all", name)] for name in steps}


def grouped_times(
    steps: dict[str, Step], groups: dict[str, list[str]], *, reps: int, warmup: int, device: torch.device,
    seed: int = 0,
) -> dict[tuple[str, str], list[float]]:
    """Seconds of each step of each group, ``reps`` rounds after ``warmup``: ``{(group, step): [...]}``.

    A round runs every group once, the groups in a shuffled order and each group's steps back to back
    in a shuffled order, so the candidates of one comparison run within a fraction of a second of
    each other (load that changes over seconds cancels in their ratio) and none is always first.
    A step may belong to several groups; it then runs once per group.
    """
    rng = random.Random(seed)
    order = list(groups)
    times: dict[tuple[str, str], list[float]] = {(g, m): [] for g in order for m in groups[g]}
    for r in range(warmup + reps):
        rng.shuffle(order)
        gc.collect()
        gc.disable()
        try:
            for g in order:
                members = list(groups[g])
                rng.shuffle(members)
                for name in members:
                    synchronize(device)
                    t0 = time.perf_counter()
                    steps[name]()
                    synchronize(device)
                    elapsed = time.perf_counter() - t0
                    if r >= warmup:
                        times[(g, name)].append(elapsed)
        finally:
            gc.enable()
    return times


def _cpu_peak_bytes(step: Step) -> int:
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [
        (e.start_ns(), i, e.nbytes())
        for i, e in enumerate(prof.profiler.kineto_results.events())
        if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
    ]
    events.sort()
    live = peak = 0
    for _, _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def peak_bytes(step: Step, device: torch.device) -> int:
    """Peak of the memory a call allocates beyond what was live before it (see the module docstring)."""
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    return _cpu_peak_bytes(step)


def check_peak_method(device: torch.device) -> dict[str, int]:
    """The peak reconstruction on a call with a known answer: three 1 MiB buffers alive at once, then freed."""
    mib = 1 << 20

    def step() -> None:
        a = torch.empty(mib, dtype=torch.uint8, device=device)
        b = torch.empty(mib, dtype=torch.uint8, device=device)
        del a
        c = torch.empty(2 * mib, dtype=torch.uint8, device=device)
        del b, c

    got = peak_bytes(step, device)
    if got != 3 * mib:
        raise RuntimeError(f"peak-memory reconstruction is off: expected {3 * mib} bytes, got {got}")
    return {"expected": 3 * mib, "measured": got}


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        **hardware(device),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
    }
    try:
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
