"""Pretraining an :class:`Encoder` on a simulated, labelled dataset.

``pretrain(data, out)`` trains the chosen heads on a train/val split of the manifest and
writes the model folder ``out``:

```
out/model.safetensors, out/card.json   best epoch on simulated validation (Encoder.load(out))
out/last/                              last epoch: encoder + train_state.{safetensors,json}
out/metrics.csv, out/tb/               one row / TensorBoard step per epoch
```

Heads: ``"position"`` regresses the cube centre in the robot-base frame (targets
standardised by their training mean/std); ``"keypoint"`` finds its pixel centre by spatial
soft-argmax (L1 on normalised coordinates). With a keypoint head the card also holds the
scene's nominal camera (:mod:`sim2real.perception.geometry`), so a position can be had by
back-projecting the keypoint onto the cube's plane; the card's ``position_route`` is the
route with the lower simulated validation error.

Randomness comes from ``seed`` only: the split, the shuffling (a ``torch.Generator`` per
epoch), the augmentation (seeded per ``(seed, epoch, sample)``) and the head initialisation
(a forked RNG). Resuming therefore replays the same batches. Nothing is pickled.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sim2real.data.shards import ShardedDataset, code_version
from sim2real.errors import ConfigError, DataError
from sim2real.perception import geometry
from sim2real.perception.device import autocast, resolve_device
from sim2real.perception.distributed import Distributed
from sim2real.perception.encoder import Encoder
from sim2real.perception.heads import heatmap_kl
from sim2real.perception.style import mix_style, rand_conv
from sim2real.perception.train_config import DEFAULT_STRIDES as DEFAULT_STRIDES
from sim2real.perception.train_config import HEAD_CHOICES as HEAD_CHOICES
from sim2real.perception.train_config import METRIC_FIELDS, PretrainConfig

# Split out for length; re-exported so ``from sim2real.perception.train import X`` still works.
from sim2real.perception.train_data import SimSamples, epoch_loader
from sim2real.perception.train_data import (
    photometric_augmentation as photometric_augmentation,
)
from sim2real.perception.train_state import STATE_JSON as STATE_JSON
from sim2real.perception.train_state import STATE_TENSORS as STATE_TENSORS
from sim2real.perception.train_state import TrainState, load_state, save_atomic, save_state

logger = logging.getLogger(__name__)


def pretrain(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    backbone: str = "efficientnet_lite0",
    head: str = "keypoint+position",
    epochs: int = 10,
    size: tuple[int, int] | None = None,
    crop: tuple[int, int, int, int] | str | None = None,
    batch_size: int = 64,
    lr: float = 1e-3,
    freeze_blocks: int = 0,
    val_fraction: float = 0.1,
    seed: int = 0,
    device: str = "auto",
    workers: int | None = None,
    resume: bool = False,
    max_minutes: float | None = None,
    feature_stride: int | None = None,
    dilated: bool = False,
    position_pool: str = "mean",
    position_target: str = "cube",
    heatmap_weight: float = 0.0,
    heatmap_sigma: float = 1.0,
    shift_px: int = 0,
    keypoint_window: int = 3,
    mixstyle: float = 0.0,
    mixstyle_alpha: float = 0.1,
    mixstyle_blocks: int = 3,
    randconv: float = 0.0,
    exposure: float = 0.0,
    weight_decay: float = 1e-4,
    pretrained: bool = True,
    init: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Path:
    """Train an encoder on a simulated dataset; returns the model folder ``out``.

    Args:
        data: dataset folder written by ``sim2real generate``.
        out: model folder (best checkpoint; see the module docstring for its contents).
        backbone: backbone registry name.
        head: ``"position"``, ``"keypoint"`` or ``"keypoint+position"``.
        epochs: passes over the training split (upper bound when ``max_minutes`` is set).
        size: frame size ``(W, H)`` images are resized to; default: the dataset's image size.
        crop: region of interest ``(x0, y0, x1, y1)`` in pixels of the ``size`` frame (x1, y1
            exclusive) that the network sees, e.g. the table; stored in the card and applied
            to every frame at inference (:class:`~sim2real.perception.preprocessing.
            Preprocessing`). Keypoint labels and outputs stay whole-frame coordinates.
            ``"table"``: the scene's table as the nominal camera sees it
            (:func:`~sim2real.perception.geometry.table_crop`).
        batch_size: images per step.
        lr: peak AdamW learning rate (heads; backbone blocks get the same).
        freeze_blocks: freeze the first N backbone blocks (faster on CPU).
        val_fraction: held-out fraction of the dataset (``ShardedDataset.split``).
        seed: the only source of randomness.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``...
        workers: DataLoader workers; default 0 on <= 2 cores, else up to 4.
        resume: continue from ``out/last`` (same settings except epochs/max_minutes).
        max_minutes: wall-clock training budget; the cosine schedule then follows the
            elapsed fraction of the budget and training stops when it is spent.
        feature_stride: backbone output stride; ``None``: 16 for ``efficientnet_lite0`` and
            ``resnet18`` (a 8x6 map at 128x96 for the keypoint), else the backbone's default.
        dilated: ``efficientnet_lite0`` at ``feature_stride=8`` keeps its 112-channel stage,
            dilated (see :func:`~sim2real.perception.backbones.efficientnet_lite0`).
        position_pool: the position head's pooling, ``"mean"`` or ``"mean+points"`` (adds
            learnt feature points, see :class:`~sim2real.perception.heads.PositionHead`).
        position_target: ``"cube"`` (the cube centre, robot-base frame) or ``"ee_relative"``
            (cube centre minus the end effector's position: the card's position frame is then
            ``end_effector``, and a position needs the gripper's position at inference; the
            camera's pose cancels out of the offset, which is what a reaching policy needs).
            Needs ``head="position"`` and a dataset with ``ee_position`` labels.
        heatmap_weight: weight of the keypoint heatmap term (:func:`~sim2real.perception.heads.
            heatmap_kl`, a Gaussian of ``heatmap_sigma`` cells at the label) added to the L1 on
            the soft-argmax; 0 trains the keypoint by the L1 alone.
        heatmap_sigma: that Gaussian's standard deviation, in feature-map cells.
        shift_px: random translation of the training images by up to this many pixels (at
            network size), keypoint label moved along (:class:`~sim2real.perception.
            train_data.SimSamples`); the position label is not, so it is for the keypoint route.
        keypoint_window: the keypoint head's decoding in eval mode (validation, the card):
            soft-argmax over this many cells around the heatmap's peak, 0 over the whole map
            (:func:`~sim2real.perception.heads.spatial_soft_argmax`). Training always uses
            the whole map.
        mixstyle: probability per step and block that the feature statistics after each of
            the first ``mixstyle_blocks`` backbone blocks are mixed across the batch
            (:func:`~sim2real.perception.style.mix_style`, Beta(``mixstyle_alpha``)
            weights); training only, inference is unchanged. 0: off.
        mixstyle_alpha: the Beta distribution's concentration.
        mixstyle_blocks: how many leading backbone blocks get MixStyle after them.
        randconv: probability per step that the training images pass through a random
            convolution (:func:`~sim2real.perception.style.rand_conv`); training only. 0: off.
        exposure: half of the training images get a gain of up to ``1 + exposure``, clipped
            (overexposure; :func:`~sim2real.perception.train_data.photometric_augmentation`).
        weight_decay: AdamW weight decay.
        pretrained: start from the backbone's ImageNet weights.
        init: start from the weights of this saved encoder folder instead (fine-tuning a
            trained encoder on new or more data, with a fresh optimiser and schedule); its
            architecture (backbone, heads, input size, crop) must be the one these settings
            build. Unlike ``resume``, the data and the schedule may differ.
        progress: show a tqdm bar (images/s, loss).

    Raises:
        ConfigError: bad settings, a non-empty ``out`` without ``resume``, or a resume
            whose settings differ from the saved ones.
        DataError: the dataset is missing, incomplete, or lacks ``image``/``position``/``uv``.

    Example:
        >>> pretrain("data/kuka", "runs/kuka/encoder", epochs=5)  # doctest: +SKIP
        PosixPath('runs/kuka/encoder')
    """
    if feature_stride is None:
        feature_stride = DEFAULT_STRIDES.get(backbone)
    if isinstance(crop, str) and crop != "table":
        raise ConfigError(f"crop={crop!r}: expected (x0, y0, x1, y1) pixels, 'table' or None")
    cfg = PretrainConfig(
        data=str(Path(data).resolve()),
        backbone=backbone,
        head=head,
        feature_stride=feature_stride,
        dilated=bool(dilated),
        position_pool=str(position_pool),
        position_target=str(position_target),
        heatmap_weight=float(heatmap_weight),
        heatmap_sigma=float(heatmap_sigma),
        shift_px=int(shift_px),
        keypoint_window=int(keypoint_window),
        mixstyle=float(mixstyle),
        mixstyle_alpha=float(mixstyle_alpha),
        mixstyle_blocks=int(mixstyle_blocks),
        randconv=float(randconv),
        exposure=float(exposure),
        epochs=int(epochs),
        size=tuple(int(v) for v in size) if size is not None else None,  # type: ignore[arg-type]
        crop=None if crop is None or crop == "table" else tuple(int(v) for v in crop),  # type: ignore[arg-type]
        batch_size=int(batch_size),
        lr=float(lr),
        weight_decay=float(weight_decay),
        freeze_blocks=int(freeze_blocks),
        val_fraction=float(val_fraction),
        seed=int(seed),
        max_minutes=max_minutes,
        pretrained=pretrained,
        init=None if init is None else str(Path(init).resolve()),
    )
    root = Path(out)
    _check_output(root, resume)
    dist = Distributed.from_env(resolve_device(device))
    dev = dist.device(resolve_device(device))
    relative = cfg.position_target == "ee_relative"
    gripper = relative and "keypoint" in cfg.head
    fields = ["image", "position", "uv"] + ["ee_position"] * relative + ["K", "R", "t"] * gripper
    available = ShardedDataset(data, verify=False).fields if relative else {}
    if relative and "ee_position" not in available:
        raise DataError(
            f"position_target='ee_relative' needs 'ee_position' labels, but {data} has "
            f"{sorted(available)}: generate it again with this version (sim2real generate "
            "... --reach-poses 0.5)"
        )
    ds = ShardedDataset(data, fields=fields, verify="lazy")
    h, w = ds.fields["image"]["shape"][:2]
    width, height = cfg.size or (w, h)
    if crop == "table":
        multiple = max(int(cfg.feature_stride or 8), 8)
        cfg = replace(cfg, crop=geometry.table_crop(ds.manifest, width, height, multiple))
        logger.info("crop 'table' -> %s (pixels of the %dx%d frame)", cfg.crop, width, height)
    train_idx, val_idx = ds.split(cfg.val_fraction, seed=cfg.seed)
    if len(train_idx) < 1 or len(val_idx) < 1:
        raise ConfigError(
            f"val_fraction={cfg.val_fraction} on {len(ds)} samples leaves {len(train_idx)} "
            f"train / {len(val_idx)} val: expected at least one of each"
        )
    encoder = _build_encoder(cfg, ds, train_idx, width, height)
    encoder.card["training"]["world_size"] = dist.world_size
    trainer = _Trainer(
        cfg, encoder, ds, train_idx, val_idx, root, dev, workers, progress and dist.is_main, dist
    )
    last = root / "last" if (root / "last").is_dir() else root / ".old-last"
    if resume and last.is_dir():
        trainer.restore(last)
    try:
        trainer.run()
    finally:
        dist.close()
    return root


def _check_output(root: Path, resume: bool) -> None:
    if resume or not root.exists():
        return
    if root.is_file() or any(root.iterdir()):
        raise ConfigError(
            f"output '{root}' exists and is not empty: expected a new folder, or resume=True "
            "(--resume) to continue the run saved there"
        )


def _load_init(encoder: Encoder, folder: Path) -> None:
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


def _build_encoder(
    cfg: PretrainConfig, ds: ShardedDataset, train_idx: np.ndarray, width: int, height: int
) -> Encoder:
    kwargs: dict[str, Any] = {"feature_stride": cfg.feature_stride} if cfg.feature_stride else {}
    if cfg.dilated:
        kwargs["dilated"] = True
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        encoder = Encoder(
            cfg.backbone,
            cfg.heads(),
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
    relative = cfg.position_target == "ee_relative"
    labels = ShardedDataset(ds.path, fields=["position"] + ["ee_position"] * relative, verify=False)
    rows = [labels[int(i)] for i in train_idx]
    positions = np.stack([r["position"] - (r["ee_position"] if relative else 0.0) for r in rows])
    if geometry.POSITION_HEAD in encoder.heads:
        std = positions.std(axis=0) if len(positions) > 1 else np.ones(3)
        encoder.heads[geometry.POSITION_HEAD].set_target_stats(positions.mean(axis=0), std)
    if cfg.init is not None:
        _load_init(encoder, Path(cfg.init))
    encoder.freeze_blocks(cfg.freeze_blocks)
    card = encoder.card
    card.update(encoder.structure())  # the heads' names, which the routes read, from the start
    card["position_frame"] = "end_effector" if relative else "robot_base"
    card["training"] = {**asdict(cfg), "train_samples": len(train_idx), "val_samples": 0}
    card["dataset"] = {
        "path": str(ds.path.resolve()),
        "n": len(ds),
        "seed": ds.manifest.get("seed"),
        "image_size": [int(ds.fields["image"]["shape"][1]), int(ds.fields["image"]["shape"][0])],
        "label_schema": ds.manifest.get("spec", {}).get("label_schema"),
    }
    card["code"] = code_version()
    if geometry.KEYPOINT_HEAD in encoder.heads:
        try:
            card["camera"] = geometry.nominal_camera(ds.manifest, width, height).to_card()
        except DataError as exc:
            logger.warning("no nominal camera (%s): keypoint_plane route disabled", exc)
    return encoder


class _LossModule(torch.nn.Module):
    """The encoder with the trainer's loss as its forward (what DDP wraps)."""

    def __init__(self, trainer: _Trainer) -> None:
        super().__init__()
        self.encoder = trainer.encoder
        self._loss = trainer.loss

    def forward(self, batch: tuple[torch.Tensor, ...]) -> Any:
        return self._loss(batch)


#: Validation samples with the gripper within this distance (metres) of the point
#: ``NEAR_HOVER_M`` above the cube's top score an end-effector-relative model: its routes are
#: chosen where a reach ends, not on the arm far away (where the relative route's error grows
#: with the gripper's height above the cube).
NEAR_M = 0.10
#: The reach poses' centre above the cube's top (``sim2real.envs.sources.REACH_HOVER``, the
#: ReachCube target's hover).
NEAR_HOVER_M = 0.05


class _Trainer:
    """The epoch loop; state lives here so :func:`pretrain` stays readable."""

    def __init__(
        self,
        cfg: PretrainConfig,
        encoder: Encoder,
        ds: ShardedDataset,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        root: Path,
        device: torch.device,
        workers: int | None,
        progress: bool,
        dist: Distributed | None = None,
    ) -> None:
        self.cfg, self.root, self.device, self.progress = cfg, root, device, progress
        self.dist = dist or Distributed()
        self.encoder = encoder.to(device)
        if device.type == "cuda":
            self.encoder.to(memory_format=torch.channels_last)
        self.encoder.card["training"]["val_samples"] = len(val_idx)
        size = (encoder.preprocessing.width, encoder.preprocessing.height)
        self.train_set = SimSamples(
            ds,
            train_idx,
            size,
            augment=True,
            seed=cfg.seed,
            shift_px=cfg.shift_px,
            exposure=cfg.exposure,
            relative=cfg.position_target == "ee_relative",
            gripper_keypoint=cfg.relative and geometry.KEYPOINT_HEAD in encoder.heads,
        )
        self.val_set = SimSamples(
            ds,
            val_idx,
            size,
            augment=False,
            seed=cfg.seed,
            relative=cfg.position_target == "ee_relative",
            gripper_keypoint=cfg.relative and geometry.KEYPOINT_HEAD in encoder.heads,
        )
        cube = ds.manifest.get("spec", {}).get("scene", {}).get("cube", {}).get("size", 0.05)
        self.cube_half = 0.5 * float(np.atleast_1d(np.asarray(cube, dtype=np.float64))[-1])
        cpus = os.cpu_count() or 1
        self.workers = workers if workers is not None else (0 if cpus <= 2 else min(4, cpus // 2))
        world = self.dist.world_size  # batch_size is per process
        self.steps_per_epoch = math.ceil(math.ceil(len(train_idx) / world) / cfg.batch_size)
        self.optimizer = torch.optim.AdamW(
            encoder.param_groups(cfg.lr, decay=1.0), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        # the training step goes through this module, so DDP can average its gradients
        self.step_module = self.dist.wrap(_LossModule(self), device)
        self.state = TrainState()

    # -------------------------------------------------------------- schedule
    def progress_fraction(self) -> float:
        by_steps = self.state.step / (self.cfg.epochs * self.steps_per_epoch)
        if self.cfg.max_minutes is None:
            return by_steps
        return max(by_steps, self.state.train_seconds / (60.0 * self.cfg.max_minutes))

    def lr_factor(self) -> float:
        """Linear warm-up then cosine decay to 0, on the training progress in [0, 1]."""
        p = min(self.progress_fraction(), 1.0)
        warm = self.cfg.warmup_fraction
        if p < warm:
            return max(p / warm, 1e-3)
        return 0.5 * (1.0 + math.cos(math.pi * (p - warm) / max(1.0 - warm, 1e-9)))

    def done(self) -> bool:
        return self.state.epoch >= self.cfg.epochs or self.progress_fraction() >= 1.0

    # -------------------------------------------------------------- loop
    def restore(self, last: Path) -> None:
        saved_cfg, state = load_state(last, self.encoder, self.optimizer)
        diff = self.cfg.resumable_with(PretrainConfig(**saved_cfg))
        if diff:
            raise ConfigError(
                f"cannot resume {self.root}: settings {diff} differ from the saved run "
                f"(saved {[saved_cfg[k] for k in diff]}); use the same settings or a new --out"
            )
        self.state = state
        best = self.root / "card.json"
        if best.is_file():
            saved = json.loads(best.read_text())
            self.encoder.card["metrics"] = saved.get("metrics", {})
            self.encoder.card["position_route"] = saved.get("position_route")
        logger.info("resuming %s after epoch %d (step %d)", self.root, state.epoch, state.step)

    def run(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.root.mkdir(parents=True, exist_ok=True)
        writer = (
            SummaryWriter(str(self.root / "tb"), purge_step=self.state.epoch + 1)
            if self.dist.is_main
            else None
        )
        try:
            while not self.done():
                started = time.perf_counter()
                train_loss, images = self.train_epoch()
                seconds = time.perf_counter() - started
                self.state.epoch += 1
                val = self.validate()
                row = {
                    "epoch": self.state.epoch,
                    "step": self.state.step,
                    "lr": self.cfg.lr * self.lr_factor(),
                    "train_loss": train_loss,
                    **val,
                    "images_per_s": images / max(seconds, 1e-9),
                    "train_seconds": self.state.train_seconds,
                }
                if self.dist.is_main:
                    self.log(row, writer)
                    self.checkpoint(val)
                self.dist.barrier()  # every rank resumes from what rank 0 wrote
        finally:
            if writer is not None:
                writer.close()

    def train_epoch(self) -> tuple[float, int]:
        enc, cfg = self.encoder, self.cfg
        enc.train()
        loader = epoch_loader(
            self.train_set, cfg.batch_size, self.state.epoch, self.workers, True,
            rank=self.dist.rank, world_size=self.dist.world_size,
        )  # fmt: skip
        total, images = 0.0, 0
        bar = tqdm(
            total=len(self.train_set), unit="img", desc=f"epoch {self.state.epoch + 1}",
            disable=not self.progress, leave=False,
        )  # fmt: skip
        with bar:
            t0 = time.perf_counter()
            for batch in loader:
                if self.done():
                    break
                for group in self.optimizer.param_groups:
                    group["lr"] = cfg.lr * self.lr_factor()
                loss, _ = self.step_module(batch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(f"training loss is {value} at step {self.state.step}")
                n = len(batch[0])
                total, images = total + value * n, images + n
                self.state.step += 1
                now = time.perf_counter()  # budget counts loading + step, not validation
                self.state.train_seconds, t0 = self.state.train_seconds + now - t0, now
                if self.dist.enabled:  # rank 0's clock, so every rank stops at the same step
                    self.state.train_seconds = self.dist.broadcast_float(self.state.train_seconds)
                bar.update(n)
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{group['lr']:.2e}")
        return self.dist.mean_float(total / max(images, 1)), images * self.dist.world_size

    def backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's feature map; in training, with the style augmentations switched on."""
        backbone, cfg = self.encoder.backbone, self.cfg
        if not backbone.training or not (cfg.mixstyle or cfg.randconv):
            return backbone(x)
        rng = np.random.default_rng([cfg.seed, self.state.step, 0x5717])
        if cfg.randconv:
            x = rand_conv(x, rng, p=cfg.randconv)
        if not cfg.mixstyle:
            return backbone(x)
        for i, block in enumerate(backbone.blocks):
            x = block(x)
            if i < cfg.mixstyle_blocks:
                x = mix_style(x, rng, p=cfg.mixstyle, alpha=cfg.mixstyle_alpha)
        return x

    def loss(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Summed head losses and the head outputs (position in metres, keypoint normalised).

        Position: smooth L1 on standardised targets; keypoint: L1 on normalised ``uv``, plus
        ``heatmap_weight`` times :func:`~sim2real.perception.heads.heatmap_kl` when set.
        """
        enc = self.encoder
        images, position, uv = (t.to(self.device, non_blocking=True) for t in batch[:3])
        x = enc.preprocessing.normalise(images)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        losses, outputs = [], {}
        with autocast(self.device):
            fmap = self.backbone_features(x)
            if geometry.POSITION_HEAD in enc.heads:
                head = enc.heads[geometry.POSITION_HEAD]
                pred = head.forward_normalised(fmap).float()
                losses.append(torch.nn.functional.smooth_l1_loss(pred, head.normalise(position)))
                outputs[geometry.POSITION_HEAD] = pred * head.target_std + head.target_mean
            if geometry.KEYPOINT_HEAD in enc.heads:
                kp_head = enc.heads[geometry.KEYPOINT_HEAD]
                heat = kp_head.heatmaps(fmap)  # one pass for the coordinates and the KL term
                pred = kp_head.decode(heat).float()  # whole map in training, local in eval
                # (B, K, 2) in the crop's coordinates (no crop: uv); labels outside the frame
                # (a gripper above the image) are left out of the loss
                uv_in = enc.preprocessing.to_input(uv if uv.dim() == 3 else uv[:, None])
                inside = (uv_in.abs() <= 1.0).all(dim=-1).float()  # (B, K)
                l1 = (pred - uv_in).abs().mean(dim=-1)
                losses.append((l1 * inside).sum() / inside.sum().clamp(min=1.0))
                if self.cfg.heatmap_weight > 0:
                    kl = heatmap_kl(
                        heat, uv_in.clamp(-1.0, 1.0), kp_head.temperature, self.cfg.heatmap_sigma
                    )
                    losses.append(self.cfg.heatmap_weight * kl)
                outputs[geometry.KEYPOINT_HEAD] = enc.preprocessing.to_frame(pred)
        return torch.stack(losses).sum(), outputs

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        enc = self.encoder
        enc.eval()
        loader = epoch_loader(self.val_set, self.cfg.batch_size, 0, self.workers, False)
        outs: dict[str, list[np.ndarray]] = {}
        targets, uvs, ees, total = [], [], [], 0.0
        for batch in loader:
            loss, out = self.loss(batch)
            total += float(loss) * len(batch[0])
            for name, value in out.items():
                outs.setdefault(name, []).append(value.float().cpu().numpy())
            targets.append(batch[1].numpy())
            uvs.append(batch[2].numpy())
            if len(batch) > 3:
                ees.append(batch[3].numpy())
        enc.train()
        outputs = {name: np.concatenate(v) for name, v in outs.items()}
        target = np.concatenate(targets)
        row: dict[str, float] = {"val_loss": total / len(target)}
        if geometry.KEYPOINT_HEAD in outputs:
            w, h = self.encoder.card["dataset"]["image_size"]
            uv = np.concatenate(uvs).reshape(len(target), -1, 2)
            err = np.linalg.norm((outputs[geometry.KEYPOINT_HEAD] - uv) / 2 * [w, h], axis=-1)
            row["val_kp_px"] = float(err[:, 0].mean())
            if uv.shape[1] > 1:  # the gripper, where it is in the frame
                inside = (np.abs(uv[:, 1]) <= 1.0).all(axis=-1)
                row["val_kp_gripper_px"] = float(err[inside, 1].mean()) if inside.any() else np.nan
        # end-effector-relative routes are scored on the cube's position, with the true
        # gripper position as the robot would report it (the targets here are offsets)
        ee = np.concatenate(ees) if ees else None
        near = None
        if ee is not None:  # target: cube - gripper; the reach ends at (0, 0, -lift)
            lift = np.array([0.0, 0.0, self.cube_half + NEAR_HOVER_M])
            near = np.linalg.norm(target + lift, axis=1) < NEAR_M
            target = target + ee
        for route, pred in geometry.route_positions(outputs, self.encoder.card, ee).items():
            errors = geometry.position_errors_cm(pred, target)
            row[f"val_{route}_xy_cm"] = float(np.nanmean(errors["xy"]))
            row[f"val_{route}_xyz_cm"] = float(np.nanmean(errors["xyz"]))
            if near is not None and near.any():
                row[f"val_{route}_near_xy_cm"] = float(np.nanmean(errors["xy"][near]))
        return row

    # -------------------------------------------------------------- output
    def log(self, row: dict[str, float], writer: Any) -> None:
        path = self.root / "metrics.csv"
        rows = []
        if path.is_file():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < row["epoch"]]
        rows.append({k: row.get(k, "") for k in METRIC_FIELDS})
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
            out.writeheader()
            out.writerows(rows)
        os.replace(tmp, path)
        for key, value in row.items():
            if key not in ("epoch", "step"):
                writer.add_scalar(key, value, row["epoch"])
        writer.flush()
        shown = {k: round(v, 4) for k, v in row.items() if k.startswith("val_")}
        logger.info("epoch %d: train_loss %.4f %s", row["epoch"], row["train_loss"], shown)

    def checkpoint(self, val: dict[str, float]) -> None:
        routes = {
            r: {"xy_cm_mean": val[f"val_{r}_xy_cm"], "xyz_cm_mean": val[f"val_{r}_xyz_cm"]}
            for r in geometry.ROUTES
            if f"val_{r}_xy_cm" in val
        }
        # an end-effector-relative model is for reaching: it is scored where a reach ends
        key = "xy_cm_mean"
        if all(f"val_{r}_near_xy_cm" in val for r in routes):
            key = "near_xy_cm_mean"
            for r in routes:
                routes[r][key] = val[f"val_{r}_near_xy_cm"]
        best_route = min(routes, key=lambda r: routes[r][key])
        score = routes[best_route][key]
        card = self.encoder.card
        if score < self.state.best_score:
            self.state.best_score, self.state.best_epoch = score, self.state.epoch
            card["position_route"] = best_route
            card["metrics"] = {
                "sim_val": {**routes, "epoch": self.state.epoch, "loss": val["val_loss"]},
                "position_route": best_route,
            }
            if "val_kp_px" in val:
                card["metrics"]["sim_val"]["keypoint_px_mean"] = val["val_kp_px"]
            card["training"]["epochs_done"] = self.state.epoch
            save_atomic(self.encoder, self.root)
        card["training"]["epochs_done"] = self.state.epoch
        save_state(self.root / "last", self.encoder, self.optimizer, asdict(self.cfg), self.state)
