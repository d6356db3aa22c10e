"""Frame records shared by the real-data readers: where a frame lives and its labels.

:class:`FrameRef` describes a frame without its pixels; :class:`RealFrame` adds the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

ResizePolicy = Literal["error", "resize"]
Size = tuple[int, int]


@dataclass(frozen=True, eq=False, kw_only=True)
class FrameRef:
    """Where one frame lives and what is known about it, without its pixels.

    Attributes:
        source: id of the frame: a file name relative to the opened folder, or
            ``"<video name>#frame=<n>"``, or ``"<camera>/episode_<e>/frame_<i>"``.
        path: the image or video file holding the pixels.
        frame: frame number inside a video file; ``None`` for an image file.
        position: label position ``(3,)`` in metres, or ``None`` when unlabelled.
        uv: pixel label ``(2,)`` in the (possibly resized) image, or ``None``.
        box: box label ``(4,)`` ``x0, y0, x1, y1`` in pixels, or ``None``.
        state: robot state ``(S,)`` (LeRobot ``observation.state``), or ``None``.
        action: robot action ``(A,)`` (LeRobot ``action``), or ``None``.
    """

    source: str
    path: Path
    frame: int | None = None
    position: np.ndarray | None = None
    uv: np.ndarray | None = None
    box: np.ndarray | None = None
    state: np.ndarray | None = None
    action: np.ndarray | None = None

    @property
    def labelled(self) -> bool:
        """Whether the frame has a position label."""
        return self.position is not None


@dataclass(frozen=True, eq=False, kw_only=True)
class RealFrame(FrameRef):
    """One real frame: :class:`FrameRef` plus ``image``, ``uint8`` ``(H, W, 3)`` RGB."""

    image: np.ndarray
