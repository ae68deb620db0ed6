"""Integrations with training frameworks; each submodule needs its framework, installed by an extra.

- :mod:`longtail.integrations.lightning`: :class:`~longtail.integrations.lightning.CDBCallback`, a
  Lightning (>= 2.0) callback that keeps a :class:`longtail.CDBLoss`'s weights up to date from the
  validation passes (``pip install 'longtail[lightning]'``);
- :mod:`longtail.integrations.hf`: :class:`~longtail.integrations.hf.ClassBalancedTrainer`, a Hugging Face
  ``transformers.Trainer`` with a class-balanced loss, and
  :func:`~longtail.integrations.hf.counts_from_dataset` (``pip install 'longtail[hf]'``).

This package imports neither framework: ``import longtail.integrations`` is free, and each submodule imports
its framework when it is imported. Without it, the submodule still imports, and its classes raise ImportError
(naming the extra to install) when they are built. See docs/integrations.md.
"""

__all__: list[str] = []
