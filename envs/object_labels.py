"""Per-object labels of a rendered frame, with how much of each object the camera sees.

For every object of a scene (:class:`sim2real.envs.objects.LoadedObject`) a frame gets
(:class:`ObjectLabels`, as ``info["objects"][name]``):

* ``position_world``, ``position_base``, ``position_camera`` (3,): the object's centre (the
  centre of its hull's bounding box; the body's centre for the cube) in the world, robot-base
  and OpenCV camera frames;
* ``quaternion`` (4,): the base orientation ``(x, y, z, w)`` as PyBullet reports it;
* ``uv`` (2,): the centre projected to continuous pixels (may lie outside the image; NaN
  when the centre is behind the camera);
* ``box`` (4,): ``x0, y0, x1, y1`` pixel edges clipped to the image, absent when the
  object is not visible;
* ``visible_fraction`` in [0, 1]: the share of the object's silhouette inside the image and
  not occluded; ``in_frame_fraction``: the share inside the image, occlusion ignored.

Two modes, matching the envs' ``labels=`` levels:

* ``"pose"`` (cheap, no extra render): the silhouette is the object's convex hull projected
  (clipped at the near plane) as a polygon; ``visible_fraction`` = ``in_frame_fraction`` =
  the polygon's area inside the image rectangle over its whole area, and ``box`` the clipped
  polygon's bounds. **Occlusion is not counted** (an object hidden behind another still has
  its in-frame share), and a concave object's silhouette is its hull's.
* ``"full"`` (exact, from the segmentation buffer): ``box`` is the mask's extent,
  ``visible_pixels`` its pixel count, and ``visible_fraction`` = visible pixels over the
  object's whole unoccluded silhouette in pixels, off-image part included. That silhouette
  comes from :class:`SilhouetteRenderer` (the object alone, in a private client, through a
  camera with the same intrinsics whose viewport covers the whole projected hull), or,
  without one, from the hull polygon's area (exact for convex objects).

Example:
    >>> poly = np.array([[-10.0, 0.0], [10.0, 0.0], [10.0, 10.0], [-10.0, 10.0]])
    >>> float(polygon_area(clip_polygon(poly, 64, 48)) / polygon_area(poly))
    0.5
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from sim2real.envs.camera import CameraGeometry, render
from sim2real.envs.labels import mask_box, world_to_base
from sim2real.envs.objects.loading import LoadedObject, load_object
from sim2real.envs.objects.meshes import quat_matrix
from sim2real.envs.objects.specs import PARKED
from sim2real.errors import ConfigError

LabelMode = Literal["pose", "full"]

#: Per-object fields of a generated dataset, ``objects.NAME.FIELD`` (see :func:`dataset_fields`).
OBJECT_LABEL_SCHEMA = {
    "present": "bool () the object is in the scene in this sample (else the rest are NaN/0)",
    "position_world": "float32 (3,) object centre, world frame, metres",
    "position": "float32 (3,) object centre, robot-base frame, metres",
    "position_camera": "float32 (3,) object centre, OpenCV camera frame, metres",
    "quaternion": "float32 (4,) base orientation x, y, z, w, world frame",
    "uv": "float32 (2,) projected centre, continuous pixels (may lie outside the image)",
    "box": "float32 (4,) x0, y0, x1, y1 of the visible part, clipped to the image (NaN when "
    "not visible)",
    "visible_fraction": "float32 () share of the silhouette inside the image and not occluded",
}


@dataclass(frozen=True)
class ObjectLabels:
    """Labels of one object in one frame (see the module docstring)."""

    position_world: np.ndarray
    position_base: np.ndarray
    position_camera: np.ndarray
    quaternion: np.ndarray
    uv: np.ndarray
    box: np.ndarray | None
    visible_fraction: float
    in_frame_fraction: float
    visible_pixels: int = -1  # -1 in pose mode (no mask)

    @property
    def visible(self) -> bool:
        return self.box is not None

    def as_info(self) -> dict[str, Any]:
        """The ``info["objects"][name]`` mapping (``box`` absent when not visible)."""
        out: dict[str, Any] = {
            "position_world": self.position_world,
            "position_base": self.position_base,
            "position_camera": self.position_camera,
            "quaternion": self.quaternion,
            "uv": self.uv,
            "visible_fraction": self.visible_fraction,
            "in_frame_fraction": self.in_frame_fraction,
        }
        if self.box is not None:
            out["box"] = self.box
        if self.visible_pixels >= 0:
            out["visible_pixels"] = self.visible_pixels
        return out


# -- polygons ------------------------------------------------------------------------------
def convex_hull_2d(points: np.ndarray) -> np.ndarray:
    """Convex hull polygon of (N, 2) points (OpenCV's, in C: the labels' hot path)."""
    import cv2

    pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    if len(pts) < 3:
        return pts.astype(np.float64)
    return cv2.convexHull(pts).reshape(-1, 2).astype(np.float64)


def polygon_area(poly: np.ndarray) -> float:
    """Area of a simple polygon (shoelace); 0 for fewer than 3 vertices."""
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    twice = np.dot(x[:-1], y[1:]) - np.dot(y[:-1], x[1:]) + x[-1] * y[0] - y[-1] * x[0]
    return float(abs(twice) / 2)


def clip_polygon(poly: np.ndarray, width: float, height: float) -> np.ndarray:
    """A convex polygon clipped to the image rectangle ``[0, width] x [0, height]``
    (Sutherland-Hodgman)."""
    poly = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    if len(poly) == 0:
        return poly
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    if lo[0] >= 0 and lo[1] >= 0 and hi[0] <= width and hi[1] <= height:
        return poly  # inside: the common case, no clipping
    if hi[0] <= 0 or hi[1] <= 0 or lo[0] >= width or lo[1] >= height:
        return poly[:0]  # wholly outside
    out = list(poly)
    for axis, bound, keep_low in (
        (0, 0.0, False),
        (0, width, True),
        (1, 0.0, False),
        (1, height, True),
    ):
        if not out:
            break
        src, out = out, []
        for i, cur in enumerate(src):
            prev = src[i - 1]
            cur_in = cur[axis] <= bound if keep_low else cur[axis] >= bound
            prev_in = prev[axis] <= bound if keep_low else prev[axis] >= bound
            if cur_in != prev_in:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                out.append(prev + t * (cur - prev))
            if cur_in:
                out.append(cur)
    return np.array(out).reshape(-1, 2)


def hull_silhouette(geometry: CameraGeometry, points: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The silhouette (convex polygon, pixels) of a convex body given by its hull vertices
    (world frame) and edges, clipped at the camera's near plane; empty when behind it."""
    pc = geometry.world_to_camera(points)
    near = geometry.near
    if pc[:, 2].min() >= near:  # all in front: the common case
        uvw = pc @ geometry.K.T
        return convex_hull_2d(uvw[:, :2] / uvw[:, 2:3])
    keep = [pc[pc[:, 2] >= near]]
    if len(edges):
        a, b = pc[edges[:, 0]], pc[edges[:, 1]]
        cross = (a[:, 2] - near) * (b[:, 2] - near) < 0
        if cross.any():
            a, b = a[cross], b[cross]
            t = (near - a[:, 2]) / (b[:, 2] - a[:, 2])
            keep.append(a + t[:, None] * (b - a))
    front = np.concatenate(keep)
    if len(front) < 3:
        return np.zeros((0, 2))
    uvw = front @ geometry.K.T
    return convex_hull_2d(uvw[:, :2] / uvw[:, 2:3])


def _polygon_box(poly: np.ndarray) -> np.ndarray:
    """Pixel-edge box (floor/ceil) of a polygon already clipped to the image."""
    lo, hi = np.floor(poly.min(axis=0)), np.ceil(poly.max(axis=0))
    return np.array([lo[0], lo[1], hi[0], hi[1]], dtype=np.float32)


# -- the exact silhouette ------------------------------------------------------------------
class SilhouetteRenderer:
    """Each object's whole unoccluded silhouette in pixels, rendered alone.

    Holds a private DIRECT client with a copy of every object (same files, same geometry).
    For a frame, the object is posed there and rendered through a camera with the frame's
    intrinsics, shifted so its viewport covers the whole projected hull (off-image part
    included; pixel grids aligned with the frame's), downscaled past ``max_side`` pixels.
    Articulated objects are rendered at their rest joints. An object whose pose and camera
    are unchanged since its last call is not rendered again.

    Example:
        >>> from sim2real.envs.objects import ObjectSpec  # doctest: +SKIP
        >>> sil = SilhouetteRenderer(scene_objects)  # doctest: +SKIP
        >>> full, in_frame = sil.pixels("cube", pos, orn, geometry)  # doctest: +SKIP
    """

    def __init__(self, objects: Mapping[str, LoadedObject], *, max_side: int = 512) -> None:
        import pybullet as p
        from pybullet_utils.bullet_client import BulletClient

        from sim2real.envs.quiet import quiet_native_output

        with quiet_native_output():  # PyBullet prints "argv[0]=" on every connect
            self.client = BulletClient(p.DIRECT)
        self.objects = dict(objects)
        self.max_side = int(max_side)
        self._last: dict[str, tuple[tuple[Any, ...], tuple[float, float]]] = {}
        self.bodies = {
            name: load_object(self.client, obj.spec, name=name, file=obj.file).body
            for name, obj in self.objects.items()
        }

    def pixels(
        self,
        name: str,
        position: np.ndarray,
        orientation: np.ndarray,
        geometry: CameraGeometry,
    ) -> tuple[float, float]:
        """``(whole, in_frame)``: the object's silhouette area in pixels of ``geometry``,
        all of it and the part inside the image."""
        if name not in self.objects:
            raise ConfigError(f"silhouette of {name!r}: expected one of {sorted(self.objects)}")
        obj = self.objects[name]
        key = (
            np.round(np.asarray(position, dtype=np.float64), 6).tobytes(),
            np.round(np.asarray(orientation, dtype=np.float64), 6).tobytes(),
            geometry.K.tobytes() + geometry.R.tobytes() + geometry.t.tobytes(),
            geometry.width,
            geometry.height,
        )
        cached = self._last.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]  # nothing moved since the last frame (a resting target)
        result = self._pixels(obj, position, orientation, geometry)
        self._last[name] = (key, result)
        return result

    def _pixels(
        self,
        obj: LoadedObject,
        position: np.ndarray,
        orientation: np.ndarray,
        geometry: CameraGeometry,
    ) -> tuple[float, float]:
        name = obj.name
        poly = hull_silhouette(geometry, obj.points_world(position, orientation), obj.hull_edges)
        if len(poly) < 3:
            return 0.0, 0.0
        u0, v0 = (math.floor(x) - 2 for x in poly.min(axis=0))
        u1, v1 = (math.ceil(x) + 2 for x in poly.max(axis=0))
        s = min(1.0, self.max_side / max(u1 - u0, v1 - v0))
        K = geometry.K.copy()
        K[0, 0] *= s
        K[1, 1] *= s
        K[0, 2] = (K[0, 2] - u0) * s
        K[1, 2] = (K[1, 2] - v0) * s
        w, h = max(1, math.ceil((u1 - u0) * s)), max(1, math.ceil((v1 - v0) * s))
        alone = CameraGeometry(K, geometry.R, geometry.t, w, h, geometry.near, geometry.far)
        body = self.bodies[name]
        c = self.client
        c.resetBasePositionAndOrientation(
            body, list(map(float, position)), list(map(float, orientation))
        )
        try:
            mask = render(c, alone, segmentation=True).seg == body
        finally:
            c.resetBasePositionAndOrientation(body, PARKED, obj.rest_orientation.tolist())
        jj, ii = np.nonzero(mask)
        u = (ii + 0.5) / s + u0
        v = (jj + 0.5) / s + v0
        inside = (u >= 0) & (u < geometry.width) & (v >= 0) & (v < geometry.height)
        return float(mask.sum()) / s**2, float(inside.sum()) / s**2

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client = None  # type: ignore[assignment]


# -- labels --------------------------------------------------------------------------------
def is_parked(position: np.ndarray) -> bool:
    """A body at the parking height (out of the scene this episode)."""
    return bool(position[2] > PARKED[2] - 1.0)


def label_object(
    geometry: CameraGeometry,
    obj: LoadedObject,
    position: np.ndarray,
    orientation: np.ndarray,
    *,
    base_position: np.ndarray,
    base_yaw: float = 0.0,
    seg: np.ndarray | None = None,
    silhouettes: SilhouetteRenderer | None = None,
) -> ObjectLabels:
    """Labels of one object at a base pose: cheap without ``seg``, exact with it."""
    pos = np.asarray(position, dtype=np.float64)
    orn = np.asarray(orientation, dtype=np.float64)
    rot = quat_matrix(orn)
    center = pos + rot @ obj.center
    cam = geometry.R @ center + geometry.t
    uv = (geometry.K @ cam)[:2] / cam[2] if cam[2] > 0 else np.full(2, np.nan)
    poly = hull_silhouette(geometry, pos + obj.hull @ rot.T, obj.hull_edges)
    whole = polygon_area(poly)
    clipped = clip_polygon(poly, geometry.width, geometry.height) if whole > 0 else poly[:0]
    in_frame_area = polygon_area(clipped)
    in_frame = min(1.0, in_frame_area / whole) if whole > 0 else 0.0
    if seg is None:
        box = _polygon_box(clipped) if in_frame_area > 0 else None
        visible, pixels = in_frame, -1
    else:
        mask = seg == obj.body
        pixels = int(mask.sum())
        box = mask_box(mask) if pixels else None
        if silhouettes is not None:
            whole_px, in_px = silhouettes.pixels(obj.name, pos, orn, geometry)
            in_frame = min(1.0, in_px / whole_px) if whole_px > 0 else 0.0
        else:
            whole_px = whole
        visible = min(1.0, pixels / whole_px) if whole_px > 0 else 0.0
    return ObjectLabels(
        position_world=center,
        position_base=world_to_base(center, np.asarray(base_position), base_yaw),
        position_camera=cam,
        quaternion=orn,
        uv=uv,
        box=box,
        visible_fraction=float(visible),
        in_frame_fraction=float(in_frame),
        visible_pixels=pixels,
    )


def object_labels(
    client: Any,
    geometry: CameraGeometry,
    objects: Mapping[str, LoadedObject],
    *,
    base_position: np.ndarray,
    base_yaw: float = 0.0,
    seg: np.ndarray | None = None,
    silhouettes: SilhouetteRenderer | None = None,
    names: Iterable[str] | None = None,
) -> dict[str, ObjectLabels]:
    """Labels of every object in the frame, by instance name (poses read from ``client``).

    Args:
        client: the PyBullet client the frame was rendered from.
        geometry: the frame's camera.
        objects: instance name -> loaded object.
        base_position, base_yaw: the robot base, for ``position_base``.
        seg: the frame's segmentation buffer (body ids): exact mode; None: cheap mode.
        silhouettes: whole unoccluded silhouettes for exact mode (else hull polygon areas).
        names: the objects in the scene this frame (default: every one not parked).
    """
    chosen = list(names) if names is not None else None
    out: dict[str, ObjectLabels] = {}
    for name, obj in objects.items():
        if chosen is not None and name not in chosen:
            continue
        pos, orn = (
            np.asarray(v, dtype=np.float64) for v in client.getBasePositionAndOrientation(obj.body)
        )
        if chosen is None and is_parked(pos):
            continue
        out[name] = label_object(
            geometry,
            obj,
            pos,
            orn,
            base_position=base_position,
            base_yaw=base_yaw,
            seg=seg,
            silhouettes=silhouettes,
        )
    return out


def dataset_fields(
    labels: Mapping[str, ObjectLabels], instance_names: Iterable[str], frame: str = "robot_base"
) -> dict[str, np.ndarray]:
    """Fixed-shape dataset fields ``objects.NAME.FIELD`` (:data:`OBJECT_LABEL_SCHEMA`) for
    every instance a scene can show; an instance absent from ``labels`` gets
    ``present=False``, NaN vectors and ``visible_fraction`` 0. ``position`` is in ``frame``:
    ``robot_base``, or ``camera`` for a scene without a robot (then equal to
    ``position_camera``)."""
    if frame not in ("robot_base", "camera"):
        raise ConfigError(f"frame {frame!r}: expected 'robot_base' or 'camera'")
    out: dict[str, np.ndarray] = {}
    nan = np.float32("nan")
    for name in instance_names:
        lab = labels.get(name)
        key = f"objects.{name}."
        out[key + "present"] = np.array(lab is not None)
        if lab is None:
            for field, n in (("position_world", 3), ("position", 3), ("position_camera", 3)):
                out[key + field] = np.full(n, nan, dtype=np.float32)
            out[key + "quaternion"] = np.full(4, nan, dtype=np.float32)
            out[key + "uv"] = np.full(2, nan, dtype=np.float32)
            out[key + "box"] = np.full(4, nan, dtype=np.float32)
            out[key + "visible_fraction"] = np.array(0.0, dtype=np.float32)
            continue
        out[key + "position_world"] = lab.position_world.astype(np.float32)
        position = lab.position_camera if frame == "camera" else lab.position_base
        out[key + "position"] = position.astype(np.float32)
        out[key + "position_camera"] = lab.position_camera.astype(np.float32)
        out[key + "quaternion"] = lab.quaternion.astype(np.float32)
        out[key + "uv"] = lab.uv.astype(np.float32)
        box = lab.box if lab.box is not None else np.full(4, nan)
        out[key + "box"] = np.asarray(box, dtype=np.float32)
        out[key + "visible_fraction"] = np.array(lab.visible_fraction, dtype=np.float32)
    return out


#: ``objects.NAME.position`` of a scene without a robot (:func:`dataset_fields`).
CAMERA_POSITION = "float32 (3,) object centre, OpenCV camera frame (no robot), metres"


def dataset_schema(instance_names: Iterable[str], frame: str = "robot_base") -> dict[str, str]:
    """The manifest's label-schema entries of :func:`dataset_fields`."""
    schema = dict(OBJECT_LABEL_SCHEMA)
    if frame == "camera":
        schema["position"] = CAMERA_POSITION
    return {
        f"objects.{name}.{field}": text for name in instance_names for field, text in schema.items()
    }
