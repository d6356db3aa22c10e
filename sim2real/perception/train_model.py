"""The encoder a pretraining run trains: built from :class:`PretrainConfig`, or from a saved
encoder's weights (``init``), with its card filled in before the first epoch."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sim2real.data.shards import ShardedDataset, code_version
from sim2real.errors import ConfigError, DataError
from sim2real.perception import geometry
from sim2real.perception.encoder import Encoder
from sim2real.perception.targets import dataset_frame, single_target_card
from sim2real.perception.train_config import PretrainConfig

logger = logging.getLogger(__name__)


def load_init(encoder: Encoder, folder: Path) -> None:
    """Copy a saved encoder's weights (and position-head target statistics) into ``encoder``."""
    saved = Encoder.load(folder)
    mine, theirs = encoder.structure(), saved.structure()
    keys = ("backbone", "feature_stride", "preprocessing", "heads")
    diff = [k for k in keys if _without_init_flag(mine[k]) != _without_init_flag(theirs[k])]
    if diff:
        raise ConfigError(
            f"init={str(folder)!r}: its {diff} differ from the encoder these settings build "
            f"(expected {[mine[k] for k in diff]}, got {[theirs[k] for k in diff]}); pass the "
            "settings it was trained with"
        )
    encoder.load_state_dict(saved.state_dict())
    encoder.backbone.pretrained = bool(theirs["backbone"]["imagenet_init"])  # the weights' origin
    logger.info("initialised from %s (%d tensors)", folder, len(saved.state_dict()))


def _without_init_flag(entry: Any) -> Any:
    if isinstance(entry, dict):
        return {k: v for k, v in entry.items() if k != "imagenet_init"}
    return entry


def build_encoder(
    cfg: PretrainConfig, ds: ShardedDataset, train_idx: np.ndarray, width: int, height: int
) -> Encoder:
    """The encoder ``cfg`` describes, at ``width`` x ``height``, ready to train.

    Heads initialised from ``cfg.seed`` (a forked RNG), the position head's target statistics
    from the training split, ``cfg.init``'s weights if set, and the card (structure, the
    ``training`` record ``cfg.model_dump()``, the dataset, the code version, the camera).
    """
    relative = cfg.position_target == "ee_relative"
    frame = "end_effector" if relative else dataset_frame(ds.manifest)
    heads = cfg.heads()
    if geometry.POSITION_HEAD in heads:
        heads[geometry.POSITION_HEAD]["frame"] = frame  # camera: a scene without a robot
    encoder = new_encoder(cfg, heads, width, height)
    labels = ShardedDataset(ds.path, fields=["position"] + ["ee_position"] * relative, verify=False)
    rows = [labels[int(i)] for i in train_idx]
    positions = np.stack([r["position"] - (r["ee_position"] if relative else 0.0) for r in rows])
    if geometry.POSITION_HEAD in encoder.heads:
        std = positions.std(axis=0) if len(positions) > 1 else np.ones(3)
        encoder.heads[geometry.POSITION_HEAD].set_target_stats(positions.mean(axis=0), std)
    fill_card(encoder, cfg, ds, train_idx, width, height)
    encoder.card["position_frame"] = frame
    encoder.card["targets"] = single_target_card(ds.manifest, encoder.card["heads"])
    return encoder


def new_encoder(
    cfg: PretrainConfig, heads: dict[str, dict[str, Any]], width: int, height: int
) -> Encoder:
    """The untrained encoder of ``cfg`` with ``heads`` (initialised from ``cfg.seed``)."""
    kwargs: dict[str, Any] = {"feature_stride": cfg.feature_stride} if cfg.feature_stride else {}
    if cfg.dilated:
        kwargs["dilated"] = True
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        encoder = Encoder(
            cfg.backbone,
            heads,
            input_size=(width, height),
            backbone_kwargs=kwargs,
            pretrained=cfg.pretrained,
            crop=cfg.crop,
        )
    if cfg.mixstyle and cfg.mixstyle_blocks >= len(encoder.backbone.blocks):
        raise ConfigError(
            f"mixstyle_blocks={cfg.mixstyle_blocks}: expected fewer than the backbone's "
            f"{len(encoder.backbone.blocks)} blocks (MixStyle goes after early blocks)"
        )
    return encoder


def fill_card(
    encoder: Encoder,
    cfg: PretrainConfig,
    ds: ShardedDataset,
    train_idx: np.ndarray,
    width: int,
    height: int,
) -> None:
    """``cfg.init``'s weights, the frozen blocks, and the card: structure, the ``training``
    record, the dataset, the code version, the nominal camera (with a keypoint head)."""
    if cfg.init is not None:
        load_init(encoder, Path(cfg.init))
    encoder.freeze_blocks(cfg.freeze_blocks)
    card = encoder.card
    card.update(encoder.structure())  # the heads' names, which the routes read, from the start
    training = cfg.model_dump(mode="json")
    card["training"] = {**training, "train_samples": len(train_idx), "val_samples": 0}
    card["dataset"] = {
        "path": str(ds.path.resolve()),
        "n": len(ds),
        "seed": ds.manifest.get("seed"),
        "image_size": [int(ds.fields["image"]["shape"][1]), int(ds.fields["image"]["shape"][0])],
        "label_schema": ds.manifest.get("spec", {}).get("label_schema"),
    }
    card["code"] = code_version()
    if any(getattr(h, "kind", None) == "keypoints" for h in encoder.heads.values()):
        try:
            card["camera"] = geometry.nominal_camera(ds.manifest, width, height).to_card()
        except DataError as exc:
            logger.warning("no nominal camera (%s): keypoint_plane route disabled", exc)
