"""The effective number estimated from data (longtail.prototypes, beyond the paper): covering numbers by hand,
per-class betas and weights by hand."""

import math
import warnings

import numpy as np
import pytest
import torch

from longtail import class_balanced_weights, effective_number
from longtail.prototypes import (
    covering_number,
    estimate_prototypes,
    nearest_neighbour_distances,
    per_class_betas,
    radius_grid,
)
from longtail.weights import per_class_effective_number, per_class_weights


def line(n, spacing=1.0):
    return torch.tensor([[spacing * i, 0.0] for i in range(n)], dtype=torch.float64)


@pytest.mark.parametrize(
    "n, radius, expected",
    [
        (10, 1.5, 5),  # 0 covers 0,1; 2 covers 2,3; ...
        (10, 1.0, 5),  # closed ball: a point at exactly r is covered
        (10, 0.99, 10),
        (10, 2.0, 4),  # 0 covers 0..2, 3 covers 3..5, 6 covers 6..8, 9
        (10, 9.0, 1),
        (10, 0.0, 10),
        (1, 0.5, 1),
        (0, 0.5, 0),
    ],
)
def test_covering_number_of_points_on_a_line(n, radius, expected):
    points = line(n) if n else torch.zeros(0, 2)
    assert covering_number(points, radius, normalize=False) == expected


def test_the_greedy_cover_follows_the_given_order():
    # In order 1, 0, 2 (r = 1): centre 1 covers 0 and 2, one centre; in order 0, 1, 2: 0 covers 1, then 2.
    assert covering_number([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]], 1.0, normalize=False) == 1
    assert covering_number([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]], 1.0, normalize=False) == 2


def test_chunks_do_not_change_the_cover():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5, generator=gen)
    for r in (0.3, 0.8, 1.2):
        expected = covering_number(x, r, chunk_size=10_000)
        assert all(covering_number(x, r, chunk_size=c) == expected for c in (3, 7, 64))


def test_duplicates_count_once_and_radius_zero_counts_distinct_points():
    points = torch.tensor([[1.0, 2.0], [1.0, 2.0], [3.0, 1.0], [1.0, 2.0], [3.0, 1.0], [0.0, 5.0]])
    assert covering_number(points, 0.0, normalize=False) == 3
    assert covering_number(points, 1e-9, normalize=False) == 3
    # Normalised: (1, 2) and (2, 4) are the same direction, one prototype at r = 0.
    assert covering_number([[1.0, 2.0], [2.0, 4.0], [0.0, 1.0]], 0.0) == 2


def test_a_radius_above_the_diameter_gives_one_prototype():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(500, 16, generator=gen)
    assert covering_number(x, 2.0) == 1  # unit sphere: diameter 2
    assert covering_number(x, 1e-6) == 500  # distinct random points


def test_estimate_prototypes_per_class_with_an_absent_class():
    features = torch.cat([line(4), line(3) + torch.tensor([0.0, 100.0])])
    labels = torch.tensor([2, 2, 2, 2, 0, 0, 0])
    got = estimate_prototypes(features, labels, 4, radius=1.0, normalize=False)
    assert got.dtype == torch.int64 and got.tolist() == [2, 0, 2, 0]
    # Interleaved labels: each class keeps its own order.
    shuffled = torch.tensor([0, 2, 0, 2, 0, 2, 2])
    assert estimate_prototypes(features, shuffled, 3, radius=0.0, normalize=False).tolist() == [3, 0, 4]


def test_a_class_of_6000_features_is_fast():
    import time

    x = torch.randn(6000, 128, generator=torch.Generator().manual_seed(2))
    t0 = time.perf_counter()
    got = estimate_prototypes(x, torch.zeros(6000, dtype=torch.int64), 1, radius=1.3)
    assert 1 < int(got[0]) < 6000
    assert time.perf_counter() - t0 < 5.0


def test_nearest_neighbour_distances_and_the_radius_grid():
    features = torch.cat([line(3, spacing=2.0), torch.tensor([[0.0, 7.0]])])
    d = nearest_neighbour_distances(features, torch.tensor([0, 0, 0, 1]), 2, normalize=False)
    assert d[:3].tolist() == pytest.approx([2.0, 2.0, 2.0]) and math.isinf(float(d[3]))
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(200, 8, generator=gen), torch.arange(200) % 4
    radii = radius_grid(x, y, 4)
    assert radii == sorted(radii) and len(set(radii)) == len(radii) and 0 < radii[0] and radii[-1] <= 2.0
    n = [estimate_prototypes(x, y, 4, r) for r in radii]
    assert all(bool((a >= b).all()) for a, b in zip(n, n[1:]))  # a larger radius never needs more prototypes


def test_per_class_betas_by_hand():
    assert per_class_betas([1, 2, 4, 10]).tolist() == [0.0, 0.5, 0.75, 0.9]
    with pytest.raises(ValueError, match=r"prototypes must be >= 1 for every class"):
        per_class_betas([3, 0])


def test_per_class_effective_number_and_weights_by_hand():
    counts, betas = [100, 10, 1], [0.99, 0.9, 0.0]
    e = [(1 - 0.99**100) / 0.01, (1 - 0.9**10) / 0.1, 1.0]
    assert per_class_effective_number(counts, betas).tolist() == pytest.approx(e, rel=1e-13)
    raw = [1 / v for v in e]
    expected = [3 * r / sum(raw) for r in raw]
    got = per_class_weights(counts, betas, dtype=torch.float64)
    assert got.tolist() == pytest.approx(expected, rel=1e-13)
    assert got.tolist() == pytest.approx([0.0405, 0.3939, 2.5656], abs=1e-4)
    # beta_c = 1 is n_c itself (inverse frequency), beta_c = 0 is 1
    assert per_class_effective_number([7, 5], [1.0, 0.0]).tolist() == [7.0, 1.0]


@pytest.mark.filterwarnings("ignore::longtail.BetaRangeWarning")  # 0.9 and 1 - 1e-12 are out of range on purpose
def test_one_beta_for_every_class_is_the_scalar_form():
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    for beta in (0.0, 0.9, 0.999, 0.9999, 1 - 1e-12, 1.0):
        torch.testing.assert_close(per_class_weights(counts, [beta] * 10, dtype=torch.float64),
                                   class_balanced_weights(counts, beta, dtype=torch.float64), rtol=1e-9, atol=0)
        torch.testing.assert_close(per_class_effective_number(counts, [beta] * 10), effective_number(counts, beta),
                                   rtol=1e-9, atol=0)


def test_prototypes_to_weights_end_to_end():
    # Class 0: 6 points in 3 tight pairs (N = 3); class 1: 2 distinct points (N = 2).
    features = torch.tensor([[0, 0], [0, 0.1], [5, 0], [5, 0.1], [10, 0], [10, 0.1], [0, 50], [0, 60]],
                            dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])
    n_c = estimate_prototypes(features, labels, 2, radius=0.5, normalize=False)
    assert n_c.tolist() == [3, 2]
    betas = per_class_betas(n_c)
    assert betas.tolist() == pytest.approx([2 / 3, 1 / 2])
    e = [3 * (1 - (2 / 3) ** 6), 2 * (1 - 0.5**2)]
    w = per_class_weights([6, 2], betas, dtype=torch.float64)
    assert w.tolist() == pytest.approx([2 * (1 / e[0]) / (1 / e[0] + 1 / e[1]), 2 * (1 / e[1]) / (1 / e[0] + 1 / e[1])])


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"radius must be in \[0, inf\]; got -1.0"):
        covering_number(line(3), -1.0)
    with pytest.raises(ValueError, match=r"features must have shape \(N, D\); got shape \(3,\)"):
        estimate_prototypes(torch.zeros(3), torch.zeros(3, dtype=torch.int64), 1, 0.5)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 1\]; got values in \[0, 2\]"):
        estimate_prototypes(line(3), torch.tensor([0, 1, 2]), 2, 0.5)
    with pytest.raises(ValueError, match=r"betas must have shape \(2,\), one per class; got \(3,\)"):
        per_class_weights([3, 4], [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"counts must be positive for every class, got 0 for classes \[1\]"):
        per_class_weights([3, 0], [0.5, 0.5])
    assert per_class_weights([3, 0], [0.5, 0.5], zero_counts="ignore").tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"points must be finite; got NaN or inf"):
        covering_number(np.array([[0.0, np.nan]]), 1.0)


# Per-class betas in the loss and the trainer (an extension beyond the paper).
def test_class_balanced_loss_takes_per_class_betas():
    from longtail import ClassBalancedLoss
    from longtail.functional import class_balanced_loss

    counts, betas = [100, 10, 1], [0.99, 0.9, 0.0]
    criterion = ClassBalancedLoss(counts, beta=betas)
    assert criterion.beta == (0.99, 0.9, 0.0)
    torch.testing.assert_close(criterion.weight, torch.tensor([0.0405, 0.3939, 2.5656]), atol=1e-4, rtol=0)
    torch.testing.assert_close(criterion.weight, per_class_weights(counts, betas))
    logits, target = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]]), torch.tensor([2, 0])
    torch.testing.assert_close(criterion(logits, target), class_balanced_loss(logits, target, criterion.weight))
    # a tensor of betas, and one beta repeated, give the scalar form's weights
    torch.testing.assert_close(ClassBalancedLoss(counts, beta=torch.tensor(betas)).weight, criterion.weight)
    torch.testing.assert_close(ClassBalancedLoss(counts, beta=[0.9] * 3).weight, ClassBalancedLoss(counts, 0.9).weight)
    # The beta-range warning is about one beta for every class: per-class betas (chosen per class) do not warn.
    large = [1e7, 2e6, 5e4]
    with pytest.warns(UserWarning, match="nearly uniform"):
        ClassBalancedLoss(large, beta=0.9999)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ClassBalancedLoss(large, beta=[0.9999] * 3)
    with pytest.raises(ValueError, match=r"betas must have shape \(3,\), one per class; got \(2,\)"):
        ClassBalancedLoss(counts, beta=[0.9, 0.9])
    with pytest.raises(ValueError, match=r"betas must be in \[0, 1\] for every class"):
        ClassBalancedLoss(counts, beta=[0.9, 1.5, 0.9])


def test_trainer_class_betas_field_and_flag():
    from longtail.cli import _default_out, build_parser
    from longtail.train import TrainConfig
    from longtail.train.losses import build_loss

    counts = torch.tensor([100.0, 10.0, 1.0])
    config = TrainConfig(loss="cb_focal", gamma=1.0, class_betas=[0.99, 0.9, 0.0])
    loss = build_loss(config, counts)
    torch.testing.assert_close(loss.weight, per_class_weights(counts, [0.99, 0.9, 0.0]))
    assert loss.gamma == 1.0
    assert build_loss(TrainConfig(loss="cb_softmax", beta=0.9), counts).beta == 0.9  # unset: beta as before
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert "class_betas = [0.99, 0.9, 0.0]" in config.to_toml()
    with pytest.raises(ValueError, match=r"class_betas\[1\] must be in \[0, 1\]; got 2"):
        TrainConfig(loss="cb_softmax", class_betas=[0.5, 2])
    with pytest.raises(TypeError, match=r"class_betas must be a non-empty list of per-class betas; got float 0.5"):
        TrainConfig(loss="cb_softmax", class_betas=0.5)
    args = build_parser().parse_args(["train", "--loss", "cb_softmax", "--class-betas", "0.99,0.9,0"])
    assert args.class_betas == [0.99, 0.9, 0.0]
    assert str(_default_out(TrainConfig(loss="cb_softmax", class_betas=[0.5, 0.5]))).startswith(
        "runs/fashion_mnist-cb_softmax-beta0.9999-class_betas-reductionmean")
    assert "class_betas" not in str(_default_out(TrainConfig(loss="cb_softmax")))


def test_per_class_weights_of_counts_at_the_edge_of_float64_are_the_one_beta_limits_not_nan():
    # 1/n overflows for a subnormal count (the plain rescaling gave NaN) and the sum overflows for four counts at the
    # smallest normal float64 (it gave 0): the same limits as class_balanced_weights.
    tiny = [2.2250738585072014e-308] * 4
    assert per_class_weights(tiny, [1.0] * 4, dtype=torch.float64).tolist() == [1.0, 1.0, 1.0, 1.0]
    torch.testing.assert_close(per_class_weights([1e-320, 1], [1.0, 1.0], dtype=torch.float64),
                               class_balanced_weights([1e-320, 1], 1.0, dtype=torch.float64))
