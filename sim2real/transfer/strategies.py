"""Fine-tuning strategies that carry a simulation-trained encoder to real frames.

=========  ===========================================================  ==================
strategy   what changes                                                 needs
=========  ===========================================================  ==================
probe      the heads only (encoder frozen)                              labelled real
top-k      the last ``top_k`` backbone blocks + heads, lower LRs below  labelled real
full       everything, low LR, lower still for earlier blocks           labelled real
adabn      BatchNorm running statistics only                            unlabelled real
dann       everything + a domain classifier behind gradient reversal   sim + unlabelled
sim-only   nothing (the reference a selection compares against)         -
=========  ===========================================================  ==================

Strategies compose with ``+``: ``adabn+top-k`` re-estimates BatchNorm statistics on the
unlabelled frames first, then fine-tunes; ``dann`` uses labelled real frames too when given
("dann with a few labels"). ``auto`` (:mod:`sim2real.transfer.select`) chooses between
strategies by nested cross-validation. Labelled strategies mix ``sim_batch_size`` simulated
frames into every step when a simulated dataset is given, so the encoder does not forget.

By default (``bn_mode="frozen"``) training never changes BatchNorm running statistics: only
AdaBN does. With a handful of labels there is no validation set: the number of epochs is
chosen by k-fold (or leave-one-out) cross-validation over the labelled frames, with strong
photometric augmentation; unlabelled frames are never scored.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sim2real.data.frames import RealFrames
from sim2real.data.real import open_real
from sim2real.data.shards import ShardedDataset
from sim2real.errors import ConfigError, DataError
from sim2real.perception.device import resolve_device
from sim2real.perception.encoder import Encoder
from sim2real.perception.geometry import summarise
from sim2real.transfer.adabn import adapt_batchnorm, require_batchnorm
from sim2real.transfer.config import DEFAULT_LR, FinetuneConfig
from sim2real.transfer.objects import encoder_objects, object_point, unlabelled_frames
from sim2real.transfer.training import (
    FitData,
    FrameSet,
    SimStream,
    as_frame_set,
    fit,
    trainable_heads,
)

logger = logging.getLogger(__name__)

STRATEGIES = ("probe", "top-k", "full", "adabn", "dann")
#: The strategy that changes nothing: the simulation-trained encoder as it is.
SIM_ONLY = "sim-only"
LABELLED_STRATEGIES = ("probe", "top-k", "full")
TRAINING_STRATEGIES = (*LABELLED_STRATEGIES, "dann")


@dataclass(frozen=True)
class Plan:
    """A parsed strategy: AdaBN first or not, then at most one training strategy."""

    adabn: bool
    train: str | None

    @property
    def name(self) -> str:
        """Canonical name, e.g. ``adabn+top-k`` (``sim-only`` when nothing changes)."""
        if not self.adabn and self.train is None:
            return SIM_ONLY
        return "+".join([*(["adabn"] if self.adabn else []), *([self.train] if self.train else [])])


def parse_strategy(strategy: str) -> Plan:
    """Parse ``"probe"``, ``"adabn+top-k"``, ``"adabn+dann"``...

    Raises:
        ConfigError: an unknown part, or two training strategies.

    Example:
        >>> parse_strategy("adabn+top-k")
        Plan(adabn=True, train='top-k')
    """
    if str(strategy).strip() == SIM_ONLY:
        return Plan(adabn=False, train=None)
    parts = [p.strip() for p in str(strategy).split("+")]
    unknown = [p for p in parts if p not in STRATEGIES]
    if unknown or len(set(parts)) != len(parts):
        raise ConfigError(
            f"strategy={strategy!r}: expected one of {list(STRATEGIES)}, or adabn+<one of "
            f"{list(TRAINING_STRATEGIES)}> (e.g. adabn+top-k)"
        )
    trains = [p for p in parts if p != "adabn"]
    if len(trains) > 1 or (len(parts) > 1 and parts[0] != "adabn"):
        raise ConfigError(
            f"strategy={strategy!r}: strategies compose as adabn+<one of "
            f"{list(TRAINING_STRATEGIES)}>, with AdaBN first"
        )
    return Plan(adabn="adabn" in parts, train=trains[0] if trains else None)


def finetune(
    encoder: Encoder,
    real_labelled: RealFrames | FrameSet | None,
    strategy: str,
    unlabelled: RealFrames | FrameSet | None = None,
    sim: str | Path | ShardedDataset | None = None,
    *,
    config: FinetuneConfig | None = None,
) -> Encoder:
    """Adapt a simulation-trained encoder to real frames; returns a new encoder.

    Args:
        encoder: the pretrained encoder (left unchanged).
        real_labelled: labelled real frames (``open_real(dir).labelled()``); may be ``None``
            or empty for ``adabn`` and ``dann``.
        strategy: see the module table; ``+`` composes (``adabn+top-k``).
        unlabelled: unlabelled real frames (AdaBN statistics, DANN's real domain).
        sim: simulated dataset folder (DANN's source domain, or ``sim_batch_size`` mixing).
        config: settings; default ``FinetuneConfig()``.

    Returns:
        The adapted encoder in eval mode; its card gains a ``transfer`` record (strategy,
        config, epochs, cross-validation metrics) and ``metrics["real_cv"]``.

    Raises:
        ConfigError: unknown strategy or settings, AdaBN on a backbone without BatchNorm,
            no head the loss can reach.
        DataError: frames the strategy needs are missing, or frame sizes do not match.

    Example:
        >>> enc = Encoder.load("runs/kuka/encoder")  # doctest: +SKIP
        >>> real = open_real("real/kuka_cube")  # doctest: +SKIP
        >>> adapted = finetune(  # doctest: +SKIP
        ...     enc, real.labelled(), "adabn+top-k", real.unlabelled()
        ... )
    """
    cfg = config or FinetuneConfig()
    if str(strategy).strip() == "auto":
        raise ConfigError(
            "strategy 'auto' (nested selection) is run by sim2real.transfer.adapt or "
            "finetune_cli, not finetune: expected one strategy here"
        )
    prepared = prepare(encoder, parse_strategy(strategy), real_labelled, unlabelled, sim, cfg)
    epochs, cv = prepared.choose_epochs()
    return prepared.complete(epochs, cv)


@dataclass
class Prepared:
    """A strategy made ready to train: AdaBN done, blocks frozen (see :func:`prepare`).

    Attributes:
        encoder: the copy being adapted (AdaBN already applied).
        plan: the parsed strategy.
        cfg: the settings.
        data: what training uses (labelled, DANN's unlabelled, simulated batches).
        unlabelled: the unlabelled frames (AdaBN again after ``bn_mode="train"``).
        record: the card's ``transfer`` record so far.
        lr: the heads' learning rate (``None`` without training).
    """

    encoder: Encoder
    plan: Plan
    cfg: FinetuneConfig
    data: FitData
    unlabelled: FrameSet | None
    record: dict[str, Any]
    lr: float | None

    def choose_epochs(self) -> tuple[int, dict[str, Any] | None]:
        """Epochs by cross-validation (:func:`choose_epochs`); ``(0, None)`` without training."""
        if self.plan.train is None or self.lr is None:
            return 0, None
        return choose_epochs(self.encoder, self.plan, self.cfg, self.data, self.lr)

    def complete(self, epochs: int, cv: dict[str, Any] | None) -> Encoder:
        """Train ``epochs`` epochs on all labelled frames; returns the adapted encoder."""
        enc, plan, cfg, record = self.encoder, self.plan, self.cfg, self.record
        unl = self.unlabelled
        if plan.train is not None and self.lr is not None:
            lr = self.lr
            record.update(epochs=epochs, lr=lr, cv=cv)
            dann = plan.train == "dann"
            fit(enc, cfg, self.data, epochs, lr=lr, dann=dann, seed=cfg.seed, desc=plan.name)
            if plan.adabn and cfg.bn_mode == "train":
                assert unl is not None
                adapt_batchnorm(enc, unl.images, cfg.adabn_batch_size)  # training moved the stats
            if cv is not None:
                enc.card.setdefault("metrics", {})["real_cv"] = {
                    "strategy": plan.name,
                    **cv["xy_cm"],
                }
        enc.freeze_blocks(0)
        enc.card.setdefault("transfer", []).append(record)
        logger.info(
            "finetune %s: %s", plan.name, {k: v for k, v in record.items() if k != "config"}
        )
        return enc.eval()


def prepare(
    encoder: Encoder,
    plan: Plan,
    real_labelled: RealFrames | FrameSet | None,
    unlabelled: RealFrames | FrameSet | None,
    sim: str | Path | ShardedDataset | None,
    cfg: FinetuneConfig,
) -> Prepared:
    """Check the inputs, copy ``encoder``, run AdaBN and freeze what ``plan`` keeps fixed.

    Raises:
        ConfigError, DataError: as :func:`finetune`.
    """
    enc = copy.deepcopy(encoder).to(resolve_device(cfg.device))
    labelled = as_frame_set(real_labelled, enc, "labelled real", labels=True)
    unl = as_frame_set(unlabelled, enc, "unlabelled real", labels=False)
    check_inputs(plan, enc, labelled, unl, sim, cfg)
    size = (enc.preprocessing.width, enc.preprocessing.height)
    uses_sim = plan.train == "dann" or (plan.train is not None and cfg.sim_batch_size > 0)
    sim_stream = None
    if uses_sim and sim is not None:
        sim_stream = SimStream(sim, size, cfg.seed, objects=encoder_objects(enc))
    record: dict[str, Any] = {
        "strategy": plan.name,
        "config": cfg.to_dict(),
        "n_labelled": len(labelled) if labelled is not None else 0,
        "n_unlabelled": len(unl) if unl and (plan.adabn or plan.train == "dann") else 0,
        "sim": str(sim_stream.path) if sim_stream is not None else None,
    }
    if plan.adabn:
        assert unl is not None
        record["adabn_layers"] = adapt_batchnorm(enc, unl.images, cfg.adabn_batch_size)
    lr = None
    if plan.train is not None:
        lr = cfg.lr if cfg.lr is not None else DEFAULT_LR[plan.train]
        set_trainable(enc, plan.train, cfg)
    data = FitData(labelled, unl if plan.train == "dann" else None, sim_stream)
    return Prepared(enc, plan, cfg, data, unl, record, lr)


def check_inputs(
    plan: Plan,
    encoder: Encoder,
    labelled: FrameSet | None,
    unlabelled: FrameSet | None,
    sim: object,
    cfg: FinetuneConfig,
) -> None:
    """Raise a clear error when ``plan`` cannot run on these inputs."""
    name = plan.name
    if plan.train in LABELLED_STRATEGIES and (labelled is None or len(labelled) == 0):
        raise DataError(
            f"strategy {name!r} needs labelled real frames (images + labels.csv with "
            "file,x_m,y_m,z_m): got none; use adabn (unlabelled frames only) or dann (sim + "
            "unlabelled frames) without labels"
        )
    if plan.adabn:
        require_batchnorm(encoder, name)
    if (plan.adabn or plan.train == "dann") and (unlabelled is None or len(unlabelled) == 0):
        raise DataError(
            f"strategy {name!r} needs unlabelled real frames (--unlabelled DIR, or an "
            "unlabelled/ folder next to labelled/): got none"
        )
    if (plan.train == "dann" or cfg.sim_batch_size > 0) and sim is None and plan.train:
        why = "dann" if plan.train == "dann" else f"sim_batch_size={cfg.sim_batch_size}"
        raise DataError(f"{why} needs a simulated dataset (--sim DIR from `sim2real generate`)")
    if labelled and unlabelled and labelled.frame_size != unlabelled.frame_size:
        (lw, lh), (uw, uh) = labelled.frame_size, unlabelled.frame_size
        raise DataError(
            f"labelled real frames are {lw}x{lh} but unlabelled ones are {uw}x{uh}: "
            "expected frames of the same camera at the same resolution"
        )
    if plan.train is not None and not trainable_heads(encoder):
        raise ConfigError(
            f"strategy {name!r}: the encoder has no head the loss can reach: expected a "
            f"'position' head, or a 'keypoint' head with a camera in its card; heads are "
            f"{sorted(encoder.heads)}"
        )
    n_blocks = len(encoder.backbone.blocks)
    if plan.train == "top-k" and not 1 <= cfg.top_k <= n_blocks:
        raise ConfigError(f"top_k={cfg.top_k}: expected 1..{n_blocks} (backbone blocks)")


def set_trainable(encoder: Encoder, train: str, cfg: FinetuneConfig) -> None:
    """Freeze what ``train`` keeps fixed; with ``cfg.reset_heads`` re-initialise the heads.

    The re-initialisation draws from a generator seeded with ``cfg.seed`` (the global torch
    RNG is left as it was); head buffers (target statistics) are kept.
    """
    n = len(encoder.backbone.blocks)
    encoder.freeze_blocks({"probe": n, "top-k": n - cfg.top_k}.get(train, 0))
    if not cfg.reset_heads:
        return
    cuda = [encoder.device.index or 0] if encoder.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(cfg.seed)
        for name in trainable_heads(encoder):
            head = encoder.heads[name]
            for module in head.modules():
                if module is not head and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            if hasattr(head, "initial_temperature"):  # keypoint head's learnt temperature
                head.log_temperature.data.fill_(math.log(head.initial_temperature))


def kfold(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """Held-out index sets of ``min(folds, n)``-fold CV (``folds=0``: leave-one-out).

    Example:
        >>> [len(f) for f in kfold(10, 4, seed=0)]
        [3, 3, 2, 2]
    """
    k = n if folds == 0 else min(folds, n)
    order = np.random.default_rng([seed, 0xC5]).permutation(n)
    return [np.sort(part) for part in np.array_split(order, k)]


def choose_epochs(
    encoder: Encoder, plan: Plan, cfg: FinetuneConfig, data: FitData, lr: float
) -> tuple[int, dict[str, Any] | None]:
    """Epoch count by cross-validation over the labelled frames, and the CV record.

    Every fold trains a copy for ``cfg.epochs`` epochs and scores its held-out frames after
    each; the count with the lowest mean xy error over all held-out frames wins (0 = do not
    train). The record's ``xy_cm`` is the error at that count: optimistic, as it was used
    to choose. Without 2 labelled frames (or with ``select_epochs=False``) the count is fixed.
    """
    n = len(data.labelled) if data.labelled is not None else 0
    if not cfg.select_epochs or n < 2:
        epochs = cfg.epochs if cfg.fallback_epochs is None or n >= 2 else cfg.fallback_epochs
        if cfg.select_epochs:
            logger.info(
                "%s: %d labelled frame(s), cannot cross-validate: %d epochs", plan.name, n, epochs
            )
        return epochs, None
    per_object: list[dict[str, np.ndarray]] = []
    folds, pooled = cv_errors(encoder, plan, cfg, data, lr, object_pooled=per_object)
    best = int(np.argmin([float(e.mean()) for e in pooled]))
    if best == 0:
        logger.info("%s: cross-validation prefers no training (epoch 0)", plan.name)
    record = cv_record(folds, pooled, best)
    if per_object:  # several objects: the held-out error of each, at the chosen count
        record.update(object_point([(None, None, None, None, per_object[best])]) or {})
    return best, record


def cv_errors(
    encoder: Encoder,
    plan: Plan,
    cfg: FinetuneConfig,
    data: FitData,
    lr: float,
    object_pooled: list[dict[str, np.ndarray]] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The cross-validation of :func:`choose_epochs`: ``(folds, pooled)``.

    ``folds[f]`` are the labelled frames fold ``f`` holds out; ``pooled[e]`` the xy errors
    (cm) of all held-out frames after ``e`` epochs, in the order of ``np.concatenate(folds)``
    (frames of several objects: each frame's mean over its objects; ``object_pooled``, when
    given, is filled with ``{object: errors}`` per epoch in the same order).
    """
    assert data.labelled is not None
    n = len(data.labelled)
    folds = kfold(n, cfg.cv_folds, cfg.seed)
    per_epoch: list[list[np.ndarray]] = [[] for _ in range(cfg.epochs + 1)]
    per_object: list[list[dict[str, np.ndarray]]] = [[] for _ in range(cfg.epochs + 1)]
    for f, test in enumerate(folds):
        train = np.setdiff1d(np.arange(n), test)
        objects: list[dict[str, np.ndarray]] = []
        curve = fit(
            copy.deepcopy(encoder),
            cfg,
            replace(data, labelled=data.labelled.select(train)),
            cfg.epochs,
            lr=lr,
            dann=plan.train == "dann",
            seed=cfg.seed + 1000 * (f + 1),
            held_out=data.labelled.select(test),
            desc=f"{plan.name} cv {f + 1}/{len(folds)}",
            object_curve=objects if object_pooled is not None else None,
        )
        for e, errors in enumerate(curve):
            per_epoch[e].append(errors)
        for e, errors in enumerate(objects):
            per_object[e].append(errors)
    if object_pooled is not None and all(per_object):
        for epoch in per_object:
            object_pooled.append({k: np.concatenate([d[k] for d in epoch]) for k in epoch[0]})
    return folds, [np.concatenate(errs) for errs in per_epoch]


def cv_record(folds: list[np.ndarray], pooled: list[np.ndarray], epochs: int) -> dict[str, Any]:
    """The card's record of a cross-validation (:func:`cv_errors`) that chose ``epochs``."""
    n = sum(len(f) for f in folds)
    return {
        "method": "leave-one-out" if len(folds) == n else f"{len(folds)}-fold",
        "folds": len(folds),
        "epochs": epochs,
        "mean_xy_cm_by_epoch": [float(e.mean()) for e in pooled],
        "xy_cm": summarise(pooled[epochs]),
        "start_xy_cm": summarise(pooled[0]),
    }


def open_unlabelled(
    real: RealFrames, unlabelled_dir: str | Path | None, plan: Plan
) -> RealFrames | None:
    """The unlabelled frames ``plan`` uses: ``unlabelled_dir`` (all frames), else ``real``'s."""
    if not (plan.adabn or plan.train == "dann"):
        return None
    if unlabelled_dir is None:
        frames = unlabelled_frames(real)  # a long labels.csv's rows are labels too
        return frames if len(frames) else None
    try:
        return open_real(unlabelled_dir)
    except DataError as exc:
        raise DataError(f"strategy {plan.name!r} needs unlabelled real frames: {exc}") from exc
