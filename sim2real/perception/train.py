"""Pretraining an :class:`Encoder` on a simulated, labelled dataset.

``pretrain(data, out, config, **overrides)`` trains the chosen heads on a train/val split of
the manifest and writes the model folder ``out``:

```
out/model.safetensors, out/card.json   best epoch on simulated validation (Encoder.load(out))
out/last/                              last epoch: encoder + train_state.{safetensors,json}
out/metrics.csv, out/tb/               one row / TensorBoard step per epoch
```

Heads: ``"position"`` regresses the cube centre in the robot-base frame (targets
standardised by their training mean/std); ``"keypoint"`` finds its pixel centre by spatial
soft-argmax (L1 on normalised coordinates); ``"visibility"`` (``visibility_weight > 0``) the
target's visible fraction. With a keypoint head the card also holds the
scene's nominal camera (:mod:`sim2real.perception.geometry`), so a position can be had by
back-projecting the keypoint onto the cube's plane; the card's ``position_route`` is the
route with the lower simulated validation error.

Randomness comes from ``seed`` only: the split, the shuffling (a ``torch.Generator`` per
epoch), the augmentation (seeded per ``(seed, epoch, sample)``) and the head initialisation
(a forked RNG). Resuming therefore replays the same batches. Nothing is pickled.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.data.shards import ShardedDataset
from sim2real.errors import ConfigError, DataError
from sim2real.perception import geometry
from sim2real.perception.device import resolve_device
from sim2real.perception.distributed import Distributed
from sim2real.perception.targets_train import NamedTrainer, build_named_encoder, named_run
from sim2real.perception.train_config import DEFAULT_STRIDES, PretrainConfig
from sim2real.perception.train_model import build_encoder
from sim2real.perception.train_scores import visibility_fields
from sim2real.perception.trainer import Trainer
from sim2real.settings import check_names

logger = logging.getLogger(__name__)


def pretrain(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: PretrainConfig | None = None,
    *,
    resume: bool = False,
    device: str = "auto",
    workers: int | None = None,
    progress: bool = True,
    **overrides: Any,
) -> Path:
    """Train an encoder on a simulated dataset; returns the model folder ``out``.

    Args:
        data: dataset folder written by ``sim2real generate``.
        out: model folder (best checkpoint; see the module docstring for its contents).
        config: the settings (:class:`~sim2real.perception.train_config.PretrainConfig`);
            default ``PretrainConfig()``. Its ``data`` is replaced by ``data``.
        resume: continue from ``out/last`` (same settings except epochs/max_minutes).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``...
        workers: DataLoader workers; default 0 on <= 2 cores, else up to 4.
        progress: show a tqdm bar (images/s, loss).
        **overrides: :class:`PretrainConfig` fields set on top of ``config``
            (``epochs=5``, ``heatmap_sigma=1.5``; strings are converted).

    Raises:
        ConfigError: bad or unknown settings, a non-empty ``out`` without ``resume``, or a
            resume whose settings differ from the saved ones.
        DataError: the dataset is missing, incomplete, or lacks ``image``/``position``/``uv``.

    Example:
        >>> pretrain("data/kuka", "runs/kuka/encoder", epochs=5)  # doctest: +SKIP
        PosixPath('runs/kuka/encoder')
        >>> cfg = PretrainConfig(backbone="resnet18", head="keypoint", heatmap_weight=0.1)
        >>> pretrain("data/kuka", "runs/kuka/kp", cfg, max_minutes=20)  # doctest: +SKIP
        PosixPath('runs/kuka/kp')
    """
    cfg = resolve_config(data, config, overrides)
    root = Path(out)
    check_output(root, resume)
    dist = Distributed.from_env(resolve_device(device))
    dev = dist.device(resolve_device(device))
    named = named_run(cfg)
    ds = open_dataset(cfg) if named is None else named[1]
    cfg, (width, height) = resolve_frame(cfg, ds)
    train_idx, val_idx = split(cfg, ds)
    options: dict[str, Any] = {"device": dev, "workers": workers, "dist": dist}
    options["progress"] = progress and dist.is_main
    if named is None:
        encoder = build_encoder(cfg, ds, train_idx, width, height)
        trainer = Trainer(cfg, encoder, ds, (train_idx, val_idx), root, **options)
    else:  # targets by name: per-target heads (sim2real.perception.targets)
        encoder = build_named_encoder(cfg, ds, named[0], train_idx, (width, height))
        trainer = NamedTrainer(
            cfg, encoder, ds, (train_idx, val_idx), root, targets=named[0], **options
        )
    encoder.card["training"]["world_size"] = dist.world_size
    last = root / "last" if (root / "last").is_dir() else root / ".old-last"
    if resume and last.is_dir():
        trainer.restore(last)
    try:
        trainer.run()
        if dist.is_main and cfg.ood_samples > 0:
            trainer.write_scores()
    finally:
        dist.close()
    return root


def resolve_config(
    data: str | os.PathLike[str], config: PretrainConfig | None, overrides: dict[str, Any]
) -> PretrainConfig:
    """``config`` with ``overrides`` applied, ``data``/``init`` resolved to absolute paths and
    ``feature_stride`` defaulted per backbone (:data:`DEFAULT_STRIDES`).

    Raises:
        ConfigError: an override that is not a :class:`PretrainConfig` field (the valid ones
            listed), or a bad value.
    """
    if config is not None and not isinstance(config, PretrainConfig):
        raise ConfigError(
            f"config={config!r}: expected a PretrainConfig or None, got {type(config).__name__}"
        )
    check_names(PretrainConfig, overrides, PretrainConfig.settings_name)
    if "data" in overrides:
        raise ConfigError(
            f"data={overrides['data']!r} as a setting: expected the dataset as pretrain's "
            "first argument"
        )
    values = {**(config or PretrainConfig()).model_dump(exclude={"data"}), **overrides}
    cfg = PretrainConfig(**values, data=str(Path(data).resolve()))
    changes: dict[str, Any] = {}
    if cfg.init is not None:
        changes["init"] = str(Path(cfg.init).resolve())
    if cfg.feature_stride is None:
        changes["feature_stride"] = DEFAULT_STRIDES.get(cfg.backbone)
    return cfg.replace(**changes) if changes else cfg


def check_output(root: Path, resume: bool) -> None:
    """Refuse a non-empty ``root`` unless resuming."""
    if resume or not root.exists():
        return
    if root.is_file() or any(root.iterdir()):
        raise ConfigError(
            f"output '{root}' exists and is not empty: expected a new folder, or resume=True "
            "(--resume) to continue the run saved there"
        )


def open_dataset(cfg: PretrainConfig) -> ShardedDataset:
    """The dataset ``cfg.data`` with the fields ``cfg``'s heads and target need.

    Raises:
        DataError: ``position_target="ee_relative"`` on a dataset without ``ee_position``.
    """
    assert cfg.data is not None
    relative = cfg.relative
    gripper = relative and "keypoint" in cfg.head
    fields = ["image", "position", "uv"] + ["ee_position"] * relative + ["K", "R", "t"] * gripper
    available = ShardedDataset(cfg.data, verify=False).fields
    if cfg.visibility_weight > 0:
        fields += visibility_fields(available, cfg.visibility_object)
    if relative and "ee_position" not in available:
        raise DataError(
            f"position_target='ee_relative' needs 'ee_position' labels, but {cfg.data} has "
            f"{sorted(available)}: generate it again with this version (sim2real generate "
            "... --reach-poses 0.5)"
        )
    return ShardedDataset(cfg.data, fields=fields, verify="lazy")


def resolve_frame(
    cfg: PretrainConfig, ds: ShardedDataset
) -> tuple[PretrainConfig, tuple[int, int]]:
    """The network's frame size ``(W, H)`` (``cfg.size`` or the dataset's) and ``cfg`` with
    ``crop="table"`` replaced by the table's box in that frame."""
    h, w = ds.fields["image"]["shape"][:2]
    width, height = cfg.size or (w, h)
    if cfg.crop == "table":
        multiple = max(int(cfg.feature_stride or 8), 8)
        cfg = cfg.replace(crop=geometry.table_crop(ds.manifest, width, height, multiple))
        logger.info("crop 'table' -> %s (pixels of the %dx%d frame)", cfg.crop, width, height)
    return cfg, (int(width), int(height))


def split(cfg: PretrainConfig, ds: ShardedDataset) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices (``cfg.val_fraction``, ``cfg.seed``); at least one each."""
    train_idx, val_idx = ds.split(cfg.val_fraction, seed=cfg.seed)
    if len(train_idx) < 1 or len(val_idx) < 1:
        raise ConfigError(
            f"val_fraction={cfg.val_fraction} on {len(ds)} samples leaves {len(train_idx)} "
            f"train / {len(val_idx)} val: expected at least one of each"
        )
    return train_idx, val_idx
