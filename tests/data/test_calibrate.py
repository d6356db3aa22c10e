"""Camera calibration from 3-D/pixel correspondences, and the pixel-labelling helpers."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pybullet as p
import pytest
from pybullet_utils.bullet_client import BulletClient

from sim2real.data.calibrate import (
    calibrate_camera,
    calibrate_scene,
    camera_from_pose,
)
from sim2real.data.label_pixels import (
    display_available,
    label_pixels,
    load_correspondences,
    overlay_pixels,
    read_pixel_labels,
    write_pixel_labels,
)
from sim2real.envs.camera import CameraConfig, CameraGeometry, render
from sim2real.envs.scene import Scene, SceneConfig
from sim2real.errors import DataError

SCENE = SceneConfig.load("kuka_cube")
SIZE = (640, 480)


def _true_camera() -> CameraConfig:
    """The kuka_cube camera moved by a few cm and degrees: the one the fit must recover."""
    cam = SCENE.camera
    return cam.model_copy(
        update={
            "eye": tuple(np.add(cam.eye, (0.04, -0.03, 0.05))),
            "target": tuple(np.add(cam.target, (0.03, 0.05, -0.04))),
            "roll_deg": 1.5,
            "fov_deg": 43.0,
        }
    )


def _grid() -> np.ndarray:
    """16 cube centres on the kuka_cube table, all fully in view, (16, 3)."""
    xs, ys = np.meshgrid(np.linspace(-1.1, -0.55, 4), np.linspace(-0.4, 0.4, 4))
    z = np.full(xs.size, SCENE.cube_z)
    return np.stack([xs.ravel(), ys.ravel(), z], axis=1)


def _rotation_deg(a: np.ndarray, b: np.ndarray) -> float:
    cos = (np.trace(a.T @ b) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


@pytest.fixture(scope="module")
def kuka_scene() -> Iterator[Scene]:
    client = BulletClient(p.DIRECT)
    try:
        yield Scene(client, SCENE)
    finally:
        client.disconnect()


def _mask_centroids(scene: Scene, camera: CameraConfig, points: np.ndarray) -> np.ndarray:
    """Pixel centre of the cube's segmentation mask at each position (continuous pixels)."""
    geometry = CameraGeometry.from_config(camera)
    uv = []
    for point in points:
        scene.place_cube(point[:2])
        seg = render(scene.client, geometry, segmentation=True).seg
        ys, xs = np.nonzero(seg == scene.cube)
        assert xs.size > 50, f"cube at {point} is not visible"
        uv.append((xs.mean() + 0.5, ys.mean() + 0.5))
    return np.array(uv)


@pytest.mark.parametrize("source", ["projection", "render"])
def test_recovers_known_camera(source: str, kuka_scene: Scene) -> None:
    truth = _true_camera()
    points = _grid()
    if source == "projection":
        uv = CameraGeometry.from_config(truth).project(points)
    else:
        uv = _mask_centroids(kuka_scene, truth, points)
    result = calibrate_camera(points, uv, SIZE, initial=SCENE.camera)
    fitted, expected = CameraGeometry.from_config(result.camera), CameraGeometry.from_config(truth)
    tight = source == "projection"
    assert np.linalg.norm(fitted.eye - expected.eye) < (1e-4 if tight else 0.01)
    assert _rotation_deg(fitted.R, expected.R) < (1e-3 if tight else 0.5)
    assert abs(result.camera.fov_deg - truth.fov_deg) < (1e-3 if tight else 0.5)
    assert result.rms_px < (1e-3 if tight else 1.0)
    assert result.errors_px.shape == (len(points),)
    assert result.method == "solvePnP+fov-search"  # coplanar points


def test_recovers_camera_without_initial_guess() -> None:
    truth = _true_camera()
    points = _grid()
    uv = CameraGeometry.from_config(truth).project(points)
    result = calibrate_camera(points, uv, SIZE)
    assert abs(result.camera.fov_deg - truth.fov_deg) < 1e-3
    assert np.allclose(result.camera.eye, truth.eye, atol=1e-4)


def test_non_coplanar_points_fit() -> None:
    truth = _true_camera()
    points = _grid() + np.column_stack([np.zeros((16, 2)), np.tile([0.0, 0.1, 0.25, 0.4], 4)])
    uv = CameraGeometry.from_config(truth).project(points)
    result = calibrate_camera(points, uv, SIZE)
    assert abs(result.camera.fov_deg - truth.fov_deg) < 1e-3
    assert result.rms_px < 1e-3


@pytest.mark.parametrize(
    "forward",
    [(1.0, 0.2, -0.6), (0.0, 0.0, -1.0), (0.0, 0.0, 1.0), (-0.3, 1.0, 0.1)],
    ids=["oblique", "straight-down", "straight-up", "sideways"],
)
@pytest.mark.parametrize("roll", [0.0, 17.0, -120.0])
def test_camera_from_pose_round_trip(forward: tuple[float, float, float], roll: float) -> None:
    # Build a rotation with the given optical axis and roll, then check the config rebuilds it.
    f = np.asarray(forward) / np.linalg.norm(forward)
    helper = np.array([1.0, 0.0, 0.0]) if abs(f[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    right = np.cross(f, helper)
    right /= np.linalg.norm(right)
    down = np.cross(f, right)
    a = math.radians(roll)
    R = np.stack(
        [math.cos(a) * right + math.sin(a) * down, -math.sin(a) * right + math.cos(a) * down, f]
    )
    eye = np.array([-1.7, 0.1, 1.2])
    cam = camera_from_pose(R, -R @ eye, 50.0, SIZE)
    geometry = CameraGeometry.from_config(cam)
    assert np.allclose(geometry.R, R, atol=1e-9)
    assert np.allclose(geometry.eye, eye, atol=1e-9)


def _write_real_dir(
    root: Path, points: np.ndarray, uv: np.ndarray | None = None, size: tuple[int, int] = SIZE
) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    names = [f"frame_{i:02d}.png" for i in range(len(points))]
    blank = np.zeros((size[1], size[0], 3), np.uint8)
    for name in names:
        assert cv2.imwrite(str(root / name), blank)
    with (root / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "x_m", "y_m", "z_m"] + (["u", "v"] if uv is not None else []))
        for k, name in enumerate(names):
            extra = [] if uv is None else [f"{uv[k, 0]:.4f}", f"{uv[k, 1]:.4f}"]
            w.writerow([name, *(f"{x:.4f}" for x in points[k]), *extra])
    return names


def test_calibrate_scene_writes_loadable_yaml(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    truth = _true_camera()
    points = _grid()
    uv = CameraGeometry.from_config(truth).project(points)
    names = _write_real_dir(tmp_path / "real", points)
    write_pixel_labels(tmp_path / "uv.csv", dict(zip(names, uv, strict=True)))
    out = tmp_path / "out" / "calibrated.yaml"
    with caplog.at_level(logging.INFO, logger="sim2real.data.calibrate"):
        result = calibrate_scene("kuka_cube", tmp_path / "real", tmp_path / "uv.csv", out)
    loaded = SceneConfig.load(out)
    assert loaded.camera == result.camera
    assert (loaded.camera.width, loaded.camera.height) == (SCENE.camera.width, SCENE.camera.height)
    assert loaded.model_copy(update={"camera": SCENE.camera}) == SCENE  # only the camera changed
    # u,v written with 0.01 px precision: the fit is that good, no better.
    assert result.rms_px < 0.1
    assert abs(loaded.camera.fov_deg - truth.fov_deg) < 0.05
    assert np.allclose(loaded.camera.eye, truth.eye, atol=0.005)
    assert result.files == tuple(names)
    assert result.reference_eye == SCENE.camera.eye
    assert "frame_00.png" in caplog.text and "recorded eye" in caplog.text
    assert not list(out.parent.glob(".*tmp*"))  # the atomic write left no temporary file


def test_calibrate_scene_reads_uv_from_labels_csv(tmp_path: Path) -> None:
    points = _grid()
    uv = CameraGeometry.from_config(_true_camera()).project(points)
    _write_real_dir(tmp_path / "real", points, uv)
    result = calibrate_scene("kuka_cube", tmp_path / "real", None, tmp_path / "c.yaml")
    assert result.rms_px < 0.05  # labels.csv written to 0.1 mm and 0.0001 px


def test_calibrate_scene_skips_empty_rows(tmp_path: Path) -> None:
    points = _grid()
    uv = CameraGeometry.from_config(_true_camera()).project(points)
    names = _write_real_dir(tmp_path / "real", points)
    labels: dict[str, np.ndarray | None] = dict(zip(names, uv, strict=True))
    labels[names[3]] = None
    write_pixel_labels(tmp_path / "uv.csv", labels)
    files, pts, _, size = load_correspondences(tmp_path / "real", tmp_path / "uv.csv")
    assert names[3] not in files and len(pts) == len(names) - 1 and size == SIZE


@pytest.mark.parametrize(
    ("points", "uv", "match"),
    [
        (np.zeros((3, 3)), np.zeros((3, 2)), "at least 4"),
        (np.zeros((5, 3)), np.zeros((4, 2)), "5 3-D points but 4 pixels"),
        (np.zeros((5, 2)), np.zeros((5, 2)), r"expected \(N, 3\)"),
        (_grid()[:5], np.array([[1, 2], [3, 4], [np.nan, 5], [6, 7], [8, 9]]), r"uv rows \[2\]"),
        (
            np.column_stack([np.linspace(0, 1, 5), np.zeros(5), np.zeros(5)]),
            np.ones((5, 2)),
            "line",
        ),
    ],
    ids=["too-few", "mismatched", "2d-points", "nan", "collinear"],
)
def test_bad_inputs_raise(points: np.ndarray, uv: np.ndarray, match: str) -> None:
    with pytest.raises(DataError, match=match):
        calibrate_camera(points, uv, SIZE)


def test_mismatched_label_files_name_the_frames(tmp_path: Path) -> None:
    points = _grid()[:6]
    names = _write_real_dir(tmp_path / "real", points)
    uv = {n: np.array([100.0, 100.0]) for n in names[:5]} | {"stranger.png": np.array([1.0, 2])}
    write_pixel_labels(tmp_path / "uv.csv", uv)
    with pytest.raises(DataError, match=r"only in labels.csv: \['frame_05.png'\].*stranger.png"):
        calibrate_scene("kuka_cube", tmp_path / "real", tmp_path / "uv.csv", tmp_path / "o.yaml")
    assert not (tmp_path / "o.yaml").exists()


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ("a.png,nan,3", r"uv.csv row 3 \(file 'a.png'\): u is 'nan'"),
        ("a.png,12,", r"row 3 \(file 'a.png'\): v is ''"),
        ("a.png,12,abc", r"v is 'abc'"),
        ("b.png,1,2", r"row 3 \(file 'b.png'\): duplicate of row 2"),
    ],
    ids=["nan", "half-filled", "text", "duplicate"],
)
def test_pixel_label_errors_name_row_and_file(tmp_path: Path, row: str, match: str) -> None:
    path = tmp_path / "uv.csv"
    path.write_text(f"file,u,v\nb.png,1,2\n{row}\n")
    with pytest.raises(DataError, match=match):
        read_pixel_labels(path)


def test_headless_label_pixels_writes_template(
    tmp_path: Path,
    write_real_images: Callable[..., list[Path]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_real_images(tmp_path / "frames", ["b.jpg", "a.png", "c.jpeg"])
    out = tmp_path / "uv.csv"
    with caplog.at_level(logging.WARNING):
        assert label_pixels(tmp_path / "frames", out, headless=True) == out
    assert out.read_text().splitlines() == ["file,u,v", "a.png,,", "b.jpg,,", "c.jpeg,,"]
    assert "template" in caplog.text
    # A partly filled file keeps its values when the template is written again.
    write_pixel_labels(out, {"a.png": np.array([3.5, 4.25]), "b.jpg": None, "c.jpeg": None})
    label_pixels(tmp_path / "frames", out, headless=True)
    labels = read_pixel_labels(out)
    assert np.allclose(labels["a.png"], [3.5, 4.25]) and labels["b.jpg"] is None


def test_no_display_means_headless(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert display_available() is False


def test_overlay_pixels_draws_a_grid(
    tmp_path: Path, write_real_images: Callable[..., list[Path]]
) -> None:
    write_real_images(tmp_path / "frames", ["a.png", "b.png", "c.png"], size=(64, 48))
    write_pixel_labels(tmp_path / "uv.csv", {"a.png": np.array([32.0, 24.0]), "b.png": None})
    out = overlay_pixels(tmp_path / "frames", tmp_path / "uv.csv", tmp_path / "o.png", cols=2)
    grid = cv2.imread(str(out))
    assert grid.shape == (240, 320 * 2, 3)  # 2 tiles of 320x240, one row
    assert (grid[120, 150:170, 2] > 200).any()  # the red cross on frame a
    write_pixel_labels(tmp_path / "bad.csv", {"zzz.png": np.array([1.0, 1.0])})
    with pytest.raises(DataError, match=r"zzz\.png"):
        overlay_pixels(tmp_path / "frames", tmp_path / "bad.csv", tmp_path / "o2.png")
