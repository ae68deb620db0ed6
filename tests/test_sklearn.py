import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from longtail import class_balanced_weights
from longtail.sklearn import class_weight, sample_weight


def _data():
    rng = np.random.default_rng(0)
    sizes = {"head": 300, "mid": 60, "tail": 12}
    X = np.concatenate([rng.normal(i, 1.0, size=(n, 2)) for i, n in enumerate(sizes.values())])
    y = np.concatenate([[name] * n for name, n in sizes.items()])
    return X, y


def test_class_weight_dict_values():
    _, y = _data()
    weights = class_weight(y, beta=0.999)
    assert list(weights) == ["head", "mid", "tail"]  # sorted labels, like scikit-learn
    expected = class_balanced_weights([300, 60, 12], 0.999).double().numpy()
    assert [weights[k] for k in ["head", "mid", "tail"]] == pytest.approx(expected.tolist(), rel=1e-6)
    assert sum(weights.values()) == pytest.approx(3.0)
    assert all(type(v) is float for v in weights.values())


def test_real_estimator_class_weight_equals_sample_weight():
    X, y = _data()
    by_class = LogisticRegression(class_weight=class_weight(y, beta=0.999), max_iter=1000).fit(X, y)
    by_sample = LogisticRegression(max_iter=1000).fit(X, y, sample_weight=sample_weight(y, beta=0.999))
    np.testing.assert_allclose(by_class.coef_, by_sample.coef_, rtol=1e-4, atol=1e-6)
    plain = LogisticRegression(max_iter=1000).fit(X, y)
    tail = y == "tail"
    # Re-weighting moves the decision boundary towards the head: more tail recall.
    assert (by_class.predict(X[tail]) == "tail").mean() > (plain.predict(X[tail]) == "tail").mean()


def test_beta_one_is_sklearn_balanced_up_to_scale():
    from sklearn.utils.class_weight import compute_class_weight

    _, y = _data()
    balanced = compute_class_weight("balanced", classes=np.unique(y), y=y)
    ours = np.array(list(class_weight(y, beta=1.0).values()))
    np.testing.assert_allclose(ours / ours.sum(), balanced / balanced.sum(), rtol=1e-12)


def test_sample_weight_and_classes_argument():
    y = np.array([2, 2, 0, 2])
    np.testing.assert_allclose(sample_weight(y, beta=1.0), [0.5, 0.5, 1.5, 0.5])
    with pytest.raises(ValueError, match=r"got 0 for classes \[1\]"):
        class_weight(y, beta=1.0, classes=[0, 1, 2])
    weights = class_weight(y, beta=1.0, classes=[0, 1, 2], zero_counts="ignore")
    assert weights == pytest.approx({0: 1.5, 1: 0.0, 2: 0.5})
    with pytest.raises(ValueError, match=r"labels that are not in classes: \[2\]"):
        class_weight(y, beta=1.0, classes=[0, 1])
    with pytest.raises(ValueError, match=r"y must be 1-D"):
        class_weight(np.zeros((2, 2)), beta=0.9)
