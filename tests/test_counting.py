"""Per-class counts of datasets on disk without decoding them (longtail.data.counting), `longtail counts`, and
`class_counts` on those sources."""

import pathlib
import re

import numpy as np
import pytest

from longtail import class_counts
from longtail.cli import main
from longtail.data.counting import IMAGE_EXTENSIONS, folder_counts, npz_counts, path_counts, table_counts

GARBAGE = b"\x00\x01 not an image at all \xff"


def _images(folder: pathlib.Path, n: int, ext: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i}{ext}").write_bytes(GARBAGE)  # nothing is decoded: any bytes count


def _write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def pets(tmp_path):
    """cat 5 (one in a sub-folder, upper-case extension), dog 1, bird 2; a .txt, a README and hidden entries."""
    root = tmp_path / "pets"
    _images(root / "cat", 4, ".PNG")
    _images(root / "cat" / "more", 1, ".jpeg")
    _images(root / "dog", 1, ".webp")
    _images(root / "bird", 2, ".gif")
    _write(root / "cat" / "notes.txt", "x")
    _write(root / "cat" / ".DS_Store", "x")
    _images(root / ".ipynb_checkpoints" / "cat", 3)  # a hidden folder: neither a class nor counted
    _write(root / "README.md", "x")
    return root


def test_an_image_folder_is_counted_from_file_names_without_decoding(pets):
    found = folder_counts(pets)
    assert found.classes == ("bird", "cat", "dog")  # sorted folder names, as ImageFolder indexes them
    assert found.counts == (2, 5, 1)
    assert found.splits == {"train": (2, 5, 1)}
    assert found.imbalance_ratio == 5
    assert "1 file skipped: not images (.txt)" in found.notes
    assert "2 hidden files and folders ignored (names starting with '.')" in found.notes
    assert "1 file outside the class folders skipped (README.md)" in found.notes
    assert ".gif" in IMAGE_EXTENSIONS and ".tiff" in IMAGE_EXTENSIONS


def test_the_split_layout_counts_each_split_and_weights_use_train(tmp_path):
    for split, (a, b) in {"train": (6, 2), "val": (3, 1), "test": (2, 0)}.items():
        _images(tmp_path / split / "a", a, ".jpg")
        (tmp_path / split / "b").mkdir()
        _images(tmp_path / split / "b", b, ".bmp")
    found = folder_counts(tmp_path)
    assert found.classes == ("a", "b")
    assert found.counts == (6, 2)
    assert found.splits == {"train": (6, 2), "val": (3, 1), "test": (2, 0)}  # an empty test class is 0, not an error
    assert "split layout train/val/test" in found.source


def test_folder_errors_name_the_folder_or_the_empty_class(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        folder_counts(tmp_path / "nope")
    with pytest.raises(ValueError, match="holds no class folders"):
        folder_counts(tmp_path)
    _images(tmp_path / "cat", 2)
    (tmp_path / "dog").mkdir()
    _write(tmp_path / "dog" / "readme.txt", "x")
    with pytest.raises(ValueError, match="class folders without images in .*: 'dog'"):
        folder_counts(tmp_path)
    _images(tmp_path / "split" / "train" / "cat", 1)
    _images(tmp_path / "split" / "val" / "lion", 1)
    with pytest.raises(ValueError, match="has classes that train/ lacks: lion"):
        folder_counts(tmp_path / "split")


def test_a_csv_is_counted_from_its_label_column_with_string_or_integer_labels(tmp_path):
    strings = _write(tmp_path / "s.csv", "file,label\na.png,cat\nb.png,dog\nc.png,cat\nd.png,\n")
    found = table_counts(strings, "label")
    assert (found.classes, found.counts) == (("cat", "dog"), (2, 1))
    assert found.notes == ("1 row without a label skipped",)
    # Integer labels are class indices: every index 0..max is counted, an absent one as 0 (and said).
    integers = _write(tmp_path / "i.tsv", "label\tx\n3\t.\n0\t.\n3\t.\n1\t.\n")
    found = table_counts(integers, "label")
    assert (found.classes, found.counts) == (("0", "1", "2", "3"), (1, 1, 0, 2))
    assert "1 class without rows counted 0 (2)" in found.notes[0]


def test_table_errors_name_the_column_and_the_columns_that_exist(tmp_path):
    table = _write(tmp_path / "t.csv", "file,label\na.png,cat\n")
    with pytest.raises(ValueError, match=r"label column 'target' is not in it; its columns: file, label"):
        table_counts(table, "target")
    with pytest.raises(ValueError, match=r"a label column \(target\) is needed; its columns: file, label"):
        table_counts(table, None)
    with pytest.raises(ValueError, match="is not a table: expected a file ending in .csv"):
        table_counts(_write(tmp_path / "t.txt", "label\ncat\n"), "label")
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(ValueError, match="is not a table: not a text CSV file"):
        table_counts(binary, "label")
    with pytest.raises(ValueError, match="must be >= 0"):
        table_counts(_write(tmp_path / "n.csv", "label\n-1\n2\n"), "label")


def test_parquet_without_pyarrow_says_which_package_is_missing(tmp_path):
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        (tmp_path / "t.parquet").write_bytes(b"PAR1")
        with pytest.raises(ImportError, match="needs pyarrow: pip install pyarrow"):
            table_counts(tmp_path / "t.parquet", "label")
    else:
        pytest.skip("pyarrow is installed: the message for its absence cannot be reached")


def test_an_npz_is_counted_from_its_label_arrays_only(tmp_path):
    y = np.array([0, 0, 0, 2, 1, 0])
    np.savez(tmp_path / "a.npz", x=np.zeros((6, 1, 2, 2), np.uint8), y=y, y_test=np.array([2, 2, 1]),
             classes=np.array(["cat", "dog", "emu"]))
    found = npz_counts(tmp_path / "a.npz")
    assert (found.classes, found.counts) == (("cat", "dog", "emu"), (4, 1, 1))
    assert found.splits == {"train": (4, 1, 1), "test": (0, 1, 2)}
    np.savez(tmp_path / "b.npz", y=np.array([3, 0]))
    assert npz_counts(tmp_path / "b.npz").counts == (1, 0, 0, 1)
    np.savez(tmp_path / "c.npz", labels=y)
    with pytest.raises(ValueError, match="has no label array 'y'; its arrays: labels"):
        npz_counts(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", y=y, classes=np.array(["cat", "dog"]))
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        npz_counts(tmp_path / "d.npz")


def test_path_counts_picks_the_reader_by_what_the_path_is(pets, tmp_path):
    assert path_counts(pets).counts == (2, 5, 1)
    np.savez(tmp_path / "a.npz", y=np.array([1, 1, 0]))
    assert path_counts(tmp_path / "a.npz").counts == (1, 2)
    assert path_counts(_write(tmp_path / "t.csv", "y\nb\na\nb\n"), "y").counts == (1, 2)


def test_class_counts_reads_the_new_sources_and_keeps_its_old_errors(pets, tmp_path, monkeypatch):
    assert class_counts(pets).tolist() == [2, 5, 1]
    assert class_counts(pets, 3).tolist() == [2, 5, 1]
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "file.csv", "label\n1\n0\n1\n")
    assert class_counts("file.csv", target="label").tolist() == [1, 2]
    with pytest.raises(ValueError, match="num_classes must be the 3 classes of image folder"):
        class_counts(pets, 4)
    with pytest.raises(FileNotFoundError):
        class_counts(pathlib.Path("nope"))
    with pytest.raises(TypeError, match="got str"):  # a str that names no path: the error it always had
        class_counts("012", 3)
    with pytest.raises(TypeError, match="needs num_classes"):
        class_counts([0, 1])


def test_the_counts_command_prints_counts_largest_first_weights_and_the_beta_range(pets, capsys):
    assert main(["counts", "--dataset", "folder", "--data-dir", str(pets), "--beta", "0.5,0.9"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert "3 classes, 8 samples; imbalance ratio 5" in lines[0]
    assert "1 file skipped: not images (.txt)" in lines
    header = lines.index(next(line for line in lines if line.split()[:2] == ["class", "count"]))
    rows = [line.split() for line in lines[header + 1: header + 4]]
    assert [(r[0], r[1]) for r in rows] == [("cat", "5"), ("bird", "2"), ("dog", "1")]
    assert sum(float(r[2]) for r in rows) == pytest.approx(3.0, abs=1e-3)  # the weights sum to C
    assert lines[-1].startswith("beta range [0, 0.8]")
    assert "longtail counts: beta 0.9 is outside the range" in captured.err


def test_the_counts_command_shows_every_split_and_reads_tables_arrays_and_registered_sets(tmp_path, capsys):
    for split, n in {"train": 4, "val": 2}.items():
        _images(tmp_path / "f" / split / "a", n)
        _images(tmp_path / "f" / split / "b", 1)
    assert main(["counts", "--dataset", "folder", "--data-dir", str(tmp_path / "f")]) == 0
    out = capsys.readouterr().out
    assert "in the training split" in out
    header = next(line.split() for line in out.splitlines() if line.split()[0] == "class")
    assert header[:3] == ["class", "count", "val"]
    table = _write(tmp_path / "t.csv", "label\ncat\ncat\ndog\n")
    assert main(["counts", "--dataset", "table", "--data-dir", str(table), "--target", "label"]) == 0
    assert "imbalance ratio 2" in capsys.readouterr().out
    np.savez(tmp_path / "a.npz", y=np.array([0, 1, 1]))
    assert main(["counts", "--dataset", "arrays", "--data-dir", str(tmp_path / "a.npz")]) == 0
    assert "2 classes, 3 samples" in capsys.readouterr().out
    assert main(["counts", "--dataset", "synthetic"]) == 0
    assert "10 classes, 5000 samples" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "folder", "--data-dir", "{tmp}/nope"], "image folder '{tmp}/nope' does not exist"),
        (["--dataset", "folder", "--data-dir", "{tmp}/empty"], "class folders without images in '{tmp}/empty': 'b'"),
        (["--dataset", "table", "--data-dir", "{tmp}/t.csv", "--target", "y"],
         "table '{tmp}/t.csv': label column 'y' is not in it; its columns: file, label"),
        (["--dataset", "table", "--data-dir", "{tmp}/t.csv"],
         "table '{tmp}/t.csv': a label column (--target COLUMN) is needed; its columns: file, label"),
        (["--dataset", "table", "--data-dir", "{tmp}/empty"], "'{tmp}/empty' is not a table: expected a file ending"),
        (["--dataset", "folder"], "--data-dir PATH is needed with --dataset folder (the image folder to count)"),
        (["--dataset", "nope"], "--dataset must be one of folder, table, arrays (files) or a registered dataset ("),
    ],
)
def test_counts_command_errors_are_one_line(args, message, tmp_path, capsys):
    _images(tmp_path / "empty" / "a", 1)
    (tmp_path / "empty" / "b").mkdir()
    _write(tmp_path / "t.csv", "file,label\na.png,cat\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["counts", *(a.format(tmp=tmp_path) for a in args)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("longtail counts: error: " + message.format(tmp=tmp_path))


def test_the_docs_python_block_runs():
    doc = pathlib.Path(__file__).resolve().parents[1] / "docs" / "counts.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 1
    exec(compile(blocks[0], "docs/counts.md python block 1", "exec"), {"__name__": "__docs__"})


def test_the_counts_help_names_the_sources_and_the_image_extensions(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["counts", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "usage: longtail counts" in text and "registered dataset" in text and ".webp" in text
