"""``sim2real preview DIR``: a grid of dataset samples with their labels overlaid, so a
person sees at a glance what the randomisation produces and that labels sit where they
should (cross: projected centre; magenta: box; cyan: mask outline when stored)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from sim2real.data.shards import ShardedDataset
from sim2real.errors import DataError
from sim2real.preview import draw_labels, save_png, tile

logger = logging.getLogger(__name__)


def preview_dataset(
    data: str | Path, out: str | Path, n: int = 16, seed: int = 0, scale: int = 2
) -> Path:
    """Draw ``n`` random samples of a generated dataset with labels overlaid.

    Example:
        >>> preview_dataset("runs/kuka_data", "runs/kuka_grid.png")  # doctest: +SKIP
    """
    ds = ShardedDataset(data, verify="lazy")
    if len(ds) == 0:
        raise DataError(f"{data}: the dataset is empty")
    idx = np.random.default_rng(seed).choice(len(ds), size=min(n, len(ds)), replace=False)
    frames = []
    for i in sorted(idx):
        s = ds[int(i)]
        img = draw_labels(
            np.asarray(s["image"]),
            uv=np.asarray(s["uv"]) if "uv" in s else None,
            box=np.asarray(s["box"]) if "box" in s else None,
            mask=np.asarray(s["mask"]).astype(bool) if "mask" in s else None,
        )
        frames.append(cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST))
    path = save_png(tile(frames), out)
    logger.info("wrote %s (%d samples of %s)", path, len(frames), data)
    return path
