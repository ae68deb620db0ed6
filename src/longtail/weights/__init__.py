"""Per-class loss weights, the one home of their math: ``longtail.weights.<name>`` for every one of them.

- :mod:`longtail.weights.class_balanced`: the effective number of samples and the class-balanced weights of Cui et
  al. (CVPR 2019), with one beta (:func:`class_balanced_weights`, :func:`effective_number`, and where a beta
  interpolates: :func:`beta_range`, :func:`beta_regime`, :class:`BetaRangeWarning`) or one per class
  (:func:`per_class_weights`, :func:`per_class_effective_number`);
- :mod:`longtail.weights.difficulty_balanced`: the class-wise difficulty-balanced (CDB) weights of Sinha et al.
  (ACCV 2020) from per-class accuracies (:func:`cdb_weights`, :func:`dynamic_tau`) and their stable form
  (:func:`damped_weights`, :func:`bound_ratio`).

The per-class betas estimated from features are :mod:`longtail.prototypes`; the per-class accuracies CDB reads are
:mod:`longtail.difficulty`.
"""

from .class_balanced import (
    INVERSE_FREQUENCY_TOLERANCE,
    REGIMES,
    UNIFORM_RATIO,
    ZERO_COUNT_POLICIES,
    BetaRangeWarning,
    beta_range,
    beta_range_message,
    beta_regime,
    class_balanced_weights,
    effective_number,
    per_class_effective_number,
    per_class_weights,
    present_classes,
)
from .difficulty_balanced import (
    STABLE_DIFFICULTY,
    STABLE_MAX_RATIO,
    STABLE_MOMENTUM,
    STABLE_PRIOR,
    bound_ratio,
    cdb_weights,
    damped_weights,
    dynamic_tau,
)

__all__ = [
    "INVERSE_FREQUENCY_TOLERANCE",
    "REGIMES",
    "STABLE_DIFFICULTY",
    "STABLE_MAX_RATIO",
    "STABLE_MOMENTUM",
    "STABLE_PRIOR",
    "UNIFORM_RATIO",
    "ZERO_COUNT_POLICIES",
    "BetaRangeWarning",
    "beta_range",
    "beta_range_message",
    "beta_regime",
    "bound_ratio",
    "cdb_weights",
    "class_balanced_weights",
    "damped_weights",
    "dynamic_tau",
    "effective_number",
    "per_class_effective_number",
    "per_class_weights",
    "present_classes",
]
