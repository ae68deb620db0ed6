import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from longtail import class_counts


def test_int_labels_any_container_and_shape():
    labels = [0, 2, 2, 1, 2, 0]
    expected = [2, 1, 3, 0]
    assert class_counts(labels, 4).tolist() == expected
    assert class_counts(np.array(labels), 4).tolist() == expected
    assert class_counts(torch.tensor(labels, dtype=torch.int32), 4).tolist() == expected
    seg = torch.tensor([[0, 2, 255], [2, 1, 255]])
    assert class_counts(seg, 3, ignore_index=255).tolist() == [1, 1, 2]
    assert class_counts(torch.tensor([0, -100, 1]), 2).tolist() == [1, 1]
    assert class_counts(torch.tensor([0, -100, 1]), 2).dtype == torch.int64


def test_multi_hot_targets():
    targets = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 1]], dtype=torch.float32)
    assert class_counts(targets, 3).tolist() == [2, 1, 3]
    assert class_counts(targets.bool(), 3).tolist() == [2, 1, 3]
    assert class_counts(targets.long(), 3, multi_label=True).tolist() == [2, 1, 3]
    soft = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    assert class_counts(soft, 2).tolist() == [0.75, 1.25]


def test_dataloader_of_batches_matches_tensor():
    labels = torch.randint(0, 5, (103,))
    loader = DataLoader(TensorDataset(torch.randn(103, 3), labels), batch_size=16)
    assert torch.equal(class_counts(loader, 5), class_counts(labels, 5))
    label_batches = (labels[i : i + 10] for i in range(0, 103, 10))
    assert torch.equal(class_counts(label_batches, 5), class_counts(labels, 5))
    dict_batches = [{"image": torch.zeros(2), "label": labels[:50]}, {"image": torch.zeros(2), "label": labels[50:]}]
    assert torch.equal(class_counts(dict_batches, 5), class_counts(labels, 5))


def test_errors():
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\] .* got values in \[0, 3\]"):
        class_counts([0, 1, 3], 3)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1; got 0"):
        class_counts([0], 0)
    # A bool or non-integer num_classes is a type error (it used to be a ValueError).
    with pytest.raises(TypeError, match="num_classes must be an integer; got float 3.0"):
        class_counts([0], 3.0)
    with pytest.raises(TypeError, match="num_classes must be an integer; got bool True"):
        class_counts([0], True)
    with pytest.raises(TypeError, match="ignore_index must be an integer; got float -1.0"):
        class_counts([0], 3, ignore_index=-1.0)
    with pytest.raises(TypeError, match="class labels must be integers; got dtype torch.float32"):
        class_counts(torch.tensor([0.0, 1.0]), 2, multi_label=False)
    with pytest.raises(ValueError, match=r"multi-hot targets must have shape \(N, 3\); got \(2, 2\)"):
        class_counts(torch.ones(2, 2), 3)
    with pytest.raises(ValueError, match=r"multi-hot targets must hold values in \[0, 1\]; got values in \[0, 2\]"):
        class_counts(torch.tensor([[0.0, 2.0]]), 2)
    with pytest.raises(ValueError, match="labels must hold at least one batch; got an empty iterable"):
        class_counts(iter([]), 3)
    with pytest.raises(TypeError, match="got str"):
        class_counts("012", 3)
