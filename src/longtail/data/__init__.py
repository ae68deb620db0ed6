"""Datasets for long-tailed classification: readers, long-tailed subsampling and a verified downloader.

* :func:`long_tailed_indices` / :func:`long_tailed_counts`: the CIFAR-LT protocol (exponential or step profile,
  optional balanced validation split held out first) on any labelled dataset.
* :func:`load_fashion_mnist`, :func:`load_mnist`, :func:`load_cifar10`, :func:`load_cifar100`: in-memory
  :class:`LabelledImages` (uint8 ``(N, C, H, W)`` images, int64 labels, class names).
* :data:`DATASETS` / :func:`register_dataset`: the datasets the trainer and ``longtail train --dataset`` know,
  yours included (:class:`DatasetSpec` says whether the long tail is drawn from it or it is used as it is).
* :class:`ClassAwareSampler` / :class:`DistributedClassAwareSampler`: samplers (``torch.utils.data.Sampler``) for
  any ``DataLoader`` that draw each epoch with class probabilities ``p_j ~ n_j**q`` (instance, square-root,
  class-balanced, progressive, any power ``q``), seeded and with ``set_epoch``; the distributed one gives every
  process a disjoint shard of the same epoch sample. The trainer draws its epochs with the same code.
* :func:`folder_counts`, :func:`table_counts`, :func:`npz_counts` (:func:`path_counts` picks one): per-class
  counts of an image folder, a table or a ``.npz`` without decoding it (:class:`ClassCounts`; ``longtail counts``).
* :func:`read_image_folder` / :func:`load_folder` (``--dataset folder``) and :func:`load_arrays` (``--dataset
  arrays``): your images or a ``.npz`` as a dataset, a test split carved where there is none
  (:func:`carve_test_split`; ``docs/your_data.md``); :func:`load_table` (``--dataset table``): a CSV, TSV or
  Parquet table's numeric features as ``(N, F, 1, 1)`` float "images", for ``--model mlp``.
* :func:`read_idx`: the MNIST IDX format, gzipped or not, with header validation.
* :func:`download_fashion_mnist`: SHA-256-verified, atomic download.
"""

from .arrays import carve_test_split, load_arrays
from .cifar import RestrictedUnpickler, load_cifar10, load_cifar100, restricted_load
from .counting import ClassCounts, folder_counts, npz_counts, path_counts, table_counts
from .datasets import (
    DATA_ENV,
    DEBIAN_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    LabelledImages,
    load_fashion_mnist,
    load_mnist,
)
from .download import (
    FASHION_MNIST_FILES,
    FASHION_MNIST_SHA256,
    FASHION_MNIST_URL,
    FASHION_MNIST_URL_ENV,
    content_sha256,
    default_cache_dir,
    download_fashion_mnist,
    download_verified,
)
from .folder import load_folder, read_image_folder
from .idx import read_idx
from .registry import DATASETS, DatasetSpec, dataset_spec, load_dataset, register_dataset, training_split
from .samplers import SAMPLERS, ClassAwareSampler, DistributedClassAwareSampler
from .subsample import PROFILES, LongTailedSplit, long_tailed_counts, long_tailed_indices
from .synthetic import synthetic_images
from .table import load_table, read_table

__all__ = [
    "DATASETS",
    "DATA_ENV",
    "DEBIAN_FASHION_MNIST_DIR",
    "DatasetSpec",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_SHA256",
    "FASHION_MNIST_URL",
    "FASHION_MNIST_URL_ENV",
    "MNIST_CLASSES",
    "PROFILES",
    "LabelledImages",
    "LongTailedSplit",
    "RestrictedUnpickler",
    "SAMPLERS",
    "ClassAwareSampler",
    "carve_test_split",
    "ClassCounts",
    "DistributedClassAwareSampler",
    "content_sha256",
    "dataset_spec",
    "default_cache_dir",
    "download_fashion_mnist",
    "download_verified",
    "folder_counts",
    "load_arrays",
    "load_cifar10",
    "load_dataset",
    "load_cifar100",
    "load_fashion_mnist",
    "load_folder",
    "load_mnist",
    "load_table",
    "long_tailed_counts",
    "long_tailed_indices",
    "npz_counts",
    "path_counts",
    "read_idx",
    "read_image_folder",
    "read_table",
    "register_dataset",
    "restricted_load",
    "synthetic_images",
    "table_counts",
    "training_split",
]
