"""Pretrained backbones (``--model hf:PATH``, ``--model timm:NAME``) and modules of yours (``train(..., model=)``)
under longtail's head, with the loss's head and bias initialisation."""

import json
import math
import sys

import pytest
import torch
from torch import nn

from longtail.cli import main
from longtail.models import Backbone, NormedLinear
from longtail.train import TrainConfig, train
from longtail.train.trainer import build_network
from longtail.train.inference import load_model

transformers = pytest.importorskip("transformers")

# The synthetic images are grey 16x16: a ViT of 4x4 patches, one layer of width 16 (a few ms per batch).
VIT = dict(image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
           intermediate_size=32)
TRAIN = ["--dataset", "synthetic", "--imbalance", "10", "--n-max", "60", "--epochs", "1", "--batch-size", "32",
         "--quiet"]


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """A randomly initialised 3-channel ViT saved with save_pretrained (the grey images are repeated to 3)."""
    path = tmp_path_factory.mktemp("vit") / "tiny-vit"
    torch.manual_seed(0)
    transformers.ViTModel(transformers.ViTConfig(num_channels=3, **VIT)).save_pretrained(path)
    return path


def test_an_hf_backbone_trains_from_the_cli_and_evaluate_rebuilds_it_from_its_folder(vit, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", f"hf:{vit}", *TRAIN, "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "complete" and result["config"]["model"] == f"hf:{vit.resolve()}"
    assert main(["evaluate", str(out), "--json", str(tmp_path / "eval.json")]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["accuracy"] == result["final"]["accuracy"]
    trained = load_model(out)
    model = trained.model
    assert isinstance(model, Backbone) and type(model.fc) is nn.Linear and model.fc.in_features == 16
    assert model.features.pooling == "pooler"  # ViTModel's own pooler, saved with it
    assert trained.predict(torch.zeros(3, 16, 16, dtype=torch.uint8)).shape == (3,)


def test_the_cosine_head_and_the_prior_bias_of_a_loss_go_on_an_hf_backbone(vit, tmp_path, synthetic_data):
    for loss in ("ldam", "cb_focal"):
        config = TrainConfig(dataset="synthetic", imbalance=10, n_max=60, epochs=1, batch_size=32, loss=loss,
                             model=f"hf:{vit}")
        fresh = build_network(config, 10, 1)
        if loss == "ldam":
            assert isinstance(fresh.fc, NormedLinear) and fresh.fc.in_features == 16
        else:
            assert type(fresh.fc) is nn.Linear
            assert torch.allclose(fresh.fc.bias, torch.full((10,), -math.log(9.0)))
        result = train(config, tmp_path / loss, verbose=0, data=synthetic_data)
        assert result["status"] == "complete" and math.isfinite(result["history"][-1]["train_loss"])
        assert type(load_model(tmp_path / loss).model.fc) is type(fresh.fc)


def test_a_pooler_the_folder_lacks_is_dropped_and_the_tokens_averaged_and_its_own_head_unused(tmp_path):
    path = tmp_path / "vit-classifier"
    transformers.ViTForImageClassification(transformers.ViTConfig(num_channels=1, num_labels=7, **VIT)).save_pretrained(path)
    model = build_network(TrainConfig(dataset="synthetic", model=f"hf:{path}"), 10, 1)
    assert model.features.pooling == "mean" and model.features.model.pooler is None
    assert not any(k.startswith("features.model.classifier") for k in model.state_dict())
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)


def test_channels_other_than_grey_into_rgb_are_refused_by_name(vit):
    with pytest.raises(ValueError, match=r"model hf:.*tiny-vit: the backbone takes 3-channel images and the dataset "
                                         r"has 2 channels \(only grey images are repeated, to 3 channels\)"):
        build_network(TrainConfig(dataset="synthetic", model=f"hf:{vit}"), 10, 2)


def test_a_folder_without_a_saved_model_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--model", f"hf:{tmp_path / 'nothing'}", *TRAIN, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "model hf:PATH must name a folder written by save_pretrained (with config.json)" in err


def test_timm_that_cannot_be_imported_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--model", "timm:resnet18", *TRAIN, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "--model timm:resnet18 needs timm, which cannot be imported here" in err
    assert "pip install timm changes torch" in err


def test_the_help_names_the_backbone_prefixes_and_pretrained_is_for_timm_only(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "hf:PATH" in help_text and "timm:NAME" in help_text and "--pretrained" in help_text
    with pytest.raises(ValueError, match="pretrained must be None unless model is timm:NAME"):
        TrainConfig(model="small_cnn", pretrained="weights.pt")
    with pytest.raises(ValueError, match="model 'hf:' must name its PATH after the colon"):
        TrainConfig(model="hf:")


class Mine(nn.Module):
    """A module of the user's: a flat MLP whose last layer is ``fc``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(256, 12), nn.ReLU())
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        return self.fc(self.body(x))


def test_a_module_of_yours_trains_is_named_in_the_result_and_needs_passing_again(tmp_path, tiny_config,
                                                                                 synthetic_data):
    config = tiny_config(epochs=1)
    result = train(config, tmp_path / "mine", verbose=0, data=synthetic_data, model=Mine())
    assert result["status"] == "complete" and result["config"]["model"] == "custom:Mine"
    again = train(config, tmp_path / "mine", resume=True, verbose=0, data=synthetic_data, model=Mine())
    assert again["final"] == result["final"]
    with pytest.raises(ValueError, match="model 'custom:Mine' is a module of yours.*pass the same module"):
        load_model(tmp_path / "mine")
    trained = load_model(tmp_path / "mine", model=Mine())
    assert trained.predict(torch.zeros(2, 16, 16, dtype=torch.uint8)).shape == (2,)


def test_a_module_of_yours_gets_the_loss_s_head_and_bias_and_one_without_fc_is_refused(tiny_config):
    cosine = build_network(tiny_config(loss="ldam"), 10, 1, model=Mine())
    assert isinstance(cosine.fc, NormedLinear) and cosine.fc.in_features == 12
    prior = build_network(tiny_config(loss="cb_focal"), 10, 1, model=Mine())
    assert torch.allclose(prior.fc.bias, torch.full((10,), -math.log(9.0)))
    with pytest.raises(ValueError, match=r"model must expose its final layer as model.fc, an nn.Linear with "
                                         r"out_features = the number of classes \(10\).*got Sequential with no fc"):
        build_network(tiny_config(), 10, 1, model=nn.Sequential(nn.Flatten(), nn.Linear(256, 10)))
    with pytest.raises(ValueError, match=r"got Mine with an fc with out_features=10"):
        build_network(tiny_config(), 5, 1, model=Mine())
    with pytest.raises(ValueError, match=r"model must have forward_features\(x\) and forward_head\(features\) for "
                                         r"stage='crt'.*got Mine without"):
        build_network(tiny_config(stage="crt", init_from="parent"), 10, 1, model=Mine())


def test_a_timm_backbone_loads_its_pretrained_file_and_trains(tmp_path, tiny_config, synthetic_data):
    timm = pytest.importorskip("timm")
    weights = tmp_path / "resnet18.pt"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), weights)  # with its classifier
    config = tiny_config(epochs=1, model="timm:resnet18", pretrained=str(weights), loss="cb_focal")
    model = build_network(config, 10, 1)
    assert isinstance(model, Backbone) and model.fc.in_features == 512
    assert torch.equal(model.features.conv1.weight, torch.load(weights)["conv1.weight"])
    result = train(config, tmp_path / "run", verbose=0, data=synthetic_data)
    assert result["status"] == "complete" and result["config"]["model"] == "timm:resnet18"
    assert load_model(tmp_path / "run").predict(torch.zeros(2, 16, 16, dtype=torch.uint8)).shape == (2,)


class _TimmLike(nn.Module):
    """What longtail uses of a timm model made with num_classes=0: pooled features, num_features, pretrained_cfg."""

    def __init__(self, in_chans: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 8, 3)
        self.num_features, self.pretrained_cfg = 8, {"classifier": "head"}

    def forward(self, x):
        return self.conv(x).relu().mean(dim=(2, 3))


def test_the_timm_route_loads_the_backbone_from_pretrained_and_ignores_its_classifier(tmp_path, monkeypatch):
    import types

    fake = types.ModuleType("timm")  # timm's create_model, as longtail calls it (timm itself is not installed here)
    fake.create_model = lambda name, pretrained, num_classes, in_chans: _TimmLike(in_chans)
    monkeypatch.setitem(sys.modules, "timm", fake)
    source = _TimmLike(3)
    weights = tmp_path / "w.pt"
    torch.save({**source.state_dict(), "head.weight": torch.zeros(1000, 8), "head.bias": torch.zeros(1000)}, weights)
    model = build_network(TrainConfig(dataset="synthetic", model="timm:tiny", pretrained=str(weights)), 10, 1)
    assert model.model_channels == 3 and model.fc.in_features == 8  # grey repeated to the 3 channels
    assert torch.equal(model.features.conv.weight, source.conv.weight)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    torch.save({"conv.weight": source.conv.weight}, weights)
    with pytest.raises(ValueError, match=r"must hold timm:tiny's weights; it lacks \['conv.bias'\] and has \[\]"):
        build_network(TrainConfig(dataset="synthetic", model="timm:tiny", pretrained=str(weights)), 10, 1)
    torch.save(_TimmLike(1).state_dict(), weights)
    with pytest.raises(ValueError, match=r"must hold timm:tiny's weights for 3-channel images; .*size mismatch"):
        build_network(TrainConfig(dataset="synthetic", model="timm:tiny", pretrained=str(weights)), 10, 1)
