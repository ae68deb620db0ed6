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


# --- label smoothing, per-sample weights and pos_weight (docs/conventions.md), written from the definitions ---


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _log_sigmoid(z):
    return -np.logaddexp(0.0, -z)


def _softmax_terms(z, gamma):
    """term_c = -log p_c, or the focal -(1 - p_c)**gamma log p_c, (N, C)."""
    logp = _log_softmax(z)
    if gamma is None:
        return -logp
    return -((1.0 - np.exp(logp)) ** gamma) * logp


def reference_loss(
    z,
    target,
    weight=None,
    *,
    loss="softmax",
    gamma=0.0,
    label_smoothing=0.0,
    sample_weight=None,
    pos_weight=None,
    alpha=None,
    reduction="mean",
    ignore_index=-100,
):
    """The library's definitions for (N, C) logits, in numpy float64, from docs/conventions.md.

    target: class indices (N,) (integers, ignore_index allowed) or float targets (N, C) (probabilities for
    the softmax losses, multi-hot / soft labels for the sigmoid ones, multilabel_weight="average").
    loss: "softmax", "softmax_focal", "sigmoid" or "focal" (sigmoid focal). Returns a float or an (N,) array.
    """
    z = np.asarray(z, dtype=np.float64)
    target = np.asarray(target)
    n, c = z.shape
    eps = float(label_smoothing)
    w = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64)
    s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    hard = target.ndim == 1
    if hard:
        valid = target != ignore_index
        y = np.where(valid, target, 0)
        t = np.eye(c)[y]
    else:
        valid = np.ones(n, dtype=bool)
        t = target.astype(np.float64)
    if loss in ("softmax", "softmax_focal"):
        terms = _softmax_terms(z, gamma if loss == "softmax_focal" else None)
        q = (1.0 - eps) * t + eps / c
        if hard or weight is None:
            # sum_c q_c term_c times the weight of the unsmoothed label (w_y; 1 without class weights).
            class_w = w[y] if hard else np.ones(n)
            per_sample = class_w * (q * terms).sum(1)
            norm = class_w
        else:
            # Probability targets with class weights: the label mass per class, the smoothing mass by W = sum t w.
            mass = (t * w).sum(1)
            per_sample = (1.0 - eps) * (t * w * terms).sum(1) + eps / c * mass * terms.sum(1)
            norm = mass
    else:
        pw = np.ones(c) if pos_weight is None else np.asarray(pos_weight, dtype=np.float64)
        bce = -(pw * t * _log_sigmoid(z) + (1.0 - t) * _log_sigmoid(-z))
        if loss == "focal":
            p = _sigmoid(z)
            p_t = p * t + (1.0 - p) * (1.0 - t)
            bce = (1.0 - p_t) ** gamma * bce
        if alpha is not None:
            bce = (alpha * t + (1.0 - alpha) * (1.0 - t)) * bce
        per_sample = bce.sum(1)
        mass = t.sum(1)
        norm = np.where(mass > 0, (t * w).sum(1) / np.where(mass > 0, mass, 1.0), w.mean())
        per_sample = norm * per_sample
    per_sample = np.where(valid, s * per_sample, 0.0)
    norm = np.where(valid, s * norm, 0.0)
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return float(per_sample.sum())
    if reduction == "mean":
        return float(per_sample.sum() / max(int(valid.sum()), 1))
    return float(per_sample.sum() / norm.sum()) if norm.sum() > 0 else 0.0
