"""The training data of :mod:`sim2real.perception.train`: samples, augmentation, ordering.

The augmentation of a sample is
seeded per ``(seed, epoch, sample)`` and the order of an epoch per ``(seed, epoch)``, so
batches do not depend on the number of workers or on resuming.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sim2real.data.shards import ShardedDataset
from sim2real.perception.distributed import shard_order
from sim2real.perception.encoder import resize_frames
from sim2real.perception.train_scores import derived_visible_fraction


def photometric_augmentation(exposure: float = 0.0) -> A.Compose:
    """Colour jitter, blur, noise and JPEG on top of the simulator's randomisation.

    ``exposure > 0`` first multiplies half of the images by a gain drawn from
    ``[1, 1 + exposure]``, clipped at 255: overexposure, which flattens white surfaces (the
    cube, paper) to saturated white as a real camera's auto-exposure does on a bright scene.
    Photometric only: labels (pixel centre, 3-D position) stay valid without transforming.
    """
    gain = [A.MultiplicativeNoise(multiplier=(1.0, 1.0 + exposure), p=0.5)] if exposure else []
    return A.Compose(
        [
            *gain,
            A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.04, p=0.8),
            A.OneOf(
                [A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.2, 1.2)), A.MotionBlur((3, 5))],
                p=0.3,
            ),
            A.GaussNoise(std_range=(0.01, 0.05), p=0.3),
            A.ImageCompression(quality_range=(40, 95), p=0.3),
        ]
    )


def shift_image(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate ``(H, W, C)`` content by ``(dx, dy)`` pixels, filling with the edge pixels.

    Example:
        >>> shift_image(np.arange(4).reshape(1, 4, 1), 1, 0)[0, :, 0].tolist()
        [0, 0, 1, 2]
    """
    h, w = image.shape[:2]
    s = max(abs(dx), abs(dy))
    if s == 0:
        return image
    padded = np.pad(image, ((s, s), (s, s), (0, 0)), mode="edge")
    return np.ascontiguousarray(padded[s - dy : s - dy + h, s - dx : s - dx + w])


def sized_sample(ds: ShardedDataset, index: int, size: tuple[int, int]) -> tuple[dict, np.ndarray]:
    """Sample ``index`` of ``ds`` and its image resized to ``size`` (W, H) when it differs."""
    sample = ds[index]
    image = sample["image"]
    if (image.shape[1], image.shape[0]) != size:
        image = resize_frames(image, *size)[0].numpy()
    return sample, image


def augment(transform: A.Compose | None, image: np.ndarray, *key: int) -> np.ndarray:
    """``image`` through ``transform`` seeded by ``key`` (seed, epoch, index): the same draw
    for the same sample of the same epoch in every worker layout; unchanged without one."""
    if transform is None:
        return image
    transform.set_random_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))
    return transform(image=image)["image"]


class SimSamples(Dataset):
    """``(image uint8 (H, W, 3), position (3,), uv normalised (2,))`` for ``(epoch, i)`` keys.

    The augmentation of a sample is seeded by ``(seed, epoch, dataset index)``, so it does
    not depend on the number of workers or on resuming. ``shift_px > 0`` translates each image
    (at network size) by up to that many whole pixels per axis, edge-filled, and moves the
    keypoint label with it; the shift never takes the label closer than 2 pixels to the
    border. The 3-D position label does not move: to the position head the shift is noise
    (a small camera rotation), so use it for the keypoint route. ``relative=True`` returns
    ``position - ee_position`` (the cube seen from the gripper) instead of the position, and
    the gripper's position ``ee_position`` (3,) as a fourth item.

    ``gripper_keypoint=True`` makes ``uv`` ``(2, 2)``: the cube's centre, then the end
    effector's, projected through the sample's own camera (``K``, ``R``, ``t``; the dataset
    needs those and ``ee_position``). A gripper outside the frame keeps its coordinates
    (beyond +-1); the loss leaves such labels out.

    ``visibility="cube"`` appends the visible fraction of that object, a float32 scalar
    (:func:`~sim2real.perception.train_scores.derived_visible_fraction`), as the last item.
    """

    def __init__(
        self,
        ds: ShardedDataset,
        indices: np.ndarray,
        size: tuple[int, int],
        augment: bool,
        seed: int,
        shift_px: int = 0,
        exposure: float = 0.0,
        relative: bool = False,
        gripper_keypoint: bool = False,
        visibility: str | None = None,
    ) -> None:
        self.ds, self.indices, self.size, self.seed = ds, np.asarray(indices), size, seed
        self.visibility = visibility
        self.relative, self.gripper_keypoint = bool(relative), bool(gripper_keypoint)
        robot = ds.manifest.get("spec", {}).get("scene", {}).get("robot") or {}
        self.base = np.asarray(robot.get("base_position", (0.0, 0.0, 0.0)), dtype=np.float64)
        yaw = np.radians(float(robot.get("base_yaw_deg", 0.0)))
        c, s = np.cos(yaw), np.sin(yaw)
        self.base_to_world = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        self.shift_px = int(shift_px)
        h, w = ds.fields["image"]["shape"][:2]
        self.image_wh = np.array([w, h], dtype=np.float32)
        self.transform = photometric_augmentation(exposure) if augment else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        epoch, pos = key
        index = int(self.indices[pos])
        sample, image = sized_sample(self.ds, index, self.size)
        uv = 2.0 * sample["uv"].astype(np.float32) / self.image_wh - 1.0  # continuous pixels
        if self.gripper_keypoint:
            uv = np.stack([uv, 2.0 * self.gripper_uv(sample) / self.image_wh - 1.0])
        if self.shift_px > 0:
            image, uv = self._shift(image, uv, np.random.SeedSequence([self.seed, epoch, index, 1]))
        image = augment(self.transform, image, self.seed, epoch, index)
        position = sample["position"].astype(np.float32)
        items = [
            torch.from_numpy(np.ascontiguousarray(image)),
            torch.from_numpy(position),
            torch.from_numpy(uv.astype(np.float32)),
        ]
        if self.relative:
            ee = sample["ee_position"].astype(np.float32)
            items[1] = torch.from_numpy(position - ee)
            items.append(torch.from_numpy(ee))
        if self.visibility is not None:
            wh = (float(self.image_wh[0]), float(self.image_wh[1]))
            fraction = derived_visible_fraction(sample, wh, self.visibility)
            items.append(torch.tensor(fraction, dtype=torch.float32))
        return tuple(items)

    def gripper_uv(self, sample: dict[str, np.ndarray]) -> np.ndarray:
        """The end effector's continuous pixel position through the sample's camera, ``(2,)``."""
        world = self.base + self.base_to_world @ sample["ee_position"].astype(np.float64)
        cam = sample["R"].astype(np.float64) @ world + sample["t"].astype(np.float64)
        uvw = sample["K"].astype(np.float64) @ cam
        return (uvw[:2] / uvw[2]).astype(np.float32)

    def _shift(
        self, image: np.ndarray, uv: np.ndarray, seq: np.random.SeedSequence
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seq)
        size = np.array(self.size, dtype=np.float32)
        pixel = (np.reshape(uv, (-1, 2))[0] + 1.0) / 2.0 * size  # the cube's, at network size
        step = []
        for axis in range(2):
            lo = max(-self.shift_px, int(np.ceil(2.0 - pixel[axis])))
            hi = min(self.shift_px, int(np.floor(size[axis] - 2.0 - pixel[axis])))
            step.append(int(rng.integers(lo, hi + 1)) if lo <= hi else 0)
        shifted = shift_image(np.asarray(image), step[0], step[1])
        return shifted, (uv + 2.0 * np.array(step, dtype=np.float32) / size).astype(np.float32)


class _EpochSampler(Sampler):
    """Yields ``(epoch, i)``; the order is a permutation seeded by ``(seed, epoch)``."""

    def __init__(
        self, n: int, epoch: int, seed: int, shuffle: bool, rank: int = 0, world_size: int = 1
    ) -> None:
        self.n, self.epoch, self.seed, self.shuffle = n, epoch, seed, shuffle
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            state = np.random.SeedSequence([self.seed, self.epoch, 0x5A]).generate_state(1)[0]
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(int(state)))
        else:
            order = torch.arange(self.n)
        for i in shard_order(order, self.rank, self.world_size).tolist():
            yield (self.epoch, i)


def epoch_loader(
    samples: SimSamples,
    batch_size: int,
    epoch: int,
    workers: int,
    shuffle: bool,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader over one epoch of ``samples`` (batches of stacked tensors); under DDP,
    this ``rank``'s share of it (:func:`~sim2real.perception.distributed.shard_order`)."""
    return DataLoader(
        samples,
        batch_size=batch_size,
        sampler=_EpochSampler(len(samples), epoch, samples.seed, shuffle, rank, world_size),
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
    )
