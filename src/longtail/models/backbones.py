"""Pretrained backbones under longtail's head: ``--model hf:PATH`` and ``--model timm:NAME``.

A :class:`Backbone` is a feature extractor that returns pooled features ``(N, D)`` with longtail's classifier
``fc`` on top (a :class:`torch.nn.Linear`, or the cosine :class:`~longtail.models.NormedLinear` a loss asks
for), so every loss, stage and post-hoc adjustment applies to it as to the built-in models. The backbone's own
classification head, if it has one, is not used.

- ``hf:PATH``: a Hugging Face ``transformers`` image model saved with ``save_pretrained`` in the folder PATH,
  loaded with ``AutoModel.from_pretrained(PATH, local_files_only=True)`` (nothing is downloaded). Its features
  are ``pooler_output`` where the model has a pooler whose weights the folder holds (ResNet's and ConvNeXt's
  average pooling, ViT's pooler), else the mean of ``last_hidden_state`` over its tokens (or positions).
- ``timm:NAME``: ``timm.create_model(NAME, pretrained=False, num_classes=0)``, its weights from the file
  ``pretrained`` (a state dict saved with ``torch.save``, or ``.safetensors``; none: timm's random
  initialisation). Where timm cannot be imported, a one-line error says so.

Grey images (1 channel) given to a model that takes 3 channels are repeated to 3 channels; any other
mismatch of channels is refused, naming both.
"""

from __future__ import annotations

from pathlib import Path
import torch
from torch import nn

from .base import Classifier, linear_head

__all__ = ["BACKBONE_PREFIXES", "Backbone", "HFFeatures", "adopt_model", "build_backbone", "check_backbone_name", "split_backbone_name"]

#: The prefixes of backbone names (``--model PREFIX:REST``) and what REST is. ``custom`` names a module of
#: yours given to ``train(config, out, model=...)``, which longtail cannot build again.
BACKBONE_PREFIXES = {"hf": "PATH", "timm": "NAME", "custom": "CLASS"}


def split_backbone_name(name: str) -> tuple[str, str] | None:
    """``"hf:PATH"`` -> ``("hf", "PATH")``; ``None`` for a name without a backbone prefix.

    >>> split_backbone_name("timm:resnet18"), split_backbone_name("small_cnn")
    (('timm', 'resnet18'), None)
    """
    prefix, sep, rest = name.partition(":")
    return (prefix, rest) if sep and prefix in BACKBONE_PREFIXES else None


class Backbone(Classifier):
    """``features(x) -> (N, feature_dim)`` with longtail's head ``fc`` (``forward_features`` / ``forward_head``).

    Args:
        features: the feature extractor; takes ``(N, model_channels, H, W)`` images.
        feature_dim: ``D``, the width of its features.
        num_classes: outputs ``C``.
        in_channels: channels of the images given; 1 with ``model_channels=3`` repeats them.
        use_norm: the cosine head.
        model_channels: channels the extractor takes (default: ``in_channels``).
    """

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int, in_channels: int,
                 use_norm: bool = False, model_channels: int | None = None) -> None:
        super().__init__()
        model_channels = in_channels if model_channels is None else model_channels
        if model_channels != in_channels and not (in_channels == 1 and model_channels == 3):
            raise ValueError(f"the backbone takes {model_channels}-channel images and the dataset has {in_channels} "
                             "channels (only grey images are repeated, to 3 channels)")
        self.in_channels, self.num_classes, self.feature_dim = in_channels, num_classes, feature_dim
        self.model_channels = model_channels
        self.features = features
        self.fc = linear_head(feature_dim, num_classes, use_norm)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.model_channels != self.in_channels:  # grey -> RGB
            x = x.expand(-1, self.model_channels, -1, -1)
        return self.features(x)


class HFFeatures(nn.Module):
    """A ``transformers`` image model as a feature extractor: ``pooler_output`` (``pooling="pooler"``) or the
    mean of ``last_hidden_state`` over its tokens or positions (``pooling="mean"``), as ``(N, D)``."""

    def __init__(self, model: nn.Module, pooling: str) -> None:
        super().__init__()
        self.model, self.pooling = model, pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x, return_dict=True)
        if self.pooling == "pooler":
            return out.pooler_output.flatten(1)  # ResNet's is (N, C, 1, 1)
        hidden = out.last_hidden_state
        return hidden.mean(dim=(2, 3)) if hidden.ndim == 4 else hidden.mean(dim=1)

    def extra_repr(self) -> str:
        return f"pooling={self.pooling}"


def _hf_backbone(path: str) -> tuple[nn.Module, int, int]:
    """The ``transformers`` model saved in ``path``: (feature extractor, D, channels it takes)."""
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise ValueError(f"model hf:PATH must name a folder written by save_pretrained (with config.json); got "
                         f"{str(folder)!r}, which has no config.json")
    try:
        from transformers import AutoModel
    except ImportError as exc:
        raise ValueError(f"--model hf:PATH needs transformers, which cannot be imported here ({exc}); "
                         "pip install transformers") from None
    try:
        model, info = AutoModel.from_pretrained(str(folder), local_files_only=True, output_loading_info=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"model hf:{path}: transformers cannot load it ({' '.join(str(exc).split())})") from None
    config = model.config
    # A pooler whose weights the folder lacks (ViT saved from ViTForImageClassification) would be random: dropped,
    # and the mean of the tokens taken instead.
    has_pooler = getattr(model, "pooler", None) is not None
    if has_pooler and any(k.startswith("pooler.") for k in info["missing_keys"]):
        model.pooler, has_pooler = None, False
    sizes = getattr(config, "hidden_sizes", None)
    dim = sizes[-1] if sizes else getattr(config, "hidden_size", None)
    channels = getattr(config, "num_channels", None)
    if not isinstance(dim, int) or not isinstance(channels, int):
        raise ValueError(f"model hf:{path} must be an image model whose config gives hidden_size (or hidden_sizes) "
                         f"and num_channels; got a {type(config).__name__}")
    return HFFeatures(model, "pooler" if has_pooler else "mean"), dim, channels


def _timm_backbone(name: str, pretrained: str | None, in_channels: int) -> tuple[nn.Module, int, int]:
    """timm's ``name`` without its classifier, its weights from ``pretrained``: (model, D, channels)."""
    try:
        import timm
    except ImportError as exc:
        raise ValueError(f"--model timm:{name} needs timm, which cannot be imported here ({exc}); pip install timm "
                         "changes torch: see docs/your_data.md, 'Your model'") from None
    channels = 3 if in_channels == 1 else in_channels
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=channels)
    except RuntimeError as exc:  # timm's "Unknown model"
        raise ValueError(f"model timm:{name}: {exc}") from None
    if pretrained is not None:
        file = Path(pretrained).expanduser()
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # a tensor of another shape (channels, widths)
            raise ValueError(f"pretrained {str(file)!r} must hold timm:{name}'s weights for {channels}-channel "
                             f"images; {' '.join(str(exc).split())}") from None
        head = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or "\0"
        unexpected = [k for k in unexpected if not k.startswith(head + ".")]  # its classifier's: not used
        if missing or unexpected:
            raise ValueError(f"pretrained {str(file)!r} must hold timm:{name}'s weights; it lacks {sorted(missing)} "
                             f"and has {sorted(unexpected)} in addition")
    return model, int(model.num_features), channels


def build_backbone(name: str, num_classes: int, in_channels: int, *, use_norm: bool,
                   pretrained: str | None = None) -> Backbone:
    """The :class:`Backbone` of ``name`` (``hf:PATH`` or ``timm:NAME``) with a head of ``num_classes``.

    Raises:
        ValueError: a ``custom:`` name (a module of yours: pass it again), a folder or model that cannot be
            loaded, timm or transformers that cannot be imported, or channels that do not match.
    """
    prefix, rest = split_backbone_name(name) or ("", name)
    if prefix == "hf":
        features, dim, channels = _hf_backbone(rest)
    elif prefix == "timm":
        features, dim, channels = _timm_backbone(rest, pretrained, in_channels)
    elif prefix == "custom":
        raise ValueError(f"model {name!r} is a module of yours, which longtail cannot build again: pass the same "
                         "module (train(config, out, model=...), build_run(config, model=...), load_model(run, "
                         "model=...))")
    else:
        raise ValueError(f"model must start with one of {', '.join(p + ':' for p in BACKBONE_PREFIXES)}; got {name!r}")
    try:
        return Backbone(features, dim, num_classes, in_channels, use_norm, model_channels=channels)
    except ValueError as exc:
        raise ValueError(f"model {name}: {exc}") from None


def check_backbone_name(name: str, value: str) -> str:
    """A backbone name with something after its prefix (``hf:`` alone is refused), an ``hf:`` folder made absolute
    (so a run's reports and ``longtail evaluate`` find it from any folder)."""
    prefix, rest = split_backbone_name(value) or ("", "")
    if not rest:
        raise ValueError(f"{name} {value!r} must name its {BACKBONE_PREFIXES.get(prefix, 'name')} after the colon")
    return f"hf:{Path(rest).expanduser().resolve()}" if prefix == "hf" else value


def adopt_model(model: nn.Module, num_classes: int, *, use_norm: bool, frozen_stage: str | None = None) -> nn.Module:
    """A module of yours, made the trainer's: its final layer ``model.fc`` (an ``nn.Linear`` or a
    :class:`~longtail.models.NormedLinear` with ``num_classes`` outputs) becomes the cosine head a loss asks for
    (``use_norm``: a ``NormedLinear`` of the same ``in_features`` replaces a linear ``fc``, initialised from the
    seeded generator). Its other weights are used as given, trained in place. ``frozen_stage``: the stage (crt,
    lws, classifier) that trains the head on frozen features, for which it needs ``forward_features`` and
    ``forward_head``.

    Raises:
        TypeError: not an ``nn.Module``.
        ValueError: no ``fc``, or one of another kind or size, or no ``forward_features`` for a ``frozen_stage`` (the
            message says what is expected).
    """
    from .heads import NormedLinear

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    fc = getattr(model, "fc", None)
    if not isinstance(fc, (nn.Linear, NormedLinear)) or fc.out_features != num_classes:
        got = (f"an fc with out_features={fc.out_features}" if isinstance(fc, (nn.Linear, NormedLinear))
               else f"fc={type(fc).__name__}" if fc is not None else "no fc")
        raise ValueError(f"model must expose its final layer as model.fc, an nn.Linear with out_features = the "
                         f"number of classes ({num_classes}), fed by the rest of the module (forward_features / "
                         f"forward_head too for the stages crt, lws and classifier); or wrap a feature extractor: "
                         f"longtail.models.Backbone(features, feature_dim, num_classes, in_channels); got "
                         f"{type(model).__name__} with {got}")
    if frozen_stage is not None and not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        raise ValueError(f"model must have forward_features(x) and forward_head(features) for stage={frozen_stage!r}, "
                         f"which trains the classifier on frozen features; got {type(model).__name__} without")
    if use_norm and isinstance(fc, nn.Linear):
        model.fc = NormedLinear(fc.in_features, fc.out_features).to(fc.weight.device)
    return model
