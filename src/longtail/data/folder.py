"""Your images as a dataset: a folder of class folders (``longtail train --dataset folder --data-dir DIR``).

Two layouts:

* ``DIR/<class>/<image>``: one sub-folder per class (torchvision's ImageFolder layout); the test split is carved
  from it (:func:`longtail.data.arrays.carve_test_split`: ``test_fraction`` of each class, seeded by ``test_seed``
  alone, so it is the same for every run seed).
* ``DIR/train/<class>/...``, ``DIR/test/<class>/...`` and, optionally, ``DIR/val/<class>/...``: the splits as you
  made them (the test split used as it is; without ``test/``, one is carved from ``train/``).

Class names are the folder names of ``train/`` (or ``DIR``), sorted; a class folder of ``val/`` or ``test/`` must
be one of them. An image is a file whose suffix is one of :data:`longtail.data.counting.IMAGE_EXTENSIONS` (``.png``,
``.jpg``, ``.bmp``, ...: the list ``longtail counts`` counts by; any sub-folder of a class folder is read too); any
other file (``.txt``, ``.DS_Store``) is skipped and counted in one note. Every image
must decode: an unreadable or truncated one is an error naming it, never a skip. Grey images (modes ``1``, ``L``,
``LA``) stay grey (``C = 1``) unless some image is colour: then every image is RGB (``C = 3``), the grey ones
converted, and the note counts them; an alpha channel is dropped (counted too). 16-bit and float images are refused.
Every image is resized (bilinear) to ``image_size`` pixels square, by default to the most common size in the folder
(images of that size are kept as they are).

The decoded images are cached, uint8, in ``DIR/.longtail-cache/`` (or, when ``DIR`` is read-only, under
:func:`longtail.data.default_cache_dir` ``("folders")``): an ``.npz`` file and a manifest (every file's path, size
and modification time, and the ``.npz``'s SHA-256, checked when it is read back). A second load that finds the
files unchanged decodes nothing; a changed, added or removed file decodes the folder again.

Reading images needs Pillow (``pip install 'longtail[images]'``); the rest of longtail does not.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import write_bytes, write_json
from .arrays import split_of
from .counting import IMAGE_EXTENSIONS
from .datasets import LabelledImages
from .download import default_cache_dir

__all__ = ["CACHE_FOLDER", "MissingExtraError", "load_folder", "load_folder_validation", "read_image_folder"]

#: The cache's folder inside the data folder (skipped when the folder is scanned).
CACHE_FOLDER = ".longtail-cache"
_SPLITS = ("train", "val", "test")
_CACHE_FORMAT = 1
_GREY_MODES = ("1", "L", "LA", "La")
_DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class MissingExtraError(ImportError):
    """An optional dependency is not installed: the CLI reports the message as one line (exit status 2)."""

    exit_status = 2


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise MissingExtraError("dataset 'folder' reads images with Pillow, which is not installed: "
                                "pip install 'longtail[images]'") from None
    return Image


def _unreadable(path: Path, exc: BaseException) -> ValueError:
    return ValueError(f"{path}: expected an image Pillow can read; got {type(exc).__name__}: "
                      f"{' '.join(str(exc).split())}")


def _peek(path: Path) -> tuple[tuple[int, int], str, bool]:
    """``((height, width), mode, has_alpha)`` from the image's header (no pixels decoded)."""
    Image = _pillow()
    try:
        with Image.open(path) as image:
            alpha = "A" in image.mode or "a" in image.mode or "transparency" in image.info
            return (image.height, image.width), image.mode, alpha
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _unreadable(path, exc) from None


def _decode(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """The image's pixels, converted to ``mode`` (``"L"`` or ``"RGB"``) and resized to ``size`` (height, width):
    uint8 ``(C, H, W)``."""
    Image = _pillow()
    try:
        with Image.open(path) as image:
            image = image.convert(mode)  # decodes every pixel: a truncated file fails here
            if (image.height, image.width) != size:
                image = image.resize(size[::-1], Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _unreadable(path, exc) from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _scan(root: Path) -> tuple[dict[str, list[tuple[str, list[Path]]]], list[Path], list[list[Any]]]:
    """``(splits, skipped, files)``: each split's ``[(class name, image paths)]``, the files that are not images,
    and ``[relative path, size, mtime_ns]`` of every file (the cache's key). Checks the layout (module docstring)."""
    extensions = set(IMAGE_EXTENSIONS)  # the list `longtail counts` counts by, so both see the same images
    if not root.is_dir():
        raise ValueError(f"{root}: expected a folder of class folders (or train/ and test/ folders); got "
                         + ("a file" if root.exists() else "nothing there"))
    skipped: list[Path] = []

    def entries(folder: Path) -> list[Path]:
        """The folders in ``folder``, sorted; its files (and hidden entries) are skipped."""
        kept = []
        for entry in sorted(folder.iterdir()):
            if entry.name == CACHE_FOLDER and folder == root:
                continue
            (kept if entry.is_dir() and not entry.name.startswith(".") else skipped).append(entry)
        return kept

    top = entries(root)
    if (root / "train").is_dir():
        others = [p.name for p in top if p.name not in _SPLITS]
        if others:
            raise ValueError(f"{root}: expected only train/, val/ and test/ folders beside train/; got {others[0]}/")
        split_folders = {p.name: p for p in top}
    else:
        split_folders = {"train": root}
    splits: dict[str, list[tuple[str, list[Path]]]] = {}
    for split in _SPLITS:
        if split not in split_folders:
            continue
        folder = split_folders[split]
        classes = entries(folder) if folder != root else top
        if not classes:
            raise ValueError(f"{folder}: expected one sub-folder per class; got none")
        splits[split] = []
        for class_folder in classes:
            images = []
            for path in sorted(class_folder.rglob("*")):
                if path.is_file():
                    hidden = any(part.startswith(".") for part in path.relative_to(class_folder).parts)
                    (images if not hidden and path.suffix.lower() in extensions else skipped).append(path)
            if not images:
                raise ValueError(f"{class_folder}: expected image files ({' '.join(IMAGE_EXTENSIONS)}) in a class "
                                 "folder; got none")
            splits[split].append((class_folder.name, images))
    names = [name for name, _ in splits["train"]]
    for split in ("val", "test"):
        for name, _ in splits.get(split, []):
            if name not in names:
                raise ValueError(f"{split_folders[split] / name}: expected a class folder that train/ has too; got "
                                 f"class {name!r}, which has no training images")
    files = []
    for path in [p for classes in splits.values() for _, images in classes for p in images] + skipped:
        stat = path.stat()
        files.append([path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns])
    return splits, skipped, sorted(files)


def _cache_folders(root: Path) -> tuple[Path, Path]:
    """Beside the data, then (a read-only data folder) in the user's cache, one folder per data folder."""
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return root / CACHE_FOLDER, default_cache_dir("folders") / key


def _read_cache(folder: Path, tag: str, files: list[list[Any]]) -> tuple[dict[str, np.ndarray], list[str]] | None:
    """The cached arrays and notes when the manifest lists exactly ``files`` and the ``.npz`` matches its digest."""
    try:
        manifest = json.loads((folder / f"folder-{tag}.json").read_text())
        if manifest.get("format") != _CACHE_FORMAT or manifest.get("files") != files:
            return None
        data = (folder / f"folder-{tag}.npz").read_bytes()
        if hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
            return None
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}, list(manifest.get("notes", []))
    except (OSError, ValueError, KeyError, EOFError):  # absent, damaged or from another version: decode again
        return None


def _write_cache(folders: tuple[Path, ...], tag: str, files: list[list[Any]], arrays: dict[str, np.ndarray],
                 notes: list[str]) -> str | None:
    """Writes the cache (atomically: the ``.npz`` first, then its manifest) to the first folder that takes it;
    a note when none does."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    manifest = {"format": _CACHE_FORMAT, "sha256": hashlib.sha256(data).hexdigest(), "notes": notes, "files": files}
    errors = []
    for folder in folders:
        try:
            write_bytes(folder / f"folder-{tag}.npz", data)
            write_json(folder / f"folder-{tag}.json", manifest)
            return None
        except OSError as exc:
            errors.append(" ".join(str(exc).split()))
    return f"decoded images not cached ({'; '.join(errors)})"


def _decode_folder(root: Path, splits: dict[str, list[tuple[str, list[Path]]]], skipped: list[Path],
                   image_size: int | None) -> tuple[dict[str, np.ndarray], list[str]]:
    """Every image decoded once into ``{"<split>_x": uint8 (N, C, H, W), "<split>_y": int64 (N,)}`` and
    ``"classes"``, with the notes (skipped files, converted images)."""
    headers = {p: _peek(p) for classes in splits.values() for _, images in classes for p in images}
    deep = next((p for p, (_, mode, _) in headers.items() if mode in _DEEP_MODES), None)
    if deep is not None:
        raise ValueError(f"{deep}: expected 8-bit grey or colour pixels; got mode {headers[deep][1]} (16-bit or float: "
                         "convert it to 8 bits)")
    grey = sum(mode in _GREY_MODES for _, mode, _ in headers.values())
    colour = grey < len(headers)
    if image_size is None:  # the most common size; ties: the larger one
        counts = Counter(size for size, _, _ in headers.values())
        size = max(counts, key=lambda s: (counts[s], s[0] * s[1], s))
    else:
        size = (image_size, image_size)
    channels, images = 3 if colour else 1, sum(len(members) for classes in splits.values() for _, members in classes)
    needed, memory = images * channels * size[0] * size[1], os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > memory // 2:  # refused before allocating (--image-size 1000000 asked numpy for 322 TiB)
        raise ValueError(f"image_size must keep the decoded folder ({images} images of {channels} x {size[0]} x "
                         f"{size[1]} bytes = {needed / 2**30:.1f} GiB) within half this machine's memory "
                         f"({memory / 2**30:.1f} GiB); got image_size {size[0]}: choose a smaller --image-size")
    classes = [name for name, _ in splits["train"]]
    arrays: dict[str, np.ndarray] = {"classes": np.array(classes, dtype=str)}
    for split, members in splits.items():
        paths = [(classes.index(name), p) for name, images in members for p in images]
        x = np.empty((len(paths), 3 if colour else 1, *size), dtype=np.uint8)
        for i, (_, path) in enumerate(paths):
            x[i] = _decode(path, "RGB" if colour else "L", size)
        arrays[f"{split}_x"], arrays[f"{split}_y"] = x, np.array([c for c, _ in paths], dtype=np.int64)
    notes = []
    if skipped:
        notes.append(f"skipped {len(skipped)} file{'s' * (len(skipped) != 1)} that {'is' if len(skipped) == 1 else 'are'}"
                     f" not an image Pillow knows by its suffix (e.g. {skipped[0].relative_to(root).as_posix()})")
    if colour and grey:
        notes.append(f"converted {grey} grey image{'s' * (grey != 1)} to RGB (the folder has colour ones)")
    alpha = sum(a for _, _, a in headers.values())
    if alpha:
        notes.append(f"dropped the transparency of {alpha} image{'s' * (alpha != 1)}")
    resized = sum(s != size for s, _, _ in headers.values())
    if resized:
        notes.append(f"resized {resized} image{'s' * (resized != 1)} to {size[0]}x{size[1]}")
    return arrays, notes


def read_image_folder(data_dir: str | os.PathLike[str], image_size: int | None = None) -> dict[str, LabelledImages]:
    """The splits a folder gives (``"train"``, and ``"val"`` / ``"test"`` where it has them), every image decoded
    once and cached (module docstring); its notes (skipped files, converted images) as one ``UserWarning``.

    Raises:
        ValueError: a bad layout, an empty folder or class folder, an unreadable image (each message names it).
        MissingExtraError: Pillow is not installed.
    """
    root = Path(data_dir).expanduser()
    splits, skipped, files = _scan(root)
    tag = "auto" if image_size is None else f"{image_size}x{image_size}"
    folders = _cache_folders(root)
    cached = next((c for c in (_read_cache(f, tag, files) for f in folders) if c is not None), None)
    if cached is None:
        arrays, notes = _decode_folder(root, splits, skipped, image_size)
        failure = _write_cache(folders, tag, files, arrays, notes)
        cached = arrays, notes + ([failure] if failure else [])
    arrays, notes = cached
    if notes:
        warnings.warn(f"{root}: {'; '.join(notes)}", UserWarning, stacklevel=2)
    classes = tuple(str(c) for c in arrays["classes"])
    return {split: LabelledImages(torch.from_numpy(arrays[f"{split}_x"]), torch.from_numpy(arrays[f"{split}_y"]),
                                  classes) for split in _SPLITS if f"{split}_x" in arrays}


def _folder(data_dir: str | os.PathLike[str] | None, image_size: int | None) -> tuple[str, dict[str, LabelledImages]]:
    if data_dir is None:
        raise ValueError("dataset 'folder' reads a folder of images: pass data_dir (--data-dir DIR)")
    return os.fspath(data_dir), read_image_folder(data_dir, image_size)


def load_folder(data_dir: str | os.PathLike[str] | None, train: bool, download: bool = False, *,
                image_size: int | None = None, test_fraction: float = 0.2, test_seed: int = 0) -> LabelledImages:
    """The training or test split of an image folder (module docstring): ``test/`` as it is, else
    ``test_fraction`` of each class of ``train/`` carved with ``test_seed``. ``download`` is ignored."""
    name, splits = _folder(data_dir, image_size)
    return split_of(splits["train"], splits.get("test"), train, test_fraction, test_seed, name)


def load_folder_validation(data_dir: str | os.PathLike[str] | None, *, image_size: int | None = None,
                           **_: Any) -> LabelledImages | None:
    """The folder's ``val/`` split, or None when it has none (then ``val_per_class`` images of each class are held
    out of the training split, as for any dataset)."""
    return _folder(data_dir, image_size)[1].get("val")
