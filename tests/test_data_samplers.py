"""longtail.data's samplers for any DataLoader: p_j(q), seeds and epochs, the trainer's order, DDP shards (simulated,
plain gloo, Lightning), the Hugging Face Trainer, bad arguments, and the recipes of docs/samplers.md."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from data_samplers_ddp_worker import LABELS as DDP_LABELS
from data_samplers_ddp_worker import LIGHTNING, PLAIN
from longtail.data import SAMPLERS, ClassAwareSampler, DistributedClassAwareSampler
from longtail.data.samplers import class_probabilities, progressive_probabilities
from longtail.train.samplers import epoch_order, shard_batches
from longtail.train.trainer import _epoch_generator

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "data_samplers_ddp_worker.py"
DDP_DEADLINE_S = 180.0  # only reached on a failure

# The long tail of test_samplers.py: 4,967 images over 10 classes (2000 down to 20).
COUNTS = torch.tensor([2000, 1200, 720, 430, 260, 155, 93, 56, 33, 20])
LABELS = torch.repeat_interleave(torch.arange(10), COUNTS)


def _within_5_sd(draws: torch.Tensor, labels: torch.Tensor, p: torch.Tensor) -> bool:
    """Every class's frequency among ``draws`` is within 5 binomial standard deviations of ``p``."""
    frequencies = torch.bincount(labels[draws], minlength=p.numel()).double() / draws.numel()
    return bool(torch.all((frequencies - p).abs() <= 5 * torch.sqrt(p * (1 - p) / draws.numel())))


def _epochs(sampler: ClassAwareSampler, epochs) -> torch.Tensor:
    draws = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        draws.append(torch.tensor(list(sampler)))
    return torch.cat(draws)


# --- what an epoch draws ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [0.0, 0.5, 1.0, 2.0, "class_balanced", "sqrt", "instance"])
def test_class_frequencies_over_twenty_epochs_are_p_j_within_5_sd(q):
    power = {"class_balanced": 0.0, "sqrt": 0.5, "instance": 1.0}.get(q, q)
    draws = _epochs(ClassAwareSampler(LABELS, q=q, seed=1), range(20))
    assert draws.numel() == 20 * len(LABELS)
    assert _within_5_sd(draws, LABELS, class_probabilities(COUNTS, power))


def test_progressive_at_a_middle_epoch_is_the_halfway_mixture_within_5_sd():
    sampler = ClassAwareSampler(LABELS, q="progressive", seed=2, epochs=10, num_samples=50_000)
    sampler.set_epoch(5)
    draws = torch.tensor(list(sampler))
    p = progressive_probabilities(COUNTS, 5, 10)
    torch.testing.assert_close(p, 0.5 * class_probabilities(COUNTS, 1.0) + 0.5 * class_probabilities(COUNTS, 0.0))
    assert _within_5_sd(draws, LABELS, p)


def test_named_samplers_are_their_powers_and_q_1_is_the_permutation():
    for name, q in [("class_balanced", 0.0), ("sqrt", 0.5), ("instance", 1.0)]:
        assert list(ClassAwareSampler(LABELS, q=name, seed=4)) == list(ClassAwareSampler(LABELS, q=q, seed=4))
    assert sorted(ClassAwareSampler(LABELS, q=1, seed=4)) == list(range(len(LABELS)))  # each image once


def test_the_sampler_yields_python_ints_and_its_length_is_num_samples():
    sampler = ClassAwareSampler([2, 0, 2, 2], q=0.0, num_samples=7)
    values = list(sampler)
    assert len(sampler) == len(values) == 7 and all(type(v) is int for v in values)
    assert set(values) <= {0, 1, 2, 3}


def test_the_permutation_with_more_samples_than_images_is_whole_permutations_cut():
    values = list(ClassAwareSampler([0, 1, 1], q="instance", num_samples=8))
    assert len(values) == 8 and sorted(values[:3]) == sorted(values[3:6]) == [0, 1, 2]


def test_set_epoch_changes_the_sample_and_the_same_seed_and_epoch_repeat_it():
    a, b = ClassAwareSampler(LABELS, q="sqrt", seed=3), ClassAwareSampler(LABELS, q="sqrt", seed=3)
    first = list(a)
    assert list(a) == first  # iterating again without set_epoch repeats the epoch
    a.set_epoch(1)
    second = list(a)
    assert second != first
    b.set_epoch(1)
    assert list(b) == second
    b.set_epoch(0)
    assert list(b) == first
    assert list(ClassAwareSampler(LABELS, q="sqrt", seed=4)) != first


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("seed,epoch", [(0, 0), (7, 3), (2**32 - 1, 1)])
def test_the_sampler_visits_the_trainers_order_for_the_same_seed_and_epoch(sampler, seed, epoch):
    """The trainer's CPU generator of (seed, epoch) and epoch_order: the same indices as the public sampler."""
    generator = _epoch_generator(SimpleNamespace(seed=seed), epoch, torch.device("cpu"))
    order = epoch_order(sampler, LABELS, torch.bincount(LABELS, minlength=10), epoch, 5, generator)
    public = ClassAwareSampler(LABELS, q=sampler, seed=seed, epochs=5)
    public.set_epoch(epoch)
    assert list(public) == order.tolist()


def test_a_dataloader_loop_gets_the_samplers_indices_in_batches():
    sampler = ClassAwareSampler(LABELS, q=0.0, seed=6)
    loader = DataLoader(TensorDataset(torch.arange(len(LABELS)), LABELS), batch_size=64, sampler=sampler)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        seen = [(i, y) for index, target in loader for i, y in zip(index.tolist(), target.tolist(), strict=True)]
        assert [i for i, _ in seen] == sampler.epoch_sample().tolist()
        assert all(LABELS[i] == y for i, y in seen)


def test_a_sampler_pickles_with_its_epoch():
    sampler = DistributedClassAwareSampler(LABELS, q=0.25, seed=5, num_replicas=2, rank=1)
    sampler.set_epoch(2)
    assert list(pickle.loads(pickle.dumps(sampler))) == list(sampler)


def test_labels_from_a_list_a_numpy_array_and_a_tensor_give_the_same_sample():
    labels = [0, 0, 0, 1, 1, 2, 0, 1]
    expected = list(ClassAwareSampler(torch.tensor(labels), q=0.5, seed=9))
    assert list(ClassAwareSampler(labels, q=0.5, seed=9)) == expected
    assert list(ClassAwareSampler(np.array(labels, dtype=np.int32), q=0.5, seed=9)) == expected


# --- distributed shards -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [10, 11, 1, 7])
@pytest.mark.parametrize("world", [2, 3])
def test_shards_are_disjoint_and_together_the_single_process_sample(n, world):
    labels = LABELS[torch.linspace(0, len(LABELS) - 1, n).long()]
    whole = ClassAwareSampler(labels, q="class_balanced", seed=8)
    shards = [DistributedClassAwareSampler(labels, q="class_balanced", seed=8, num_replicas=world, rank=r)
              for r in range(world)]
    size = -(-n // world)  # drop_last=False: padded with the sample's first indices up to a multiple of world
    assert [len(s) for s in shards] == [size] * world
    values = [list(s) for s in shards]
    padded = (whole.epoch_sample().tolist() * world)[: size * world]
    assert [padded[r::world] for r in range(world)] == values  # position p goes to rank p % world
    assert sorted(sum(values, [])) == sorted(padded)


@pytest.mark.parametrize("n", [10, 11, 13])
def test_drop_last_cuts_the_sample_to_a_multiple_of_the_world_size(n):
    labels = LABELS[torch.linspace(0, len(LABELS) - 1, n).long()]
    whole = ClassAwareSampler(labels, q=0.5, seed=8).epoch_sample().tolist()
    shards = [list(DistributedClassAwareSampler(labels, q=0.5, seed=8, num_replicas=3, rank=r, drop_last=True))
              for r in range(3)]
    assert [len(s) for s in shards] == [n // 3] * 3
    assert sorted(sum(shards, [])) == sorted(whole[: n // 3 * 3])


def test_distributed_set_epoch_moves_every_rank_to_the_same_new_sample():
    shards = [DistributedClassAwareSampler(LABELS, q="sqrt", seed=1, num_replicas=2, rank=r) for r in (0, 1)]
    before = [list(s) for s in shards]
    for s in shards:
        s.set_epoch(3)
    after = [list(s) for s in shards]
    whole = ClassAwareSampler(LABELS, q="sqrt", seed=1)
    whole.set_epoch(3)
    sample = list(whole)  # 4,967 draws: padded with the first to 4,968
    assert after != before and sorted(after[0] + after[1]) == sorted(sample + sample[:1])


def test_per_process_batches_are_the_trainers_shards_of_each_batch():
    """With a per-process batch of B / world, rank r's k-th batch is the trainer's shard r of its k-th batch."""
    batch, world = 32, 2
    order = ClassAwareSampler(LABELS, q=0.0, seed=2).epoch_sample()
    for rank in range(world):
        sampler = DistributedClassAwareSampler(LABELS, q=0.0, seed=2, num_replicas=world, rank=rank)
        loader = DataLoader(TensorDataset(torch.arange(len(LABELS))), batch_size=batch // world, sampler=sampler)
        ours = [indices for (indices,) in loader]
        trainers = [indices for indices, full in shard_batches(order, batch, rank, world) if full]
        assert len(trainers) == len(LABELS) // batch  # the full batches; ours has a last, shorter one too
        assert all(torch.equal(a, b) for a, b in zip(ours, trainers, strict=False))


# --- bad arguments ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(q=-0.5), ValueError, r"q must be in \[0, inf\]; got -0.5"),
    (dict(q=float("nan")), ValueError, "q must be a number; got NaN"),
    (dict(q=float("inf")), ValueError, "q must be finite; got inf"),
    (dict(q="balanced"), ValueError, "q must be a power >= 0 or one of 'instance', 'class_balanced', 'sqrt', "
                                     "'progressive'; got 'balanced'"),
    (dict(q=None), TypeError, "q must be a power >= 0 or one of .*; got NoneType None"),
    (dict(q=True), TypeError, "q must be a power >= 0 or one of .*; got bool True"),
    (dict(q=1100.0), ValueError, r"q must keep max\(counts\)\*\*q finite in float64 \(max count 2\); got 1100.0"),
    (dict(q="progressive"), ValueError, "epochs must be given for the progressive sampler"),
    (dict(q="progressive", epochs=0), ValueError, "epochs must be an integer >= 1; got 0"),
    (dict(num_samples=0), ValueError, "num_samples must be an integer >= 1; got 0"),
    (dict(num_samples=2.0), TypeError, "num_samples must be an integer; got float 2.0"),
    (dict(seed=-1), ValueError, r"seed must be an integer in \[0, 4294967295\]; got -1"),
    (dict(seed=2**32), ValueError, r"seed must be an integer in \[0, 4294967295\]; got 4294967296"),
    (dict(seed="0"), TypeError, "seed must be an integer; got str '0'"),
])
def test_bad_arguments_are_refused_with_what_was_expected(kwargs, error, message):
    with pytest.raises(error, match=message):
        ClassAwareSampler([0, 0, 1], **kwargs)


@pytest.mark.parametrize("labels,error,message", [
    ([], ValueError, "labels must hold at least one label; got none"),
    ([[0, 1], [1, 0]], ValueError, r"labels must be 1-D, one class index per sample; got shape \(2, 2\)"),
    (torch.tensor(3), ValueError, r"labels must be 1-D, one class index per sample; got shape \(\)"),
    ([0.0, 1.0], TypeError, "labels must hold integer class indices; got dtype torch.float64"),
    (torch.tensor([True, False]), TypeError, "labels must hold integer class indices; got dtype torch.bool"),
    ([0, 2, -1], ValueError, "labels must be non-negative class indices; got -1 at position 2"),
    (["a", "b"], TypeError, "labels must hold numbers; got an array of dtype <U1"),
    ("abc", TypeError, "labels must be a tensor, numpy array or list; got str"),
])
def test_bad_labels_are_refused_with_what_was_expected(labels, error, message):
    with pytest.raises(error, match=message):
        ClassAwareSampler(labels)


def test_bad_epochs_and_shards_are_refused_with_what_was_expected():
    sampler = ClassAwareSampler([0, 1, 1], q="progressive", epochs=4)
    with pytest.raises(ValueError, match=r"epoch must be in \[0, epochs - 1 = 3\] for the progressive sampler; got 4"):
        sampler.set_epoch(4)
    with pytest.raises(ValueError, match="epoch must be an integer >= 0; got -1"):
        sampler.set_epoch(-1)
    with pytest.raises(TypeError, match="epoch must be an integer; got float 1.0"):
        sampler.set_epoch(1.0)
    with pytest.raises(ValueError, match=r"rank must be in \[0, num_replicas - 1 = 1\]; got 2"):
        DistributedClassAwareSampler([0, 1], num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_replicas must be an integer >= 1; got 0"):
        DistributedClassAwareSampler([0, 1], num_replicas=0, rank=0)
    with pytest.raises(ValueError, match="num_replicas must be given when torch.distributed is not initialised"):
        DistributedClassAwareSampler([0, 1], rank=0)
    with pytest.raises(ValueError, match="rank must be given when torch.distributed is not initialised"):
        DistributedClassAwareSampler([0, 1], num_replicas=2)
    with pytest.raises(TypeError, match="drop_last must be a bool; got int 1"):
        DistributedClassAwareSampler([0, 1], num_replicas=2, rank=0, drop_last=1)
    with pytest.raises(ValueError, match="num_samples must be >= num_replicas = 3 with drop_last=True"):
        DistributedClassAwareSampler([0, 1], num_replicas=3, rank=0, drop_last=True)


# --- two processes: plain gloo, and Lightning ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_two_ranks(command: list[str], outputs: list[Path], log: Path) -> list[dict]:
    """Runs ``command`` in its own session until it exits and every output exists; ends the whole session after."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    env.pop("LOCAL_RANK", None)
    if "lo" in {name for _, name in socket.if_nameindex()}:
        env["GLOO_SOCKET_IFNAME"] = "lo"
    with open(log, "w") as out:  # a file, not a pipe: a chatty run cannot block on it
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent,
                                start_new_session=True)
    deadline = time.monotonic() + DDP_DEADLINE_S
    try:  # Lightning's rank 0 may exit before the rank 1 it launched has written its result
        while time.monotonic() < deadline and not (proc.poll() is not None and (
                proc.returncode != 0 or all(path.exists() for path in outputs))):
            time.sleep(0.1)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
    assert proc.returncode == 0 and all(p.exists() for p in outputs), (
        f"exit {proc.returncode}:\n{log.read_text()[-6000:]}")
    return [json.loads(path.read_text()) for path in outputs]


needs_gloo = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")


@pytest.mark.slow
@pytest.mark.distributed
@needs_gloo
def test_two_gloo_processes_take_disjoint_shards_of_the_same_sample(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(WORKER),
               "plain", str(tmp_path)]
    ranks = _run_two_ranks(command, [tmp_path / f"plain-rank{r}.json" for r in range(2)], tmp_path / "plain.log")
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
    single = ClassAwareSampler(DDP_LABELS, q=PLAIN["q"], seed=PLAIN["seed"])
    draws = []
    for epoch in range(PLAIN["epochs"]):
        single.set_epoch(epoch)
        sample = single.epoch_sample().tolist()  # 580 draws: two shards of 290, no padding
        first, second = ranks[0]["epochs"][epoch], ranks[1]["epochs"][epoch]
        assert len(first) == len(second) == 290 and first == sample[0::2] and second == sample[1::2]
        assert sorted(first + second) == sorted(sample)
        draws += first + second
    counts = torch.bincount(DDP_LABELS)
    assert _within_5_sd(torch.tensor(draws), DDP_LABELS, class_probabilities(counts, PLAIN["q"]))


@pytest.mark.slow
@pytest.mark.distributed
@needs_gloo
def test_lightning_ddp_without_its_distributed_sampler_trains_on_the_shards(tmp_path):
    pytest.importorskip("lightning")
    command = [sys.executable, str(WORKER), "lightning", str(tmp_path)]
    ranks = _run_two_ranks(command, [tmp_path / f"lightning-rank{r}.json" for r in range(2)], tmp_path / "pl.log")
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
    single = ClassAwareSampler(DDP_LABELS, q=LIGHTNING["q"], seed=LIGHTNING["seed"], epochs=LIGHTNING["epochs"])
    for epoch in range(LIGHTNING["epochs"]):  # Lightning called set_epoch: each epoch its own sample
        single.set_epoch(epoch)
        sample = single.epoch_sample().tolist()
        assert ranks[0]["epochs"][epoch] == sample[0::2] and ranks[1]["epochs"][epoch] == sample[1::2]
    assert ranks[0]["epochs"][0] != ranks[0]["epochs"][1]


# --- the Hugging Face Trainer -------------------------------------------------------------------------------------


class _Recorded(Dataset):
    """Token rows that record which index the DataLoader asked for."""

    def __init__(self, labels, seed: int = 1) -> None:
        ids = torch.randint(1, 50, (len(labels), 6), generator=torch.Generator().manual_seed(seed))
        self.rows = [{"input_ids": ids[i], "attention_mask": torch.ones(6, dtype=torch.long),
                      "labels": torch.tensor(y)} for i, y in enumerate(labels)]
        self.asked: list[int] = []

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        self.asked.append(index)
        return self.rows[index]


@pytest.mark.slow
def test_the_hugging_face_trainer_draws_the_samplers_indices(tmp_path):
    transformers = pytest.importorskip("transformers")
    labels = [0] * 10 + [1] * 4 + [2] * 2
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=3)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)

    class SampledTrainer(transformers.Trainer):
        def _get_train_sampler(self, *args, **kwargs):
            return ClassAwareSampler(labels, q="sqrt", seed=self.args.seed)

    dataset = _Recorded(labels)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), report_to=[], use_cpu=True, num_train_epochs=2, per_device_train_batch_size=8,
        save_strategy="no", logging_strategy="no", disable_tqdm=True, dataloader_pin_memory=False, seed=11)
    SampledTrainer(model=model, args=args, train_dataset=dataset).train()
    expected = ClassAwareSampler(labels, q="sqrt", seed=11)
    epochs = []
    for epoch in range(2):  # the Trainer called set_epoch
        expected.set_epoch(epoch)
        epochs += list(expected)
    assert dataset.asked == epochs


# --- docs/samplers.md ---------------------------------------------------------------------------------------------


def test_the_documented_plain_loop_runs_and_every_recipe_compiles():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "samplers.md").read_text(), flags=re.S)
    assert len(blocks) >= 4
    for index, block in enumerate(blocks):
        compile(block, f"docs/samplers.md python block {index + 1}", "exec")
    (loop,) = [b for b in blocks if "# the plain loop" in b]
    namespace: dict = {}
    exec(compile(loop, "docs/samplers.md", "exec"), namespace)
    assert namespace["seen"] == 2 * 1000
