"""Counting what a call does, for the tests that pin the host syncs of the losses and the trainer."""

from __future__ import annotations

from collections.abc import Callable

from torch.profiler import ProfilerActivity, profile


def host_syncs(fn: Callable[[], object]) -> int:
    """``aten::_local_scalar_dense`` calls (``.item()``, ``bool()`` of a tensor: a host sync on CUDA) made by ``fn``."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key == "aten::_local_scalar_dense")
