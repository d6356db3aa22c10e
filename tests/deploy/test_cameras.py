"""Cameras: replay of image folders and videos, OpenCV error paths and reader thread."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from sim2real.deploy import (
    CameraError,
    DeviceAlreadyConnectedError,
    DeviceNotConnectedError,
    EndOfStream,
    OpenCVCamera,
    ReplayCamera,
    make_camera,
)
from sim2real.deploy import cameras as cameras_module
from sim2real.errors import ConfigError, DataError
from tests.deploy.fakes import FakeClock

W, H, N = 16, 12, 4


def rgb(k: int) -> tuple[int, int, int]:
    """RGB colour of fixture frame k (values survive mp4v: steps of 40)."""
    return (40 * k + 20, 100, 200 - 40 * k)


def bgr_image(k: int) -> np.ndarray:
    r, g, b = rgb(k)
    return np.full((H, W, 3), (b, g, r), dtype=np.uint8)


@pytest.fixture
def png_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(N):
        assert cv2.imwrite(str(folder / f"{k:03d}.png"), bgr_image(k))
    return folder


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (W, H))
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for k in range(N):
        writer.write(bgr_image(k))
    writer.release()
    return path


def colour_of(frame: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in frame[H // 2, W // 2])


# -- ReplayCamera ------------------------------------------------------------------------------
def test_replay_folder_returns_rgb_frames_in_order_and_loops(png_folder: Path) -> None:
    clock = FakeClock()
    cam = ReplayCamera(png_folder, clock=clock)
    cam.connect()
    assert cam.is_connected and len(cam) == N
    seen = []
    for _ in range(N + 2):
        frame, stamp = cam.read_latest()
        assert frame.dtype == np.uint8 and frame.shape == (H, W, 3) and stamp == clock.now
        seen.append(colour_of(frame))
        clock.advance(0.1)
    assert seen == [rgb(k % N) for k in range(N + 2)]
    cam.disconnect()
    assert not cam.is_connected


def test_replay_without_loop_ends(png_folder: Path) -> None:
    cam = ReplayCamera(png_folder, loop=False)
    cam.connect()
    for _ in range(N):
        cam.read()
    with pytest.raises(EndOfStream, match=f"all {N} frames"):
        cam.read()


def test_replay_at_fps_follows_the_clock(png_folder: Path) -> None:
    clock = FakeClock()
    cam = ReplayCamera(png_folder, fps=10.0, loop=False, clock=clock)
    cam.connect()
    t0 = clock.now
    clock.advance(0.25)
    frame, stamp = cam.read_latest()
    assert colour_of(frame) == rgb(2) and stamp == pytest.approx(t0 + 0.2)
    clock.advance(0.2)
    with pytest.raises(EndOfStream):
        cam.read_latest()


def test_replay_video_and_bgr_order(video: Path) -> None:
    cam = ReplayCamera(video, colour="BGR")
    cam.connect()
    frames = [cam.read() for _ in range(N)]
    for k, frame in enumerate(frames):
        np.testing.assert_allclose(colour_of(frame), colour_of(bgr_image(k)), atol=12)


def test_replay_errors(tmp_path: Path, png_folder: Path) -> None:
    cam = ReplayCamera(png_folder)
    with pytest.raises(DeviceNotConnectedError, match="connect"):
        cam.read_latest()
    cam.connect()
    with pytest.raises(DeviceAlreadyConnectedError):
        cam.connect()
    with pytest.raises(DataError, match="does not exist"):
        ReplayCamera(tmp_path / "missing").connect()
    with pytest.raises(ConfigError, match="fps"):
        ReplayCamera(png_folder, fps=0)
    with pytest.raises(ConfigError, match="colour"):
        ReplayCamera(png_folder, colour="RGBA")


# -- OpenCVCamera ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"index_or_url": -1}, "index"),
        ({"index_or_url": True}, "index_or_url"),
        ({"index_or_url": 1.5}, "index_or_url"),
        ({"width": 0}, "width"),
        ({"height": 2.5}, "height"),
        ({"fps": -30}, "fps"),
        ({"colour": "YUV"}, "colour"),
        ({"timeout_s": 0}, "timeout_s"),
    ],
)
def test_opencv_rejects_bad_settings(kwargs: dict, match: str) -> None:
    kwargs = {"index_or_url": 0, **kwargs}
    with pytest.raises(ConfigError, match=match):
        OpenCVCamera(**kwargs)


def test_opencv_unopenable_source_and_use_before_connect(tmp_path: Path) -> None:
    cam = OpenCVCamera(tmp_path / "no_such_camera.avi")
    with pytest.raises(DeviceNotConnectedError, match="connect"):
        cam.read()
    with pytest.raises(DeviceNotConnectedError):
        cam.read_latest()
    with pytest.raises(CameraError, match="cannot be opened"):
        cam.connect()
    assert not cam.is_connected
    cam.disconnect()  # harmless


def test_opencv_unthreaded_reads_rgb_until_the_source_ends(video: Path) -> None:
    clock = FakeClock()
    cam = OpenCVCamera(video, threaded=False, clock=clock)
    cam.connect(warmup=False)
    frame, stamp = cam.read_latest()
    assert stamp == clock.now and frame.shape == (H, W, 3)
    np.testing.assert_allclose(colour_of(frame), rgb(0), atol=12)
    for _ in range(N - 1):
        cam.read()
    with pytest.raises(CameraError, match="read failed"):
        cam.read()
    cam.disconnect()


def test_opencv_size_mismatch_is_an_error(video: Path) -> None:
    cam = OpenCVCamera(video, width=W * 2, height=H, threaded=False)
    with pytest.raises(CameraError, match=f"delivers {W}x{H}, expected {2 * W}x{H}"):
        cam.connect()
    assert not cam.is_connected


class FakeCapture:
    """Stands in for ``cv2.VideoCapture``: ``limit`` BGR frames, then read failures."""

    limit = 50

    def __init__(self, source: Any) -> None:
        self.count = 0
        self.released = threading.Event()

    def isOpened(self) -> bool:
        return True

    def set(self, prop: int, value: float) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.count >= self.limit:
            return False, None
        self.count += 1
        self.released.wait(0.001)  # a device delivers frames at some rate
        return True, np.full((H, W, 3), (self.count % 256, 0, 7), dtype=np.uint8)

    def release(self) -> None:
        self.released.set()


def test_opencv_reader_thread_serves_new_frames_then_reports_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cameras_module.cv2, "VideoCapture", FakeCapture)
    cam = OpenCVCamera(0, width=W, height=H, timeout_s=5.0)
    cam.connect()
    first, second = cam.read(), cam.read()
    assert first[0, 0, 0] == 7 and first[0, 0, 2] < second[0, 0, 2]  # RGB, and newer
    latest, stamp = cam.read_latest()
    assert latest.shape == (H, W, 3) and stamp > 0
    with pytest.raises(CameraError, match="read failed after 50 frames"):
        for _ in range(FakeCapture.limit + 1):
            cam.read()
    with pytest.raises(CameraError):
        cam.read_latest()
    cam.disconnect()
    assert not cam.is_connected


# -- specs -------------------------------------------------------------------------------------
def test_make_camera_specs(png_folder: Path) -> None:
    replay = make_camera(f"replay:{png_folder}")
    assert isinstance(replay, ReplayCamera) and replay.fps is None
    assert make_camera(f"replay@15:{png_folder}").fps == 15.0
    assert make_camera("opencv:2").source == 2
    assert make_camera("opencv:rtsp://cam.local/stream").source == "rtsp://cam.local/stream"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("webcam", "expected"),
        ("replay:", "expected"),
        ("replay@x:d", "FPS"),
        ("sim", "--robot sim"),
    ],
)
def test_make_camera_rejects_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_camera(spec)
