"""Procedural textures for visual randomisation.

A pool is made once per scene: grey-level patterns (flat, checker, stripes, noise, gradient,
and optionally a folder of user images) loaded into the renderer. Randomisation then picks a
pool index and a colour; the renderer multiplies the two, so a small pool gives a wide
variety without ever loading a texture during an episode (PyBullet cannot unload them).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.atomic import write_bytes
from sim2real.errors import ConfigError

KINDS = ("flat", "checker", "stripes", "noise", "gradient")
TEXTURE_SIZE = 64


def make_texture(kind: str, rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """A grey-level pattern in [0.35, 1] as an RGB uint8 image (size, size, 3).

    Example:
        >>> make_texture("checker", np.random.default_rng(0)).shape
        (64, 64, 3)
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    if kind == "flat":
        g = np.ones((size, size))
    elif kind == "checker":
        n = int(rng.integers(2, 9))
        g = ((np.floor(xx * n) + np.floor(yy * n)) % 2) * 0.5 + 0.5
    elif kind == "stripes":
        n = int(rng.integers(2, 12))
        angle = rng.uniform(0, np.pi)
        g = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * n * 2 * np.pi) > 0) * 0.45 + 0.55
    elif kind == "noise":
        cells = int(rng.integers(4, 17))
        coarse = rng.uniform(0.0, 1.0, (cells, cells))
        idx = (np.arange(size) * cells // size).astype(int)
        g = 0.6 * coarse[np.ix_(idx, idx)] + 0.4 * rng.uniform(0, 1, (size, size))
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        g = xx * np.cos(angle) + yy * np.sin(angle)
        g = (g - g.min()) / max(g.max() - g.min(), 1e-6)
    else:
        raise ConfigError(f"texture kind {kind!r}; expected one of {KINDS}")
    g = 0.35 + 0.65 * np.clip(g, 0.0, 1.0)
    return np.repeat((g * 255).astype(np.uint8)[:, :, None], 3, axis=2)


class TexturePool:
    """Textures loaded into one PyBullet client. Index 0 is always flat white."""

    def __init__(self, client: Any, size: int, folder: str | None = None, seed: int = 0) -> None:
        import cv2

        self.client = client
        images: list[np.ndarray] = []
        rng = np.random.default_rng(seed)  # fixed: the pool is part of the scene, not a draw
        for i in range(size):
            images.append(make_texture(KINDS[i % len(KINDS)] if i else "flat", rng))
        if folder:
            files = sorted(
                p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg")
            )
            if not files:
                raise ConfigError(f"texture_folder {folder!r} holds no .png/.jpg images")
            for f in files:
                img = cv2.imread(str(f))
                if img is None:
                    raise ConfigError(f"texture_folder: cannot read image {f}")
                images.append(cv2.resize(img, (TEXTURE_SIZE, TEXTURE_SIZE))[:, :, ::-1])
        cache = Path(
            os.environ.get("SIM2REAL_CACHE", Path(tempfile.gettempdir()) / "sim2real-cache")
        )
        cache = cache / "textures"
        cache.mkdir(parents=True, exist_ok=True)
        self.ids: list[int] = []
        for img in images:
            digest = hashlib.sha1(img.tobytes()).hexdigest()[:16]
            path = cache / f"{digest}.png"
            if not path.exists():
                write_bytes(path, cv2.imencode(".png", img[:, :, ::-1])[1].tobytes())
            self.ids.append(client.loadTexture(str(path)))

    def __len__(self) -> int:
        return len(self.ids)
