"""Fakes satisfying the deploy protocols, driven by a fake clock (no wall-clock waits)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sim2real.deploy.interfaces import DeviceNotConnectedError, EndOfStream

SHAPE = (6, 8, 3)
PROPRIO = np.array([0.1, -0.2, 0.3, 0.4], dtype=np.float32)


class FakeClock:
    """A monotonic clock that only moves when slept on or advanced."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[float], None] | None = None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, f"negative sleep {seconds}"
        if self.on_sleep is not None:
            self.on_sleep(seconds)
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


def solid(k: int, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """Frame number ``k``: every pixel ``k % 256``."""
    return np.full(shape, k % 256, dtype=np.uint8)


class FakeCamera:
    """Frames ``frame_fn(k)`` stamped ``clock() - age_fn(k)``; scripted failures.

    Args:
        clock: the shared fake clock.
        frame_fn: ``k -> frame`` (anything: tests feed invalid frames through it).
        age_fn: ``k -> age in seconds`` of frame ``k`` when read.
        fail_at: read number that raises ``error``.
        end_at: read number that raises ``EndOfStream``.
    """

    colour_order = "RGB"

    def __init__(
        self,
        clock: FakeClock,
        frame_fn: Callable[[int], Any] = solid,
        age_fn: Callable[[int], float] = lambda k: 0.01,
        fail_at: int | None = None,
        error: Exception | None = None,
        end_at: int | None = None,
    ) -> None:
        self.clock = clock
        self.frame_fn, self.age_fn = frame_fn, age_fn
        self.fail_at, self.error, self.end_at = fail_at, error, end_at
        self.connected = False
        self.read_times: list[float] = []
        self.events: list[str] | None = None  # shared with a FakeRobot to check order

    @property
    def is_connected(self) -> bool:
        return self.connected

    def connect(self, warmup: bool = True) -> None:
        if self.events is not None:
            self.events.append("camera.connect")
        self.connected = True

    def read(self) -> np.ndarray:
        return self.read_latest()[0]

    def read_latest(self) -> Any:
        if not self.connected:
            raise DeviceNotConnectedError("FakeCamera is not connected")
        k = len(self.read_times)
        self.read_times.append(self.clock())
        if k == self.fail_at:
            raise self.error or RuntimeError("camera unplugged")
        if k == self.end_at:
            raise EndOfStream("fake replay ended")
        frame = self.frame_fn(k)
        if frame is None:
            return None
        return frame, self.clock() - self.age_fn(k)

    def disconnect(self) -> None:
        self.connected = False

    def __repr__(self) -> str:
        return "FakeCamera()"


class FakeRobot:
    """Records every command; ``send_action`` can be scripted to fail."""

    def __init__(
        self,
        proprio: np.ndarray | None = PROPRIO,
        fail_send_at: int | None = None,
        fail_stop: bool = False,
    ) -> None:
        self.proprio = proprio
        self.fail_send_at = fail_send_at
        self.fail_stop = fail_stop
        self.connected = False
        self.sent: list[np.ndarray] = []
        self.stops = 0
        self.events: list[str] = []

    @property
    def is_connected(self) -> bool:
        return self.connected

    def connect(self) -> None:
        self.events.append("robot.connect")
        self.connected = True

    def get_observation(self) -> dict[str, Any]:
        self._require()
        return {} if self.proprio is None else {"proprio": self.proprio.copy()}

    def send_action(self, action: np.ndarray) -> np.ndarray:
        self._require()
        if len(self.sent) == self.fail_send_at:
            raise OSError("serial link lost")
        self.sent.append(np.array(action))
        self.events.append("send")
        return action

    def stop(self) -> None:
        self._require()
        self.stops += 1
        self.events.append("stop")
        if self.fail_stop:
            raise OSError("stop failed too")

    def disconnect(self) -> None:
        self.connected = False

    def _require(self) -> None:
        if not self.connected:
            raise DeviceNotConnectedError("FakeRobot is not connected")

    def __repr__(self) -> str:
        return "FakeRobot()"


class FakePolicy:
    """``act`` returns ``action_fn(k, frame, proprio)``, costing ``cost_s`` of fake time."""

    def __init__(
        self,
        clock: FakeClock | None = None,
        action_fn: Callable[[int, np.ndarray, np.ndarray | None], Any] | None = None,
        cost_s: float | Callable[[int], float] = 0.0,
        raise_at: int | None = None,
    ) -> None:
        self.clock = clock
        self.action_fn = action_fn or (lambda k, frame, proprio: np.full(3, 0.1, np.float32))
        self.cost_s = cost_s
        self.raise_at = raise_at
        self.calls: list[tuple[np.ndarray, np.ndarray | None]] = []

    def act(self, frame: np.ndarray, proprio: np.ndarray | None = None) -> Any:
        k = len(self.calls)
        self.calls.append((frame, proprio))
        if self.clock is not None:
            self.clock.advance(self.cost_s(k) if callable(self.cost_s) else self.cost_s)
        if k == self.raise_at:
            raise RuntimeError("policy exploded")
        return self.action_fn(k, frame, proprio)


class FakeStagedPolicy(FakePolicy):
    """A policy with ``preprocess`` and ``infer`` costing distinct fake times."""

    def __init__(self, clock: FakeClock, pre_s: float, infer_s: float) -> None:
        super().__init__(clock)
        self.pre_s, self.infer_s = pre_s, infer_s

    def preprocess(self, frame: np.ndarray, proprio: np.ndarray | None = None) -> Any:
        self.clock.advance(self.pre_s)  # type: ignore[union-attr]
        return frame.mean()

    def infer(self, inputs: Any) -> np.ndarray:
        self.clock.advance(self.infer_s)  # type: ignore[union-attr]
        return np.full(3, float(inputs) / 255.0, np.float32)


class FakeSeeingPolicy(FakePolicy):
    """A policy whose target is in view when the frame is not black (``perceive``); a
    camera showing no object delivers black frames."""

    action_low = np.full(3, -1.0, np.float32)

    def __init__(self, clock: FakeClock | None = None, confidence: float = 0.9) -> None:
        super().__init__(clock)
        self.confidence = confidence
        self.perceived = 0

    def perceive(self, frame: np.ndarray) -> dict[str, Any]:
        self.perceived += 1
        visible = bool(np.asarray(frame).max() > 0)
        return {"visible": visible, "confidence": self.confidence if visible else 0.0}
