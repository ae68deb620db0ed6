"""The samplers (``--sampler``): class frequencies against p_j, determinism, DDP shards, resume, every sampler trains."""

import math

import pytest
import torch

from longtail.train import SAMPLERS, TrainConfig, train
from longtail.train.samplers import class_probabilities, epoch_order, progressive_probabilities, shard_batches

# A long tail like Fashion-MNIST-LT at imbalance 100 (n_max 5000), scaled down to keep the test quick.
COUNTS = torch.tensor([2000, 1200, 720, 430, 260, 155, 93, 56, 33, 20])
LABELS = torch.repeat_interleave(torch.arange(10), COUNTS)


def test_class_probabilities_by_hand():
    counts = torch.tensor([9, 4, 1, 0])
    torch.testing.assert_close(class_probabilities(counts, 1.0), torch.tensor([9, 4, 1, 0], dtype=torch.float64) / 14)
    torch.testing.assert_close(class_probabilities(counts, 0.5), torch.tensor([3, 2, 1, 0], dtype=torch.float64) / 6)
    torch.testing.assert_close(class_probabilities(counts, 0.0), torch.tensor([1, 1, 1, 0], dtype=torch.float64) / 3)
    # Progressive: instance-balanced at epoch 0, halfway at T/2, (T-1)/T of the way at the last epoch.
    torch.testing.assert_close(progressive_probabilities(counts, 0, 4), class_probabilities(counts, 1.0))
    torch.testing.assert_close(progressive_probabilities(counts, 2, 4),
                               0.5 * class_probabilities(counts, 1.0) + 0.5 * class_probabilities(counts, 0.0))


def _frequencies(order: torch.Tensor) -> torch.Tensor:
    return torch.bincount(LABELS[order], minlength=10).double() / order.numel()


@pytest.mark.parametrize("sampler,q", [("instance", 1.0), ("sqrt", 0.5), ("class_balanced", 0.0)])
def test_empirical_class_frequencies_match_p_j(sampler, q):
    """Over 20 epochs (99,340 draws) every class's frequency is within 5 binomial standard deviations of p_j."""
    p = class_probabilities(COUNTS, q)
    draws = torch.cat([epoch_order(sampler, LABELS, COUNTS, e, 20, torch.Generator().manual_seed(e)) for e in range(20)])
    tolerance = 5 * torch.sqrt(p * (1 - p) / draws.numel())
    assert torch.all((_frequencies(draws) - p).abs() <= tolerance), (_frequencies(draws), p)


def test_within_a_class_every_image_is_equally_likely():
    draws = torch.cat([epoch_order("class_balanced", LABELS, COUNTS, 0, 1, torch.Generator().manual_seed(s))
                       for s in range(40)])
    tail = draws[LABELS[draws] == 9]  # 20 images, each expected tail.numel() / 20 times
    hits = torch.bincount(tail - int(COUNTS[:9].sum()), minlength=20).double()
    expected = tail.numel() / 20
    assert hits.numel() == 20 and torch.all((hits - expected).abs() <= 5 * math.sqrt(expected))


def test_progressive_moves_from_instance_to_class_balanced():
    epochs = 10
    first = epoch_order("progressive", LABELS, COUNTS, 0, epochs, torch.Generator().manual_seed(0))
    last = epoch_order("progressive", LABELS, COUNTS, 9, epochs, torch.Generator().manual_seed(0))
    tail_first, tail_last = _frequencies(first)[9].item(), _frequencies(last)[9].item()
    assert tail_first == pytest.approx(20 / COUNTS.sum().item(), abs=0.003)
    assert tail_last == pytest.approx(0.1 * 20 / COUNTS.sum().item() + 0.9 * 0.1, abs=0.01)


def test_instance_sampler_is_the_trainers_permutation():
    """Runs from before the samplers existed reproduce: instance-balanced is the same randperm of (seed, epoch)."""
    order = epoch_order("instance", LABELS, COUNTS, 3, 5, torch.Generator().manual_seed(7))
    assert torch.equal(order, torch.randperm(len(LABELS), generator=torch.Generator().manual_seed(7)))
    assert torch.equal(torch.sort(order).values, torch.arange(len(LABELS)))


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_deterministic_under_the_generator(sampler):
    a = epoch_order(sampler, LABELS, COUNTS, 1, 4, torch.Generator().manual_seed(5))
    b = epoch_order(sampler, LABELS, COUNTS, 1, 4, torch.Generator().manual_seed(5))
    c = epoch_order(sampler, LABELS, COUNTS, 1, 4, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (len(LABELS),) and a.dtype == torch.int64


@pytest.mark.parametrize("world", [1, 2, 3])
def test_ddp_shards_are_disjoint_and_cover_every_batch(world):
    order = epoch_order("class_balanced", LABELS, COUNTS, 0, 1, torch.Generator().manual_seed(0))[:103]
    shards = [shard_batches(order, 32, rank, world) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1  # every process takes the same number of steps
    for step in range(len(shards[0])):
        positions = torch.cat([shards[rank][step][0] for rank in range(world)])
        batch = order[step * 32 : (step + 1) * 32]
        assert sorted(positions.tolist()) == sorted(batch.tolist())  # the shards together are the batch
        assert sum(s[step][0].numel() for s in shards) == batch.numel()  # and no position twice
    # 103 = 3 x 32 + 7: the last batch (7 images) is kept while every process gets two of it.
    assert len(shards[0]) == (4 if 7 >= 2 * world else 3)
    assert [full for _, full in shards[0]] == [True, True, True, False][: len(shards[0])]


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_two_epochs_with_every_sampler(sampler, synthetic_data, tmp_path, tiny_config):
    result = train(tiny_config(sampler=sampler), tmp_path, verbose=0, data=synthetic_data)
    assert result["status"] == "complete" and result["config"]["sampler"] == sampler
    assert all(math.isfinite(h["train_loss"]) for h in result["history"])


def test_a_run_stopped_mid_way_resumes_to_the_same_result(synthetic_data, tmp_path, interrupted, tiny_config):
    config = tiny_config(epochs=3, sampler="progressive")
    full = train(config, tmp_path / "full", verbose=0, data=synthetic_data)
    interrupted(train, config, tmp_path / "part", verbose=0, data=synthetic_data, at=2)
    again = train(config, tmp_path / "part", resume=True, verbose=0, data=synthetic_data)
    assert again["history"] == full["history"] and again["final"] == full["final"]


def test_sampler_defaults_to_the_stages_and_bad_names_are_refused():
    assert TrainConfig().sampler == "instance"
    assert TrainConfig(stage="crt", init_from="somewhere").sampler == "class_balanced"
    assert TrainConfig(stage="crt", init_from="somewhere", sampler="sqrt").sampler == "sqrt"
    with pytest.raises(ValueError, match="sampler must be one of 'instance', 'class_balanced', 'sqrt', 'progressive'"):
        TrainConfig(sampler="balanced")
