"""Lightning (>= 2.0) integration: :class:`CDBCallback` keeps a :class:`longtail.CDBLoss` up to date from validation.

The class-wise difficulty-balanced loss re-weights the classes after every evaluation on a held-out split
(:mod:`longtail.difficulty`). In Lightning that is a callback: it counts the validation predictions per class in a
:class:`longtail.metrics.ConfusionMeter`, sums the counts over the processes under DDP, and calls
``criterion.update_from(meter)`` at the end of each validation pass of ``trainer.fit``. It never counts
Lightning's sanity check (``num_sanity_val_steps``), whose predictions come from the untrained model.

The contract with the LightningModule: its ``validation_step`` returns a dict with the batch's logits and
class-index targets, ``{"logits": logits, "target": y}`` (other keys, such as ``"loss"``, are ignored), or
the callback is given ``get_logits_target=lambda outputs, batch: (logits, target)``. The loss is an attribute
of the module (``self.criterion = CDBLoss(...)``, the default name ``"criterion"``), so its weights (buffers)
are in the module's ``state_dict`` and every Lightning checkpoint; a loss passed to the callback as an object
that is not part of the module is checkpointed in the callback's own state instead.

Imports ``lightning.pytorch`` (the ``lightning`` package), else ``pytorch_lightning``; without either this
module still imports and :class:`CDBCallback` raises ImportError when built (``pip install 'longtail[lightning]'``).
See docs/integrations.md.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..metrics import ConfusionMeter

try:  # the unified package first, as Lightning's docs import it
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError:
        pl = None  # type: ignore[assignment]

LIGHTNING_AVAILABLE = pl is not None
"""Whether ``lightning.pytorch`` or ``pytorch_lightning`` could be imported."""

_Callback: type = pl.Callback if pl is not None else object

__all__ = ["LIGHTNING_AVAILABLE", "CDBCallback"]

_INSTALL_HINT = "pip install 'longtail[lightning]' (Lightning >= 2.0: the `lightning` or `pytorch_lightning` package)"


def _warn(message: str) -> None:
    pl.utilities.rank_zero_warn(message)


class CDBCallback(_Callback):  # type: ignore[misc, valid-type]
    """Updates a :class:`longtail.CDBLoss`'s class weights from every validation pass of ``trainer.fit``.

    At each validation pass (not the sanity check, not ``trainer.validate``/``test``):

    1. ``on_validation_epoch_start``: the per-class counts are zeroed;
    2. ``on_validation_batch_end``: the batch's logits and targets (from ``validation_step``'s return value,
       see below) are counted, on the module's device;
    3. ``on_validation_epoch_end``: the counts are summed over the processes (``ConfusionMeter.all_reduce``,
       a no-op in one process), so every rank gets the weights of the whole validation set, and
       ``criterion.update_from(meter)`` sets the weights used by the next training epoch. A class absent
       from the validation data keeps its weight (see :meth:`longtail.CDBLoss.update_weights`).

    The weights start at 1, so the first epoch trains with plain cross-entropy, and the first update uses
    the model after one epoch of training, as in the paper. With ``val_check_interval < 1`` the weights
    change after each of the epoch's validation passes; with ``check_val_every_n_epoch = k``, every ``k``
    epochs.

    Args:
        criterion: the :class:`longtail.CDBLoss` (anything with ``update_from`` and ``num_classes``), or the
            name of the LightningModule's attribute that holds it (dotted names reach into submodules).
            Default ``"criterion"``. Keep the loss in the module (``self.criterion = CDBLoss(...)``): it then
            moves with it and its weights are in every checkpoint. A loss object that is not a submodule of
            the LightningModule is moved to the module's device at each validation pass and saved in this
            callback's checkpoint state.
        get_logits_target: ``(outputs, batch) -> (logits, target)``, where ``outputs`` is what
            ``validation_step`` returned. Default: ``outputs[logits_key], outputs[target_key]`` of a dict.
        logits_key, target_key: the keys of the default extraction.
        dataloader_idx: the validation dataloader to count (``None``: all of them).
        log: log ``{prefix}tau``, ``{prefix}weight_min`` and ``{prefix}weight_max`` with
            ``pl_module.log_dict`` (epoch-level, in ``trainer.callback_metrics``).
        log_per_class: also send ``{prefix}weight/{c}`` for every class to ``trainer.loggers`` (from
            global rank 0, at ``trainer.global_step``); ``None`` (default): when there are at most 32 classes.
        prefix: name prefix of the logged values.

    Attributes:
        meter: the :class:`longtail.metrics.ConfusionMeter` of the last validation pass (after ``setup``).
        criterion: the loss being updated (after ``setup``).

    Shapes:
        ``logits`` ``(N, C)`` or ``(N, C, d1, ...)`` scores (or predicted labels with the target's shape);
        ``target`` ``(N,)`` / ``(N, d1, ...)`` class indices, ``criterion.ignore_index`` skipped.

    Example::

        class Model(lightning.pytorch.LightningModule):
            def __init__(self):
                super().__init__()
                self.net = ...
                self.criterion = longtail.CDBLoss(num_classes, tau="dynamic")

            def training_step(self, batch, batch_idx):
                x, y = batch
                return self.criterion(self.net(x), y)

            def validation_step(self, batch, batch_idx):
                x, y = batch
                logits = self.net(x)
                self.log("val_loss", self.criterion(logits, y))
                return {"logits": logits, "target": y}

        trainer = lightning.pytorch.Trainer(callbacks=[CDBCallback()], ...)
    """

    def __init__(
        self,
        criterion: Any = "criterion",
        *,
        get_logits_target: Callable[[Any, Any], tuple[Any, Any]] | None = None,
        logits_key: str = "logits",
        target_key: str = "target",
        dataloader_idx: int | None = 0,
        log: bool = True,
        log_per_class: bool | None = None,
        prefix: str = "cdb/",
    ) -> None:
        if pl is None:
            raise ImportError(f"CDBCallback needs Lightning: {_INSTALL_HINT}")
        super().__init__()
        if not isinstance(criterion, str) and not _is_cdb_like(criterion):
            raise TypeError(
                "criterion must be a CDBLoss (an object with update_from() and num_classes) or the name of the "
                f"LightningModule's attribute that holds one; got {type(criterion).__name__}"
            )
        if get_logits_target is not None and not callable(get_logits_target):
            raise TypeError(f"get_logits_target must be callable; got {type(get_logits_target).__name__}")
        if dataloader_idx is not None and (isinstance(dataloader_idx, bool) or not isinstance(dataloader_idx, int)):
            raise TypeError(f"dataloader_idx must be an int or None; got {dataloader_idx!r}")
        self._criterion_spec = criterion
        self.get_logits_target = get_logits_target
        self.logits_key = logits_key
        self.target_key = target_key
        self.dataloader_idx = dataloader_idx
        self.log = bool(log)
        self.log_per_class = log_per_class
        self.prefix = prefix
        self.criterion: Any = None if isinstance(criterion, str) else criterion
        self.meter: ConfusionMeter | None = None
        self._in_module = False  # the criterion is a submodule of the LightningModule (so in its checkpoints)
        self._pending_state: dict[str, Any] | None = None
        self._counting = False

    # --- checkpointing ----------------------------------------------------------------------------------------

    @property
    def state_key(self) -> str:
        name = self._criterion_spec if isinstance(self._criterion_spec, str) else "<object>"
        return self._generate_state_key(criterion=name)

    def state_dict(self) -> dict[str, Any]:
        """The loss's state when it is not part of the LightningModule (else empty: the module's checkpoint has it)."""
        if self.criterion is not None and not self._in_module and isinstance(self.criterion, torch.nn.Module):
            return {"criterion": self.criterion.state_dict()}
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("criterion")
        if saved is None:
            return
        if self.criterion is not None and isinstance(self.criterion, torch.nn.Module):
            self.criterion.load_state_dict(saved)
        else:
            self._pending_state = saved  # applied once setup() has found the loss

    # --- hooks ------------------------------------------------------------------------------------------------

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        criterion = self._resolve(pl_module)
        self.criterion = criterion
        self._in_module = any(m is criterion for m in pl_module.modules())
        if self._pending_state is not None:
            criterion.load_state_dict(self._pending_state)
            self._pending_state = None
        num_classes = criterion.num_classes
        if not num_classes:
            raise ValueError("the criterion must know its number of classes (criterion.num_classes); got None")
        ignore_index = getattr(criterion, "ignore_index", -100)
        # The stable CDB loss's difficulty="confidence" also needs the true class's probability per class.
        confidence = getattr(criterion, "difficulty", None) == "confidence"
        if (self.meter is None or self.meter.num_classes != num_classes or self.meter.ignore_index != ignore_index
                or self.meter.tracks_confidence != confidence):
            self.meter = ConfusionMeter(num_classes, ignore_index=ignore_index, confidence=confidence)

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._counting = self._should_count(trainer)
        if not self._counting:
            return
        assert self.meter is not None
        self.meter.to(pl_module.device)
        self.meter.reset()
        if not self._in_module and isinstance(self.criterion, torch.nn.Module):
            self.criterion.to(pl_module.device)

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not self._counting or trainer.sanity_checking:
            return
        if self.dataloader_idx is not None and dataloader_idx != self.dataloader_idx:
            return
        logits, target = self._logits_target(outputs, batch)
        assert self.meter is not None
        self.meter.update(_detach(logits), _detach(target))

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._counting or trainer.sanity_checking:
            return
        self._counting = False
        assert self.meter is not None
        self.meter.all_reduce()  # a collective: every rank calls it, whatever it saw
        if self.meter.num_samples == 0:
            _warn(
                "CDBCallback: no validation sample was counted in this validation pass (check what validation_step "
                "returns and dataloader_idx); the CDB weights are unchanged"
            )
            return
        weight = self.criterion.update_from(self.meter).detach().to("cpu", torch.float64)
        if self.log:
            self._log(trainer, pl_module, weight)

    # --- helpers ----------------------------------------------------------------------------------------------

    def _should_count(self, trainer: Any) -> bool:
        return not trainer.sanity_checking and trainer.state.fn == "fit"

    def _resolve(self, pl_module: Any) -> Any:
        spec = self._criterion_spec
        if not isinstance(spec, str):
            return spec
        try:
            criterion = operator.attrgetter(spec)(pl_module)
        except AttributeError:
            raise AttributeError(
                f"CDBCallback(criterion={spec!r}): the LightningModule {type(pl_module).__name__} has no attribute "
                f"{spec!r}; set self.{spec} = CDBLoss(...) in its __init__, or pass the loss or its attribute name"
            ) from None
        if not _is_cdb_like(criterion):
            raise TypeError(
                f"CDBCallback(criterion={spec!r}): pl_module.{spec} must be a CDBLoss (an object with update_from() "
                f"and num_classes); got {type(criterion).__name__}"
            )
        return criterion

    def _logits_target(self, outputs: Any, batch: Any) -> tuple[Any, Any]:
        if self.get_logits_target is not None:
            pair = self.get_logits_target(outputs, batch)
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise TypeError(f"get_logits_target must return (logits, target); got {type(pair).__name__}")
            return pair[0], pair[1]
        if isinstance(outputs, Mapping) and self.logits_key in outputs and self.target_key in outputs:
            return outputs[self.logits_key], outputs[self.target_key]
        got = type(outputs).__name__
        if isinstance(outputs, Mapping):
            got = f"a dict with keys {sorted(map(str, outputs))}"
        raise TypeError(
            f"CDBCallback needs the validation logits and targets: return {{{self.logits_key!r}: logits, "
            f"{self.target_key!r}: target}} from validation_step, or pass "
            f"get_logits_target=lambda outputs, batch: (logits, target); validation_step returned {got}"
        )

    def _log(self, trainer: Any, pl_module: Any, weight: torch.Tensor) -> None:
        p = self.prefix
        tau = float(getattr(self.criterion, "last_tau", torch.tensor(float("nan"))))
        summary = {f"{p}tau": tau, f"{p}weight_min": float(weight.min()), f"{p}weight_max": float(weight.max())}
        # Identical on every rank (the counts were summed first): sync_dist only to keep Lightning from warning.
        pl_module.log_dict(summary, on_step=False, on_epoch=True, sync_dist=True, batch_size=1)
        per_class = self.log_per_class if self.log_per_class is not None else weight.numel() <= 32
        if per_class and trainer.is_global_zero:
            values = {f"{p}weight/{c}": float(w) for c, w in enumerate(weight.tolist())}
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(criterion={self._criterion_spec!r}, dataloader_idx={self.dataloader_idx})"


def _is_cdb_like(obj: Any) -> bool:
    return callable(getattr(obj, "update_from", None)) and hasattr(obj, "num_classes")


def _detach(value: Any) -> Any:
    return value.detach() if isinstance(value, torch.Tensor) else value
