"""The training samples of a named-target run (:mod:`sim2real.perception.targets`).

:class:`TargetSamples` is :class:`~sim2real.perception.train_data.SimSamples` for several
objects: per sample the image and, per target, its position, keypoint, visible fraction and
yaw, with masks for what the sample does not say (an object absent from the scene, a target
without quaternions). Augmentation and ordering follow ``SimSamples`` (seeded per
``(seed, epoch, sample)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from sim2real.data.shards import ShardedDataset
from sim2real.perception.targets import Target
from sim2real.perception.train_data import augment, photometric_augmentation, sized_sample
from sim2real.perception.train_scores import derived_visible_fraction


def quaternion_yaw(quaternion: np.ndarray) -> np.ndarray:
    """Yaw about world z (radians) of ``(..., 4)`` ``x, y, z, w`` quaternions.

    Example:
        >>> import math
        >>> half = math.radians(30) / 2
        >>> round(math.degrees(float(quaternion_yaw(np.array([0, 0, math.sin(half),
        ...     math.cos(half)])))), 6)
        30.0
    """
    q = np.asarray(quaternion, dtype=np.float64)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def target_fields(targets: Sequence[Target]) -> list[str]:
    """The dataset fields the samples of ``targets`` read (besides ``image``)."""
    out: list[str] = []
    for t in targets:
        out += [f for f in t.fields.values() if f is not None and f not in out]
    return out


class TargetSamples(Dataset):
    """``(image uint8 (H, W, 3), position (T, 3), uv (T, 2) normalised, visible (T,),
    yaw (T,), yaw_ok (T,), present (T,))`` for ``(epoch, i)`` keys, ``T`` the targets.

    ``present`` is 0 where the sample has no labels for a target (absent from the scene, or
    NaN); its position and uv are then 0. ``visible`` is the visible fraction (the dataset's
    ``objects.NAME.visible_fraction``, or the legacy cube's estimate of
    :func:`~sim2real.perception.train_scores.derived_visible_fraction`). ``yaw`` is the yaw
    about the table normal in the robot-base frame (radians), ``yaw_ok`` 1 where it is known.
    """

    def __init__(
        self,
        ds: ShardedDataset,
        indices: np.ndarray,
        size: tuple[int, int],
        targets: Sequence[Target],
        augment: bool,
        seed: int,
        exposure: float = 0.0,
    ) -> None:
        self.ds, self.indices, self.size, self.seed = ds, np.asarray(indices), size, seed
        self.targets = list(targets)
        self.visibility = None  # the SimSamples attribute write_scores reads
        robot = ds.manifest.get("spec", {}).get("scene", {}).get("robot") or {}
        self.base_yaw = np.radians(float(robot.get("base_yaw_deg", 0.0)))
        h, w = ds.fields["image"]["shape"][:2]
        self.image_wh = np.array([w, h], dtype=np.float32)
        self.transform = photometric_augmentation(exposure) if augment else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        epoch, pos = key
        index = int(self.indices[pos])
        sample, image = sized_sample(self.ds, index, self.size)
        image = augment(self.transform, image, self.seed, epoch, index)
        labels = [self.labels(sample, t) for t in self.targets]
        stacked = [np.stack([lab[k] for lab in labels]).astype(np.float32) for k in range(6)]
        return (torch.from_numpy(np.ascontiguousarray(image)), *map(torch.from_numpy, stacked))

    def labels(self, sample: Mapping[str, Any], target: Target) -> list[np.ndarray]:
        """``[position (3,), uv (2,), visible (), yaw (), yaw_ok (), present ()]`` of one
        target in one sample."""
        f = target.fields
        position = np.asarray(sample[f["position"]], dtype=np.float64).reshape(3)
        uv_px = np.asarray(sample[f["uv"]], dtype=np.float64).reshape(-1)[:2]
        present = bool(np.asarray(sample[f["present"]])) if f.get("present") else True
        present = present and bool(np.isfinite(position).all() and np.isfinite(uv_px).all())
        if f.get("visible_fraction"):
            visible = float(np.asarray(sample[f["visible_fraction"]]))
            visible = visible if np.isfinite(visible) else 0.0
        else:
            wh = (float(self.image_wh[0]), float(self.image_wh[1]))
            visible = derived_visible_fraction(sample, wh, target.name)
        yaw, yaw_ok = 0.0, 0.0
        if target.has_yaw_labels and present:
            quat = np.asarray(sample[f["quaternion"]], dtype=np.float64)
            if np.isfinite(quat).all():
                yaw, yaw_ok = float(quaternion_yaw(quat)) - self.base_yaw, 1.0
        if not present:
            position, uv_px, visible = np.zeros(3), np.zeros(2), 0.0
        uv = 2.0 * uv_px / self.image_wh - 1.0
        return [position, uv, np.array(visible), np.array(yaw), np.array(yaw_ok),
                np.array(float(present))]  # fmt: skip
