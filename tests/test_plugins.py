"""Open doors: a loss, dataset or model defined in one file outside the package and registered with one call is
trained through ``longtail train --plugin FILE``; the CLI's shared options have the configuration's one default."""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import test_loss_contract as contract
from longtail.cli import build_parser, main
from longtail.plugins import PLUGIN_ENV, import_plugin
from longtail.data import DATASETS, DatasetSpec, long_tailed_indices, register_dataset, synthetic_images, training_split
from longtail.models import MODELS, ModelSpec, SmallCNN, build_configured_model, build_model, register_model
from longtail.train import LOSSES, TrainConfig, prepare_data, register_loss

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "synthetic", "--imbalance", "10", "--n-max", "40", "--epochs", "1", "--batch-size", "32",
        "--width", "8", "--quiet"]

PLUGIN = textwrap.dedent('''
    """A loss outside the package: its own module and one registration."""
    import torch

    from longtail.functional import class_balanced_loss
    from longtail.losses import WeightedLoss
    from longtail.train import LossSpec, register_loss


    class SqrtWeightedLoss(WeightedLoss):
        """Softmax CE with w_c proportional to n_c ** -0.5, rescaled to sum to C."""

        def __init__(self, counts, reduction="mean", ignore_index=-100):
            weight = torch.as_tensor(counts, dtype=torch.float64).rsqrt()
            super().__init__(weight * (len(weight) / weight.sum()))
            self.reduction, self.ignore_index = reduction, ignore_index

        def forward(self, logits, target, sample_weight=None):
            return class_balanced_loss(logits, target, self.weight, loss="softmax", reduction=self.reduction,
                                       ignore_index=self.ignore_index, sample_weight=sample_weight)


    register_loss("sqrt_weighted", LossSpec("softmax CE weighted by n ** -0.5", build=SqrtWeightedLoss))
''')


@pytest.fixture
def registries():
    """The registries and the imported plugin modules as they were before the test."""
    saved = [(registry, dict(registry)) for registry in (LOSSES, DATASETS, MODELS)]
    modules = set(sys.modules)
    yield
    for registry, items in saved:
        registry.clear()
        registry.update(items)
    for name in set(sys.modules) - modules:
        if name.startswith("longtail_plugin_"):
            del sys.modules[name]


@pytest.fixture
def plugin(tmp_path, registries) -> Path:
    path = tmp_path / "sqrt_weighted.py"
    path.write_text(PLUGIN)
    return path


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def _contract_calls(case):
    """Every test of tests/test_loss_contract.py parametrised by ``case``, with its other parameters: the whole
    contract for one more loss."""
    for name, test in vars(contract).items():
        marks = [m for m in getattr(test, "pytestmark", []) if name.startswith("test_") and m.name == "parametrize"]
        if not any(m.args[0] == "case" for m in marks):
            continue
        grids = []
        for mark in marks:
            names = [n.strip() for n in mark.args[0].split(",")]
            if names != ["case"]:
                grids.append([dict(zip(names, v if len(names) > 1 else (v,))) for v in mark.args[1]])
        for combination in itertools.product(*grids):
            yield name, test, {k: v for part in combination for k, v in part.items()}


def test_a_loss_in_one_file_outside_the_package_trains_through_the_cli(plugin, tmp_path, capsys):
    assert "sqrt_weighted" not in LOSSES
    out = tmp_path / "run"
    assert main(["train", "--plugin", str(plugin), "--loss", "sqrt_weighted", *TINY, "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "complete" and result["config"]["loss"] == "sqrt_weighted"
    assert 0.0 <= result["final"]["balanced_accuracy"] <= 1.0
    assert re.search(r"^  sqrt_weighted +softmax CE weighted by n \*\* -0.5$",
                     _help(["train", "--plugin", str(plugin), "--help"], capsys), flags=re.M)
    assert main(["report", str(out), "--plugin", str(plugin), "--out", str(tmp_path / "report"), "--no-plots"]) == 0
    assert "sqrt_weighted" in capsys.readouterr().out
    assert "sqrt_weighted" in (tmp_path / "report" / "report.md").read_text()


def test_a_plugin_loss_keeps_the_whole_loss_contract(plugin):
    import_plugin(str(plugin))
    import_plugin(str(plugin))  # imported once: a second --plugin of the same file registers nothing twice
    case = contract.Case("sqrt_weighted", lambda: LOSSES["sqrt_weighted"].build(torch.tensor(contract.COUNTS)))
    names = set()
    for name, test, params in _contract_calls(case):
        test(case=case, **params)
        names.add(name)
    assert len(names) >= 10, names


def test_plugins_from_the_environment_are_read_before_the_parser(plugin, monkeypatch, capsys):
    monkeypatch.setenv(PLUGIN_ENV, f"{plugin}")
    assert "sqrt_weighted" in _help(["train", "--help"], capsys)


@pytest.mark.parametrize("ref, error", [("no_such_plugin_module", "ModuleNotFoundError: No module named "
                                                                   "'no_such_plugin_module'"),
                                        ("missing.py", "FileNotFoundError: no such file: "),
                                        ("broken.py", "ZeroDivisionError: division by zero")])
def test_a_plugin_that_fails_to_import_is_a_one_line_error_naming_plugin(ref, error, tmp_path, registries, capsys,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.py").write_text("1 / 0\n")
    assert main(["train", "--plugin", ref, "--dataset", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"longtail: error: --plugin {ref!r} must import; got ")
    assert error in err


def test_register_dataset_and_register_model_are_as_open_and_checked_as_register_loss(registries):
    spec = DatasetSpec("generated", lambda data_dir, train, download: synthetic_images(train))
    for register, good in ((register_dataset, spec), (register_model, ModelSpec("a CNN", SmallCNN))):
        with pytest.raises(ValueError, match="name must be an identifier-like string; got 'my-set'"):
            register("my-set", good)
        with pytest.raises(TypeError, match=r"spec must be a (DatasetSpec|ModelSpec); got dict"):
            register("mine", {})
        register("mine", good)
        with pytest.raises(ValueError, match="'mine' is already registered; pass replace=True to replace it"):
            register("mine", good)
        register("mine", good, replace=True)
    assert TrainConfig(dataset="mine", model="mine").model == "mine"


def _long_tailed_set(train: bool):
    """A set that is long-tailed already: 40, 20, 10, 5, 2 training images in its five classes."""
    full = synthetic_images(train, num_classes=5, per_class=40 if train else 10)
    if not train:
        return full
    keep = torch.cat([torch.nonzero(full.labels == c).flatten()[:n] for c, n in enumerate((40, 20, 10, 5, 2))])
    return type(full)(full.images[keep], full.labels[keep], full.classes)


def test_a_dataset_that_is_not_a_benchmark_one_is_used_as_it_is(registries):
    # Measured before: such a set at imbalance=1 was cut to its smallest class, 2 images a class (21 % accuracy).
    register_dataset("natural", DatasetSpec("long-tailed already", lambda d, train, dl: _long_tailed_set(train)))
    data = prepare_data(TrainConfig(dataset="natural", imbalance=1, val_per_class=1), torch.device("cpu"))
    assert data.counts.tolist() == [39, 19, 9, 4, 1] and data.val_counts.tolist() == [1] * 5
    labels = _long_tailed_set(True).labels
    with pytest.warns(UserWarning, match=r"dataset 'natural' is used as it is at imbalance=1 .*draw_long_tail=False"):
        drawn = training_split("natural", labels, 2, n_max=2)
    assert drawn.counts.tolist() == [2, 1, 1, 1, 1]


def test_the_benchmark_datasets_draw_the_long_tail_as_before():
    labels = synthetic_images(True).labels
    for args in [(10, "exp", dict(n_max=40, seed=3, val_per_class=5)), (1, "step", {})]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ours = training_split("synthetic", labels, args[0], args[1], **args[2])
        theirs = long_tailed_indices(labels, args[0], args[1], **args[2])
        assert all(torch.equal(getattr(ours, k), getattr(theirs, k))
                   for k in ("train_indices", "val_indices", "counts", "val_counts"))


def test_a_registered_model_reads_its_declared_fields_and_builds_from_a_config(registries, capsys):
    register_model("tiny_cnn", ModelSpec("SmallCNN at half the width", lambda width, **kw: SmallCNN(width=width // 2,
                                                                                                   **kw),
                                         reads=("width",)))
    assert "tiny_cnn" in _help(["train", "--help"], capsys)
    model = build_configured_model(TrainConfig(model="tiny_cnn", width=16), 10, 1, use_norm=True)
    assert model.feature_dim == build_model("small_cnn", 10, 1, width=8).feature_dim
    torch.manual_seed(0)
    ours = build_configured_model(TrainConfig(width=8), 10, 1, use_norm=False)
    torch.manual_seed(0)
    theirs = build_model("small_cnn", 10, 1, use_norm=False, width=8)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))


@pytest.mark.parametrize("command", ["train", "weights", "demo", "evaluate", "predict", "tune-beta"])
def test_the_shared_options_have_the_configurations_one_default(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    defaults = TrainConfig()
    shared = {"imbalance", "profile", "n_max", "data_dir", "device", "seed", "download", "many_threshold",
              "few_threshold"}
    found = {a.dest for a in sub._actions} & shared
    assert found, command
    for name in found:
        assert sub.get_default(name) == getattr(defaults, name), (command, name)


def _python_blocks(doc: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / doc).read_text(), flags=re.S)


def test_the_extending_doc_examples_run(registries, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for index, block in enumerate(_python_blocks("extending.md")):
        exec(compile(block, f"docs/extending.md python block {index + 1}", "exec"), {})
    assert capsys.readouterr().out.splitlines()[0] == "[40, 20, 10, 5, 2]"
    assert json.loads((tmp_path / "runs" / "dropout" / "result.json").read_text())["status"] == "complete"


def test_the_adding_a_loss_example_is_a_plugin_as_the_doc_says(registries, tmp_path):
    example = next(b for b in _python_blocks("adding_a_loss.md") if "register_loss(" in b)
    plugin = tmp_path / "power_weighted.py"
    plugin.write_text(example[:example.index("config = TrainConfig(")])
    out = tmp_path / "run"
    assert main(["train", "--plugin", str(plugin), "--loss", "power_weighted", *TINY, "--out", str(out)]) == 0
    assert json.loads((out / "result.json").read_text())["config"]["loss"] == "power_weighted"
    case = contract.Case("power_weighted", lambda: LOSSES["power_weighted"].build(torch.tensor(contract.COUNTS)))
    for _, test, params in _contract_calls(case):
        test(case=case, **params)
