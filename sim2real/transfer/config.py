"""Settings of the fine-tuning strategies (:func:`sim2real.transfer.finetune`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from sim2real.errors import ConfigError

#: Learning rate of the heads per training strategy (blocks get less, see ``lr_decay``).
DEFAULT_LR = {"probe": 1e-3, "top-k": 3e-4, "full": 1e-4, "dann": 1e-4}
BN_MODES = ("frozen", "train")


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of :func:`finetune` (stored in the card's ``transfer`` record).

    Attributes:
        epochs: most epochs; cross-validation picks the count in ``0..epochs``.
        steps_per_epoch: optimiser steps per epoch (batches drawn with replacement).
        batch_size: real frames per step (and unlabelled frames per step for DANN).
        lr: heads' learning rate; ``None``: the strategy's (``DEFAULT_LR``).
        lr_decay: block ``i`` of ``n`` learns at ``lr * lr_decay ** (n - i)``.
        weight_decay: AdamW weight decay.
        top_k: backbone blocks trained by ``top-k``.
        bn_mode: ``"frozen"`` (BatchNorm layers in eval mode while training) or ``"train"``.
        reset_heads: re-initialise the heads before training (a new head).
        sim_batch_size: simulated frames per step mixed in (needs ``sim``); DANN's default
            is ``batch_size``.
        sim_weight: weight of the simulated frames' task loss.
        augment: photometric augmentation of every training frame.
        select_epochs: choose the epoch count by cross-validation (else ``epochs``).
        cv_folds: folds of that cross-validation; 0 = leave-one-out.
        fallback_epochs: epochs when cross-validation is impossible (fewer than 2 labelled
            frames); ``None``: ``epochs``.
        dann_weight: weight of the domain loss.
        dann_gamma: steepness of the lambda schedule ``2 / (1 + exp(-gamma p)) - 1``.
        dann_hidden: width of the domain classifier.
        adabn_batch_size: frames per forward pass when re-estimating BatchNorm statistics.
        seed: the only source of randomness.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        progress: tqdm bars.
    """

    epochs: int = 20
    steps_per_epoch: int = 10
    batch_size: int = 16
    lr: float | None = None
    lr_decay: float = 0.7
    weight_decay: float = 1e-4
    top_k: int = 2
    bn_mode: str = "frozen"
    reset_heads: bool = False
    sim_batch_size: int = 0
    sim_weight: float = 1.0
    augment: bool = True
    select_epochs: bool = True
    cv_folds: int = 4
    fallback_epochs: int | None = None
    dann_weight: float = 1.0
    dann_gamma: float = 10.0
    dann_hidden: int = 256
    adabn_batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "cv_folds", "sim_batch_size", "top_k", "seed"):
            _check(name, getattr(self, name), int, 0)
        for name in ("steps_per_epoch", "batch_size", "dann_hidden", "adabn_batch_size"):
            _check(name, getattr(self, name), int, 1)
        if self.fallback_epochs is not None:
            _check("fallback_epochs", self.fallback_epochs, int, 0)
        for name in ("weight_decay", "sim_weight", "dann_weight", "dann_gamma"):
            _check(name, getattr(self, name), float, 0.0)
        if self.lr is not None and not (isinstance(self.lr, int | float) and self.lr > 0):
            raise ConfigError(f"lr={self.lr!r}: expected a positive number or None")
        if not (isinstance(self.lr_decay, int | float) and 0 < self.lr_decay <= 1):
            raise ConfigError(f"lr_decay={self.lr_decay!r}: expected a number in (0, 1]")
        if self.bn_mode not in BN_MODES:
            raise ConfigError(f"bn_mode={self.bn_mode!r}: expected one of {list(BN_MODES)}")
        if self.cv_folds == 1:
            raise ConfigError("cv_folds=1: expected 0 (leave-one-out) or at least 2 folds")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_overrides(cls, overrides: dict[str, Any] | None = None, **more: Any) -> FinetuneConfig:
        """Build from ``{field: value}``; string values (command line) are converted.

        Raises:
            ConfigError: an unknown field, or a value that does not convert or validate.

        Example:
            >>> FinetuneConfig.from_overrides({"epochs": "5", "lr": "3e-4"}).lr
            0.0003
        """
        values = {**(overrides or {}), **more}
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown fine-tuning settings {unknown}: expected {sorted(known)}")
        return cls(**{k: _convert(k, v, str(known[k])) for k, v in values.items()})


def _check(name: str, value: Any, kind: type, minimum: float) -> None:
    ok_type = isinstance(value, kind) or (kind is float and isinstance(value, int))
    if isinstance(value, bool) or not ok_type or value < minimum:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name}={value!r}: expected {what} >= {minimum}")


def _convert(name: str, value: Any, kind: str) -> Any:
    if not isinstance(value, str) or kind == "str":
        return value
    if "None" in kind and value.lower() in ("none", "null", ""):
        return None
    try:
        if kind.startswith("bool"):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        return int(value) if kind.startswith("int") else float(value)
    except ValueError as exc:
        raise ConfigError(f"{name}={value!r}: expected a value of type {kind}") from exc
