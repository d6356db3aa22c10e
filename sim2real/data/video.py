"""Real frames from a video file: every ``step``-th frame, checked once, decoded lazily.

:func:`open_video` returns :class:`~sim2real.data.frames.RealFrames`; the pixels are read
later by :class:`~sim2real.data.decode.VideoReader`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2

from sim2real.data.frames import (
    FrameRef,
    RealFrames,
    ResizePolicy,
    Size,
    check_resize_policy,
    fit_sizes,
)
from sim2real.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


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
        >>> import tempfile, numpy as np
        >>> path = Path(tempfile.mkdtemp()) / "run.mp4"
        >>> writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 24))
        >>> for _ in range(25):
        ...     _ = writer.write(np.zeros((24, 32, 3), np.uint8))
        >>> writer.release()
        >>> frames = open_video(path, step=10)
        >>> len(frames), frames[1].source, frames[1].image.shape
        (3, 'run.mp4#frame=10', (24, 32, 3))
    """
    check_resize_policy(size, resize)
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
