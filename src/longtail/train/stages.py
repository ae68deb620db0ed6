"""Training stages (``longtail train --stage``), two-stage training from a parent run, and MaxNorm.

Decoupled training (Kang et al., ICLR 2020) first trains the whole network with instance-balanced
sampling and plain CE (stage ``joint``), then adjusts the classifier alone on the frozen backbone:

- ``crt`` (classifier re-training): the classifier re-initialised and retrained, class-balanced
  sampling by default;
- ``lws`` (learnable weight scaling): only per-class scales ``f_k`` of the logits are learned
  (:class:`longtail.models.ScaledClassifier`), class-balanced sampling by default;
- ``classifier``: the parent's classifier fine-tuned (not re-initialised). Weight balancing's second
  stage (Alshammari et al., CVPR 2022) is this stage with a class-balanced loss, a large weight
  decay and ``max_norm`` (their released recipe: ``--loss cb_softmax --weight-decay 0.1 --lr 0.01
  --epochs 10 --max-norm 0.1``); its first stage is ``joint`` CE with a tuned weight decay.

A later stage starts from a finished run (``init_from``, its folder): the parent's dataset split and
architecture must be this run's, its weights are loaded (all of them, or all but the classifier for
``crt``), and ``result.json`` records the parent (path, loss, stage, checkpoint digest). The frozen
backbone runs in eval mode (BatchNorm statistics frozen) and without autograd: a classifier stage
costs about one forward pass of the backbone per image.

``max_norm`` is the per-class MaxNorm constraint of weight balancing: after every optimiser step each
class's weight vector is projected onto the ball ``||w_k|| <= delta``. As in the authors' code
(``MaxNorm_via_PGD``), the radius is relative: ``delta = min_k ||w_k|| + max_norm * (max_k ||w_k|| -
min_k ||w_k||)`` over the classifier's rows when the run starts (saved in the checkpoint, so a
resumed run keeps it); the bias is not constrained.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io import load_checkpoint
from ..models import ScaledClassifier
from .run_folder import CHECKPOINT, RESULT, read_result

TRAINS = ("all", "classifier", "scales")

# The configuration fields that define the training split and the architecture: a parent must share them.
PARENT_FIELDS = ("dataset", "imbalance", "profile", "n_max", "val_per_class", "subset_seed", "model", "width")


@dataclass(frozen=True)
class StageSpec:
    """One training stage.

    Attributes:
        summary: its line in ``longtail train --help``.
        trains: ``"all"`` (every parameter), ``"classifier"`` (the classifier ``fc``; the backbone frozen)
            or ``"scales"`` (LWS's per-class scales only).
        reinit_classifier: start from a freshly initialised classifier rather than the parent's.
        needs_parent: needs ``init_from`` (a finished run to start from).
        sampler: the sampler it uses unless ``sampler`` is given (a name of ``SAMPLERS``).
    """

    summary: str
    trains: str = "all"
    reinit_classifier: bool = False
    needs_parent: bool = False
    sampler: str = "instance"

    def __post_init__(self) -> None:
        if self.trains not in TRAINS:
            raise ValueError(f"trains must be one of {', '.join(map(repr, TRAINS))}; got {self.trains!r}")

    @property
    def frozen_backbone(self) -> bool:
        return self.trains != "all"

    def describe(self) -> str:
        notes = ["needs init_from"] if self.needs_parent else []
        if self.sampler != "instance":
            notes.append(f"{self.sampler} sampler")
        return self.summary + (f" [{'; '.join(notes)}]" if notes else "")


# name -> spec. Order is the order of `longtail train --help`.
STAGES: dict[str, StageSpec] = {
    "joint": StageSpec("train the whole network (stage 1; from init_from's weights when given)"),
    "crt": StageSpec("classifier re-training: a new classifier on the frozen backbone (Kang et al.)",
                     trains="classifier", reinit_classifier=True, needs_parent=True, sampler="class_balanced"),
    "lws": StageSpec("learnable weight scaling: per-class logit scales on the frozen network (Kang et al.)",
                     trains="scales", needs_parent=True, sampler="class_balanced"),
    "classifier": StageSpec("fine-tune the parent's classifier on the frozen backbone (weight balancing's "
                            "stage 2, with max_norm)", trains="classifier", needs_parent=True),
}


def stage_spec(name: str) -> StageSpec:
    if name not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(map(repr, STAGES))}; got {name!r}")
    return STAGES[name]


# --- the parent run ------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_parent(config: Any, device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The model weights of ``config.init_from``'s finished run and its record for ``result.json``.

    Raises:
        ValueError: no finished run there, a damaged checkpoint, or a parent whose split or
            architecture differs from ``config``'s (each differing field named).
    """
    folder = Path(config.init_from).expanduser()
    path = folder / CHECKPOINT
    if not path.is_file():
        raise ValueError(f"init_from must be the folder of a finished run (with {CHECKPOINT}); got {str(folder)!r}, "
                         f"which has no {CHECKPOINT}")
    try:
        checkpoint = load_checkpoint(path, map_location=device)
    except ValueError as exc:
        raise ValueError(f"init_from: {exc}") from None
    parent = type(config).from_dict(checkpoint["config"])  # the parent's configuration, in today's fields
    if checkpoint["epoch"] + 1 < parent.epochs:
        raise ValueError(f"init_from must be a finished run; got {str(folder)!r}, stopped after epoch "
                         f"{checkpoint['epoch'] + 1} of {parent.epochs} (resume it first)")
    differing = [f"{name}: parent {getattr(parent, name)!r}, this run {getattr(config, name)!r}"
                 for name in PARENT_FIELDS if getattr(parent, name) != getattr(config, name)]
    if differing:
        raise ValueError(f"init_from must be a run on the same split and architecture; got {str(folder)!r}, whose "
                         f"configuration differs ({'; '.join(differing)})")
    result, _ = read_result(folder / RESULT)
    final = (result or {}).get("final") or {}
    record = {
        "path": str(folder.resolve()),
        "loss": parent.loss,
        "stage": parent.stage,
        "epochs": parent.epochs,
        "seed": parent.seed,
        "checkpoint_sha256": _sha256(path),
        "test_balanced_accuracy": final.get("balanced_accuracy"),
    }
    return _plain_classifier(checkpoint["model"]), record


def _plain_classifier(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An LWS parent's weights with its scales folded into ``fc`` (its children see a plain classifier)."""
    if "fc.scales" not in state:
        return state
    state = dict(state)
    scales = state.pop("fc.scales")
    state["fc.weight"] = state.pop("fc.classifier.weight") * scales[:, None]
    if "fc.classifier.bias" in state:
        state["fc.bias"] = state.pop("fc.classifier.bias") * scales
    return state


def load_parent_weights(model: nn.Module, state: dict[str, torch.Tensor], stage: StageSpec) -> None:
    """Loads the parent's ``state`` into ``model``: everything, or everything but ``fc`` for a re-initialised
    classifier. A classifier of another kind (a cosine head into a linear one) is refused, naming both."""
    if stage.reinit_classifier:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
    else:
        missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            "init_from must hold weights of this run's model and classifier head; got a checkpoint that "
            f"lacks {sorted(missing)} and has {sorted(unexpected)} in addition (a cosine head, loss ldam or "
            "ce_cosine, and a linear one do not mix unless the stage re-initialises the classifier: crt)"
        )


# --- freezing ------------------------------------------------------------------------------------


class FrozenBackbone(nn.Module):
    """Trains only the head of ``model``: the backbone runs without autograd and keeps its BatchNorm
    statistics (eval mode), whatever ``train()`` says; ``forward(x) = model.forward_head(features)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def train(self, mode: bool = True) -> FrozenBackbone:
        super().train(mode)
        head = set(self.model.fc.modules())
        for module in self.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module not in head:
                module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.model.forward_features(x)
        return self.model.forward_head(features)


def prepare_stage(model: nn.Module, stage: StageSpec, num_classes: int) -> nn.Module:
    """Freezes ``model`` as ``stage`` asks (LWS wraps ``fc`` in learnable scales) and returns the module
    that runs the training forward pass (``model`` itself, or a :class:`FrozenBackbone` over it)."""
    if stage.trains == "all":
        return model
    model.requires_grad_(False)
    if stage.trains == "scales":
        model.fc = ScaledClassifier(model.fc, num_classes)
    else:
        model.fc.requires_grad_(True)
    return FrozenBackbone(model)


# --- MaxNorm -------------------------------------------------------------------------------------


class MaxNorm(nn.Module):
    """Weight balancing's per-class MaxNorm: :meth:`project_` scales every row ``w_k`` of ``weight`` with
    ``||w_k|| > delta`` back to norm ``delta`` (``w_k <- w_k * min(1, delta / ||w_k||)``).

    ``delta = min_k ||w_k|| + threshold * (max_k ||w_k|| - min_k ||w_k||)`` from the rows' norms at
    construction (the authors' relative threshold; 0.1 in their recipe), kept as a buffer so that a
    checkpoint restores it.
    """

    def __init__(self, weight: torch.Tensor, threshold: float) -> None:
        super().__init__()
        if weight.ndim != 2:
            raise ValueError(f"max_norm needs a classifier weight of shape (C, D); got {tuple(weight.shape)}")
        self.threshold = float(threshold)
        norms = torch.linalg.vector_norm(weight.detach().double(), dim=1)
        delta = norms.min() + self.threshold * (norms.max() - norms.min())
        self.register_buffer("delta", delta.to(weight.dtype))

    @torch.no_grad()
    def project_(self, weight: torch.Tensor) -> None:
        norms = torch.linalg.vector_norm(weight, dim=1, keepdim=True)
        weight.mul_(torch.clamp(self.delta / norms.clamp_min(torch.finfo(weight.dtype).tiny), max=1.0))

    def extra_repr(self) -> str:
        return f"threshold={self.threshold:g}"


__all__ = [
    "FrozenBackbone",
    "MaxNorm",
    "PARENT_FIELDS",
    "STAGES",
    "StageSpec",
    "load_parent_weights",
    "prepare_stage",
    "read_parent",
    "stage_spec",
]
