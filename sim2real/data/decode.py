"""Pixels from files: decode an image, or a video's frames frame-accurately across forks.

The lowest layer of the real-data readers (:mod:`sim2real.data.frames` reads pixels through
it); only OpenCV and numpy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sim2real.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to BGR ``uint8`` ``(H, W, 3)``; :class:`DataError` if it cannot."""
    if not path.is_file():
        raise DataError(f"image '{path}' does not exist")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise DataError(f"image '{path}' is unreadable or corrupt: expected a JPEG or PNG")
    return image


_INHERITED: list[Any] = []  # captures inherited through fork, kept alive, never released


class VideoReader:
    """Frame-accurate reads from one video by decoding forward (seeking is not exact).

    Reading in increasing order costs one pass; going back reopens the file. The capture is
    reopened after a fork or unpickling, so DataLoader workers each get their own.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cap: Any = None
        self._pos = 0
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_cap": None, "_pos": 0, "_pid": -1}

    def read(self, frame: int) -> np.ndarray:
        """Return frame number ``frame`` (0-based) as BGR ``uint8`` ``(H, W, 3)``."""
        if self._cap is not None and self._pid != os.getpid():
            _INHERITED.append(self._cap)  # releasing a forked FFmpeg capture can deadlock
            self._cap = None
        if self._cap is None or frame < self._pos:
            self._cap = cv2.VideoCapture(str(self.path))
            self._pos, self._pid = 0, os.getpid()
            if not self._cap.isOpened():
                raise DataError(f"video '{self.path}' cannot be opened by OpenCV")
        while self._pos < frame:
            if not self._cap.grab():
                raise DataError(f"video '{self.path}' ends at frame {self._pos}, needed {frame}")
            self._pos += 1
        ok, image = self._cap.read()
        self._pos += 1
        if not ok:
            raise DataError(f"video '{self.path}': frame {frame} cannot be decoded")
        return image
