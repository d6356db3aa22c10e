"""A simulated robot: one of our gymnasium envs behind the ``Robot`` protocol.

This is the hardware-in-the-loop test of the runtime: the same :class:`Runner`, limits,
watchdog and recording that drive a real arm drive the PyBullet env, and the env's rendered
image is served through :meth:`SimRobot.camera`. Gymnasium, PyBullet and ``sim2real.envs``
are imported in :meth:`SimRobot.connect` only, so this module imports on a robot computer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim2real.deploy.interfaces import (
    DeviceAlreadyConnectedError,
    DeviceNotConnectedError,
    check_colour_order,
)
from sim2real.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

DEFAULT_ENV = "Sim2Real/ReachCube-v0"


@dataclass(frozen=True)
class EpisodeResult:
    """How one simulated episode ended.

    Attributes:
        index: episode number, from 0.
        steps: actions applied in the episode (``stop()`` steps included).
        success: whether the task's success condition held at the end.
        truncated: whether it ended on the step limit rather than on success.
        total_reward: sum of the env's rewards.
    """

    index: int
    steps: int
    success: bool
    truncated: bool
    total_reward: float


class SimRobot:
    """Drive a ``Sim2Real/*`` env through ``connect`` / ``get_observation`` / ``send_action``.

    ``send_action(a)`` steps the env with the Cartesian end-effector delta ``a`` (``(3,)``,
    clipped to ``[-1, 1]``); when the episode ends (success or step limit) the result goes to
    :attr:`episodes` and the env resets into the next episode. ``stop()`` steps once with a
    zero action, i.e. holds the end effector where it is (with simulated action latency,
    actions already queued still play out, as in a real controller's command pipeline).

    Args:
        env_id: a registered id (``sim2real.envs.ENV_IDS``).
        seed: seed of the first reset; later episodes continue the env's generator.
        clock: monotonic clock stamping the camera frames; share the runner's.
        **env_kwargs: passed to ``gymnasium.make`` (``randomization``, ``image_size``, ...).

    Example:
        >>> robot = SimRobot(randomization="none", image_size=84)  # doctest: +SKIP
        >>> robot.connect()  # doctest: +SKIP
        >>> runner = Runner(policy, robot.camera(), robot, hz=10,
        ...                 limits=ActionLimits(-1, 1))  # doctest: +SKIP
        >>> runner.run(steps=100); robot.success_rate  # doctest: +SKIP
    """

    def __init__(
        self,
        env_id: str = DEFAULT_ENV,
        *,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        **env_kwargs: Any,
    ) -> None:
        if not isinstance(env_id, str) or not env_id:
            raise ConfigError(f"env_id: expected a registered env id string, got {env_id!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(f"seed: expected None or an int, got {seed!r}")
        self.env_id = env_id
        self.seed = seed
        self.clock = clock
        self.env_kwargs = env_kwargs
        self.episodes: list[EpisodeResult] = []
        self.stops = 0
        self._env: Any = None
        self._obs: dict[str, np.ndarray] = {}
        self._info: dict[str, Any] = {}
        self._steps = 0
        self._reward = 0.0

    def __repr__(self) -> str:
        return f"SimRobot({self.env_id!r})"

    @property
    def is_connected(self) -> bool:
        """Whether the env is built."""
        return self._env is not None

    @property
    def episode(self) -> int:
        """Number of the current episode, from 0."""
        return len(self.episodes)

    @property
    def success_rate(self) -> float:
        """Fraction of finished episodes that ended in success (``nan`` before the first)."""
        if not self.episodes:
            return float("nan")
        return sum(e.success for e in self.episodes) / len(self.episodes)

    @property
    def action_shape(self) -> tuple[int, ...]:
        """Shape of the env's action (``(3,)``)."""
        self._require()
        return tuple(self._env.action_space.shape)

    @property
    def env(self) -> Any:
        """The gymnasium env (e.g. for labels in ``info``); connected robots only."""
        self._require()
        return self._env

    def connect(self) -> None:
        """Build the env and reset it into episode 0."""
        if self.is_connected:
            raise DeviceAlreadyConnectedError(f"{self} is already connected")
        import gymnasium as gym

        import sim2real.envs  # noqa: F401 - registers the Sim2Real/* ids

        if self.env_id not in gym.registry:
            known = sorted(k for k in gym.registry if k.startswith("Sim2Real/"))
            raise ConfigError(f"env_id {self.env_id!r} is not registered; expected one of {known}")
        self._env = gym.make(self.env_id, **self.env_kwargs)
        self._reset(self.seed)
        logger.info("connected %r", self)

    def get_observation(self) -> dict[str, Any]:
        """The current simulated state.

        Returns:
            ``{"proprio": float32 (P,), "image": uint8 (H, W, 3) RGB, "episode": int,
            "is_success": bool}``.
        """
        self._require()
        return {
            "proprio": self._obs["proprio"].copy(),
            "image": self._frame(),
            "episode": self.episode,
            "is_success": bool(self._info.get("is_success", False)),
        }

    def send_action(self, action: np.ndarray) -> np.ndarray:
        """Step the env with ``action``; return the applied (clipped ``float32``) action.

        Raises:
            InputError: wrong shape or non-finite values.
        """
        self._require()
        applied = np.asarray(action, dtype=np.float32)
        shape = self.action_shape
        if applied.shape != shape:
            raise InputError(f"action: expected shape {shape}, got {applied.shape}")
        if not np.all(np.isfinite(applied)):
            raise InputError(f"action: expected finite values, got {applied}")
        applied = np.clip(applied, self._env.action_space.low, self._env.action_space.high)
        obs, reward, terminated, truncated, info = self._env.step(applied)
        self._obs, self._info = obs, info
        self._steps += 1
        self._reward += float(reward)
        if terminated or truncated:
            self._finish_episode(truncated=bool(truncated and not terminated))
        return applied

    def stop(self) -> None:
        """Hold position: one zero-action step."""
        self._require()
        self.stops += 1
        self.send_action(np.zeros(self.action_shape, dtype=np.float32))

    def disconnect(self) -> None:
        """Close the env (no-op if not connected)."""
        if self._env is None:
            return
        self._env.close()
        self._env = None
        logger.info("disconnected %r after %d episodes", self, len(self.episodes))

    def camera(self, colour: str = "RGB") -> SimCamera:
        """A camera serving the env's rendered frames (connect the robot first)."""
        return SimCamera(self, colour=colour)

    # -- internals --------------------------------------------------------------------------
    def _require(self) -> None:
        if not self.is_connected:
            raise DeviceNotConnectedError(f"{self} is not connected: call connect() first")

    def _reset(self, seed: int | None) -> None:
        self._obs, self._info = self._env.reset(seed=seed)
        self._steps, self._reward = 0, 0.0

    def _finish_episode(self, truncated: bool) -> None:
        result = EpisodeResult(
            index=self.episode,
            steps=self._steps,
            success=bool(self._info.get("is_success", False)),
            truncated=truncated,
            total_reward=self._reward,
        )
        self.episodes.append(result)
        logger.info(
            "episode %d: %s after %d steps (return %.3f)",
            result.index,
            "success" if result.success else "failure",
            result.steps,
            result.total_reward,
        )
        self._reset(None)

    def _frame(self) -> np.ndarray:
        return np.ascontiguousarray(self._obs["image"].transpose(1, 2, 0))


class SimCamera:
    """The rendered view of a :class:`SimRobot`, through the ``Camera`` protocol.

    The simulated world does not move between steps, so the current frame is always fresh:
    its timestamp is the time of the read.

    Example:
        >>> cam = SimRobot(randomization="none").camera()  # doctest: +SKIP
    """

    def __init__(self, robot: SimRobot, colour: str = "RGB") -> None:
        self.robot = robot
        self.colour_order = check_colour_order(colour)
        self._connected = False

    def __repr__(self) -> str:
        return f"SimCamera({self.robot!r})"

    @property
    def is_connected(self) -> bool:
        """Whether ``connect()`` was called and the robot is connected."""
        return self._connected and self.robot.is_connected

    def connect(self, warmup: bool = True) -> None:
        """Attach to the robot, which must be connected first."""
        if self._connected:
            raise DeviceAlreadyConnectedError(f"{self} is already connected")
        if not self.robot.is_connected:
            raise DeviceNotConnectedError(f"{self}: connect the robot before its camera")
        self._connected = True

    def read(self) -> np.ndarray:
        """The current rendered frame, ``uint8`` ``(H, W, 3)``."""
        if not self.is_connected:
            raise DeviceNotConnectedError(f"{self} is not connected: call connect() first")
        frame = self.robot._frame()
        return np.ascontiguousarray(frame[..., ::-1]) if self.colour_order == "BGR" else frame

    def read_latest(self) -> tuple[np.ndarray, float]:
        """The current frame, stamped now."""
        frame = self.read()
        return frame, self.robot.clock()

    def disconnect(self) -> None:
        """Detach from the robot (the robot stays connected)."""
        self._connected = False


def make_robot(spec: str, **env_kwargs: Any) -> SimRobot:
    """Build a robot from a command-line spec: ``sim`` or ``sim:ENV_ID``.

    Raises:
        ConfigError: any other spec (real arms plug in here as they are written).

    Example:
        >>> make_robot("sim:Sim2Real/PushCube-v0")
        SimRobot('Sim2Real/PushCube-v0')
    """
    kind, _, rest = spec.partition(":")
    if kind == "sim":
        return SimRobot(rest or DEFAULT_ENV, **env_kwargs)
    raise ConfigError(f"robot spec {spec!r}: expected 'sim' or 'sim:ENV_ID'")
