r"""Class-wise Difficulty-Balanced (CDB) loss (Sinha, Ohashi, Nakamura, ACCV 2020), with its weights in buffers.

A class's weight follows how hard the model currently finds it, not how many training samples it
has. After every epoch the model is evaluated (eval mode) on a held-out, labelled validation split
the loss never trains on, and with :math:`A_c` the top-1 accuracy of class :math:`c`:

.. math::
    d_c = 1 - A_c, \qquad w_c = C \, \frac{d_c^{\tau}}{\sum_k d_k^{\tau}}

The weights are constants for the next epoch; they start at 1 (the first epoch is plain
cross-entropy). The loss itself is :func:`longtail.functional.class_balanced_loss` with these
weights: ``loss="softmax"`` (CDB-CE) or ``loss="softmax_focal"`` (CDB-Focal, softmax focal loss with
``alpha = w``); :class:`CDBLoss` keeps the weights in a buffer, :class:`StableCDBLoss` damps and bounds them
(an extension beyond the paper). The weights' math is :mod:`longtail.weights` (:func:`longtail.weights.cdb_weights`,
:func:`longtail.weights.dynamic_tau`, :func:`longtail.weights.damped_weights`), the per-class accuracies come
from :mod:`longtail.difficulty` (:class:`longtail.difficulty.ClassDifficulty`).

A typical epoch loop::

    difficulty = ClassDifficulty(num_classes).to(device)
    criterion = CDBLoss(num_classes, tau="dynamic").to(device)
    for epoch in range(epochs):
        train_one_epoch(model, criterion)
        model.eval()
        difficulty.reset()
        with torch.no_grad():
            for x, y in val_loader:
                difficulty.update(model(x), y)
        difficulty.all_reduce()  # sums the counts over processes; a no-op without torch.distributed
        criterion.update_from(difficulty)
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..checks import (
    DYNAMIC,
    REDUCTIONS,
    as_class_accuracy,
    check_choice,
    check_gamma,
    check_ignore_index,
    check_label_smoothing,
    check_max_ratio,
    check_momentum,
    check_num_classes,
    check_real,
    check_tau,
)
from ..difficulty import DIFFICULTIES, DifficultySource, _as_prior, estimated_accuracy
from ..functional.class_balanced import class_balanced_loss
from ..loss_families import SOFTMAX_LOSSES
from ..weights import (
    STABLE_DIFFICULTY,
    STABLE_MAX_RATIO,
    STABLE_MOMENTUM,
    STABLE_PRIOR,
    cdb_weights,
    damped_weights,
    dynamic_tau,
)
from ._base import WeightedLoss

# CDB weighs the softmax losses (the paper's CDB-CE and CDB-Focal).
CDB_LOSSES = SOFTMAX_LOSSES


class CDBLoss(WeightedLoss):
    r"""Class-wise Difficulty-Balanced loss of Sinha et al. (ACCV 2020): CDB-CE and CDB-Focal.

    .. math::
        \ell_n = w_{y_n} L(z_n, y_n), \qquad
        w_c = C \, \frac{d_c^{\tau}}{\sum_k d_k^{\tau}}, \quad d_c = 1 - A_c

    with ``L`` the softmax cross-entropy (``loss="softmax"``, CDB-CE) or the softmax focal loss
    ``-(1 - p_y)**gamma log p_y`` (``loss="softmax_focal"``, CDB-Focal, i.e. focal with
    ``alpha = w``), computed by :func:`longtail.functional.class_balanced_loss`.

    The weights start at 1, so the first epoch is plain (focal) cross-entropy, and change only
    through :meth:`update_weights` (per-class validation accuracies, see
    :func:`longtail.weights.cdb_weights`) or :meth:`update_from` (a :class:`longtail.difficulty.ClassDifficulty`
    after an evaluation pass). They are constants for the loss: no gradient flows into them.

    State, all in buffers (they follow ``.to()`` and round-trip through ``state_dict``, so a
    resumed run continues with the same weights):

    - ``weight`` ``(C,)`` float32: the weights in use;
    - ``last_tau`` scalar float64: the ``tau`` used by the last update (NaN before the first);
    - ``last_accuracy`` ``(C,)`` float64: the accuracies of the last update (NaN before the first,
      and for classes absent from that validation pass);
    - ``num_updates`` scalar int64.

    A class whose accuracy is NaN (absent from the validation data) keeps its current weight;
    the measured classes share the rest of the total ``C``.

    Args:
        num_classes: ``C``.
        tau: exponent ``> 0``, or ``"dynamic"`` (the paper's ``2 sigmoid(max A / (min A + 0.01) - 1)``,
            recomputed at every update; see :func:`longtail.weights.dynamic_tau`).
        loss: ``"softmax"`` (CDB-CE) or ``"softmax_focal"`` (CDB-Focal).
        gamma: focal parameter ``>= 0`` for ``"softmax_focal"``; must stay 0 with ``"softmax"``.
        reduction: ``"mean"`` (the official code: weighted sum / number of non-ignored samples),
            ``"weighted_mean"`` (``F.cross_entropy(weight=w)``'s: weighted sum / sum of the samples'
            weights), ``"sum"`` or ``"none"``.
        ignore_index: class-index targets equal to it contribute nothing.
        floor: minimum difficulty in ``[0, 1]``; 0 (the paper) gives a class with accuracy 1
            weight 0, a small positive floor keeps every class in the loss.
        label_smoothing: ``eps`` in ``[0, 1)``: ``w_y sum_c q_c L_c`` with ``q = (1 - eps) onehot(y) + eps / C``,
            the weight that of the unsmoothed label (see :func:`longtail.functional.class_balanced_loss`).

    ``forward(logits, target, sample_weight=None)``: per-sample weights ``(N,)`` / ``(N, d1, ...)``, finite
    and ``>= 0``, multiplying each sample's loss with ``w_y``.

    Shapes:
        ``logits`` ``(N, C)`` or ``(N, C, d1, ...)``; ``target`` ``(N,)`` / ``(N, d1, ...)`` class
        indices or float probabilities with the logits' shape. Output: scalar, or ``(N, d1, ...)``
        for ``reduction="none"``.

    Example:
        >>> criterion = CDBLoss(3, tau=1.5)
        >>> criterion.weight
        tensor([1., 1., 1.])
        >>> criterion.update_weights([0.9, 0.6, 0.3])
        tensor([0.1090, 0.8721, 2.0189])
        >>> criterion(torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]]), torch.tensor([0, 2]))
        tensor(0.1238)
    """

    weight: torch.Tensor
    last_tau: torch.Tensor
    last_accuracy: torch.Tensor
    num_updates: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        tau: float | str = DYNAMIC,
        loss: str = "softmax",
        gamma: float = 0.0,
        reduction: str = "mean",
        ignore_index: int = -100,
        floor: float = 0.0,
        *,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(num_classes=num_classes)
        num_classes = check_num_classes(num_classes)
        self.tau = check_tau(tau)
        self.loss = check_choice("loss", loss, CDB_LOSSES)
        self.gamma = check_gamma(gamma)
        if self.loss == "softmax" and self.gamma != 0.0:
            raise ValueError(
                f"gamma is used only with loss='softmax_focal'; got gamma={self.gamma} with loss='softmax'"
            )
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.ignore_index = check_ignore_index(ignore_index)
        self.floor = check_real("floor", floor, low=0.0, high=1.0)
        self.label_smoothing = check_label_smoothing(label_smoothing)
        self.register_buffer("last_tau", torch.tensor(math.nan, dtype=torch.float64))
        self.register_buffer("last_accuracy", torch.full((num_classes,), math.nan, dtype=torch.float64))
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.int64))

    @torch.no_grad()
    def update_weights(self, class_accuracy: Any) -> torch.Tensor:
        """Sets the weights from per-class accuracies ``(C,)`` in ``[0, 1]`` (NaN: class not measured).

        Classes with NaN keep their current weight; at least one class must be measured.

        Returns:
            A copy of the new weights ``(C,)``.
        """
        acc = as_class_accuracy(class_accuracy, allow_missing=True, num_classes=self.num_classes)
        tau = dynamic_tau(acc) if self.tau == DYNAMIC else float(self.tau)
        self.set_weight(self._next_weight(acc, tau))
        self.last_tau.fill_(tau)
        self.last_accuracy.copy_(acc)
        self.num_updates += 1
        return self.weight.clone()

    def _next_weight(self, acc: torch.Tensor, tau: float) -> torch.Tensor:
        """The weights after an update with accuracies ``acc`` and exponent ``tau``: the paper's, in full."""
        return cdb_weights(acc, tau, floor=self.floor, previous=self.weight, dtype=torch.float64)

    def update_from(self, difficulty: DifficultySource) -> torch.Tensor:
        """Sets the weights from ``difficulty.accuracy()`` (a :class:`longtail.difficulty.ClassDifficulty`, or
        :class:`longtail.difficulty.TrainingDifficultyEMA`). Under data parallelism call
        ``difficulty.all_reduce()`` first, so every process gets the same weights."""
        if not isinstance(difficulty, DifficultySource):
            raise TypeError(
                "difficulty must be a ClassDifficulty or an object with an accuracy() method; "
                f"got {type(difficulty).__name__}"
            )
        return self.update_weights(difficulty.accuracy())

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, sample_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return class_balanced_loss(
            logits, target, self.weight, loss=self.loss, gamma=self.gamma, reduction=self.reduction,
            ignore_index=self.ignore_index, label_smoothing=self.label_smoothing, sample_weight=sample_weight,
        )

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, tau={self.tau!r}, loss={self.loss!r}, gamma={self.gamma}, "
            f"reduction={self.reduction!r}, floor={self.floor}{self._smoothing_repr()}"
        )


class StableCDBLoss(CDBLoss):
    r"""CDB with stable weights: **an extension beyond the paper** (``docs/cdb_stable.md``).

    The paper's weights (:class:`CDBLoss`) can oscillate: on Fashion-MNIST-LT (rho 100, 25
    validation images per class) the head classes reach 100 % validation accuracy after the first
    epoch, get weight exactly 0, collapse during the next epoch (trained on the tail only), and the
    weight vector flips back, every epoch. Three changes, each an extension beyond the paper:

    1. **Accuracy from a posterior** (``prior``): with a :class:`longtail.difficulty.ClassDifficulty` /
       :class:`longtail.metrics.ConfusionMeter` (:meth:`update_from`), the accuracy is the
       Beta-Binomial posterior mean ``A_c = (correct_c + a) / (n_c + a + b)``
       (:func:`longtail.difficulty.posterior_accuracy`): 25 of 25 correct is ``26/27`` with Laplace's
       ``a = b = 1``, never a difficulty of exactly 0. ``difficulty="confidence"`` measures a class
       by the mean probability of its true class instead of its top-1 hits (the meter needs
       ``confidence=True``), with the same prior.
    2. **Damping** (``momentum``): the weights move towards each update's target
       (:func:`longtail.weights.cdb_weights` of those accuracies, the paper's formula) by a step
       ``m``: ``w <- (1 - m) w + m target``. The first update is damped too, from the uniform
       weights of the first (plain cross-entropy) epoch: taking it in full would be the very jump
       that starts the oscillation.
    3. **A bounded ratio** (``max_ratio``): then every weight below ``max(w) / R`` is raised to it,
       and the weights are rescaled to sum to ``C`` (:func:`longtail.weights.bound_ratio`; the rescaling
       keeps the ratio, so ``max w / min w <= R`` holds afterwards).

    ``prior=None, difficulty="accuracy", momentum=1, max_ratio=None`` is the paper's :class:`CDBLoss`,
    update for update. The defaults (``prior=1`` (Laplace), ``difficulty="confidence"``,
    ``momentum=0.25``, ``max_ratio=16``) were chosen by the validation balanced accuracy of a small
    sweep on Fashion-MNIST-LT, never by the test set (``docs/cdb_stable.md``); with
    ``difficulty="confidence"`` the counter must be built with ``confidence=True``
    (``ClassDifficulty(C, confidence=True)``; the trainer's is).

    State, all in buffers (a resumed run continues exactly): those of :class:`CDBLoss` (``weight``,
    the damped weights in use; ``last_tau``; ``last_accuracy``, the estimated accuracies of the last
    update; ``num_updates``) and ``target_weight`` ``(C,)`` float64, the last update's target before
    damping and bounding (NaN before the first update). :meth:`update_weights` takes accuracies
    directly (no prior can be applied to them; damping and the bound are).

    Args:
        num_classes, tau, loss, gamma, reduction, ignore_index, floor, label_smoothing: as
            :class:`CDBLoss`.
        prior: Beta pseudo-counts ``(a, b)``, a number ``a`` for ``(a, a)``, or None / 0 for the
            paper's plain ratio ``correct / n``.
        difficulty: ``"confidence"`` (the mean true-class probability) or ``"accuracy"`` (top-1
            hits, the paper).
        momentum: the EMA step ``m`` in ``(0, 1]``; 1 takes each target in full (the paper).
        max_ratio: the largest allowed ``max w / min w``, ``>= 1``; None for no bound (the paper).

    Example:
        >>> criterion = StableCDBLoss(3, tau=1.0, prior=None, momentum=0.5, max_ratio=2.0)
        >>> criterion.update_weights([1.0, 1.0, 0.0])   # half-way to [0, 0, 3] is [0.5, 0.5, 2]; then 2 / 2 = 1
        tensor([0.7500, 0.7500, 1.5000])
        >>> criterion.target_weight
        tensor([0., 0., 3.], dtype=torch.float64)
    """

    target_weight: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        tau: float | str = DYNAMIC,
        loss: str = "softmax",
        gamma: float = 0.0,
        reduction: str = "mean",
        ignore_index: int = -100,
        floor: float = 0.0,
        *,
        label_smoothing: float = 0.0,
        prior: Any = STABLE_PRIOR,
        difficulty: str = STABLE_DIFFICULTY,
        momentum: float = STABLE_MOMENTUM,
        max_ratio: float | None = STABLE_MAX_RATIO,
    ) -> None:
        super().__init__(num_classes, tau=tau, loss=loss, gamma=gamma, reduction=reduction,
                         ignore_index=ignore_index, floor=floor, label_smoothing=label_smoothing)
        self.prior = _as_prior(prior)
        self.difficulty = check_choice("difficulty", difficulty, DIFFICULTIES)
        self.momentum = check_momentum(momentum)
        self.max_ratio = check_max_ratio(max_ratio)
        self.register_buffer("target_weight", torch.full((check_num_classes(num_classes),), math.nan,
                                                         dtype=torch.float64))

    def _next_weight(self, acc: torch.Tensor, tau: float) -> torch.Tensor:
        previous = self.weight.detach().to("cpu", torch.float64)
        target = cdb_weights(acc, tau, floor=self.floor, previous=previous, dtype=torch.float64)
        weight = damped_weights(previous, target, momentum=self.momentum, max_ratio=self.max_ratio)
        self.target_weight.copy_(target)
        return weight

    def update_from(self, difficulty: Any) -> torch.Tensor:
        """Sets the weights from a :class:`longtail.difficulty.ClassDifficulty` (or any
        :class:`longtail.metrics.ConfusionMeter`) after a validation pass: its counts with this loss's
        ``prior`` and ``difficulty`` (:func:`longtail.difficulty.estimated_accuracy`), then damped and bounded.
        Under data parallelism call ``difficulty.all_reduce()`` first."""
        return self.update_weights(estimated_accuracy(difficulty, prior=self.prior, difficulty=self.difficulty))

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", prior={self.prior}, difficulty={self.difficulty!r}, "
                f"momentum={self.momentum}, max_ratio={self.max_ratio}")


__all__ = ["CDB_LOSSES", "CDBLoss", "StableCDBLoss"]
