"""Independent references: the official class-balanced loss formulas, written directly in numpy float64.

These follow METHODS.md section 1 and the authors' TensorFlow code: per-sample weight w_y, sigmoid
and focal summed over all C one-vs-all terms, every variant divided by the number of samples N.
The focal modulator is the official exp(-gamma*y*z - gamma*log1p(exp(-z))) (fine in float64 for
moderate logits).
"""

from __future__ import annotations

import numpy as np


def effective_weights(counts, beta):
    counts = np.asarray(counts, dtype=np.float64)
    raw = (1.0 - beta) / (1.0 - np.power(beta, counts))
    return raw * len(counts) / raw.sum()


def _log_softmax(z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _bce_with_logits(z, t):
    return np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))


def official_per_sample(z, y, loss, gamma=0.0):
    """Unweighted per-sample loss, (N,), for class-index targets y."""
    z = np.asarray(z, dtype=np.float64)
    n, c = z.shape
    onehot = np.eye(c)[y]
    if loss in ("softmax", "softmax_focal"):
        logp = _log_softmax(z)[np.arange(n), y]
        if loss == "softmax":
            return -logp
        return -((1 - np.exp(logp)) ** gamma) * logp
    bce = _bce_with_logits(z, onehot)
    if loss == "sigmoid" or gamma == 0:
        return bce.sum(axis=1)
    modulator = np.exp(-gamma * onehot * z - gamma * np.log1p(np.exp(-z)))
    return (modulator * bce).sum(axis=1)


def official_loss(z, y, weight, loss, gamma=0.0):
    """The official reduction: sum_n w_{y_n} L_n / N."""
    per_sample = official_per_sample(z, y, loss, gamma)
    return float((np.asarray(weight, dtype=np.float64)[y] * per_sample).sum() / len(y))
