"""Settings of the fine-tuning strategies (:func:`sim2real.transfer.finetune`).

:class:`FinetuneConfig` is declared once and read by :func:`~sim2real.transfer.finetune`,
``sim2real finetune``/``sim2real curve`` (``--set KEY=VALUE``) and the pipeline's
``adapt.settings``; the card's ``transfer`` record holds its ``to_dict()``.

Example:
    >>> FinetuneConfig.from_overrides({"epochs": "5", "lr": "3e-4"}).lr
    0.0003
    >>> FinetuneConfig(cv_folds=1)
    Traceback (most recent call last):
    ...
    sim2real.errors.ConfigError: cv_folds=1: expected 0 (leave-one-out) or at least 2 folds
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from sim2real.errors import ConfigError
from sim2real.settings import Settings

#: Learning rate of the heads per training strategy (blocks get less, see ``lr_decay``).
DEFAULT_KS: tuple[int | str, ...] = (0, 1, 2, 4, 8, "all")
DEFAULT_STRATEGIES = ("probe", "top-k", "full", "adabn", "dann", "adabn+top-k")
DEFAULT_LR = {"probe": 1e-3, "top-k": 3e-4, "full": 1e-4, "dann": 1e-4}
BN_MODES = ("frozen", "train")
#: What ``strategy="auto"`` chooses between (by nested cross-validation), label-free first.
DEFAULT_CANDIDATES = ("sim-only", "adabn", "probe", "adabn+probe", "top-k", "adabn+top-k")


class FinetuneConfig(Settings):
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
        candidates: strategies ``auto`` chooses between by cross-validation over the
            labelled frames (``sim-only``: the encoder unchanged); those that cannot run
            (AdaBN without BatchNorm, no unlabelled frames, DANN without sim) are skipped.
        select_margin_cm: ``auto`` takes a candidate that trains on labels only when its
            inner-CV mean xy error beats the best label-free one's by more than this plus
            ``select_se`` standard errors of the per-frame differences (paired).
        select_se: standard errors of that paired gain the labels must clear (1: the
            one-standard-error rule; 0: the lowest inner-CV mean wins).
        auto_fallback: ``auto``'s strategy when it cannot cross-validate (< 2 labelled
            frames); ``None``: the last label-free candidate that can run.
        auto_outer_folds: ``auto`` also measures itself by nested CV (the inner folds
            choose, these outer folds score); ``None``: not measured; 0: leave-one-out.
        seed: the only source of randomness.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        progress: tqdm bars.
    """

    settings_name: ClassVar[str] = "fine-tuning settings"

    epochs: int = Field(20, ge=0, description="most epochs (cross-validation picks 0..epochs)")
    steps_per_epoch: int = Field(10, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float | None = Field(None, gt=0.0, description="heads' learning rate; none: the strategy's")
    lr_decay: float = Field(0.7, gt=0.0, le=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    top_k: int = Field(2, ge=0, description="backbone blocks trained by top-k")
    bn_mode: Literal["frozen", "train"] = Field("frozen", description="BatchNorm while training")
    reset_heads: bool = False
    sim_batch_size: int = Field(0, ge=0)
    sim_weight: float = Field(1.0, ge=0.0)
    augment: bool = True
    select_epochs: bool = True
    cv_folds: int = Field(4, ge=0)
    fallback_epochs: int | None = Field(None, ge=0)
    dann_weight: float = Field(1.0, ge=0.0)
    dann_gamma: float = Field(10.0, ge=0.0)
    dann_hidden: int = Field(256, ge=1)
    adabn_batch_size: int = Field(64, ge=1)
    candidates: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CANDIDATES), description="what auto chooses from"
    )
    select_margin_cm: float = Field(0.0, ge=0.0, description="labels must win by this (cm)")
    select_se: float = Field(1.0, ge=0.0, description="and by this many standard errors")
    auto_fallback: str | None = Field(None, description="auto without 2 labelled frames")
    auto_outer_folds: int | None = Field(None, ge=0, description="nested-CV folds measuring auto")
    seed: int = Field(0, ge=0, description="the only source of randomness")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    progress: bool = True

    @field_validator("cv_folds", "auto_outer_folds")
    @classmethod
    def _folds(cls, value: int | None, info: Any) -> int | None:
        if value == 1:
            raise ConfigError(
                f"{info.field_name}=1: expected 0 (leave-one-out) or at least 2 folds"
            )
        return value

    @field_validator("candidates", mode="before")
    @classmethod
    def _candidates(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list | tuple) and (not value or "auto" in value):
            raise ConfigError(
                f"candidates={list(value)!r}: expected one or more strategies (not auto), "
                "e.g. sim-only,adabn,adabn+top-k"
            )
        return value


class CurveConfig(Settings):
    """Settings of the k-shot transfer curve (:func:`~sim2real.transfer.curve.run_curve`)
    besides the fine-tuning settings every run uses (:class:`FinetuneConfig`).

    Attributes:
        ks: labelled-frame counts; ``0`` and ``"all"`` (outer cross-validation) allowed.
        repeats: random subsets per ``k``.
        strategies: strategies to measure (see :func:`~sim2real.transfer.finetune`).
        baselines: also train the real-only baselines (ImageNet init, scratch).
        outer_folds: folds of the ``k = "all"`` cross-validation; 0 = leave-one-out.
        seed: subsets and training seeds.

    Example:
        >>> CurveConfig(ks=(0, "2", "all")).ks
        [0, 2, 'all']
    """

    settings_name: ClassVar[str] = "curve settings"

    ks: list[int | str] = Field(default_factory=lambda: list(DEFAULT_KS))
    repeats: int = Field(3, ge=1, description="random subsets per k")
    strategies: list[str] = Field(default_factory=lambda: list(DEFAULT_STRATEGIES))
    baselines: bool = Field(True, description="also the real-only baselines")
    outer_folds: int = Field(4, ge=0, description="k=all cross-validation folds; 0: LOO")
    seed: int = Field(0, description="subsets and training seeds")

    @field_validator("ks", mode="before")
    @classmethod
    def _ks(cls, value: Any) -> Any:
        return check_ks(value) if isinstance(value, list | tuple) else value

    @field_validator("outer_folds")
    @classmethod
    def _outer_folds(cls, value: int) -> int:
        if value == 1:
            raise ConfigError(f"outer_folds={value}: expected 0 (leave-one-out) or >= 2")
        return value


def check_ks(ks: Sequence[int | str]) -> list[int | str]:
    """Validate ``ks``: non-negative integers and/or ``"all"``, no duplicates.

    Example:
        >>> check_ks((0, "1", "all"))
        [0, 1, 'all']
    """
    out: list[int | str] = []
    for k in ks:
        ok = k == "all" or (isinstance(k, int) and not isinstance(k, bool) and k >= 0)
        if not ok and isinstance(k, str) and k.isdigit():
            k, ok = int(k), True
        if not ok or k in out:
            raise ConfigError(f"ks={list(ks)!r}: expected distinct integers >= 0 and/or 'all'")
        out.append(k)
    if not out:
        raise ConfigError("ks is empty: expected e.g. (0, 1, 2, 4, 8, 'all')")
    return out
