"""longtail: losses, datasets, training and benchmarks for long-tailed classification."""

__version__ = "0.1.0"
