"""Real frames from a video file, read frame-accurately and safely across forks.

:func:`open_video` checks a video once and returns :class:`~sim2real.data.real.RealFrames`;
:class:`_VideoReader` decodes the pixels later, reopening its capture in each process.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from sim2real.data.frames import FrameRef, ResizePolicy, Size
from sim2real.errors import ConfigError, DataError

if TYPE_CHECKING:
    from sim2real.data.real import RealFrames

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})

_INHERITED: list[Any] = []  # captures inherited through fork, kept alive, never released


class _VideoReader:
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


def open_video(
    path: str | Path,
    *,
    step: int = 1,
    size: Size | None = None,
    resize: ResizePolicy = "error",
) -> RealFrames:
    """Open every ``step``-th frame (0, k, 2k, ...) of a video file; all unlabelled.

    The video is decoded once to count and check its frames; pixels load lazily later.

    Example:
        >>> frames = open_video("run.mp4", step=10)  # doctest: +SKIP
        >>> frames[1].source
        'run.mp4#frame=10'
    """
    # Imported here: sim2real.data.real imports this module.
    from sim2real.data.real import RealFrames, _check_policy, fit_sizes

    _check_policy(size, resize)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ConfigError(f"step is {step!r}, expected an integer >= 1")
    p = Path(path)
    if not p.is_file():
        raise DataError(f"video '{p}' does not exist")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        raise DataError(f"video '{p}' cannot be opened by OpenCV: corrupt or unknown codec")
    refs: list[FrameRef] = []
    native: list[Size] = []
    n = 0
    try:
        while cap.grab():
            if n % step == 0:
                ok, image = cap.retrieve()
                if not ok:
                    raise DataError(f"video '{p}': frame {n} cannot be decoded")
                refs.append(FrameRef(source=f"{p.name}#frame={n}", path=p, frame=n))
                native.append((image.shape[1], image.shape[0]))
            n += 1
    finally:
        cap.release()
    if not refs:
        raise DataError(f"video '{p}' has no decodable frames, expected at least one")
    refs, final = fit_sizes(refs, native, size=size, resize=resize)
    logger.info("opened %s: %d of %d frames (step %d)", p, len(refs), n, step)
    return RealFrames(refs, size=final, resize=resize == "resize", name=str(p))
