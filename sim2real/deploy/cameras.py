"""Cameras for the robot runtime: a live OpenCV device and a replay of recorded frames.

Both satisfy :class:`~sim2real.deploy.interfaces.Camera`: ``connect`` / ``read`` /
``read_latest`` / ``disconnect``, frames ``uint8`` ``(H, W, 3)`` in ``colour_order``, stamped
with an injectable monotonic clock. :func:`make_camera` builds one from a command-line spec.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sim2real.deploy.interfaces import (
    Camera,
    CameraError,
    DeviceAlreadyConnectedError,
    DeviceNotConnectedError,
    EndOfStream,
    check_colour_order,
)
from sim2real.errors import ConfigError

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


def _positive(name: str, value: float | None, kind: type = float) -> None:
    ok = value is None or (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (kind is float or isinstance(value, int))
        and math.isfinite(value)
        and value > 0
    )
    if not ok:
        what = "an integer" if kind is int else "a finite number"
        raise ConfigError(f"{name}: expected None or {what} > 0, got {value!r}")


class OpenCVCamera:
    """A USB/CSI camera, video device path or stream URL read through ``cv2.VideoCapture``.

    With ``threaded=True`` (default) a background thread reads frames as fast as the device
    delivers them and keeps only the newest, so ``read_latest`` never returns a frame that sat
    in the driver's buffer; its timestamp is when that frame arrived. A device that stops
    delivering makes ``read_latest`` return an ever older frame (the runner's watchdog stops
    the robot), and raise :class:`CameraError` once the capture thread has failed.

    Args:
        index_or_url: device index (``0``), device path (``"/dev/video0"``) or URL.
        width: requested frame width; the device must deliver exactly it.
        height: requested frame height; the device must deliver exactly it.
        fps: requested frame rate (a hint: many devices ignore it).
        colour: ``"RGB"`` (default, what our models are trained on) or ``"BGR"``.
        threaded: read in a background thread (see above); ``False`` reads on demand.
        timeout_s: how long ``connect`` and ``read`` wait for a frame.
        clock: monotonic clock for timestamps; share the runner's.

    Raises:
        ConfigError: on a bad argument.
        CameraError: the device cannot be opened or delivers another size than asked.

    Example:
        >>> cam = OpenCVCamera(0, width=640, height=480)  # doctest: +SKIP
        >>> cam.connect(); frame, stamp = cam.read_latest(); cam.disconnect()  # doctest: +SKIP
    """

    def __init__(
        self,
        index_or_url: int | str | Path,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        colour: str = "RGB",
        *,
        threaded: bool = True,
        timeout_s: float = 2.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if isinstance(index_or_url, bool) or not isinstance(index_or_url, int | str | Path):
            raise ConfigError(
                f"index_or_url: expected a device index, path or URL, got {index_or_url!r}"
            )
        if isinstance(index_or_url, int) and index_or_url < 0:
            raise ConfigError(f"index_or_url: expected a device index >= 0, got {index_or_url}")
        _positive("width", width, int)
        _positive("height", height, int)
        _positive("fps", fps)
        _positive("timeout_s", timeout_s)
        self.source = str(index_or_url) if isinstance(index_or_url, Path) else index_or_url
        self.width, self.height, self.fps = width, height, fps
        self.colour_order = check_colour_order(colour)
        self.threaded = threaded
        self.timeout_s = timeout_s
        self.clock = clock
        self._cap: Any = None
        self._latest: tuple[np.ndarray, float] | None = None
        self._count = 0
        self._error: BaseException | None = None
        self._new = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"OpenCVCamera({self.source!r}, {self.width}x{self.height}, {self.colour_order})"

    @property
    def is_connected(self) -> bool:
        """Whether the capture is open."""
        return self._cap is not None

    def connect(self, warmup: bool = True) -> None:
        """Open the device, apply and check the requested size, start the reader thread."""
        if self.is_connected:
            raise DeviceAlreadyConnectedError(f"{self} is already connected")
        cap = cv2.VideoCapture(self.source)
        if not cap.isOpened():
            cap.release()
            raise CameraError(
                f"camera {self.source!r} cannot be opened by OpenCV: expected a connected "
                "device index, a /dev/video* path, a video file or a stream URL"
            )
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        requested = {
            cv2.CAP_PROP_FRAME_WIDTH: self.width,
            cv2.CAP_PROP_FRAME_HEIGHT: self.height,
            cv2.CAP_PROP_FPS: self.fps,
        }
        for prop, value in requested.items():
            if value is not None:
                cap.set(prop, float(value))
        self._cap, self._latest, self._count, self._error = cap, None, 0, None
        self._stop.clear()
        if self.threaded:
            self._thread = threading.Thread(target=self._loop, name=f"camera-{self.source}")
            self._thread.daemon = True
            self._thread.start()
        try:
            if warmup or self.width is not None or self.height is not None:
                self._check_size(self.read())
        except BaseException:
            self.disconnect()
            raise
        logger.info("connected %r", self)

    def read(self) -> np.ndarray:
        """Wait for the next frame the device delivers (up to ``timeout_s``) and return it."""
        self._require()
        if not self.threaded:
            return self._grab_counted()[0]
        with self._new:
            seen = self._count
            ok = self._new.wait_for(lambda: self._count > seen or self._error, self.timeout_s)
        self._raise_error()
        if not ok or self._latest is None:
            raise CameraError(f"camera {self.source!r}: no new frame in {self.timeout_s} s")
        return self._latest[0]

    def read_latest(self) -> tuple[np.ndarray, float]:
        """The newest frame and its arrival time (may be stale: check the age)."""
        self._require()
        if not self.threaded:
            return self._grab_counted()
        self._raise_error()
        if self._latest is None:
            self.read()
        assert self._latest is not None
        return self._latest

    def disconnect(self) -> None:
        """Stop the reader thread and release the device (no-op if not connected)."""
        if self._cap is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 1.0)
            if self._thread.is_alive():
                logger.warning("camera %r: reader thread still blocked in read()", self.source)
            self._thread = None
        self._cap.release()
        self._cap = None
        logger.info("disconnected %r", self)

    # -- internals --------------------------------------------------------------------------
    def _require(self) -> None:
        if not self.is_connected:
            raise DeviceNotConnectedError(f"{self} is not connected: call connect() first")

    def _grab(self) -> tuple[np.ndarray, float]:
        ok, image = self._cap.read()
        stamp = self.clock()
        if not ok or image is None:
            raise CameraError(
                f"camera {self.source!r}: read failed after {self._count} frames "
                "(unplugged, end of the video, or the stream dropped)"
            )
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise CameraError(
                f"camera {self.source!r}: expected uint8 (H, W, 3) BGR frames, got "
                f"{image.dtype} {image.shape}"
            )
        if self.colour_order == "RGB":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        return image, stamp

    def _grab_counted(self) -> tuple[np.ndarray, float]:
        frame = self._grab()
        self._count += 1
        return frame

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._grab()
            except Exception as err:  # reported to the reader, which raises it
                with self._new:
                    self._error = err
                    self._new.notify_all()
                logger.error("camera %r stopped: %s", self.source, err)
                return
            with self._new:
                self._latest = frame
                self._count += 1
                self._new.notify_all()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise CameraError(f"camera {self.source!r} failed: {self._error}") from self._error

    def _check_size(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        if (self.width is not None and w != self.width) or (
            self.height is not None and h != self.height
        ):
            raise CameraError(
                f"camera {self.source!r} delivers {w}x{h}, expected {self.width}x{self.height} "
                "(WxH); ask for a size the device supports"
            )


class ReplayCamera:
    """Frames from a folder of images, a video or a LeRobot dataset, as if from a camera.

    Frames come from :func:`sim2real.data.real.open_real` (RGB). With ``fps=None`` every
    ``read`` / ``read_latest`` returns the next frame, stamped "now" (a camera exactly as fast
    as the loop). With ``fps`` the replay runs in real time from ``connect()``: frame
    ``floor(elapsed * fps)``, stamped with when it would have arrived, so a loop slower than
    ``fps`` skips frames as with a live camera. Past the last frame it starts again
    (``loop=True``) or raises :class:`EndOfStream`.

    Args:
        folder_or_video: anything :func:`~sim2real.data.real.open_real` opens.
        loop: start again after the last frame.
        fps: replay rate in frames per second, or ``None`` (one frame per read).
        colour: ``"RGB"`` (default) or ``"BGR"`` order of the returned frames.
        clock: monotonic clock for timestamps; share the runner's.
        **open_opts: passed to ``open_real`` (``size``, ``resize``, ``step``, ...).

    Example:
        >>> cam = ReplayCamera("real/kuka_cube/unlabelled", fps=10)  # doctest: +SKIP
        >>> cam.connect(); frame, stamp = cam.read_latest()  # doctest: +SKIP
    """

    def __init__(
        self,
        folder_or_video: str | Path,
        loop: bool = True,
        fps: float | None = None,
        colour: str = "RGB",
        *,
        clock: Clock = time.monotonic,
        **open_opts: Any,
    ) -> None:
        _positive("fps", fps)
        self.path = Path(folder_or_video)
        self.loop = bool(loop)
        self.fps = fps
        self.colour_order = check_colour_order(colour)
        self.clock = clock
        self.open_opts = open_opts
        self._frames: Any = None
        self._next = 0
        self._start = 0.0

    def __repr__(self) -> str:
        return f"ReplayCamera({str(self.path)!r}, loop={self.loop}, fps={self.fps})"

    def __len__(self) -> int:
        self._require()
        return len(self._frames)

    @property
    def is_connected(self) -> bool:
        """Whether the frames are open."""
        return self._frames is not None

    def connect(self, warmup: bool = True) -> None:
        """Open and validate the source (``DataError`` names a bad file); restart the replay."""
        if self.is_connected:
            raise DeviceAlreadyConnectedError(f"{self} is already connected")
        from sim2real.data.real import open_real  # imports torch: only when replaying

        self._frames = open_real(self.path, **self.open_opts)
        self._next = 0
        self._start = self.clock()
        logger.info("connected %r: %d frames", self, len(self._frames))

    def read(self) -> np.ndarray:
        """The next frame (see the class docstring for the timing)."""
        return self.read_latest()[0]

    def read_latest(self) -> tuple[np.ndarray, float]:
        """The current frame and when it arrived."""
        self._require()
        now, n = self.clock(), len(self._frames)
        if self.fps is None:
            index, stamp = self._next, now
            self._next += 1
        else:
            index = math.floor((now - self._start) * self.fps)
            stamp = self._start + index / self.fps
        if index >= n and not self.loop:
            raise EndOfStream(f"{self}: all {n} frames replayed")
        image = self._frames[index % n].image
        if self.colour_order == "BGR":
            image = np.ascontiguousarray(image[..., ::-1])
        return image, stamp

    def disconnect(self) -> None:
        """Close the source (no-op if not connected)."""
        self._frames = None

    def _require(self) -> None:
        if not self.is_connected:
            raise DeviceNotConnectedError(f"{self} is not connected: call connect() first")


def make_camera(spec: str, *, robot: Any = None, clock: Clock = time.monotonic) -> Camera:
    """Build a camera from a command-line spec.

    Specs: ``opencv:0`` / ``opencv:/dev/video2`` / ``opencv:rtsp://...`` (a live device),
    ``replay:DIR`` or ``replay:VIDEO`` (looping, one frame per tick), ``replay@FPS:PATH``
    (real time) and ``sim`` (the camera of ``robot``, a :class:`SimRobot`).

    Raises:
        ConfigError: unknown kind, or ``sim`` without a ``SimRobot``.

    Example:
        >>> make_camera("replay:real/kuka_cube/unlabelled")  # doctest: +SKIP
        ReplayCamera('real/kuka_cube/unlabelled', loop=True, fps=None)
    """
    kind, _, rest = spec.partition(":")
    kind, _, rate = kind.partition("@")
    if kind == "opencv" and rest:
        return OpenCVCamera(int(rest) if rest.isdigit() else rest, clock=clock)
    if kind == "replay" and rest:
        try:
            fps = float(rate) if rate else None
        except ValueError as err:
            raise ConfigError(f"camera spec {spec!r}: FPS {rate!r} is not a number") from err
        return ReplayCamera(rest, fps=fps, clock=clock)
    if spec == "sim":
        if robot is None or not hasattr(robot, "camera"):
            raise ConfigError("camera spec 'sim' needs a simulated robot (--robot sim)")
        return robot.camera()
    raise ConfigError(
        f"camera spec {spec!r}: expected 'opencv:INDEX|PATH|URL', 'replay:PATH', "
        "'replay@FPS:PATH' or 'sim'"
    )
