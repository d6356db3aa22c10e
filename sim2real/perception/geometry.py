"""Keypoint -> 3-D position through a known camera and a known plane, and position routes.

A keypoint head finds the cube's centre in the image; with the camera's intrinsics and pose
and the height of the plane the centre lies on (table top + half the cube), the ray through
that pixel gives the 3-D position. :class:`PlaneCamera` holds exactly that (plain numpy, no
simulator), is stored in the encoder card under ``"camera"`` and rebuilt from it, so the
evaluation and the runtime need neither the scene nor PyBullet.

Conventions: ``K`` is at the encoder's input size; pixels are continuous (pixel ``i`` covers
``[i, i+1)``, as in ``sim2real.envs.camera``); ``R, t`` map points of ``frame`` (the robot
base frame) to the OpenCV camera frame; ``plane_z`` is in ``frame``.

A *route* is a way to get a position from an encoder: ``"position_head"`` (3-D regression),
``"keypoint_plane"`` (keypoint head + back-projection) or ``"keypoint_relative"`` (two
keypoints, the cube's and the gripper's, each back-projected, the cube's onto its plane and
the gripper's onto the height the robot reports; their difference is added to the gripper's
reported position). The card's ``position_route`` names the default, chosen on simulated
validation error by the pretraining loop.

Why ``keypoint_relative``: a camera whose pose is a few centimetres or degrees off moves both
back-projected points by nearly the same amount when they are close, so their difference,
which is what a reach acts on, keeps little of the calibration error (it vanishes as the
gripper reaches the cube), while an absolute position keeps all of it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim2real.errors import CheckpointError, ConfigError, DataError

logger = logging.getLogger(__name__)

POSITION_HEAD = "position"
KEYPOINT_HEAD = "keypoint"
ROUTES = ("position_head", "keypoint_plane", "keypoint_relative")
#: Routes that need the gripper's position (``ee``) at inference.
EE_ROUTES = ("keypoint_relative",)
GRIPPER_KEYPOINT = "gripper"
PIXEL_CONVENTION = "continuous: pixel i covers [i, i+1), principal point in these units"


@dataclass(frozen=True)
class PlaneCamera:
    """A pinhole camera plus the plane ``z = plane_z`` that target points lie on.

    Attributes:
        K: ``(3, 3)`` intrinsics for a ``width x height`` image.
        R: ``(3, 3)`` rotation, ``frame`` -> OpenCV camera frame.
        t: ``(3,)`` translation, ``frame`` -> camera frame.
        width: image width ``K`` refers to.
        height: image height ``K`` refers to.
        plane_z: height of the plane in ``frame`` (metres).
        frame: name of the frame of ``R``, ``t`` and the positions (``robot_base``).

    Example:
        >>> cam = PlaneCamera(np.array([[50., 0, 32], [0, 50, 24], [0, 0, 1]]),
        ...                   np.diag([1., -1, -1]), np.array([0., 0, 2]), 64, 48, 0.0)
        >>> cam.backproject_normalised(np.zeros((1, 2))).round(6).tolist()
        [[0.0, 0.0, 0.0]]
    """

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    width: int
    height: int
    plane_z: float
    frame: str = "robot_base"

    @property
    def eye(self) -> np.ndarray:
        """Camera centre in ``frame``, ``(3,)``."""
        return -self.R.T @ self.t

    def project(
        self, points: np.ndarray, width: int | None = None, height: int | None = None
    ) -> np.ndarray:
        """Project points of ``frame`` to continuous pixels of a ``width x height`` image.

        The image is a stretch of the camera's (``resize_frames`` semantics), so pixel
        coordinates scale with the size. Default size: the camera's own.

        Shape:
            - points: ``(..., 3)``; returns ``(..., 2)`` ``(u, v)``.
        """
        pc = np.asarray(points, dtype=np.float64) @ self.R.T + self.t
        uv = (pc @ self.K.T)[..., :2] / pc[..., 2:3]
        scale = np.array(
            [(width or self.width) / self.width, (height or self.height) / self.height]
        )
        return uv * scale

    def backproject_normalised(self, xy: np.ndarray, plane_z: Any = None) -> np.ndarray:
        """Normalised image coordinates (``[-1, 1]``, ``align_corners=False``) -> 3-D points.

        Args:
            xy: normalised coordinates.
            plane_z: the height to intersect at instead of :attr:`plane_z`: a number, or one
                per point (``(...)``, broadcast against ``xy``'s leading shape).

        Shape:
            - xy: ``(..., 2)``; returns ``(..., 3)`` points on ``z = plane_z`` in ``frame``.
        """
        z = self.plane_z if plane_z is None else np.asarray(plane_z, dtype=np.float64)
        xy = np.asarray(xy, dtype=np.float64)
        uv = (xy + 1.0) * 0.5 * np.array([self.width, self.height])
        rays = np.concatenate([uv, np.ones((*uv.shape[:-1], 1))], axis=-1)
        rays = rays @ np.linalg.inv(self.K).T @ self.R  # camera rays rotated into ``frame``
        eye = self.eye
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (z - eye[2]) / rays[..., 2]
        return eye + s[..., None] * rays

    def to_card(self) -> dict[str, Any]:
        """JSON form stored as the card's ``camera``."""
        return {
            "K": self.K.tolist(),
            "R": self.R.tolist(),
            "t": self.t.tolist(),
            "width": int(self.width),
            "height": int(self.height),
            "plane_z": float(self.plane_z),
            "frame": self.frame,
            "pixels": PIXEL_CONVENTION,
        }

    @classmethod
    def from_card(cls, data: Mapping[str, Any]) -> PlaneCamera:
        """Inverse of :meth:`to_card`; :class:`CheckpointError` on a missing or bad entry."""
        try:
            cam = cls(
                K=np.asarray(data["K"], dtype=np.float64).reshape(3, 3),
                R=np.asarray(data["R"], dtype=np.float64).reshape(3, 3),
                t=np.asarray(data["t"], dtype=np.float64).reshape(3),
                width=int(data["width"]),
                height=int(data["height"]),
                plane_z=float(data["plane_z"]),
                frame=str(data.get("frame", "robot_base")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"card 'camera' entry: expected K, R, t, width, height, plane_z; got {exc!r}"
            ) from exc
        return cam


def object_height(scene: Mapping[str, Any]) -> float:
    """The target's height in a manifest's scene: ``cube.size`` (its last edge), or the
    target entry of ``objects:`` (:func:`sim2real.envs.objects.specs.scene_object_size`)."""
    if "cube" in scene:
        return float(np.atleast_1d(np.asarray(scene["cube"]["size"], dtype=np.float64))[-1])
    from sim2real.envs.objects.specs import scene_object_size

    return scene_object_size(scene)


def nominal_camera(manifest: Mapping[str, Any], width: int, height: int) -> PlaneCamera:
    """The scene's nominal camera and cube plane, from a dataset manifest, in the base frame.

    Reads ``spec.scene`` (camera, ``table.top_height``, the target's size, robot base pose), so
    the camera is whatever the dataset was rendered with, never a hard-coded one.

    Raises:
        DataError: the manifest has no scene with a camera, table and cube.

    Example:
        >>> cam = nominal_camera(ShardedDataset("data/kuka").manifest, 128, 96)  # doctest: +SKIP
    """
    from sim2real.envs.camera import CameraConfig, CameraGeometry

    scene = manifest.get("spec", {}).get("scene")
    try:
        cfg = CameraConfig(**scene["camera"]).resized(width, height)
        plane_z = float(scene["table"]["top_height"]) + 0.5 * object_height(scene)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            "dataset manifest: expected spec.scene with camera, table.top_height and cube.size "
            f"(a dataset from `sim2real generate`), got {exc!r}"
        ) from exc
    robot = scene.get("robot", {})
    if robot is None:
        raise DataError(
            "dataset manifest: the scene has no robot (robot: null), so positions are in the "
            "camera frame, where the table is no plane z = const; expected a scene with a robot"
        )
    geom = CameraGeometry.from_config(cfg)
    base = np.asarray(robot.get("base_position", (0.0, 0.0, 0.0)), dtype=np.float64)
    yaw = np.radians(float(robot.get("base_yaw_deg", 0.0)))
    c, s = np.cos(yaw), np.sin(yaw)
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # base -> world rotation
    return PlaneCamera(
        K=geom.K,
        R=geom.R @ rz,
        t=geom.R @ base + geom.t,
        width=width,
        height=height,
        plane_z=plane_z - float(base[2]),
    )


def table_crop(
    manifest: Mapping[str, Any], width: int, height: int, multiple: int = 8
) -> tuple[int, int, int, int]:
    """The region of interest around the scene's table, in pixels of a ``width x height`` frame.

    Projects the table top's corners, and the same corners raised by the cube's height,
    through the nominal camera (:func:`nominal_camera`): a cube resting anywhere on the table
    lies inside, whole. The bounding box is widened outward to multiples of ``multiple``
    pixels (a CNN's feature stride, so the feature map tiles the crop) and clipped to the
    frame. It is computed from the scene description only, never from real frames.

    Raises:
        DataError: the manifest has no scene with a camera, table and cube.

    Example:
        >>> table_crop(ShardedDataset("data/kuka").manifest, 160, 120)  # doctest: +SKIP
        (0, 32, 160, 120)
    """
    cam = nominal_camera(manifest, width, height)
    scene = manifest["spec"]["scene"]
    try:
        cx, cy = (float(v) for v in scene["table"]["center"][:2])
        sx, sy = (float(v) for v in scene["table"]["size"][:2])
        top = float(scene["table"]["top_height"])
        cube = object_height(scene)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"dataset manifest: expected spec.scene.table with center, size, top_height; {exc!r}"
        ) from exc
    robot = scene.get("robot", {})
    base = np.asarray(robot.get("base_position", (0.0, 0.0, 0.0)), dtype=np.float64)
    yaw = np.radians(float(robot.get("base_yaw_deg", 0.0)))
    c, s = np.cos(yaw), np.sin(yaw)
    world_to_base = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    corners = np.array(
        [
            [cx + dx * sx / 2, cy + dy * sy / 2, z]
            for dx in (-1, 1)
            for dy in (-1, 1)
            for z in (top, top + cube)
        ]
    )
    uv = cam.project((corners - base) @ world_to_base.T)
    m = max(int(multiple), 1)
    x0, y0 = (int(np.floor(v / m)) * m for v in uv.min(axis=0))
    x1, y1 = (int(np.ceil(v / m)) * m for v in uv.max(axis=0))
    return max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)


def position_frame(card: Mapping[str, Any]) -> str | None:
    """The frame of the card's position head: ``robot_base`` (the cube centre), or
    ``end_effector`` (cube centre minus the end effector's position, robot-base axes: the
    head of ``pretrain(position_target="ee_relative")``); None without a position head."""
    head = card.get("heads", {}).get(POSITION_HEAD)
    return None if head is None else head.get("frame", "robot_base")


def route_positions(
    outputs: Mapping[str, np.ndarray], card: Mapping[str, Any], ee: np.ndarray | None = None
) -> dict:
    """Positions ``(N, 3)`` for every route the heads and card allow.

    Args:
        outputs: raw head outputs (``Encoder.predict`` or numpy of ``forward``).
        card: the encoder card (its ``camera`` enables ``keypoint_plane``).
        ee: ``(N, 3)`` or ``(3,)`` end-effector positions (robot-base frame), which an
            end-effector-relative position head needs; without them it offers no route.

    Returns:
        ``{route: (N, 3) float64}``.
    """
    routes: dict[str, np.ndarray] = {}
    if POSITION_HEAD in outputs:
        pred = np.asarray(outputs[POSITION_HEAD], dtype=np.float64)
        if position_frame(card) == "end_effector":
            if ee is not None:
                routes["position_head"] = pred + np.asarray(ee, dtype=np.float64)
        else:
            routes["position_head"] = pred
    if KEYPOINT_HEAD in outputs and card.get("camera"):
        cam = PlaneCamera.from_card(card["camera"])
        keypoints = np.asarray(outputs[KEYPOINT_HEAD], dtype=np.float64)
        routes["keypoint_plane"] = cam.backproject_normalised(keypoints[:, 0])
        names = card.get("heads", {}).get(KEYPOINT_HEAD, {}).get("names", [])
        if ee is not None and GRIPPER_KEYPOINT in names:
            routes["keypoint_relative"] = relative_position(
                cam, keypoints[:, 0], keypoints[:, names.index(GRIPPER_KEYPOINT)], ee
            )
    return routes


def relative_position(
    cam: PlaneCamera, cube_xy: np.ndarray, gripper_xy: np.ndarray, ee: np.ndarray
) -> np.ndarray:
    """The cube's position from its keypoint, the gripper's keypoint and the gripper's position.

    The cube's keypoint goes onto the cube's plane, the gripper's onto the plane at the
    gripper's reported height; the cube is the reported gripper position plus the difference.
    Its height is therefore the cube's plane whatever the keypoints say.

    Shape:
        - cube_xy, gripper_xy: ``(N, 2)`` normalised; ee: ``(N, 3)`` or ``(3,)`` robot-base
          frame; returns ``(N, 3)``.

    Example:
        >>> cam = PlaneCamera(np.array([[50., 0, 32], [0, 50, 24], [0, 0, 1]]),
        ...                   np.diag([1., -1, -1]), np.array([0., 0, 2]), 64, 48, 0.0)
        >>> relative_position(cam, np.zeros((1, 2)), np.zeros((1, 2)),
        ...                   np.array([0.1, 0.0, 0.5])).round(6).tolist()
        [[0.1, 0.0, 0.0]]
    """
    ee = np.broadcast_to(np.asarray(ee, dtype=np.float64), (len(cube_xy), 3))
    cube = cam.backproject_normalised(cube_xy)
    gripper = cam.backproject_normalised(gripper_xy, plane_z=ee[:, 2])
    return ee + cube - gripper


def predict_positions(
    encoder: Any,
    frames: np.ndarray,
    colour: str = "RGB",
    route: str | None = None,
    ee: np.ndarray | None = None,
) -> np.ndarray:
    """3-D positions in the card's frame (``robot_base``, metres) by the card's chosen route.

    Args:
        encoder: a loaded :class:`~sim2real.perception.encoder.Encoder`.
        frames: uint8 ``(H, W, 3)`` or ``(N, H, W, 3)`` at any resolution.
        colour: channel order of ``frames`` (``RGB`` or ``BGR``).
        route: one of :data:`ROUTES`; default: the card's
            ``position_route``.
        ee: end-effector positions ``(N, 3)`` (robot-base frame, e.g. the proprio's last
            three values): required by an end-effector-relative position head.

    Raises:
        ConfigError: the route is unknown or not available for this encoder.
        InputError: frames of the wrong dtype/shape, or an unknown colour order.

    Shape:
        - returns ``(N, 3)`` float64.

    Example:
        >>> enc = Encoder.load("runs/kuka/encoder")  # doctest: +SKIP
        >>> predict_positions(enc, frame_rgb).shape  # doctest: +SKIP
        (1, 3)
    """
    route = route or encoder.card.get("position_route") or _fallback_route(encoder.card)
    if route not in ROUTES:
        raise ConfigError(f"route={route!r}: expected one of {list(ROUTES)}")
    routes = route_positions(encoder.predict(frames, colour=colour), encoder.card, ee)
    if route == "position_head" and route not in routes and ee is None:
        raise ConfigError(
            "this encoder's position head predicts the cube relative to the end effector "
            "(frame 'end_effector'): expected ee=(N, 3) end-effector positions, got None"
        )
    if route in EE_ROUTES and ee is None:
        raise ConfigError(
            f"route {route!r} places the cube relative to the gripper: expected ee=(N, 3) "
            "end-effector positions (robot-base frame), got None"
        )
    if route not in routes:
        raise ConfigError(
            f"route {route!r} is not available for this encoder: it offers {sorted(routes)} "
            f"(heads {sorted(encoder.heads)}, camera in card: {bool(encoder.card.get('camera'))})"
        )
    return routes[route]


def _fallback_route(card: Mapping[str, Any]) -> str:
    heads = card.get("heads", {})
    if POSITION_HEAD in heads:
        return "position_head"
    if KEYPOINT_HEAD in heads and card.get("camera"):
        return "keypoint_plane"
    raise ConfigError(
        f"encoder has no route to a 3-D position: expected a {POSITION_HEAD!r} head, or a "
        f"{KEYPOINT_HEAD!r} head with a camera in its card; heads are {sorted(heads)}"
    )


def position_errors_cm(pred: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample Euclidean errors in cm: ``{"xy": (N,), "xyz": (N,)}``."""
    diff = (np.asarray(pred, dtype=np.float64) - np.asarray(target, dtype=np.float64)) * 100.0
    return {
        "xy": np.linalg.norm(diff[:, :2], axis=1),
        "xyz": np.linalg.norm(diff, axis=1),
    }


def summarise(errors: np.ndarray) -> dict[str, float]:
    """Mean / median / p90 of a 1-D error array (NaN-free).

    Example:
        >>> summarise(np.array([1.0, 2.0, 3.0]))["median"]
        2.0
    """
    e = np.asarray(errors, dtype=np.float64)
    if e.size == 0:
        raise DataError("no errors to summarise: expected at least one sample")
    return {
        "mean": float(e.mean()),
        "median": float(np.median(e)),
        "p90": float(np.percentile(e, 90)),
    }
