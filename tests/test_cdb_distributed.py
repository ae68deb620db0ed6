"""CDB and the confusion meter under data parallelism: two gloo processes on 127.0.0.1 end with the weights and
the counts of the pooled data."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from cdb_ddp_worker import EMA_MOMENTUM, IGNORE_INDEX, NUM_CLASSES, TOP_K, make_losses, rank_batches, rank_matrix

from longtail.difficulty import ClassDifficulty, TrainingDifficultyEMA
from longtail.metrics import ConfusionMeter

WORKER = Path(__file__).with_name("cdb_ddp_worker.py")
WORLD_SIZE = 2
DEADLINE_S = 60.0  # only reached on a failure; a passing run takes a few seconds

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(
        not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available"
    ),
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_workers(tmp_path: Path) -> list[dict]:
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="1")
    if "lo" in {name for _, name in socket.if_nameindex()}:
        env["GLOO_SOCKET_IFNAME"] = "lo"  # keep gloo's own connections on the loopback interface
    outputs = [tmp_path / f"rank{rank}.pt" for rank in range(WORLD_SIZE)]
    logs = [tmp_path / f"rank{rank}.log" for rank in range(WORLD_SIZE)]
    procs = []
    try:
        for rank in range(WORLD_SIZE):
            with open(logs[rank], "w") as log:  # a file, not a pipe: a chatty worker cannot block on it
                procs.append(
                    subprocess.Popen(
                        [sys.executable, str(WORKER), str(rank), str(WORLD_SIZE), str(outputs[rank])],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + DEADLINE_S
        # One failed rank leaves the others waiting in a collective: stop at the first failure.
        while True:
            codes = [proc.poll() for proc in procs]  # poll every rank (any() would stop at the first)
            if None not in codes or any(code not in (None, 0) for code in codes) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        for proc in procs:  # never leave a worker behind, whatever failed
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    failures = [
        f"rank {rank} exited with {proc.returncode}"
        + (" (killed: past the deadline or after another rank failed)" if proc.returncode == -9 else "")
        + f":\n{logs[rank].read_text()}"
        for rank, proc in enumerate(procs)
        if proc.returncode != 0
    ]
    if failures:
        pytest.fail("\n".join(failures))
    return [torch.load(path) for path in outputs]


def test_two_processes_end_with_the_weights_of_the_pooled_data(tmp_path):
    results = _run_workers(tmp_path)

    # What a single process would compute from both ranks' data.
    per_rank = [rank_batches(rank) for rank in range(WORLD_SIZE)]
    pooled = ClassDifficulty(NUM_CLASSES, ignore_index=IGNORE_INDEX)
    ema = TrainingDifficultyEMA(NUM_CLASSES, momentum=EMA_MOMENTUM, ignore_index=IGNORE_INDEX)
    meter = ConfusionMeter(NUM_CLASSES, top_k=TOP_K, ignore_index=IGNORE_INDEX, confidence=True)
    for step in zip(*per_rank):  # the EMA of the pooled data discounts once per step
        logits = torch.cat([logits for logits, _ in step])
        y = torch.cat([y for _, y in step])
        pooled.update(logits, y)
        ema.update(logits, y)
        meter.update(logits, y)
    expected, expected_ema = make_losses()
    expected.update_from(pooled)
    expected_ema.update_from(ema)

    # The ranks really saw different data: their local accuracies differ from each other and from the pool.
    local = [r["local_accuracy"] for r in results]
    assert not torch.allclose(local[0], local[1], equal_nan=True)
    assert not torch.allclose(local[0], pooled.accuracy(), equal_nan=True)
    assert torch.isnan(local[0][2]) and torch.isnan(local[1][3])  # a class seen by one rank only
    assert torch.isnan(pooled.accuracy()[4])  # seen by none: keeps its weight 1

    # The meter's matrix, top-k hits and confidence sums travel in one collective; the ignored samples count nowhere.
    assert meter.num_samples == sum(int((y != IGNORE_INDEX).sum()) for batches in per_rank for _, y in batches)
    assert int(meter.top_k_hits[0]) == int(meter.correct.sum()) < int(meter.top_k_hits[1]) < meter.num_samples
    for rank, result in enumerate(results):
        assert torch.equal(result["meter"]["confusion"], meter.confusion), rank
        assert torch.equal(result["meter"]["top_k_hits"], meter.top_k_hits), rank
        assert torch.equal(result["meter"]["confidence_units"], meter.confidence_units), rank  # integers: exact
        assert torch.equal(result["matrix"], rank_matrix(0) + rank_matrix(1)), rank
        assert torch.equal(result["correct"], pooled.correct), rank
        assert torch.equal(result["total"], pooled.total), rank
        state = result["criterion"]
        torch.testing.assert_close(state["weight"], expected.weight, rtol=0, atol=0)
        torch.testing.assert_close(state["last_tau"], expected.last_tau, rtol=0, atol=0)
        torch.testing.assert_close(state["last_accuracy"], expected.last_accuracy, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(result["ema_accuracy"], ema.accuracy(), rtol=1e-12, atol=0, equal_nan=True)
        torch.testing.assert_close(result["ema_criterion"]["weight"], expected_ema.weight, rtol=1e-6, atol=0)
    assert float(expected.weight[4]) == 1.0
    # Both processes hold bit-identical weights.
    assert torch.equal(results[0]["criterion"]["weight"], results[1]["criterion"]["weight"])
    assert torch.equal(results[0]["ema_criterion"]["weight"], results[1]["ema_criterion"]["weight"])
