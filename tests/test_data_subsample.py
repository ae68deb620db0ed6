"""Long-tailed subsampling: published CIFAR-LT sizes, profiles, seeding, validation split, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longtail.data import LongTailedSplit, long_tailed_counts, long_tailed_indices

# METHODS.md section 3: CIFAR-10-LT (n_max 5000) and CIFAR-100-LT (n_max 500) training-set sizes.
CIFAR10_LT = {200: 11203, 100: 12406, 50: 13996, 20: 17023, 10: 20431}
CIFAR100_LT = {200: 9502, 100: 10847, 50: 12608, 20: 15907, 10: 19573}


def balanced_labels(num_classes: int, per_class: int, *, shuffle_seed: int | None = 0) -> torch.Tensor:
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    if shuffle_seed is not None:
        labels = labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(shuffle_seed))]
    return labels


@pytest.mark.parametrize(("rho", "total"), sorted(CIFAR10_LT.items()))
def test_cifar10_lt_published_sizes(rho: int, total: int) -> None:
    assert sum(long_tailed_counts(10, 5000, rho)) == total
    split = long_tailed_indices(balanced_labels(10, 5000), rho)
    assert split.train_indices.numel() == total
    assert int(split.counts.sum()) == total
    assert int(split.counts[0]) == 5000


@pytest.mark.parametrize(("rho", "total"), sorted(CIFAR100_LT.items()))
def test_cifar100_lt_published_sizes(rho: int, total: int) -> None:
    assert sum(long_tailed_counts(100, 500, rho)) == total
    split = long_tailed_indices(balanced_labels(100, 500), rho)
    assert split.train_indices.numel() == total


def test_exp_profile_shape() -> None:
    counts = long_tailed_counts(10, 5000, 100)
    assert counts[0] == 5000 and counts[-1] == 50
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    assert counts == [int(5000 * 100 ** (-i / 9)) for i in range(10)]


@pytest.mark.parametrize("profile", ["exp", "step"])
def test_imbalance_one_is_balanced(profile: str) -> None:
    assert long_tailed_counts(7, 123, 1, profile) == [123] * 7
    assert long_tailed_counts(7, 123, 1.0, profile) == [123] * 7


def test_step_profile_even_and_odd() -> None:
    assert long_tailed_counts(10, 5000, 100, "step") == [5000] * 5 + [50] * 5
    # Odd C: the head half is C // 2 classes, the tail the remaining C - C // 2.
    assert long_tailed_counts(5, 100, 10, "step") == [100, 100, 10, 10, 10]


@pytest.mark.parametrize("profile", ["exp", "step"])
def test_single_class(profile: str) -> None:
    assert long_tailed_counts(1, 40, 10, profile) == [40]


def test_non_integer_imbalance() -> None:
    counts = long_tailed_counts(3, 1000, 2.5)
    assert counts == [1000, int(1000 * 2.5**-0.5), 400]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"imbalance": 0.5}, ValueError, r"imbalance must be in \[1, inf\]; got 0\.5"),
        ({"imbalance": math.nan}, ValueError, "imbalance must be a number; got NaN"),
        ({"imbalance": math.inf}, ValueError, "imbalance must be finite; got inf"),
        ({"imbalance": True}, TypeError, "imbalance must be a real number; got bool"),
        ({"imbalance": "10"}, TypeError, "imbalance must be a real number; got str"),
        ({"profile": "linear"}, ValueError, "profile must be one of 'exp', 'step'; got 'linear'"),
        ({"num_classes": 0}, ValueError, "num_classes must be an integer >= 1; got 0"),
        ({"num_classes": 2.0}, TypeError, "num_classes must be an integer; got float"),
        ({"n_max": 0}, ValueError, "n_max must be an integer >= 1; got 0"),
        ({"n_max": 50, "imbalance": 100}, ValueError, r"n_max must be .*\(n_max >= 100\).*; got n_max=50.*0 images"),
        ({"n_max": 50, "imbalance": 100, "profile": "step"}, ValueError, "n_max must be .*; got .*0 images"),
    ],
)
def test_counts_errors(kwargs: dict, exc: type[Exception], match: str) -> None:
    args = {"num_classes": 10, "n_max": 500, "imbalance": 10, "profile": "exp"} | kwargs
    with pytest.raises(exc, match=match):
        long_tailed_counts(**args)


def test_split_invariants_with_validation() -> None:
    labels = balanced_labels(10, 100)
    split = long_tailed_indices(labels, 10, val_per_class=25, seed=3)
    assert isinstance(split, LongTailedSplit)
    assert split.train_indices.dtype == torch.int64 and split.val_indices.dtype == torch.int64
    assert split.counts.dtype == torch.int64 and split.counts.shape == (10,)
    # n_max defaults to the smallest per-class count left after the validation split.
    assert int(split.counts[0]) == 75
    assert split.counts.tolist() == long_tailed_counts(10, 75, 10)
    assert torch.equal(torch.bincount(labels[split.train_indices], minlength=10), split.counts)
    assert torch.equal(torch.bincount(labels[split.val_indices], minlength=10), torch.full((10,), 25))
    assert split.val_counts.tolist() == [25] * 10
    train, val = set(split.train_indices.tolist()), set(split.val_indices.tolist())
    assert not train & val
    assert len(train) == split.train_indices.numel() and len(val) == split.val_indices.numel()
    assert torch.equal(split.train_indices, torch.sort(split.train_indices).values)
    assert torch.equal(split.val_indices, torch.sort(split.val_indices).values)
    assert split.num_classes == 10
    assert split.imbalance == pytest.approx(75 / 7)


def test_validation_is_last_images_of_each_class_in_dataset_order() -> None:
    labels = balanced_labels(4, 20, shuffle_seed=7)
    split = long_tailed_indices(labels, 5, val_per_class=3)
    expected = sorted(i for c in range(4) for i in torch.nonzero(labels == c).flatten().tolist()[-3:])
    assert split.val_indices.tolist() == expected


def test_validation_independent_of_seed_and_imbalance() -> None:
    labels = balanced_labels(5, 60)
    a = long_tailed_indices(labels, 10, val_per_class=10, seed=0)
    b = long_tailed_indices(labels, 2, "step", val_per_class=10, seed=99)
    assert torch.equal(a.val_indices, b.val_indices)


def test_same_seed_same_indices_different_seed_differs() -> None:
    labels = balanced_labels(10, 500)
    a = long_tailed_indices(labels, 50, seed=1)
    b = long_tailed_indices(labels, 50, seed=1)
    c = long_tailed_indices(labels, 50, seed=2)
    assert torch.equal(a.train_indices, b.train_indices)
    assert torch.equal(a.counts, c.counts)
    assert not torch.equal(a.train_indices, c.train_indices)
    # The draw is random within each class, not "the first k images".
    first_k = torch.cat(
        [torch.nonzero(labels == k).flatten()[: int(a.counts[k])] for k in range(10)]
    ).sort().values
    assert not torch.equal(a.train_indices, first_k)


def test_full_class_keeps_every_image() -> None:
    labels = balanced_labels(3, 10)
    split = long_tailed_indices(labels, 2, seed=5)
    head = set(torch.nonzero(labels == 0).flatten().tolist())
    assert head <= set(split.train_indices.tolist())


def test_label_container_types_agree() -> None:
    labels = balanced_labels(4, 30)
    reference = long_tailed_indices(labels, 3, seed=4, val_per_class=2)
    for variant in (labels.tolist(), labels.numpy(), labels.numpy().astype(np.uint8), labels.to(torch.int32)):
        other = long_tailed_indices(variant, 3, seed=4, val_per_class=2)
        assert torch.equal(other.train_indices, reference.train_indices)
        assert torch.equal(other.val_indices, reference.val_indices)


def test_explicit_n_max_and_num_classes() -> None:
    labels = balanced_labels(4, 30)
    split = long_tailed_indices(labels, 4, n_max=20, num_classes=4)
    assert split.counts.tolist() == long_tailed_counts(4, 20, 4)
    with pytest.raises(ValueError, match=r"labels must be in \[0, num_classes=3\); got a maximum label of 3"):
        long_tailed_indices(labels, 4, num_classes=3)


def test_uneven_class_sizes() -> None:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([50, 40, 30, 80])])
    split = long_tailed_indices(labels, 3, val_per_class=5)
    assert int(split.counts[0]) == 25  # smallest class: 30 - 5
    assert torch.equal(torch.bincount(labels[split.train_indices], minlength=4), split.counts)


@pytest.mark.parametrize(
    ("labels", "kwargs", "exc", "match"),
    [
        (torch.zeros(2, 3, dtype=torch.int64), {}, ValueError, r"labels must be 1-D \(N,\); got shape \(2, 3\)"),
        (torch.tensor([0.0, 1.0]), {}, TypeError, "labels must have an integer dtype; got torch.float32"),
        (torch.tensor([True, False]), {}, TypeError, "labels must have an integer dtype; got torch.bool"),
        ([0.5, 1.0], {}, TypeError, "labels must be integers; got an array of dtype float64"),
        ("0101", {}, TypeError, "labels must be a tensor, ndarray or sequence of ints; got str"),
        ([], {}, ValueError, "labels must hold at least one .*; got empty labels"),
        ([0, 1, -1], {}, ValueError, "labels must be >= 0; got a minimum of -1"),
        ([0, 1, 1, 1], {"val_per_class": 1}, ValueError, r"more than val_per_class=1.*; got .*\(0, 1\)"),
        ([0, 0, 2, 2], {}, ValueError, r"\(1, 0\)"),
        ([0] * 10 + [1] * 10, {"n_max": 11}, ValueError, r"class 0 must have 11 training images \+ 0 .*; got only 10"),
        (
            [0] * 11 + [1] * 3,
            {"n_max": 10, "imbalance": 2, "val_per_class": 1},
            ValueError,
            r"class 1 must have 5 training images \+ 1 validation images = 6 .*; got only 3 in the dataset",
        ),
        ([0, 1], {"imbalance": 0.9}, ValueError, r"imbalance must be in \[1, inf\]; got 0\.9"),
        ([0, 1], {"imbalance": math.nan}, ValueError, "imbalance must be a number; got NaN"),
        ([0, 1], {"profile": "cosine"}, ValueError, "profile must be one of 'exp', 'step'; got 'cosine'"),
        ([0, 1], {"val_per_class": -1}, ValueError, "val_per_class must be an integer >= 0; got -1"),
        ([0, 1], {"seed": 1.5}, TypeError, "seed must be an integer; got float 1.5"),
        ([0, 1], {"seed": True}, TypeError, "seed must be an integer; got bool True"),
        ([0, 1], {"num_classes": True}, TypeError, "num_classes must be an integer; got bool True"),
    ],
)
def test_indices_errors(labels: object, kwargs: dict, exc: type[Exception], match: str) -> None:
    args = {"imbalance": 1.0} | kwargs
    with pytest.raises(exc, match=match):
        long_tailed_indices(labels, **args)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=2, max_value=40), min_size=1, max_size=8),
    rho=st.floats(min_value=1.0, max_value=4.0),
    profile=st.sampled_from(["exp", "step"]),
    val=st.integers(min_value=0, max_value=1),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_split_properties(sizes: list[int], rho: float, profile: str, val: int, seed: int) -> None:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    labels = labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))]
    n_max = min(sizes) - val
    if math.ceil(rho) > n_max and rho > 1:
        rho = 1.0  # keep every class non-empty; the empty case is tested above
    split = long_tailed_indices(labels, rho, profile, seed=seed, val_per_class=val)
    again = long_tailed_indices(labels, rho, profile, seed=seed, val_per_class=val)
    assert torch.equal(split.train_indices, again.train_indices)
    assert split.counts.tolist() == long_tailed_counts(len(sizes), n_max, rho, profile)
    assert torch.equal(torch.bincount(labels[split.train_indices], minlength=len(sizes)), split.counts)
    assert torch.equal(torch.bincount(labels[split.val_indices], minlength=len(sizes)), split.val_counts)
    all_idx = torch.cat([split.train_indices, split.val_indices])
    assert all_idx.unique().numel() == all_idx.numel()
    assert bool((all_idx >= 0).all()) and bool((all_idx < labels.numel()).all())
