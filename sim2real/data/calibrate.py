"""Fit a scene camera to a few real frames whose object position is known in 3-D and in pixels.

The camera model is the project's (``sim2real.envs.camera``): square pixels, principal point
at the image centre, no lens distortion, unknown pose and vertical field of view. Two
solvers, picked by the points:

* **solvePnP + FOV search** (always run; the answer for coplanar points such as objects
  on a table): for a trial FOV the pose comes from OpenCV ``solvePnP`` (SQPnP, IPPE for
  planar points, and the iterative solver from the previous pose), refined with
  Levenberg-Marquardt; the FOV minimising the RMS reprojection error is found by a 0.25 deg
  grid over ``fov_range`` and a golden-section search around the best cell.
* **calibrateCamera** with fixed principal point and aspect ratio and no distortion, started
  from that answer, when there are at least 6 non-coplanar points; it is kept only if its
  error is lower.

The fitted pose becomes a :class:`CameraConfig` (eye, target on the optical axis, world
``up`` and ``roll_deg``) that ``CameraGeometry.from_config`` turns back into the same
rotation; this round trip is checked on every fit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from sim2real.atomic import write_text
from sim2real.data.label_pixels import load_correspondences
from sim2real.envs.camera import CameraConfig, CameraGeometry
from sim2real.envs.scene import SceneConfig
from sim2real.errors import DataError

logger = logging.getLogger(__name__)

GRID_STEP_DEG = 0.25
WORLD_UP = np.array([0.0, 0.0, 1.0])
PoseFit = tuple[float, np.ndarray, np.ndarray]  # rms_px, rvec, tvec


@dataclass(frozen=True)
class CalibrationResult:
    """A fitted camera and how well it explains the labels.

    Attributes:
        camera: the fitted camera at the labels' image size (or the scene's resolution
            when returned by :func:`calibrate_scene`).
        errors_px: ``(N,)`` reprojection error of each point, in pixels of the labelled image.
        rms_px: root mean square of ``errors_px``.
        method: ``"solvePnP+fov-search"`` or ``"calibrateCamera"``.
        files: the frame of each point (empty when unknown).
        reference_eye: a recorded camera position to compare with (``None`` if not given).
    """

    camera: CameraConfig
    errors_px: np.ndarray
    rms_px: float
    method: str
    files: tuple[str, ...] = ()
    reference_eye: tuple[float, float, float] | None = None

    @property
    def eye_offset_m(self) -> float | None:
        """Distance from ``reference_eye`` to the fitted eye, in metres."""
        if self.reference_eye is None:
            return None
        return float(np.linalg.norm(np.subtract(self.camera.eye, self.reference_eye)))

    def table(self) -> str:
        """Per-point reprojection errors and a summary, as aligned text."""
        names = self.files or tuple(f"#{i}" for i in range(len(self.errors_px)))
        width = max(len(n) for n in names)
        lines = [f"{'frame':<{width}}  error_px"]
        lines += [f"{n:<{width}}  {e:8.2f}" for n, e in zip(names, self.errors_px, strict=True)]
        cam = self.camera
        lines.append(
            f"RMS {self.rms_px:.2f} px, max {self.errors_px.max():.2f} px ({self.method}); "
            f"eye {_fmt(cam.eye)}, target {_fmt(cam.target)}, fov {cam.fov_deg:.2f} deg, "
            f"roll {cam.roll_deg:.2f} deg"
        )
        if self.reference_eye is not None:
            lines.append(
                f"recorded eye {_fmt(self.reference_eye)} vs fitted {_fmt(cam.eye)}: "
                f"{100 * self.eye_offset_m:.1f} cm apart"
            )
        return "\n".join(lines)


def _fmt(v: tuple[float, ...] | np.ndarray) -> str:
    return "(" + ", ".join(f"{x:.3f}" for x in v) + ")"


def calibrate_camera(
    points_3d: np.ndarray,
    uv: np.ndarray,
    image_size: tuple[int, int],
    fov_range: tuple[float, float] = (30.0, 70.0),
    initial: CameraConfig | None = None,
) -> CalibrationResult:
    """Fit pose and vertical field of view of a pinhole camera to 3-D/pixel correspondences.

    Args:
        points_3d: ``(N, 3)`` world points (metres), ``N >= 4``.
        uv: ``(N, 2)`` their pixels, continuous convention (pixel centres at ``i + 0.5``).
        image_size: ``(W, H)`` of the images the pixels were taken in.
        fov_range: vertical field-of-view bounds in degrees for the search.
        initial: an approximate camera; its pose seeds the solver and its ``near``/``far``
            are kept. Optional: SQPnP/IPPE need no starting point.

    Returns:
        The fitted camera at ``image_size``, per-point errors in pixels and the RMS.

    Raises:
        DataError: fewer than 4 points, mismatched shapes, non-finite values, or all points
            on one line.

    Example:
        >>> cam = CameraConfig(eye=(-1.7, 0.1, 1.6), target=(-0.5, 0.0, 0.3), width=640,
        ...                    height=480, fov_deg=42.0)
        >>> xy = np.stack(np.meshgrid(np.linspace(-1.2, -0.5, 4), np.linspace(-.5, .5, 4)), -1)
        >>> pts = np.concatenate([xy.reshape(-1, 2), np.full((16, 1), 0.33)], axis=1)
        >>> uv = CameraGeometry.from_config(cam).project(pts)
        >>> round(calibrate_camera(pts, uv, (640, 480)).camera.fov_deg, 3)
        42.0
    """
    points_3d, uv = _check_inputs(points_3d, uv, image_size, fov_range)
    width, height = int(image_size[0]), int(image_size[1])
    seed = _initial_pose(initial, points_3d) if initial is not None else None
    planar = _is_planar(points_3d)

    def fit(fov: float) -> PoseFit:
        return _pose_for_fov(points_3d, uv, _intrinsics(fov, width, height), planar, seed)

    fov = _search_fov(fit, fov_range)
    rms, rvec, tvec = fit(fov)
    method = "solvePnP+fov-search"
    if not planar and len(points_3d) >= 6:
        alt = _calibrate_camera_cv(points_3d, uv, (width, height), fov)
        if alt is not None and alt[0] < rms - 1e-9 and fov_range[0] <= alt[1] <= fov_range[1]:
            rms, fov, rvec, tvec = alt
            method = "calibrateCamera"
    if min(fov - fov_range[0], fov_range[1] - fov) < GRID_STEP_DEG:
        logger.warning(
            "fitted fov %.2f deg is at the edge of fov_range %s: widen the range", fov, fov_range
        )
    R, _ = cv2.Rodrigues(rvec)
    near = initial.near if initial is not None else 0.05
    far = initial.far if initial is not None else 6.0
    camera = camera_from_pose(R, tvec.ravel(), fov, (width, height), points_3d, near, far)
    errors = np.linalg.norm(CameraGeometry.from_config(camera).project(points_3d) - uv, axis=1)
    return CalibrationResult(
        camera=camera,
        errors_px=errors,
        rms_px=float(np.sqrt(np.mean(errors**2))),
        method=method,
    )


def _check_inputs(
    points_3d: np.ndarray,
    uv: np.ndarray,
    image_size: tuple[int, int],
    fov_range: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(points_3d, dtype=np.float64)
    q = np.asarray(uv, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise DataError(f"points_3d has shape {p.shape}, expected (N, 3)")
    if q.ndim != 2 or q.shape[1] != 2:
        raise DataError(f"uv has shape {q.shape}, expected (N, 2)")
    if len(p) != len(q):
        raise DataError(f"{len(p)} 3-D points but {len(q)} pixels, expected one pixel per point")
    if len(p) < 4:
        raise DataError(f"{len(p)} points, expected at least 4 to fit a camera pose and FOV")
    for name, a in (("points_3d", p), ("uv", q)):
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
        if bad.size:
            raise DataError(f"{name} rows {bad.tolist()} are not finite, expected numbers")
    if len(image_size) != 2 or min(image_size) <= 0:
        raise DataError(f"image_size is {image_size}, expected (W, H) > 0")
    if not 1.0 < fov_range[0] < fov_range[1] < 170.0:
        raise DataError(f"fov_range is {fov_range}, expected 1 < low < high < 170 degrees")
    spread = np.linalg.svd(p - p.mean(axis=0), compute_uv=False)
    if spread[1] < 1e-6 * max(spread[0], 1e-12):
        raise DataError("the 3-D points lie on one line, expected them spread over a plane")
    return p, q


def _is_planar(points: np.ndarray) -> bool:
    s = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    return bool(s[2] < 1e-6 * s[0])


def _intrinsics(fov_deg: float, width: int, height: int) -> np.ndarray:
    f = (height / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def _initial_pose(cfg: CameraConfig, points: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    geo = CameraGeometry.from_config(cfg)
    if (geo.world_to_camera(points)[:, 2] <= 0).any():
        return None  # the given camera does not see the points: no use as a seed
    rvec, _ = cv2.Rodrigues(geo.R)
    return rvec, geo.t.reshape(3, 1).copy()


def _pose_for_fov(
    points: np.ndarray,
    uv: np.ndarray,
    K: np.ndarray,
    planar: bool,
    seed: tuple[np.ndarray, np.ndarray] | None,
) -> PoseFit:
    """Best pose for fixed intrinsics: ``(rms_px, rvec, tvec)``; ``inf`` if none is valid."""
    starts: list[tuple[np.ndarray, np.ndarray]] = []
    methods = [cv2.SOLVEPNP_SQPNP] + ([cv2.SOLVEPNP_IPPE] if planar else [])
    for method in methods:
        ok, rvec, tvec = cv2.solvePnP(points, uv, K, None, flags=method)
        if ok:
            starts.append((rvec, tvec))
    if seed is not None:
        ok, rvec, tvec = cv2.solvePnP(
            points, uv, K, None, seed[0].copy(), seed[1].copy(), True, cv2.SOLVEPNP_ITERATIVE
        )
        if ok:
            starts.append((rvec, tvec))
    best = (math.inf, np.zeros((3, 1)), np.zeros((3, 1)))
    for rvec, tvec in starts:
        rvec, tvec = cv2.solvePnPRefineLM(points, uv, K, None, rvec.copy(), tvec.copy())
        R, _ = cv2.Rodrigues(rvec)
        if ((points @ R.T + tvec.ravel())[:, 2] <= 0).any():
            continue  # a mirror solution behind the camera
        proj, _ = cv2.projectPoints(points, rvec, tvec, K, None)
        rms = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - uv) ** 2, axis=1))))
        if rms < best[0]:
            best = (rms, rvec, tvec)
    return best


def _search_fov(fit: Callable[[float], PoseFit], fov_range: tuple[float, float]) -> float:
    """Grid over ``fov_range`` then golden-section search in the best grid cell."""
    lo, hi = fov_range
    grid = np.linspace(lo, hi, max(3, round((hi - lo) / GRID_STEP_DEG) + 1))
    costs = np.array([fit(float(f))[0] for f in grid])
    if not np.isfinite(costs).any():
        raise DataError(
            f"no camera with a vertical fov in {fov_range} deg sees all points in front of it"
        )
    k = int(np.argmin(costs))
    a, b = float(grid[max(k - 1, 0)]), float(grid[min(k + 1, len(grid) - 1)])
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - golden * (b - a), a + golden * (b - a)
    fc, fd = fit(c)[0], fit(d)[0]
    while b - a > 1e-5:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - golden * (b - a)
            fc = fit(c)[0]
        else:
            a, c, fc = c, d, fd
            d = a + golden * (b - a)
            fd = fit(d)[0]
    best = (a + b) / 2.0
    return best if fit(best)[0] <= costs[k] else float(grid[k])


def _calibrate_camera_cv(
    points: np.ndarray,
    uv: np.ndarray,
    size: tuple[int, int],
    fov: float,
) -> tuple[float, float, np.ndarray, np.ndarray] | None:
    """OpenCV calibrateCamera with only the focal length free; ``(rms, fov, rvec, tvec)``."""
    K = _intrinsics(fov, *size)
    flags = (
        cv2.CALIB_USE_INTRINSIC_GUESS
        | cv2.CALIB_FIX_PRINCIPAL_POINT
        | cv2.CALIB_FIX_ASPECT_RATIO
        | cv2.CALIB_ZERO_TANGENT_DIST
        | cv2.CALIB_FIX_K1
        | cv2.CALIB_FIX_K2
        | cv2.CALIB_FIX_K3
    )
    try:
        rms, K, _, rvecs, tvecs = cv2.calibrateCamera(
            [points.astype(np.float32)], [uv.astype(np.float32)], size, K, np.zeros(5), flags=flags
        )
    except cv2.error as exc:
        logger.debug("calibrateCamera failed (%s); keeping the FOV-search answer", exc)
        return None
    fov_fit = math.degrees(2.0 * math.atan((size[1] / 2.0) / K[1, 1]))
    return float(rms), fov_fit, rvecs[0], tvecs[0]


def camera_from_pose(
    R: np.ndarray,
    t: np.ndarray,
    fov_deg: float,
    image_size: tuple[int, int],
    points: np.ndarray | None = None,
    near: float = 0.05,
    far: float = 6.0,
) -> CameraConfig:
    """A :class:`CameraConfig` whose ``CameraGeometry`` has world-to-camera ``R``, ``t``.

    ``up`` is the world z axis (the camera's own up when it looks straight up or down) and
    ``roll_deg`` takes the rest. ``target`` is on the optical axis: where it meets the plane
    through the points' mean height when that is in front of the camera, else at their mean
    depth (1 m without points).
    """
    R = np.asarray(R, dtype=np.float64)
    eye = -R.T @ np.asarray(t, dtype=np.float64).ravel()
    forward = R[2]
    distance = 1.0
    if points is not None:
        depth = float(np.mean((points - eye) @ forward))
        distance = depth if depth > 0 else 1.0
        if forward[2] < -1e-3:
            along = (float(points[:, 2].mean()) - eye[2]) / forward[2]
            distance = along if 0 < along < 10 * max(depth, 1e-3) else distance
    up = WORLD_UP
    if np.linalg.norm(np.cross(forward, up)) < 1e-3:
        up = -R[1]
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    roll = math.degrees(math.atan2(float(R[0] @ down), float(R[0] @ right)))
    camera = CameraConfig(
        eye=tuple(float(x) for x in eye),
        target=tuple(float(x) for x in eye + distance * forward),
        up=tuple(float(x) for x in up),
        roll_deg=roll,
        fov_deg=fov_deg,
        width=int(image_size[0]),
        height=int(image_size[1]),
        near=near,
        far=far,
    )
    back = CameraGeometry.from_config(camera)
    assert np.allclose(back.R, R, atol=1e-9), f"rotation round trip failed: {back.R} vs {R}"
    assert np.allclose(back.eye, eye, atol=1e-9), "eye round trip failed"
    return camera


def calibrate_scene(
    scene_yaml: str | Path,
    real_dir: str | Path,
    uv_csv: str | Path | None,
    out_yaml: str | Path,
    *,
    fov_range: tuple[float, float] = (30.0, 70.0),
) -> CalibrationResult:
    """Fit a scene's camera to labelled real frames and write the calibrated scene YAML.

    Args:
        scene_yaml: a scene preset name or YAML; its camera seeds the fit and is the
            recorded position the fitted eye is compared with.
        real_dir: folder with the frames and ``labels.csv`` (``file,x_m,y_m,z_m[,u,v]``).
        uv_csv: a ``file,u,v`` CSV with the object's pixel in each labelled frame, or
            ``None`` to use the ``u,v`` columns of ``labels.csv``. Rows left empty are skipped.
        out_yaml: where the scene with the fitted camera goes (written atomically).
        fov_range: vertical field-of-view bounds in degrees.

    Returns:
        The fit, with the camera at the scene's rendering resolution and errors in pixels
        of the real frames.

    Raises:
        DataError: when the two label files do not list the same frames, a value is not a
            finite number, an image is missing or frames differ in size.

    Example:
        >>> r = calibrate_scene("kuka_cube", "real/kuka_cube/labelled",  # doctest: +SKIP
        ...                     "configs/labels/kuka_cube_uv.csv", "/tmp/kuka_calibrated.yaml")
        >>> print(r.table())  # doctest: +SKIP
    """
    cfg = SceneConfig.load(scene_yaml)
    files, points, uv, size = load_correspondences(real_dir, uv_csv)
    result = calibrate_camera(points, uv, size, fov_range, cfg.camera.resized(*size))
    cam = result.camera.model_copy(update={"near": cfg.camera.near, "far": cfg.camera.far})
    if not math.isclose(size[0] / size[1], cfg.camera.aspect, rel_tol=1e-3):
        logger.warning(
            "real frames are %dx%d but the scene renders %dx%d: a different aspect ratio "
            "shows a different horizontal field",
            *size,
            cfg.camera.width,
            cfg.camera.height,
        )
    cam = cam.resized(cfg.camera.width, cfg.camera.height)
    result = CalibrationResult(
        camera=cam,
        errors_px=result.errors_px,
        rms_px=result.rms_px,
        method=result.method,
        files=tuple(files),
        reference_eye=cfg.camera.eye,
    )
    _write_scene(cfg.model_copy(update={"camera": cam}), Path(out_yaml), result, scene_yaml)
    logger.info("camera calibration on %d frames of %s:\n%s", len(files), real_dir, result.table())
    return result


def _write_scene(
    cfg: SceneConfig, path: Path, result: CalibrationResult, source: str | Path
) -> None:
    text = (
        f"# {cfg.name}: camera fitted by sim2real.data.calibrate from {len(result.files)} "
        f"labelled frames (source scene {source});\n"
        f"# reprojection RMS {result.rms_px:.2f} px ({result.method}).\n" + cfg.to_yaml()
    )
    SceneConfig.model_validate(yaml.safe_load(text))  # what we write must load
    write_text(path, text)
