"""What the robot runtime talks to: cameras, robots and policies, as ``typing.Protocol``s.

Method names follow LeRobot's ``Camera`` and ``Robot`` base classes (``connect``,
``is_connected``, ``read``, ``read_latest``, ``disconnect``; ``get_observation``,
``send_action``), so anything written against LeRobot needs only thin adapters. Two
differences: actions are one ``float32`` array (our envs' Cartesian end-effector delta) rather
than a dict of motor names, and a robot has ``stop()``, the safe "hold position" command the
:class:`~sim2real.deploy.runner.Runner` sends when anything goes wrong.

Conventions every implementation keeps:

- Frames are ``uint8`` ``(H, W, 3)``; the order is the camera's ``colour_order`` (``"RGB"``
  unless configured otherwise).
- Timestamps are seconds on the runner's monotonic clock (``time.monotonic`` unless one is
  injected), taken when the frame was captured, so ``clock() - timestamp`` is its age.
- Using a device before ``connect()`` raises :class:`DeviceNotConnectedError`.

It also holds the checks of what crosses these interfaces: proprioception and actions
(:class:`ActionLimits`); frames are checked by :func:`sim2real.images.check_frame`. It imports
only numpy, so it runs on a robot computer.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

import numpy as np

from sim2real.errors import ConfigError, InputError, Sim2RealError
from sim2real.images import COLOUR_ORDERS

logger = logging.getLogger(__name__)


class DeviceNotConnectedError(Sim2RealError, RuntimeError):
    """A camera or robot was used before ``connect()`` or after ``disconnect()``."""


class DeviceAlreadyConnectedError(Sim2RealError, RuntimeError):
    """``connect()`` was called on a device that is already connected."""


class CameraError(Sim2RealError, RuntimeError):
    """A camera cannot be opened, or stopped delivering frames."""


class WatchdogError(Sim2RealError, RuntimeError):
    """The control loop saw a stale or missing frame and stopped the robot."""


class EndOfStream(Sim2RealError):
    """A replayed source has no more frames (``loop=False``); the runner ends normally."""


@runtime_checkable
class Camera(Protocol):
    """A source of timestamped frames (LeRobot ``Camera`` names).

    Example:
        >>> cam = ReplayCamera("real/kuka_cube")  # doctest: +SKIP
        >>> cam.connect(); frame, stamp = cam.read_latest(); cam.disconnect()  # doctest: +SKIP
    """

    colour_order: str

    @property
    def is_connected(self) -> bool:
        """Whether ``read`` and ``read_latest`` may be called."""
        ...

    def connect(self, warmup: bool = True) -> None:
        """Open the device; with ``warmup``, wait for a first frame before returning."""
        ...

    def read(self) -> np.ndarray:
        """Capture (or wait for) a new frame: ``uint8`` ``(H, W, 3)``."""
        ...

    def read_latest(self) -> tuple[np.ndarray, float]:
        """The most recent frame and its capture time; may be stale, check the age."""
        ...

    def disconnect(self) -> None:
        """Release the device."""
        ...


@runtime_checkable
class Robot(Protocol):
    """An arm that takes one action array per control tick (LeRobot ``Robot`` names).

    ``get_observation()`` returns a flat dict; the runner reads its ``"proprio"`` entry (a 1-D
    float array, or absent). ``send_action(a)`` returns the action actually applied (after the
    robot's own limits). ``stop()`` holds the current position; it must be safe to call
    at any time while connected, repeatedly.

    Example:
        >>> robot = SimRobot("Sim2Real/ReachCube-v0")  # doctest: +SKIP
        >>> robot.connect(); robot.send_action(np.zeros(3)); robot.stop()  # doctest: +SKIP
    """

    @property
    def is_connected(self) -> bool:
        """Whether the robot accepts commands."""
        ...

    def connect(self) -> None:
        """Open communication with the robot."""
        ...

    def get_observation(self) -> dict[str, Any]:
        """Current sensor state, e.g. ``{"proprio": float32 (P,)}``."""
        ...

    def send_action(self, action: np.ndarray) -> np.ndarray:
        """Command one action; return what was applied."""
        ...

    def stop(self) -> None:
        """Hold position (the safe state)."""
        ...

    def disconnect(self) -> None:
        """Release the robot (after ``stop()``)."""
        ...


@runtime_checkable
class ActsLike(Protocol):
    """Anything that maps a frame (and proprioception) to an action, e.g. ``Policy``.

    Example:
        >>> class Still:
        ...     def act(self, frame, proprio=None):
        ...         return np.zeros(3, np.float32)
        >>> isinstance(Still(), ActsLike)
        True
    """

    def act(self, frame: np.ndarray, proprio: np.ndarray | None = None) -> np.ndarray:
        """Action for one ``uint8`` ``(H, W, 3)`` frame and optional ``(P,)`` proprio."""
        ...


@runtime_checkable
class StagedPolicy(Protocol):
    """A policy that also exposes its two halves, so the runner can time them apart.

    ``infer(preprocess(frame, proprio))`` must equal ``act(frame, proprio)``. Optional: a
    policy with only ``act`` is timed as one "inference" stage.
    """

    def act(self, frame: np.ndarray, proprio: np.ndarray | None = None) -> np.ndarray:
        """Action for one frame; same as ``infer(preprocess(frame, proprio))``."""
        ...

    def preprocess(self, frame: np.ndarray, proprio: np.ndarray | None = None) -> Any:
        """Model inputs for one frame (colour, resize, normalisation, proprio layout)."""
        ...

    def infer(self, inputs: Any) -> np.ndarray:
        """Action from the model inputs."""
        ...


class ActionLimits:
    """Clip actions to a box and limit their change per tick.

    Args:
        low: lower bounds (scalar or ``(A,)``).
        high: upper bounds, ``> low`` everywhere.
        max_delta: largest ``|a_t - a_{t-1}|`` per element (scalar or ``(A,)``), or ``None``.

    Example:
        >>> limits = ActionLimits(-1.0, 1.0, max_delta=0.5)
        >>> limits.apply(np.array([3.0]), previous=np.array([0.0]))
        array([0.5], dtype=float32)
    """

    def __init__(self, low: Any, high: Any, max_delta: Any = None) -> None:
        try:
            lo, hi = np.broadcast_arrays(np.asarray(low, np.float32), np.asarray(high, np.float32))
        except ValueError as err:
            raise ConfigError(f"action_low/high: shapes do not broadcast ({err})") from err
        if lo.ndim > 1 or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ConfigError(f"action_low/high: expected finite scalars or (A,), got {lo}, {hi}")
        if not np.all(lo < hi):
            raise ConfigError(f"action_low {lo} must be < action_high {hi} everywhere")
        self.low, self.high = lo.copy(), hi.copy()
        self.max_delta: np.ndarray | None = None
        if max_delta is not None:
            delta = np.asarray(max_delta, dtype=np.float32)
            if delta.ndim > 1 or not np.all(np.isfinite(delta)) or not np.all(delta > 0):
                raise ConfigError(f"max_delta: expected None or finite values > 0, got {delta}")
            self.max_delta = delta

    def check(self, action: Any) -> np.ndarray:
        """``action`` as ``float32`` of the limits' shape, finite; else ``InputError``."""
        try:
            array = np.asarray(action, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise InputError(f"policy action: expected a float array, got {action!r}") from err
        if self.low.ndim == 1 and array.shape != self.low.shape:
            raise InputError(
                f"policy action: expected shape {self.low.shape} (as action_low/high), got "
                f"{array.shape}"
            )
        if array.ndim != 1:
            raise InputError(f"policy action: expected a 1-D array, got shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise InputError(f"policy action: expected finite values, got {array}")
        return array

    def apply(self, action: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        """Clip ``action`` to ``[low, high]`` and to ``previous +- max_delta``."""
        out = np.clip(action, self.low, self.high)
        if self.max_delta is not None and previous is not None:
            out = np.clip(out, previous - self.max_delta, previous + self.max_delta)
            out = np.clip(out, self.low, self.high)
        return out.astype(np.float32)


def check_colour_order(colour: str) -> str:
    """Return ``colour`` if it is ``"RGB"`` or ``"BGR"``, else raise ``ConfigError``."""
    if colour not in COLOUR_ORDERS:
        raise ConfigError(f"colour order {colour!r}: expected one of {list(COLOUR_ORDERS)}")
    return colour


def check_proprio(proprio: Any, where: str = "proprio") -> np.ndarray | None:
    """Return ``proprio`` as a finite 1-D ``float32`` array (or ``None``); else ``InputError``.

    Example:
        >>> check_proprio([0.1, 0.2]).dtype
        dtype('float32')
    """
    if proprio is None:
        return None
    try:
        array = np.asarray(proprio, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise InputError(f"{where}: expected a 1-D float array, got {proprio!r}") from err
    if array.ndim != 1:
        raise InputError(f"{where}: expected a 1-D float array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{where}: expected finite values, got {array}")
    return array
