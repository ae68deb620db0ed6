"""longtail: losses, datasets, training and benchmarks for long-tailed (class-imbalanced) classification.

The class-balanced loss of Cui et al. (CVPR 2019), the class-wise difficulty-balanced loss of
Sinha et al. (ACCV 2020), and the peers users compare them with, as functions
(:mod:`longtail.functional`) and ``nn.Module`` s.
"""

from . import functional
from .bias_init import init_prior_bias
from .checks import value_checks
from .counts import class_counts
from .difficulty import ClassDifficulty, TrainingDifficultyEMA
from .drw import DeferredReweighting
from .functional.logit_adjusted import class_log_prior, logit_adjust
from .losses import (
    BalancedSoftmaxLoss,
    CDBLoss,
    ClassBalancedLoss,
    FocalLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    SigmoidFocalLoss,
    StableCDBLoss,
)
from .weights import (
    BetaRangeWarning,
    beta_range,
    beta_regime,
    cdb_weights,
    class_balanced_weights,
    dynamic_tau,
    effective_number,
)

__version__ = "0.1.0"

__all__ = [
    "BalancedSoftmaxLoss",
    "BetaRangeWarning",
    "CDBLoss",
    "ClassBalancedLoss",
    "ClassDifficulty",
    "DeferredReweighting",
    "FocalLoss",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "SigmoidFocalLoss",
    "StableCDBLoss",
    "TrainingDifficultyEMA",
    "TuneResult",
    "class_log_prior",
    "logit_adjust",
    "__version__",
    "beta_range",
    "beta_regime",
    "cdb_weights",
    "class_balanced_weights",
    "class_counts",
    "dynamic_tau",
    "effective_number",
    "functional",
    "init_prior_bias",
    "tune_beta",
    "value_checks",
]

# Submodules not imported above (longtail.data, .models, .train, .sklearn, ...) load on first attribute access
# (PEP 562), so `import longtail` stays cheap and `longtail.train.train(...)` still works after it.
_SUBMODULES = (
    "bias_init",
    "checks",
    "cli",
    "cli_counts",
    "cli_runs",
    "cli_tune",
    "confusion",
    "confusion_metrics",
    "counts",
    "data",
    "demo",
    "difficulty",
    "drw",
    "functional",
    "head_refit",
    "integrations",
    "io",
    "loss_families",
    "losses",
    "metrics",
    "models",
    "plugins",
    "predict",
    "prototypes",
    "run_plots",
    "runs",
    "sklearn",
    "train",
    "tune",
    "tune_candidates",
    "weights",
)


# Names loaded on first access from the submodule that defines them: tune_beta trains (longtail.train), which
# imports this package, so importing it here would make an import cycle.
_LAZY_NAMES = {"TuneResult": "tune", "tune_beta": "tune"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY_NAMES:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES) | set(_LAZY_NAMES))
