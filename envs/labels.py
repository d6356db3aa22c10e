"""Labels for a rendered frame: object pose in world/base/camera frames, pixel centre, tight
box, instance mask and metric depth, plus the camera's intrinsics and extrinsics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim2real.envs.camera import CameraGeometry, RenderOutput


@dataclass(frozen=True)
class FrameLabels:
    """Labels of one object in one frame.

    Attributes:
        position_world: (3,) object centre, world frame.
        position_base: (3,) object centre, robot-base frame (base translation and yaw removed).
        position_camera: (3,) object centre, OpenCV camera frame.
        orientation_world: (4,) quaternion (x, y, z, w).
        uv: (2,) projected centre in continuous pixel coordinates.
        box: (4,) tight ``x0, y0, x1, y1`` of the mask (pixel edges, exclusive max), or NaNs
            when no mask was rendered or the object is not visible.
        visible_pixels: number of mask pixels (-1 when no mask was rendered).
        mask: (H, W) bool or None.
        depth: (H, W) float32 metric camera-frame z, or None.
    """

    position_world: np.ndarray
    position_base: np.ndarray
    position_camera: np.ndarray
    orientation_world: np.ndarray
    uv: np.ndarray
    box: np.ndarray
    visible_pixels: int
    mask: np.ndarray | None
    depth: np.ndarray | None


def world_to_base(points: np.ndarray, base_position: np.ndarray, base_yaw: float) -> np.ndarray:
    """Shape: (..., 3) world points -> (..., 3) robot-base frame points."""
    c, s = np.cos(base_yaw), np.sin(base_yaw)
    Rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return (np.asarray(points) - base_position) @ Rz


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight box (x0, y0, x1, y1) of a boolean mask in pixel edges; NaNs when empty."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return np.full(4, np.nan, dtype=np.float32)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def compute_labels(
    geometry: CameraGeometry,
    frame: RenderOutput,
    body: int,
    position_world: np.ndarray,
    orientation_world: np.ndarray,
    base_position: np.ndarray,
    base_yaw: float,
) -> FrameLabels:
    """Labels of ``body`` in a frame rendered with ``geometry``."""
    mask = None if frame.seg is None else frame.seg == body
    box = mask_box(mask) if mask is not None else np.full(4, np.nan, dtype=np.float32)
    return FrameLabels(
        position_world=np.asarray(position_world, dtype=np.float64),
        position_base=world_to_base(position_world, base_position, base_yaw),
        position_camera=geometry.world_to_camera(position_world),
        orientation_world=np.asarray(orientation_world, dtype=np.float64),
        uv=geometry.project(position_world),
        box=box,
        visible_pixels=int(mask.sum()) if mask is not None else -1,
        mask=mask,
        depth=frame.depth,
    )
