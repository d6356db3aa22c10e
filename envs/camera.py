"""Pinhole camera: configuration, intrinsics/extrinsics, projection, depth and rendering.

Conventions (used everywhere in the project):

* World and robot-base frames are metres, z up.
* The camera frame is OpenCV's: x right, y down, z forward along the optical axis.
* Pixel coordinates ``(u, v)`` are continuous: pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)``,
  so its centre is ``(i + 0.5, j + 0.5)``; ``u`` grows to the right, ``v`` downwards.

The geometry is plain numpy so the runtime (no PyBullet on a robot computer) can use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sim2real.errors import ConfigError

Vec3 = tuple[float, float, float]


class CameraConfig(BaseModel):
    """Where a camera is and what it sees.

    Example:
        >>> CameraConfig(eye=(1, 0, 1), target=(0, 0, 0), fov_deg=45, width=64, height=48).aspect
        1.3333333333333333
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    eye: Vec3 = (1.0, 0.0, 1.0)
    target: Vec3 = (0.0, 0.0, 0.0)
    up: Vec3 = (0.0, 0.0, 1.0)
    roll_deg: float = 0.0
    fov_deg: float = Field(45.0, gt=1.0, lt=170.0, description="vertical field of view")
    width: int = Field(84, ge=8, le=4096)
    height: int = Field(84, ge=8, le=4096)
    near: float = Field(0.05, gt=0.0)
    far: float = Field(6.0, gt=0.0)

    @field_validator("far")
    @classmethod
    def _far_beyond_near(cls, far: float, info: Any) -> float:
        near = info.data.get("near", 0.0)
        if far <= near:
            raise ValueError(f"far ({far}) must be greater than near ({near})")
        return far

    @property
    def aspect(self) -> float:
        return self.width / self.height

    def resized(self, width: int, height: int) -> CameraConfig:
        """The same camera rendering at another resolution (same vertical field of view)."""
        return self.model_copy(update={"width": int(width), "height": int(height)})


@dataclass(frozen=True)
class CameraGeometry:
    """Intrinsics ``K`` (3x3) and world-to-camera extrinsics ``R``, ``t`` (OpenCV frame)."""

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    width: int
    height: int
    near: float
    far: float

    @classmethod
    def from_config(cls, cfg: CameraConfig) -> CameraGeometry:
        eye = np.asarray(cfg.eye, dtype=np.float64)
        forward = np.asarray(cfg.target, dtype=np.float64) - eye
        norm = np.linalg.norm(forward)
        if norm < 1e-9:
            raise ConfigError(
                f"camera eye and target coincide at {cfg.eye}: expected distinct points"
            )
        forward /= norm
        right = np.cross(forward, np.asarray(cfg.up, dtype=np.float64))
        if np.linalg.norm(right) < 1e-9:
            raise ConfigError(f"camera up {cfg.up} is parallel to the viewing direction")
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        if cfg.roll_deg:
            a = math.radians(cfg.roll_deg)
            right, down = (
                math.cos(a) * right + math.sin(a) * down,
                -math.sin(a) * right + math.cos(a) * down,
            )
        R = np.stack([right, down, forward])
        t = -R @ eye
        f = (cfg.height / 2.0) / math.tan(math.radians(cfg.fov_deg) / 2.0)
        K = np.array([[f, 0.0, cfg.width / 2.0], [0.0, f, cfg.height / 2.0], [0.0, 0.0, 1.0]])
        return cls(K=K, R=R, t=t, width=cfg.width, height=cfg.height, near=cfg.near, far=cfg.far)

    @property
    def eye(self) -> np.ndarray:
        return -self.R.T @ self.t

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        """Shape: (..., 3) world points -> (..., 3) camera-frame points."""
        return np.asarray(points, dtype=np.float64) @ self.R.T + self.t

    def project(self, points: np.ndarray) -> np.ndarray:
        """Project world points to pixels.

        Shape:
            points: (..., 3) world coordinates; returns (..., 2) continuous pixel (u, v).
        """
        pc = self.world_to_camera(points)
        z = pc[..., 2:3]
        uvw = pc @ self.K.T
        return uvw[..., :2] / z

    def ray_plane(self, uv: np.ndarray, plane_z: float) -> np.ndarray:
        """Back-project pixels onto the horizontal plane ``z = plane_z`` (world frame).

        Shape:
            uv: (..., 2) pixels; returns (..., 3) world points.
        """
        uv = np.asarray(uv, dtype=np.float64)
        ones = np.ones((*uv.shape[:-1], 1))
        rays_cam = np.concatenate([uv, ones], axis=-1) @ np.linalg.inv(self.K).T
        rays_world = rays_cam @ self.R  # R^T applied to row vectors
        eye = self.eye
        s = (plane_z - eye[2]) / rays_world[..., 2]
        return eye + s[..., None] * rays_world

    def view_matrix(self) -> list[float]:
        """OpenGL view matrix (column-major, as PyBullet expects)."""
        gl_from_cv = np.diag([1.0, -1.0, -1.0])
        M = np.eye(4)
        M[:3, :3] = gl_from_cv @ self.R
        M[:3, 3] = gl_from_cv @ self.t
        return M.T.reshape(-1).tolist()

    def projection_matrix(self) -> list[float]:
        """OpenGL projection matrix (column-major) matching ``K`` exactly."""
        w, h, n, f = self.width, self.height, self.near, self.far
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        P = np.zeros((4, 4))
        P[0, 0] = 2 * fx / w
        P[1, 1] = 2 * fy / h
        P[0, 2] = 1 - 2 * cx / w
        P[1, 2] = 2 * cy / h - 1
        P[2, 2] = -(f + n) / (f - n)
        P[2, 3] = -2 * f * n / (f - n)
        P[3, 2] = -1.0
        return P.T.reshape(-1).tolist()

    def linear_depth(self, zbuffer: np.ndarray) -> np.ndarray:
        """Convert PyBullet's non-linear depth buffer in [0, 1] to metric camera-frame z."""
        n, f = self.near, self.far
        zb = np.asarray(zbuffer, dtype=np.float64)
        return (f * n / (f - (f - n) * zb)).astype(np.float32)

    def as_dict(self) -> dict[str, list]:
        return {
            "K": self.K.tolist(),
            "R": self.R.tolist(),
            "t": self.t.tolist(),
            "width": self.width,
            "height": self.height,
        }


@dataclass
class RenderOutput:
    """One rendered frame. ``rgb`` (H, W, 3) uint8; ``depth`` (H, W) float32 metres (camera z);
    ``seg`` (H, W) int32 body ids (-1 background), or None when not requested."""

    rgb: np.ndarray
    depth: np.ndarray | None
    seg: np.ndarray | None


def render(
    client: Any,
    geometry: CameraGeometry,
    *,
    segmentation: bool = False,
    depth: bool = False,
    shadows: bool = False,
    light: dict[str, Any] | None = None,
    renderer: int | None = None,
) -> RenderOutput:
    """Render one frame from a PyBullet client.

    Args:
        client: a ``pybullet_utils.bullet_client.BulletClient``.
        geometry: the camera.
        segmentation: request the segmentation buffer (costs time; only when labels need it).
        depth: convert the depth buffer to metres.
        shadows: let the renderer cast shadows.
        light: optional ``lightDirection``, ``lightColor``, ``lightAmbientCoeff``,
            ``lightDiffuseCoeff``, ``lightSpecularCoeff`` keyword arguments.
        renderer: PyBullet renderer constant (TinyRenderer by default, or the EGL/OpenGL one).
    """
    import pybullet as p

    flags = 0 if segmentation else p.ER_NO_SEGMENTATION_MASK
    kwargs = dict(light or {})
    _, _, rgba, zbuf, seg = client.getCameraImage(
        geometry.width,
        geometry.height,
        viewMatrix=geometry.view_matrix(),
        projectionMatrix=geometry.projection_matrix(),
        shadow=int(shadows),
        flags=flags,
        renderer=p.ER_TINY_RENDERER if renderer is None else renderer,
        **kwargs,
    )
    h, w = geometry.height, geometry.width
    rgb = np.asarray(rgba, dtype=np.uint8).reshape(h, w, 4)[:, :, :3]
    out_depth = geometry.linear_depth(np.asarray(zbuf).reshape(h, w)) if depth else None
    out_seg = None
    if segmentation:
        seg_arr = np.asarray(seg, dtype=np.int64).reshape(h, w)
        # With link indices encoded, body id is the low 24 bits; background stays -1.
        out_seg = np.where(seg_arr < 0, -1, seg_arr & ((1 << 24) - 1)).astype(np.int32)
    return RenderOutput(rgb=np.ascontiguousarray(rgb), depth=out_depth, seg=out_seg)
