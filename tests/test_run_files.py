"""What a run leaves beside result.json (history.csv, config.toml), --config files, shot thresholds, logs and help."""

import csv
import functools
import io
import json

import pytest

from longtail.cli import build_parser, main
from longtail.train import TrainConfig, train
from longtail.train.config import load_config_file

FAST_FLAGS = ["--dataset", "synthetic", "--imbalance", "10", "--n-max", "60", "--epochs", "2", "--batch-size", "32",
              "--width", "8", "--val-per-class", "5"]


@pytest.fixture(scope="module")
def tiny_config(tiny_config):
    """The tiny run with 5 validation images per class, so that history.csv has validation columns."""
    return functools.partial(tiny_config, val_per_class=5)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_config):
    folder = tmp_path_factory.mktemp("run")
    return folder, train(tiny_config(eval_every=1), folder, verbose=0)


def test_history_csv_is_the_result_history_as_a_table(run):
    folder, result = run
    rows = list(csv.DictReader(io.StringIO((folder / "history.csv").read_text())))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row, entry in zip(rows, result["history"]):
        assert float(row["train_loss"]) == entry["train_loss"] and float(row["lr"]) == entry["lr"]
        assert float(row["val_balanced_accuracy"]) == entry["val"]["balanced_accuracy"]
        assert float(row["test_accuracy"]) == entry["test"]["accuracy"]


def test_config_toml_is_the_resolved_configuration_and_reads_back(run):
    folder, result = run
    text = (folder / "config.toml").read_text()
    assert "# unset (None):" in text and 'sampler = "instance"' in text
    assert TrainConfig(**load_config_file(folder / "config.toml")) == TrainConfig.from_dict(result["config"])


def test_config_file_sits_between_the_preset_and_explicit_options(tmp_path, capsys):
    toml = tmp_path / "run.toml"
    toml.write_text('loss = "cb_softmax"\nbeta = 0.99\nlr = 0.2\nmilestones = [3, 4]\n')
    args = build_parser({**load_config_file(toml)}).parse_args(["train", "--lr", "0.3"])
    assert (args.loss, args.beta, args.lr, args.milestones) == ("cb_softmax", 0.99, 0.3, [3, 4])
    yaml = tmp_path / "run.yaml"
    yaml.write_text("loss: focal\ngamma: 2.0\n")
    assert load_config_file(yaml) == {"loss": "focal", "gamma": 2.0}
    # Through main: the file's values train, an explicit option wins.
    out = tmp_path / "out"
    assert main(["train", "--config", str(toml), *FAST_FLAGS, "--beta", "0.9", "--epochs", "1", "--quiet",
                 "--out", str(out)]) == 0
    saved = json.loads((out / "result.json").read_text())["config"]
    assert (saved["loss"], saved["beta"], saved["lr"], saved["epochs"]) == ("cb_softmax", 0.9, 0.2, 1)


@pytest.mark.parametrize("text,suffix,message", [
    ("los = 1\n", ".toml", "must hold TrainConfig fields only; got unknown keys ['los']"),
    ("loss = \n", ".toml", "must be valid TOML"),
    ("- 1\n- 2\n", ".yaml", "must hold a table of TrainConfig fields; got list"),
    ("loss = 'ce'\n", ".ini", "config file must end in .toml, .yaml or .yml"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, capsys, text, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_shot_thresholds_default_to_the_head_class_and_come_in_pairs(run):
    _, result = run
    head = max(result["train_counts"])
    assert result["final"]["shot_thresholds"] == {"many": pytest.approx(0.2 * head), "few": pytest.approx(0.04 * head)}
    assert TrainConfig(many_threshold=1000, few_threshold=200).few_threshold == 200
    with pytest.raises(ValueError, match="many_threshold and few_threshold must be given together"):
        TrainConfig(many_threshold=1000)


def test_no_progress_bar_frames_when_stderr_is_not_a_terminal(tmp_path, capsys, tiny_config):
    train(tiny_config(epochs=1), tmp_path, verbose=2)
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "epoch   1/1" in captured.out


def test_every_option_has_help_and_says_its_default_once():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("train", "weights", "demo"):
        text = commands[name].format_help()
        for action in commands[name]._actions:
            if action.dest != "help" and action.help is not None and action.help != "==SUPPRESS==":
                assert action.help.strip(), (name, action.dest)
        assert "(default: None)" not in text, name
    assert "--n-max N_MAX" in commands["train"].format_help()
    assert commands["train"].format_help().count("all it has") == 1


@pytest.mark.slow
def test_tensorboard_scalars_are_the_history(tmp_path, tiny_config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(tiny_config(tensorboard=True, eval_every=1), tmp_path, verbose=0)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([h["train_loss"] for h in result["history"]])
    assert [e.step for e in events.Scalars("val/balanced_accuracy")] == [1, 2]
    assert events.Scalars("test/accuracy")[-1].value == pytest.approx(result["final"]["accuracy"])


def test_tensorboard_missing_is_refused_before_any_work(tmp_path, monkeypatch, tiny_config):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ValueError, match=r"tensorboard must be installed for tensorboard=True"):
        train(tiny_config(tensorboard=True), tmp_path / "run", verbose=0)
    assert not (tmp_path / "run").exists()
