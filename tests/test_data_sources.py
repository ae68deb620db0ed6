"""Your data as a dataset: a folder of class folders (``--dataset folder``) and a ``.npz`` (``--dataset arrays``).

Every folder here is PNGs the test writes in tmp_path, with a natural tail (40, 20, 10, 6 and 4 images a class).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data_helpers import one_line_error
from longtail.cli import main
from longtail.data import DATASETS
from longtail.data import folder as folder_source
from longtail.data.folder import CACHE_FOLDER, load_folder, read_image_folder
from longtail.train import TrainConfig, prepare_data

Image = pytest.importorskip("PIL.Image")

ROOT = Path(__file__).resolve().parents[1]
TAIL = (40, 20, 10, 6, 4)
NAMES = ("ant", "bee", "cat", "dog", "eel")  # sorted, as the folder's class names are
TINY = ["--model", "small_cnn", "--epochs", "1", "--batch-size", "16", "--width", "4", "--device", "cpu", "--quiet"]
CPU = torch.device("cpu")


def write_images(folder: Path, counts=TAIL, names=NAMES, size=(8, 8), mode="RGB", seed=0) -> Path:
    """``counts[c]`` PNGs of class ``names[c]`` (its brightness sets it apart) under ``folder/<name>/``."""
    rng = np.random.default_rng(seed)
    for c, (name, n) in enumerate(zip(names, counts)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (*size, 3) if mode == "RGB" else size
            pixels = (rng.integers(0, 40, shape) + 50 * c).astype(np.uint8)
            Image.fromarray(pixels, mode).save(folder / name / f"{i:03d}.png")
    return folder


def test_a_folder_trains_on_its_natural_tail_through_the_cli_and_its_run_evaluates(tmp_path, capsys):
    data = write_images(tmp_path / "pets")
    (data / "README.txt").write_text("not an image")
    with pytest.warns(UserWarning, match=r"skipped 1 file that is not an image .*README\.txt"):
        assert main(["train", "--dataset", "folder", "--data-dir", str(data), "--out", str(tmp_path / "run"),
                     *TINY]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    # No --imbalance: the tail as it is (imbalance 1); a fifth of each class carved out as the test set.
    assert result["config"]["imbalance"] == 1 and result["classes"] == list(NAMES)
    assert result["train_counts"] == [32, 16, 8, 5, 3] and result["config"]["test_seed"] == 0
    capsys.readouterr()
    with pytest.warns(UserWarning, match="skipped 1 file"):
        assert main(["evaluate", str(tmp_path / "run")]) == 0
    assert "test split, 16 images" in capsys.readouterr().out


def test_an_explicit_imbalance_draws_a_tail_from_a_folder_and_says_so(tmp_path):
    data = write_images(tmp_path / "pets")
    with pytest.warns(UserWarning, match=r"dataset 'folder' is used as it is at imbalance=1 .*imbalance=2, n_max=None draw a long"):
        assert main(["train", "--dataset", "folder", "--data-dir", str(data), "--imbalance", "2",
                     "--out", str(tmp_path / "run"), *TINY]) == 0
    assert json.loads((tmp_path / "run" / "result.json").read_text())["config"]["imbalance"] == 2


def test_the_carved_test_split_is_stratified_and_the_same_for_every_run_seed(tmp_path):
    data = str(write_images(tmp_path / "pets"))
    runs = [prepare_data(TrainConfig(dataset="folder", data_dir=data, imbalance=1, seed=seed), CPU) for seed in (0, 7)]
    assert torch.bincount(runs[0].test.labels, minlength=5).tolist() == [8, 4, 2, 1, 1]
    assert torch.equal(runs[0].test.images, runs[1].test.images) and torch.equal(runs[0].test.labels,
                                                                                  runs[1].test.labels)
    other = load_folder(data, train=False, test_seed=1)
    train = load_folder(data, train=True)
    assert not torch.equal(other.images, load_folder(data, train=False).images)
    # Disjoint and complete: every image in exactly one of the two.
    everything = read_image_folder(data)["train"].images.flatten(1)
    pieces = torch.cat([train.images, load_folder(data, train=False).images]).flatten(1)
    assert len(pieces) == len(everything) and torch.equal(pieces.unique(dim=0), everything.unique(dim=0))


def test_a_second_load_decodes_no_image_and_a_changed_or_added_image_decodes_again(tmp_path, monkeypatch):
    data = write_images(tmp_path / "many", counts=(120, 90, 60, 30), names=NAMES[:4], size=(6, 6))
    calls = {"decode": 0, "peek": 0}
    for name in calls:
        original = getattr(folder_source, f"_{name}")
        monkeypatch.setattr(folder_source, f"_{name}",
                            lambda *a, _o=original, _n=name: (calls.__setitem__(_n, calls[_n] + 1), _o(*a))[1])
    first = read_image_folder(data)["train"]
    assert calls == {"decode": 300, "peek": 300} and (data / CACHE_FOLDER / "folder-auto.npz").is_file()
    second = read_image_folder(data)["train"]
    assert calls == {"decode": 300, "peek": 300}  # nothing decoded, nothing opened
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(data / "ant" / "000.png")  # changed
    assert read_image_folder(data)["train"].images[0].sum() == 0 and calls["decode"] == 600
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(data / "bee" / "new.png")  # added
    (data / "bee" / "notes.txt").write_text("not an image")  # added too, skipped but part of the key
    with pytest.warns(UserWarning, match="skipped 1 file"):
        assert len(read_image_folder(data)["train"]) == 301
    assert calls["decode"] == 901
    # A damaged cache (its digest no longer matches) is decoded again, not trusted.
    npz = data / CACHE_FOLDER / "folder-auto.npz"
    damaged = bytearray(npz.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    npz.write_bytes(bytes(damaged))
    with pytest.warns(UserWarning):
        read_image_folder(data)
    assert calls["decode"] == 1202


def test_a_folder_whose_cache_cannot_be_written_beside_it_caches_in_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = write_images(tmp_path / "pets")
    (data / CACHE_FOLDER).write_text("a file where the cache folder would go")  # as a read-only folder: no write
    read_image_folder(data)
    assert len(list((tmp_path / "cache" / "longtail" / "folders").glob("*/folder-auto.npz"))) == 1
    monkeypatch.setattr(folder_source, "_decode", lambda *a: pytest.fail("decoded again"))
    read_image_folder(data)


def test_train_val_test_folders_are_used_as_given_and_grey_images_join_colour_ones_as_rgb(tmp_path):
    data = tmp_path / "split"
    write_images(data / "train", size=(10, 10))
    write_images(data / "val", counts=(2, 2, 2, 2, 2), seed=1, size=(10, 10))
    write_images(data / "test", counts=(3, 3, 3, 3, 3), seed=2, size=(10, 10), mode="L")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(data / "train" / "ant" / "big.png")
    with pytest.warns(UserWarning, match=r"converted 15 grey images to RGB .*resized 1 image to 10x10"):
        prepared = prepare_data(TrainConfig(dataset="folder", data_dir=str(data), imbalance=1, val_per_class=1), CPU)
    assert prepared.counts.tolist() == [41, 20, 10, 6, 4]  # nothing held out of train/: val/ is the validation split
    assert prepared.val_counts.tolist() == [2] * 5 and len(prepared.test) == 15
    assert prepared.description()["in_channels"] == 3 and prepared.description()["image_size"] == [10, 10]
    with pytest.warns(UserWarning):
        sized = prepare_data(TrainConfig(dataset="folder", data_dir=str(data), imbalance=1, image_size=6), CPU)
    assert tuple(sized.train.images.shape[1:]) == (3, 6, 6)


def test_arrays_train_through_the_cli_and_carve_or_keep_their_test_split(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), TAIL)
    x = rng.random((len(y), 8, 8)).astype(np.float32)
    np.savez(tmp_path / "carved.npz", x=x, y=y, classes=np.array(NAMES))
    assert main(["train", "--dataset", "arrays", "--data-dir", str(tmp_path / "carved.npz"),
                 "--out", str(tmp_path / "run"), *TINY]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["train_counts"] == [32, 16, 8, 5, 3] and result["classes"] == list(NAMES)
    x_test = rng.integers(0, 256, (7, 1, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "given.npz", x=(x * 255).astype(np.uint8), y=y, x_test=x_test, y_test=np.arange(7) % 5)
    test = DATASETS["arrays"].load(str(tmp_path / "given.npz"), False, False)
    assert torch.equal(test.images, torch.from_numpy(x_test)) and test.classes == ("0", "1", "2", "3", "4")
    assert len(DATASETS["arrays"].load(str(tmp_path / "given.npz"), True, False)) == len(y)


def _empty_class(folder: Path) -> str:
    (write_images(folder) / "fox").mkdir()
    return str(folder)


def _empty(folder: Path) -> str:
    folder.mkdir()
    return str(folder)


def _truncated(folder: Path) -> str:
    png = write_images(folder) / "cat" / "001.png"
    png.write_bytes(png.read_bytes()[:60])
    return str(folder)


def _test_class_not_in_train(folder: Path) -> str:
    write_images(folder / "train")
    write_images(folder / "test", counts=(1,), names=("yak",))
    return str(folder)


def _npz(**arrays):
    def make(folder: Path) -> str:
        folder.mkdir()
        np.savez(folder / "bad.npz", **arrays)
        return str(folder / "bad.npz")
    return make


X5 = np.zeros((5, 4, 4), np.uint8)
BAD = {  # each: the source, how the bad input is made, the one line that names it
    "an empty class folder": ("folder", _empty_class, r"data/fox: expected image files .* got none"),
    "an empty folder": ("folder", _empty, r"data: expected one sub-folder per class; got none"),
    "a truncated image": ("folder", _truncated, r"cat/001\.png: expected an image Pillow can read"),
    "a test class that train has not": ("folder", _test_class_not_in_train,
                                        r"test/yak: expected a class folder that train/ has too"),
    "labels out of range": ("arrays", _npz(x=X5, y=np.arange(5), classes=np.array(["a", "b"])),
                            r"bad\.npz: y must be labels in \[0, 2\); got values in \[0, 4\]"),
    "labels that are not integers": ("arrays", _npz(x=X5, y=np.zeros(5)),
                                     r"bad\.npz: y must be 1-D integer labels; got dtype float64"),
    "no x": ("arrays", _npz(y=np.zeros(5, int)), r"bad\.npz: expected arrays x and y; got no x"),
    "no y": ("arrays", _npz(x=X5), r"bad\.npz: expected arrays x and y; got no y"),
    "a test class not in y": ("arrays", _npz(x=X5, y=np.zeros(5, int), x_test=X5, y_test=np.arange(5)),
                              r"bad\.npz: every class in y_test must be in y; got test images of class '1', '2'"),
    "a class without training images": ("arrays", _npz(x=X5, y=np.zeros(5, int), classes=np.array(["a", "b"])),
                                        r"bad\.npz: every class must have training images; got none for class 'b'"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_naming_the_file_or_folder(case, tmp_path, capsys):
    dataset, make, message = BAD[case]
    path = make(tmp_path / "data")
    err = one_line_error(["train", "--dataset", dataset, "--data-dir", path, "--out", str(tmp_path / "run"), *TINY],
                         capsys)
    assert re.search(message, err), err


def test_without_pillow_the_folder_source_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    data = str(write_images(tmp_path / "pets", counts=(2, 2), names=NAMES[:2]))
    monkeypatch.setitem(sys.modules, "PIL", None)
    err = one_line_error(["train", "--dataset", "folder", "--data-dir", data, *TINY], capsys)
    assert "pip install 'longtail[images]'" in err


def test_the_your_data_doc_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "your_data.md").read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for index, block in enumerate(blocks):
        exec(compile(block, f"docs/your_data.md python block {index + 1}", "exec"), namespace)


def test_counts_from_file_names_are_the_images_the_folder_source_decodes(tmp_path):
    from longtail.data import folder_counts

    root = tmp_path / "pets"
    write_images(root / "train")
    write_images(root / "test", counts=[4, 4, 4, 4, 4])
    (root / "train" / NAMES[0] / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning):
        splits = read_image_folder(root)
    counted = folder_counts(root)
    assert counted.classes == splits["train"].classes
    assert list(counted.counts) == torch.bincount(splits["train"].labels).tolist()
    assert list(counted.splits["test"]) == torch.bincount(splits["test"].labels).tolist()
    (root / "extra").mkdir()
    for scan in (read_image_folder, folder_counts):  # both refuse a folder beside train/ alike
        with pytest.raises(ValueError, match="expected only train/, val/ and test/ folders beside train/; got extra/"):
            scan(root)


def test_a_folder_run_takes_a_second_stage_tune_beta_and_a_report(tmp_path):
    data = str(write_images(tmp_path / "pets"))
    first = ["--dataset", "folder", "--data-dir", data, *TINY]
    assert main(["train", *first, "--out", str(tmp_path / "ce")]) == 0
    assert main(["train", *first, "--stage", "crt", "--init-from", str(tmp_path / "ce"), "--out",
                 str(tmp_path / "crt")]) == 0
    crt = json.loads((tmp_path / "crt" / "result.json").read_text())
    assert crt["status"] == "complete" and crt["parent"] is not None and crt["classes"] == list(NAMES)
    assert main(["tune-beta", *first, "--val-per-class", "2", "--out", str(tmp_path / "tune")]) == 0
    assert json.loads((tmp_path / "tune" / "tune_beta.json").read_text())["chosen"]
    assert main(["report", str(tmp_path / "ce"), str(tmp_path / "crt"), "--out", str(tmp_path / "report")]) == 0
    assert "crt" in (tmp_path / "report" / "report.md").read_text()


def test_an_image_size_past_the_machines_memory_is_refused_before_any_allocation(tmp_path, capsys):
    data = str(write_images(tmp_path / "pets"))
    err = one_line_error(["train", "--dataset", "folder", "--data-dir", data, "--image-size", "1000000", *TINY,
                          "--out", str(tmp_path / "run")], capsys)
    assert "choose a smaller --image-size" in err and "GiB" in err, err
