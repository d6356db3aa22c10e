"""The training data of :mod:`sim2real.perception.train`: samples, augmentation, ordering.

Split from ``train.py`` (which re-exports these names). The augmentation of a sample is
seeded per ``(seed, epoch, sample)`` and the order of an epoch per ``(seed, epoch)``, so
batches do not depend on the number of workers or on resuming.
"""

from __future__ import annotations

from collections.abc import Iterator

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sim2real.data.shards import ShardedDataset
from sim2real.perception.encoder import resize_frames


def photometric_augmentation() -> A.Compose:
    """Colour jitter, blur, noise and JPEG on top of the simulator's randomisation.

    Photometric only: labels (pixel centre, 3-D position) stay valid without transforming.
    """
    return A.Compose(
        [
            A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.04, p=0.8),
            A.OneOf(
                [A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.2, 1.2)), A.MotionBlur((3, 5))],
                p=0.3,
            ),
            A.GaussNoise(std_range=(0.01, 0.05), p=0.3),
            A.ImageCompression(quality_range=(40, 95), p=0.3),
        ]
    )


class SimSamples(Dataset):
    """``(image uint8 (H, W, 3), position (3,), uv normalised (2,))`` for ``(epoch, i)`` keys.

    The augmentation of a sample is seeded by ``(seed, epoch, dataset index)``, so it does
    not depend on the number of workers or on resuming.
    """

    def __init__(
        self,
        ds: ShardedDataset,
        indices: np.ndarray,
        size: tuple[int, int],
        augment: bool,
        seed: int,
    ) -> None:
        self.ds, self.indices, self.size, self.seed = ds, np.asarray(indices), size, seed
        h, w = ds.fields["image"]["shape"][:2]
        self.image_wh = np.array([w, h], dtype=np.float32)
        self.transform = photometric_augmentation() if augment else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        epoch, pos = key
        index = int(self.indices[pos])
        sample = self.ds[index]
        image = sample["image"]
        if (image.shape[1], image.shape[0]) != self.size:
            image = resize_frames(image, *self.size)[0].numpy()
        if self.transform is not None:
            seq = np.random.SeedSequence([self.seed, epoch, index])
            self.transform.set_random_seed(int(seq.generate_state(1)[0]))
            image = self.transform(image=image)["image"]
        uv = 2.0 * sample["uv"].astype(np.float32) / self.image_wh - 1.0  # continuous pixels
        return (
            torch.from_numpy(np.ascontiguousarray(image)),
            torch.from_numpy(sample["position"].astype(np.float32)),
            torch.from_numpy(uv.astype(np.float32)),
        )


class _EpochSampler(Sampler):
    """Yields ``(epoch, i)``; the order is a permutation seeded by ``(seed, epoch)``."""

    def __init__(self, n: int, epoch: int, seed: int, shuffle: bool) -> None:
        self.n, self.epoch, self.seed, self.shuffle = n, epoch, seed, shuffle

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            state = np.random.SeedSequence([self.seed, self.epoch, 0x5A]).generate_state(1)[0]
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(int(state)))
        else:
            order = torch.arange(self.n)
        for i in order.tolist():
            yield (self.epoch, i)


def epoch_loader(
    samples: SimSamples, batch_size: int, epoch: int, workers: int, shuffle: bool
) -> DataLoader:
    """A DataLoader over one epoch of ``samples`` (batches of stacked tensors)."""
    return DataLoader(
        samples,
        batch_size=batch_size,
        sampler=_EpochSampler(len(samples), epoch, samples.seed, shuffle),
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
    )
