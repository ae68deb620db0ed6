"""A finished run's model used again: evaluated on its own split, or applied to the images of a file.

- :func:`evaluate_run` loads a run's checkpoint, rebuilds its data split and reports the model on it, post-hoc
  adjustment included, exactly as the trainer did (``longtail evaluate``).
- :func:`read_images` and :func:`predict_rows` read an image file (``.npy``, ``.pt`` or IDX) and give the
  predicted class and its probability per image (``longtail predict``); :func:`predictions_csv` writes them.
- :func:`read_inputs` reads what the run was trained on: image files (a folder of them, or one) decoded as the
  folder source decodes them, or a table's feature columns read as the table source reads them.

All are importable from :mod:`longtail.runs` too. To load a model for your own code, see
:func:`longtail.train.load_model` and ``docs/using_runs.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["evaluate_run", "predict_rows", "predictions_csv", "read_images", "read_inputs"]


def evaluate_run(
    run: str | os.PathLike[str],
    split: str = "test",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    device: Any = "cpu",
) -> dict[str, Any]:
    """The report of a run's model (post-hoc adjustment included) on its ``"test"`` or ``"val"`` split, rebuilt.

    ``run`` is a run folder or its ``checkpoint.pt``. The split is drawn again from the run's configuration
    (dataset, imbalance, subset seed, ``val_per_class``), with ``data_dir`` in place of the run's when given,
    and evaluated as the trainer evaluates: the test split's accuracy equals ``result.json``'s
    ``final.accuracy``. Shot groups are by the run's training counts and its thresholds (as the trainer's
    :func:`~longtail.train.trainer.shot_thresholds`).

    Returns the dict of :meth:`longtail.metrics.ConfusionMeter.report` (accuracy, balanced_accuracy, macro_f1,
    per_class_accuracy, shot_accuracy, shot_thresholds, confusion_matrix, ...) with ``run``, ``split``, ``classes`` and
    ``posthoc`` (the adjustment applied, or None) in front.

    Raises:
        ValueError: a bad split, a run without a validation split for ``"val"``, data that is not the run's.
        FileNotFoundError: no checkpoint at ``run``.
    """
    import torch

    from .checks import check_choice
    from .train.data import prepare_data
    from .train.device import resolve_device
    from .train.inference import checkpoint_path, load_model
    from .train.trainer import evaluate, shot_thresholds

    check_choice("split", split, ("test", "val"))
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    trained = load_model(run, dev)
    config = trained.config
    if data_dir is not None:
        config = dataclasses.replace(config, data_dir=os.fspath(data_dir))
    data = prepare_data(config, dev)
    if data.classes != trained.classes or not torch.allclose(
            torch.tensor(data.mean, dtype=torch.float64), trained.mean.flatten().cpu().double(), atol=1e-5):
        raise ValueError(f"the data must be the run's training data (its classes and normalisation statistics); got "
                         f"data of dataset {config.dataset!r}" + (f" under {data_dir}" if data_dir else "")
                         + " that differs from the checkpoint's")
    part = data.test if split == "test" else data.val
    if part is None:
        raise ValueError(f"split must be 'test' for a run without a validation split (val_per_class "
                         f"{config.val_per_class}); got 'val'")
    meter = evaluate(trained.model, part, len(trained.classes), config)
    report = meter.report(train_counts=data.counts, **shot_thresholds(config, data.counts))
    return {"run": str(checkpoint_path(run).parent), "split": split, "classes": list(trained.classes),
            "posthoc": trained.posthoc, **report}


def read_images(path: str | os.PathLike[str]) -> Any:
    """Images from a file: ``.npy`` (numpy, no pickles), ``.pt`` / ``.pth`` (a tensor saved with ``torch.save``,
    loaded with ``weights_only=True``) or, any other name, an IDX file (plain or gzipped). Returns a CPU tensor;
    its shape and dtype are checked by :meth:`longtail.train.TrainedModel.preprocess`."""
    import numpy as np
    import torch

    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FileNotFoundError(f"images must be a file (.npy, .pt or IDX); got {str(path)!r}, "
                                + ("a folder" if path.is_dir() else "which does not exist"))
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"images must be a .npy file of numbers; got {path}: {str(exc).splitlines()[0]}") from None
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
            kind = getattr(array, "dtype", type(array).__name__)
            raise TypeError(f"images must be uint8 pixels or floats in [0, 1]; got dtype {kind} in {path}")
        return torch.from_numpy(np.ascontiguousarray(array))
    if suffix in (".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except OSError:
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"images must be a tensor saved with torch.save; got {path}: {first}") from None
        if not isinstance(obj, torch.Tensor):
            raise TypeError(f"images must be a tensor saved with torch.save; got a {type(obj).__name__} in {path}")
        return obj
    from .data.idx import read_idx

    return read_idx(path)


def _image_files(path: Path) -> tuple[list[Path], list[str]]:
    """The image files at ``path`` (one file, or a folder's at any depth, sorted; hidden ones skipped) and their
    names in the CSV (the path under the folder, or the file's name)."""
    from .data.counting import IMAGE_EXTENSIONS

    if path.is_file():
        return [path], [path.name]
    files = [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
             and not any(part.startswith(".") for part in p.relative_to(path).parts)]
    if not files:
        raise ValueError(f"{path}: expected image files ({' '.join(IMAGE_EXTENSIONS)}) in the folder; got none")
    return files, [p.relative_to(path).as_posix() for p in files]


def read_inputs(trained: Any, images: str | os.PathLike[str] | None = None,
                table: str | os.PathLike[str] | None = None) -> tuple[Any, list[str] | None]:
    """``(inputs, names)`` for :func:`predict_rows`: what ``longtail predict --images`` / ``--table`` read.

    ``images``: a ``.npy``, ``.pt`` or IDX file (:func:`read_images`; names None: rows are numbered), or a folder of
    image files (any depth, sorted) or one image file, decoded by the folder source's decoder: converted with
    Pillow to the run's channels (``"L"`` for a grey run, ``"RGB"`` for a colour one: grey repeated, colour turned
    to luminance) and resized (bilinear) to the run's image size; names: the files. ``table``: a table with the
    run's feature columns, read by the table source (its ``encode_categorical``; the target column may be absent);
    the features are standardised by the model with the run's statistics (not divided by 255); names None.

    Raises:
        ValueError: a table run given images, an image run given a table, features that are not the run's.
    """
    import torch

    trained_on_table = trained.config.dataset == "table"
    if (table is None) == (images is None):
        raise ValueError("predict reads either images or a table; got " + ("both" if table is not None else "neither"))
    if table is not None:
        if not trained_on_table:
            raise ValueError(f"--table needs a run trained on a table (--dataset table); got a run trained on "
                             f"images (dataset {trained.config.dataset!r}): pass --images")
        from .data.counting import TABLE_EXTENSIONS
        from .data.table import _columns, _features

        path = Path(table).expanduser()
        if not path.is_file() or path.suffix.lower() not in TABLE_EXTENSIONS:
            raise ValueError(f"{path}: expected a table file ({', '.join(TABLE_EXTENSIONS)})")
        columns = _columns(path)
        columns.pop(trained.config.target, None)  # the labels, when the file has them
        features, names = _features(columns, trained.config.encode_categorical, path)
        if features.shape[1] != trained.in_channels:
            raise ValueError(f"{path}: expected the run's {trained.in_channels} feature columns; got "
                             f"{features.shape[1]} ({', '.join(names)})")
        return torch.from_numpy(features.astype("float32")).reshape(len(features), -1, 1, 1), None
    if trained_on_table:
        raise ValueError(f"--images needs a run trained on images; got a run trained on a table "
                         f"({trained.config.data_dir}): pass --table FILE.csv")
    path = Path(images).expanduser()
    from .data.counting import IMAGE_EXTENSIONS

    if not path.exists() or (not path.is_dir() and path.suffix.lower() not in IMAGE_EXTENSIONS):
        return read_images(path), None
    import numpy as np

    from .data.folder import _decode

    files, names = _image_files(path)
    mode = "RGB" if trained.in_channels == 3 else "L"
    pixels = np.stack([_decode(f, mode, tuple(trained.image_size)) for f in files])
    return torch.from_numpy(pixels), names


def _check_float_range(images: Any) -> None:
    import torch

    x = torch.as_tensor(images)
    if x.is_floating_point() and x.numel():
        low, high = float(x.min()), float(x.max())
        if not (0.0 <= low and high <= 1.0):  # NaN fails both
            raise ValueError(f"images must be uint8 pixels or floats in [0, 1]; got floats in [{low:g}, {high:g}]")


def predict_rows(trained: Any, images: Any, batch_size: int = 1024,
                 names: list[str] | None = None) -> list[tuple[int | str, int, str, float]]:
    """``(index, class_index, class_name, probability)`` per image (``names[i]`` in place of the index when
    given): the predicted class (as :meth:`~longtail.train.TrainedModel.predict`) and its softmax probability.
    A table run's features are any floats (the model standardises them); images are uint8 or floats in [0, 1]."""
    if trained.config.dataset != "table":
        _check_float_range(images)
    logits = trained.logits(images, batch_size)
    predicted = logits.argmax(1)
    probability = logits.softmax(1).gather(1, predicted[:, None])[:, 0]
    keys = names if names is not None else range(len(predicted))
    return [(k, c, trained.classes[c], p) for k, c, p in zip(keys, predicted.tolist(), probability.tolist())]


def predictions_csv(rows: Iterable[tuple[int | str, int, str, float]]) -> str:
    """The rows of :func:`predict_rows` as CSV text (a header: ``file`` in place of ``index`` when the rows name
    files; the probability with 6 decimals)."""
    rows = list(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file" if rows and isinstance(rows[0][0], str) else "index", "class_index", "class_name",
                     "probability"])
    writer.writerows((i, c, name, f"{p:.6f}") for i, c, name, p in rows)
    return buffer.getvalue()
