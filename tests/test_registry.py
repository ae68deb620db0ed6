"""The loss registry and the configuration that asks it: specs, field checks, migrations, extension, imports."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest
import torch

from longtail.cli import main
from longtail.models import NormedLinear
from longtail.train import LOSSES, LossSpec, TrainConfig, build_loss, register_loss, train
from longtail.train.trainer import build_network, parameter_groups

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def registry():
    """Restores LOSSES after a test that registers losses."""
    saved = dict(LOSSES)
    yield LOSSES
    LOSSES.clear()
    LOSSES.update(saved)


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_spec_builds_its_loss_head_and_bias(name, tiny_config):
    spec = LOSSES[name]
    config = tiny_config(loss=name, val_per_class=max(1, spec.needs_validation))
    criterion = build_loss(config, torch.tensor([60, 40, 30, 20, 15, 11, 9, 8, 7, 6]))
    assert criterion.weight.shape == (10,)
    model = build_network(config, 10, 1)
    assert isinstance(model.fc, NormedLinear) == (spec.head == "cosine")
    groups = parameter_groups(model, config)
    if spec.prior_bias:
        assert model.fc.bias.tolist() == pytest.approx([-math.log(9)] * 10, rel=1e-6)
        assert groups[1] == {"params": [model.fc.bias], "weight_decay": 0.0}
    else:
        assert len(groups) == 1
    assert set(spec.reads) <= {f for f in TrainConfig.__dataclass_fields__}


def test_a_builder_gets_exactly_the_fields_its_spec_reads(registry):
    seen = {}

    def build(counts, gamma):
        seen["gamma"] = gamma
        return LOSSES["ce"].build(counts)

    register_loss("probe", LossSpec("probe", build, reads=("gamma",)))
    build_loss(TrainConfig(dataset="synthetic", loss="probe", gamma=2.5), torch.tensor([5, 3]))
    assert seen == {"gamma": 2.5}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(loss="cb_softmax", drw_epoch=3), ValueError, r"drw_epoch must be None for loss='cb_softmax'"),
        (dict(loss="cdb", val_per_class=10, drw_epoch=3), ValueError, r"drw_epoch must be None for loss='cdb'"),
        (dict(loss="cdb"), ValueError, r"val_per_class must be >= 1 for loss='cdb'.*; got 0"),
        (dict(tau=1.5), TypeError, r"tau was split in two: use cdb_tau \(--cdb-tau.*la_tau \(--la-tau"),
        (dict(la_tau="dynamic"), ValueError, r"la_tau must be a non-negative finite number \('dynamic' is CDB's tau\)"),
        (dict(cdb_tau=0), ValueError, r"cdb_tau must be a positive finite number or 'dynamic'; got 0.0"),
        (dict(cdb_tau="fast"), ValueError, r"cdb_tau must be a positive finite number or 'dynamic'; got 'fast'"),
        (dict(loss="nope"), ValueError, r"loss must be one of 'ce', 'focal', .*; got 'nope'"),
        (dict(model="vgg"), ValueError, r"model must be one of .*'small_cnn'.*; got 'vgg'"),
        (dict(schedule="linear"), ValueError, r"schedule must be one of 'cosine', 'step', 'constant'; got 'linear'"),
        (dict(lr=math.inf), ValueError, r"lr must be finite; got inf"),
        (dict(pad=-3), ValueError, r"pad must be an integer >= 0; got -3"),
        (dict(epochs=2.5), TypeError, r"epochs must be an integer; got float 2.5"),
        (dict(amp="yes"), ValueError, r"amp must be one of 'auto', 'bf16', 'off'; got 'yes'"),
        (dict(augment="yes"), TypeError, r"augment must be True or False; got str 'yes'"),
        (dict(reduction="sum"), ValueError, r"reduction must be one of 'mean', 'weighted_mean'; got 'sum'"),
        (dict(milestones=[5, -1]), ValueError, r"milestones\[1\] must be an integer >= 0; got -1"),
        (dict(seed=2**70), ValueError, r"seed must be an integer in \[0, 4294967295\]; got 1180591620717411303424"),
        (dict(subset_seed=-1), ValueError, r"subset_seed must be an integer in \[0, 4294967295\]; got -1"),
        (dict(few_threshold=200, many_threshold=100), ValueError, r"few_threshold must be <= many_threshold"),
    ],
)
def test_configuration_errors_name_what_was_expected_and_given(kwargs, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(**{"dataset": "synthetic", **kwargs})


def test_drw_applies_to_the_losses_whose_weight_it_can_switch():
    for name, spec in LOSSES.items():
        if spec.deferred_reweighting:
            TrainConfig(dataset="synthetic", loss=name, drw_epoch=1, val_per_class=int(spec.needs_validation))


def test_fields_are_normalised_and_execution_only_fields_are_declared():
    config = TrainConfig(dataset="synthetic", cdb_tau="1.5", imbalance=10, warmup_epochs=0)
    assert config.cdb_tau == 1.5 and isinstance(config.imbalance, float) and config.warmup_epochs == 0.0
    assert TrainConfig(amp=True).amp == "bf16" and TrainConfig(amp=False).amp == "off"  # saved before 0.2
    assert set(TrainConfig.execution_only_fields()) == {"data_dir", "download", "device", "compile",
                                                        "eval_batch_size", "eval_every", "tensorboard"}


@pytest.mark.parametrize(
    "loss, tau, expected",
    [("cdb", 1.5, dict(cdb_tau=1.5)), ("cdb_focal", "dynamic", dict(cdb_tau="dynamic")),
     ("logit_adjusted", 2.0, dict(la_tau=2.0)), ("logit_adjusted", "dynamic", dict(la_tau=1.0)),
     ("ce", "dynamic", dict(cdb_tau="dynamic", la_tau=1.0))],
)
def test_from_dict_reads_configurations_saved_before_tau_was_split(loss, tau, expected):
    saved = {k: v for k, v in TrainConfig(dataset="synthetic", loss="ce").to_dict().items()
             if k not in ("cdb_tau", "la_tau")}
    saved.update(loss=loss, tau=tau, val_per_class=10)
    config = TrainConfig.from_dict(saved)
    assert {k: getattr(config, k) for k in expected} == expected
    with pytest.raises(ValueError, match=r"configuration keys must be fields of TrainConfig; got unknown keys \['bogus'\]"):
        TrainConfig.from_dict({**saved, "bogus": 1})


def test_cli_refuses_tau_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--dataset", "synthetic", "--loss", "logit_adjusted", "--tau", "1.5"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--cdb-tau" in err and "--la-tau" in err


def test_help_lists_every_loss_with_the_fields_it_reads(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for name, spec in LOSSES.items():
        # The loss's line in the list of losses (not a wrapped line of --loss's choices that starts with its name).
        line = next(line for line in text.splitlines()
                    if line.strip().startswith(name + " ") and spec.summary.split()[0] in line)
        for field in spec.reads:
            assert field in line, (name, line)
    assert "--cdb-tau" in text and "--la-tau" in text and "--tau " not in text


def test_a_registered_loss_trains_and_its_hooks_run(registry, tmp_path, tiny_config):
    calls = []

    def on_epoch_start(criterion, epoch):
        calls.append(("start", epoch))

    def after_validation(criterion, meter):
        calls.append(("validated", int(meter.num_samples)))
        return {"probe_accuracy": meter.accuracy().tolist()}

    register_loss("probe", LossSpec("a probe", lambda counts: LOSSES["ce"].build(counts), needs_validation=True,
                                    on_epoch_start=on_epoch_start, after_validation=after_validation))
    with pytest.raises(ValueError, match="already registered"):
        register_loss("probe", LOSSES["ce"])
    with pytest.raises(ValueError, match="val_per_class must be >= 1 for loss='probe'"):
        tiny_config(loss="probe")
    result = train(tiny_config(loss="probe", val_per_class=5), tmp_path, verbose=0)
    assert calls == [("start", 0), ("validated", 50), ("start", 1), ("validated", 50)]
    assert len(result["history"][-1]["probe_accuracy"]) == 10


def test_the_adding_a_loss_example_runs(registry, tmp_path, monkeypatch):
    text = (ROOT / "docs" / "adding_a_loss.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    example = next(b for b in blocks if "register_loss(" in b)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example, "docs/adding_a_loss.md", "exec"), namespace)
    assert (tmp_path / "runs" / "power_weighted" / "result.json").exists()
    assert "power_weighted" in LOSSES


def _imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports anywhere (top level, functions, TYPE_CHECKING blocks)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    found.add(f"{target}.{alias.name}")
                elif target in modules:
                    found.add(target)
    return found - {module}


def test_no_import_cycle_anywhere_in_the_package():
    src = ROOT / "src"
    files = {".".join(p.relative_to(src).with_suffix("").parts).removesuffix(".__init__"): p
             for p in src.rglob("*.py")}
    graph = {m: _imports(p, m, set(files)) for m, p in files.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_amp_auto_is_bfloat16_on_cuda_and_on_cpus_with_native_bfloat16():
    from longtail.train.device import autocast_enabled, cpu_has_native_bfloat16

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert autocast_enabled("auto", cuda) and autocast_enabled("bf16", cpu) and not autocast_enabled("off", cuda)
    assert autocast_enabled("auto", cpu) == cpu_has_native_bfloat16()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        assert cpu_has_native_bfloat16()


def test_reduction_reaches_the_weighted_losses_only():
    counts = torch.tensor([50, 20, 5])
    for name, spec in LOSSES.items():
        config = TrainConfig(dataset="synthetic", loss=name, reduction="weighted_mean", val_per_class=1)
        criterion = build_loss(config, counts)
        if "reduction" in spec.reads:
            assert criterion.reduction == "weighted_mean", name
