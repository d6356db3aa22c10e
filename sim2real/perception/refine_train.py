"""Train and measure the coarse-to-fine :class:`~sim2real.perception.refine.Refiner` in
simulation.

Training windows come from a dataset of ``sim2real generate`` rendered at the camera's full
resolution (``--size 640x480``): each window is centred on the true keypoint (``uv``) plus a
random jitter of up to ``jitter_px`` pixels per axis, or (a ``coarse_fraction`` of them) on
the coarse encoder's own estimate of that frame, so the refiner learns to undo the errors it
will be given. The target is the true keypoint's offset from the window's centre; the loss is
its L1 error in pixels plus a small heatmap term (DSNT, :func:`~sim2real.perception.heads.
heatmap_kl`). Photometric augmentation as in pretraining. Each sample's jitter and
augmentation are seeded by ``(seed, epoch, index)``.

:func:`evaluate_refinement` measures, on frames of a (held-out) dataset, the keypoint error in
full-resolution pixels and the position error in cm (``keypoint_plane`` route, the encoder
card's camera) of the coarse and the refined keypoints.

Example:
    >>> train_refiner("runs/kuka_data640", "runs/kuka_encoder", RefineConfig(epochs=5))
    ... # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sim2real.data.shards import ShardedDataset
from sim2real.errors import ConfigError, DataError
from sim2real.perception.encoder import Encoder
from sim2real.perception.geometry import PlaneCamera, position_errors_cm, summarise
from sim2real.perception.heads import heatmap_kl, spatial_soft_argmax
from sim2real.perception.refine import REFINED_HEAD, Refiner, attach_refiner, crop_pixels
from sim2real.perception.train_data import photometric_augmentation

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefineConfig:
    """Settings of :func:`train_refiner`.

    Attributes:
        crop: window side in full-resolution pixels (multiple of 4).
        width: refiner channels of its first stage.
        iterations: looks per prediction at inference.
        jitter_px: largest offset per axis of a training window's centre from the truth.
        coarse_fraction: share of windows centred on the coarse encoder's estimate instead.
        epochs: passes over the training frames.
        batch_size: windows per step.
        lr: peak AdamW learning rate (cosine schedule).
        weight_decay: AdamW weight decay.
        heatmap_weight: weight of the heatmap KL term.
        val_fraction: frames held out to report the validation error.
        augment: photometric augmentation of the windows.
        seed: the only source of randomness.
        max_minutes: wall-clock budget (None: no limit).

    Example:
        >>> RefineConfig(crop=48).crop
        48
    """

    crop: int = 64
    width: int = 16
    iterations: int = 1
    jitter_px: float = 16.0
    coarse_fraction: float = 0.5
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    heatmap_weight: float = 0.1
    val_fraction: float = 0.1
    augment: bool = True
    seed: int = 0
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        checks = {
            "jitter_px": 0 <= self.jitter_px <= self.crop / 2 - 2,
            "coarse_fraction": 0 <= self.coarse_fraction <= 1,
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 2,
            "lr": self.lr > 0,
            "val_fraction": 0 < self.val_fraction < 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(
                    f"RefineConfig.{name}={getattr(self, name)!r} is out of range (jitter_px in "
                    "[0, crop/2 - 2], coarse_fraction in [0, 1], epochs >= 1, batch_size >= 2, "
                    "lr > 0, val_fraction in (0, 1))"
                )


def visible_indices(ds: ShardedDataset) -> np.ndarray:
    """Indices of the samples whose target centre ``uv`` lies inside the image."""
    h, w = ds.fields["image"]["shape"][:2]
    uv = np.stack([ds[i]["uv"] for i in range(len(ds))]).astype(np.float64)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    return np.flatnonzero(inside)


def coarse_pixels(encoder: Encoder, ds: ShardedDataset, indices: np.ndarray) -> np.ndarray:
    """The encoder's unrefined ``keypoint`` estimate, in pixels of the dataset's frames.

    Shape:
        - returns ``(len(indices), 2)`` float64.
    """
    out = []
    for start in range(0, len(indices), 64):
        frames = np.stack([ds[int(i)]["image"] for i in indices[start : start + 64]])
        out.append(encoder.predict(frames, refine=False)[f"{REFINED_HEAD}_px"][:, 0])
    return np.concatenate(out).astype(np.float64)


def _window(image: np.ndarray, centre: np.ndarray, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """An integer, edge-padded ``(crop + 3)`` square of ``image`` holding the crop around
    ``centre`` (pixels) and the centre in its own pixels."""
    size = crop + 3
    h, w = image.shape[:2]
    ox, oy = (math.floor(float(c)) - crop // 2 - 1 for c in centre)
    rows = np.clip(np.arange(oy, oy + size), 0, h - 1)
    cols = np.clip(np.arange(ox, ox + size), 0, w - 1)
    part = np.asarray(image[rows[:, None], cols[None, :]])  # edge-replicated outside
    return part, np.asarray(centre, dtype=np.float64) - (ox, oy)


def window_batch(
    images: list[np.ndarray], centres: np.ndarray, crop: int, transform: Any = None,
    seeds: list[int] | None = None,
) -> torch.Tensor:  # fmt: skip
    """Float 0-255 ``(N, 3, crop, crop)`` crops around ``centres`` (pixels), sampled exactly
    as :func:`~sim2real.perception.refine.crop_pixels` samples the whole frame."""
    windows, local = [], []
    for k, (image, centre) in enumerate(zip(images, centres, strict=True)):
        win, c = _window(image, centre, crop)
        if transform is not None:
            transform.set_random_seed(int(seeds[k]) if seeds else 0)
            win = transform(image=np.ascontiguousarray(win))["image"]
        windows.append(win)
        local.append(c)
    x = torch.from_numpy(np.stack(windows)).permute(0, 3, 1, 2).float()
    size = float(crop + 3)
    centre = torch.from_numpy(2.0 * np.stack(local) / size - 1.0).float()
    return crop_pixels(x, centre, crop)


def _centres(
    uv: np.ndarray, coarse: np.ndarray | None, cfg: RefineConfig, rng: np.random.Generator
) -> np.ndarray:
    centre = uv + rng.uniform(-cfg.jitter_px, cfg.jitter_px, size=uv.shape)
    if coarse is not None and cfg.coarse_fraction > 0:
        use = rng.random(len(uv)) < cfg.coarse_fraction
        centre[use] = coarse[use] + rng.normal(0.0, 1.0, size=(int(use.sum()), 2))
    limit = cfg.crop / 2 - 2  # keep the truth inside the window
    return uv + np.clip(centre - uv, -limit, limit)


def _loss(refiner: Refiner, windows: torch.Tensor, target: torch.Tensor, cfg: RefineConfig):
    heat = refiner.heatmap(windows)
    offset = spatial_soft_argmax(heat)[:, 0]
    px = (offset - target).abs().mul(cfg.crop / 2).sum(dim=1).mean()
    kl = heatmap_kl(heat, target.clamp(-1, 1)[:, None]) if cfg.heatmap_weight > 0 else 0.0
    return px + cfg.heatmap_weight * kl, offset


def _batches(n: int, size: int, seed: int, epoch: int) -> list[np.ndarray]:
    order = np.random.default_rng([seed, epoch, 0x29]).permutation(n)
    return [order[i : i + size] for i in range(0, n - size + 1, size)] or [order]


def train_refiner(
    data: str | Path,
    encoder_dir: str | Path,
    config: RefineConfig | None = None,
    out: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train a refiner for the encoder in ``encoder_dir`` on full-resolution frames of ``data``
    and save the encoder with it attached to ``out`` (default: ``encoder_dir`` itself).

    Returns:
        ``{"out", "frame_size", "n_train", "n_val", "epochs", "val_px_before", "val_px_after",
        "seconds"}`` (validation errors in full-resolution pixels, mean; also in the card's
        ``refiner_training``).

    Raises:
        ConfigError: the encoder has no ``keypoint`` head.
        DataError: the dataset has no ``uv`` labels, no visible target, or frames smaller
            than the crop.
    """
    cfg = config or RefineConfig()
    ds = ShardedDataset(data, fields=["image", "uv"])
    if "uv" not in ds.fields:
        raise DataError(f"{data}: expected a dataset with 'uv' labels (from `sim2real generate`)")
    h, w = ds.fields["image"]["shape"][:2]
    encoder = Encoder.load(encoder_dir, device=device)
    if REFINED_HEAD not in encoder.heads:
        raise ConfigError(
            f"{encoder_dir}: expected an encoder with a {REFINED_HEAD!r} head (pretrain --head "
            f"keypoint or keypoint+position), got heads {sorted(encoder.heads)}"
        )
    indices = visible_indices(ds)
    if len(indices) < 4:
        raise DataError(f"{data}: {len(indices)} frames with the target in view, expected >= 4")
    rng = np.random.default_rng([cfg.seed, 0x5EED])
    perm = rng.permutation(indices)
    n_val = max(1, round(cfg.val_fraction * len(perm)))
    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    uv = {int(i): ds[int(i)]["uv"].astype(np.float64) for i in indices}
    coarse_all = coarse_pixels(encoder, ds, indices) if cfg.coarse_fraction > 0 else None
    coarse = (
        {int(i): coarse_all[k] for k, i in enumerate(indices)} if coarse_all is not None else {}
    )
    pre = encoder.preprocessing
    refiner = Refiner(
        cfg.crop, cfg.width, (w, h), pre.mean, pre.std, pre.colour, cfg.iterations
    ).to(device)
    steps = cfg.epochs * len(_batches(len(train), cfg.batch_size, cfg.seed, 0))
    opt = torch.optim.AdamW(refiner.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=max(steps, 2))
    transform = photometric_augmentation() if cfg.augment else None
    start, epochs_done, history = time.monotonic(), 0, []
    for epoch in range(cfg.epochs):
        refiner.train()
        for batch in _batches(len(train), cfg.batch_size, cfg.seed, epoch):
            idx = train[batch]
            windows, target = _samples(ds, idx, uv, coarse, cfg, epoch, transform)
            loss, _ = _loss(refiner, windows.to(device), target.to(device), cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        epochs_done += 1
        before, after = validation_pixels(refiner, ds, val, uv, coarse, cfg, device)
        history.append({"epoch": epoch, "val_px_before": before, "val_px_after": after})
        logger.info("refiner epoch %d: val px %.2f -> %.2f", epoch, before, after)
        if cfg.max_minutes is not None and time.monotonic() - start > 60 * cfg.max_minutes:
            break
    refiner.eval()
    attach_refiner(encoder, refiner.cpu())
    result = {
        "frame_size": [w, h],
        "n_train": len(train),
        "n_val": len(val),
        "epochs": epochs_done,
        "val_px_before": history[-1]["val_px_before"],
        "val_px_after": history[-1]["val_px_after"],
        "seconds": round(time.monotonic() - start, 1),
    }
    encoder.card["refiner_training"] = {
        "config": asdict(cfg), "data": str(data), "history": history, **result
    }  # fmt: skip
    folder = encoder.cpu().save(out or encoder_dir)
    return {"out": str(folder), **result}


def _samples(
    ds: ShardedDataset,
    idx: np.ndarray,
    uv: dict[int, np.ndarray],
    coarse: dict[int, np.ndarray],
    cfg: RefineConfig,
    epoch: int,
    transform: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    truth = np.stack([uv[int(i)] for i in idx])
    rough = np.stack([coarse[int(i)] for i in idx]) if coarse else None
    rng = np.random.default_rng([cfg.seed, epoch, int(idx[0]), len(idx)])
    centres = _centres(truth, rough, cfg, rng)
    seeds = [
        int(np.random.SeedSequence([cfg.seed, epoch, int(i)]).generate_state(1)[0]) for i in idx
    ]
    images = [ds[int(i)]["image"] for i in idx]
    windows = window_batch(images, centres, cfg.crop, transform, seeds)
    target = torch.from_numpy((truth - centres) / (cfg.crop / 2)).float()
    return windows, target


@torch.no_grad()
def validation_pixels(
    refiner: Refiner,
    ds: ShardedDataset,
    val: np.ndarray,
    uv: dict[int, np.ndarray],
    coarse: dict[int, np.ndarray],
    cfg: RefineConfig,
    device: str = "cpu",
) -> tuple[float, float]:
    """Mean pixel error of the validation windows' centres before and after one look (fixed
    jitter, no augmentation)."""
    refiner.eval()
    errors_before, errors_after = [], []
    for start in range(0, len(val), cfg.batch_size):
        idx = val[start : start + cfg.batch_size]
        windows, target = _samples(ds, idx, uv, coarse, cfg, -1 % 2**31, None)
        offset = refiner.offsets(windows.to(device)).cpu()
        errors_before.append(target.norm(dim=1) * cfg.crop / 2)
        errors_after.append((offset - target).norm(dim=1) * cfg.crop / 2)
    return float(torch.cat(errors_before).mean()), float(torch.cat(errors_after).mean())


def evaluate_refinement(
    data: str | Path, encoder_dir: str | Path | Encoder, limit: int | None = None
) -> dict[str, Any]:
    """Coarse vs refined keypoint error (full-resolution pixels) and position error (cm, the
    ``keypoint_plane`` route through the card's camera) on the in-view frames of ``data``.

    Returns:
        ``{"n", "frame_size", "px": {"coarse": stats, "refined": stats}, "xy_cm": {...}}``,
        ``stats`` = mean / median / p90 (:func:`~sim2real.perception.geometry.summarise`);
        ``xy_cm`` only with a camera in the card, with ``truth``: the true keypoint through
        that camera (the floor a perfect keypoint leaves when the frames' cameras are
        randomised around it); ``in_reach``: ``{"n", "px"}`` the same
        over the frames whose coarse keypoint is within the window's reach of the truth
        (``crop/2 - 2`` pixels per axis), the only ones a single look can correct.

    Raises:
        ConfigError: the encoder has no refiner attached.
    """
    encoder = encoder_dir if isinstance(encoder_dir, Encoder) else Encoder.load(encoder_dir)
    if encoder.refiner is None:
        raise ConfigError(
            f"{encoder_dir}: expected an encoder with a refiner (`sim2real refine train`)"
        )
    ds = ShardedDataset(data, fields=["image", "uv", "position"])
    indices = visible_indices(ds)[:limit]
    if not len(indices):
        raise DataError(f"{data}: no frame with the target in view")
    truth, position, coarse_xy, refined_xy = [], [], [], []
    for start in range(0, len(indices), 32):
        idx = indices[start : start + 32]
        frames = np.stack([ds[int(i)]["image"] for i in idx])
        out = encoder.predict(frames, refine=True)
        coarse_xy.append(out[f"{REFINED_HEAD}_coarse"][:, 0])
        refined_xy.append(out[REFINED_HEAD][:, 0])
        truth.append(np.stack([ds[int(i)]["uv"] for i in idx]))
        position.append(np.stack([ds[int(i)]["position"] for i in idx]))
    h, w = ds.fields["image"]["shape"][:2]
    uv = np.concatenate(truth).astype(np.float64)
    pos = np.concatenate(position).astype(np.float64)
    result: dict[str, Any] = {"n": len(indices), "frame_size": [w, h], "px": {}, "xy_cm": {}}
    cam = PlaneCamera.from_card(encoder.card["camera"]) if encoder.card.get("camera") else None
    coarse_px = (np.concatenate(coarse_xy).astype(np.float64) + 1.0) * 0.5 * np.array([w, h])
    reach = np.abs(coarse_px - uv).max(axis=1) <= encoder.refiner.crop / 2 - 2
    result["in_reach"] = {"n": int(reach.sum()), "px": {}}
    for name, xy in (("coarse", coarse_xy), ("refined", refined_xy)):
        norm = np.concatenate(xy).astype(np.float64)
        px = (norm + 1.0) * 0.5 * np.array([w, h])
        result["px"][name] = summarise(np.linalg.norm(px - uv, axis=1))
        if reach.any():
            result["in_reach"]["px"][name] = summarise(np.linalg.norm(px - uv, axis=1)[reach])
        if cam is not None:
            result["xy_cm"][name] = summarise(
                position_errors_cm(cam.backproject_normalised(norm), pos)["xy"]
            )
    if cam is not None:  # the floor: the true keypoint through the card's (nominal) camera
        truth_xy = cam.backproject_normalised(2.0 * uv / np.array([w, h]) - 1.0)
        result["xy_cm"]["truth"] = summarise(position_errors_cm(truth_xy, pos)["xy"])
    return result
