"""The fixed-rate control loop: camera -> policy -> limits -> robot, with a watchdog.

Each tick: read the newest frame and the robot's proprioception (``capture``), validate and
prepare them (``preprocess``), compute an action (``inference``), clip it to the action box
and to a maximum change per tick, and send it (``send``). Ticks start every ``1 / hz``
seconds on a monotonic clock; a tick that runs past the next start is an overrun: the next
tick starts at once and the schedule re-anchors there (no burst of catch-up ticks).

Safety: a frame older than ``watchdog_s`` (checked after capture and again just before
sending), a missing frame, or any exception (camera, policy, NaN action, robot, recorder,
Ctrl-C) sends ``robot.stop()`` and then **re-raises**: the robot is left holding position and
the caller sees what went wrong (:class:`WatchdogError` for stale/missing frames). The report
of the failed run is on :attr:`Runner.report`. A normal end (step count, duration, or a
replay's :class:`EndOfStream`) also sends ``stop()`` and returns the :class:`RunReport`.
In dry-run mode nothing at all is sent to the robot, ``stop()`` included.

When the target is not visible (:meth:`Runner.set_not_visible`): a policy with
``perceive(frame) -> {"visible", "confidence", ...}`` (:meth:`sim2real.deploy.Policy.perceive`)
is asked every tick whether its target is in view; a frame where it is not, or where the
confidence is below ``min_confidence``, is handled by the chosen behaviour: ``"pass"`` (the
default: act as usual, perceive is not called), ``"hold"`` (send a zero action, which holds
the end effector, rate-limited by ``max_delta``, until the target is back) or ``"stop"``
(``robot.stop()`` and end the run with status ``not_visible``).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from sim2real.deploy.interfaces import (
    ActionLimits,
    ActsLike,
    Camera,
    EndOfStream,
    Robot,
    StagedPolicy,
    WatchdogError,
    check_proprio,
)
from sim2real.deploy.latency import STAGES, LatencyStats
from sim2real.deploy.recording import Recorder
from sim2real.errors import ConfigError, InputError
from sim2real.images import check_frame

logger = logging.getLogger(__name__)

Status = Literal[
    "running", "completed", "end_of_stream", "not_visible", "watchdog", "error", "interrupted"
]
NOT_VISIBLE_BEHAVIOURS = ("pass", "hold", "stop")


class TargetLost(EndOfStream):
    """The target is not visible and the runner's behaviour for that is ``"stop"``."""


@dataclass
class RunReport:
    """What a run did.

    Attributes:
        status: ``completed`` (step count or duration reached), ``end_of_stream`` (replay
            exhausted), ``not_visible`` (the target was lost with the ``"stop"`` behaviour),
            or, when ``run`` raised, ``watchdog``, ``error`` or ``interrupted``.
        steps: ticks completed (an action computed, and sent unless dry run).
        overruns: ticks that ran past the start of the next one.
        duration_s: wall time of the run on the runner's clock.
        error: the message of the exception that ended the run, if any.
        latency: per-stage durations.
        not_visible: ticks on which the target was not visible (or not confidently seen);
            counted only when a ``not_visible`` behaviour other than ``"pass"`` is set.
    """

    status: Status = "running"
    steps: int = 0
    overruns: int = 0
    not_visible: int = 0
    duration_s: float = 0.0
    error: str | None = None
    latency: LatencyStats = field(default_factory=LatencyStats)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: latency as :meth:`LatencyStats.summary`, ``nan`` as ``None``."""
        latency = {
            stage: {key: None if math.isnan(value) else value for key, value in stats.items()}
            for stage, stats in self.latency.summary().items()
        }
        return {
            "status": self.status,
            "steps": self.steps,
            "overruns": self.overruns,
            "not_visible": self.not_visible,
            "duration_s": self.duration_s,
            "error": self.error,
            "latency": latency,
        }


class Runner:
    """Run a policy on a robot at a fixed rate, safely (see the module docstring).

    Args:
        policy: anything with ``act(frame, proprio) -> action`` (e.g. ``Policy``); if it also
            has ``preprocess`` / ``infer`` they are timed as separate stages.
        camera: a :class:`Camera`; ``run`` connects it if needed, ``close`` disconnects it.
        robot: a :class:`Robot`; ``run`` connects it (before the camera), ``close`` stops
            and disconnects it. ``run`` itself never disconnects anything.
        hz: control rate, ``> 0``.
        limits: an :class:`ActionLimits`: the action box (``low``, ``high``, scalars or
            ``(A,)``) and ``max_delta``, the largest change of any action element per tick;
            the first tick is limited relative to zero (rest for delta/velocity actions).
            ``None``: no limit.
        watchdog_s: largest frame age accepted, seconds.
        dry_run: compute and record actions but send nothing to the robot.
        recorder: records every tick; ``run`` closes it at the end.
        clock: monotonic clock in seconds (cameras must stamp frames with the same clock).
        sleep: sleeps a number of seconds (inject both for tests).

    Raises:
        ConfigError: on a bad argument, or camera and policy colour orders that differ.

    Example:
        >>> robot = SimRobot(randomization="none"); robot.connect()  # doctest: +SKIP
        >>> runner = Runner(policy, robot.camera(), robot, hz=10,
        ...                 limits=ActionLimits(-1.0, 1.0, max_delta=0.5))  # doctest: +SKIP
        >>> with runner:  # close() stops and disconnects at the end  # doctest: +SKIP
        ...     report = runner.run(steps=50)
        >>> print(report.latency.format())  # doctest: +SKIP
    """

    def __init__(
        self,
        policy: ActsLike,
        camera: Camera,
        robot: Robot,
        hz: float,
        *,
        limits: ActionLimits,
        watchdog_s: float = 0.5,
        dry_run: bool = False,
        recorder: Recorder | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        for name, value in (("hz", hz), ("watchdog_s", watchdog_s)):
            if not (_is_number(value) and value > 0):
                raise ConfigError(f"{name}: expected a finite number > 0, got {value!r}")
        checks = (("policy", policy, ActsLike), ("camera", camera, Camera), ("robot", robot, Robot))
        for name, obj, kind in checks:
            if not isinstance(obj, kind):
                raise ConfigError(
                    f"{name}: expected an object satisfying the {kind.__name__} protocol, got "
                    f"{type(obj).__name__}"
                )
        if not isinstance(limits, ActionLimits):
            raise ConfigError(
                "limits: expected an ActionLimits(low, high, max_delta), got "
                f"{type(limits).__name__}"
            )
        policy_colour = getattr(policy, "colour_order", None)
        if policy_colour is not None and policy_colour != camera.colour_order:
            raise ConfigError(
                f"the policy expects {policy_colour} frames, the camera delivers "
                f"{camera.colour_order}; set the camera's colour to {policy_colour!r}"
            )
        self.policy, self.camera, self.robot = policy, camera, robot
        self.hz = float(hz)
        self.period = 1.0 / self.hz
        self.limits = limits
        self.watchdog_s = float(watchdog_s)
        self.dry_run = bool(dry_run)
        self.recorder = recorder
        self.clock, self.sleep = clock, sleep
        self.report = RunReport()
        self._staged = isinstance(policy, StagedPolicy)
        self._previous: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None
        self._t0: float | None = None
        self.not_visible, self.min_confidence = "pass", 0.5

    def set_not_visible(self, behaviour: str, min_confidence: float = 0.5) -> Runner:
        """What to do on a tick whose frame does not show the target (see the module
        docstring); returns the runner.

        Args:
            behaviour: ``"pass"`` (act as usual), ``"hold"`` (zero action) or ``"stop"``
                (stop the robot, end the run with status ``not_visible``).
            min_confidence: a frame whose confidence is below this counts as not visible too
                (0: only the ``visible`` flag counts).

        Raises:
            ConfigError: an unknown behaviour, a confidence outside [0, 1], or a policy
                without ``perceive`` for ``hold``/``stop``.

        Example:
            >>> runner.set_not_visible("hold").run(steps=100)  # doctest: +SKIP
        """
        if behaviour not in NOT_VISIBLE_BEHAVIOURS:
            raise ConfigError(
                f"not_visible={behaviour!r}: expected one of {list(NOT_VISIBLE_BEHAVIOURS)}"
            )
        if not (_is_number(min_confidence) and 0.0 <= min_confidence <= 1.0):
            raise ConfigError(
                f"min_confidence: expected a number in [0, 1], got {min_confidence!r}"
            )
        if behaviour != "pass" and not callable(getattr(self.policy, "perceive", None)):
            raise ConfigError(
                f"not_visible={behaviour!r} needs a policy that says whether its target is in "
                f"view (perceive(frame), as sim2real.deploy.Policy has); "
                f"{type(self.policy).__name__} has none"
            )
        self.not_visible, self.min_confidence = behaviour, float(min_confidence)
        return self

    def run(self, steps: int | None = None, duration_s: float | None = None) -> RunReport:
        """Run until ``steps`` ticks, ``duration_s`` seconds or the end of a replay.

        With neither limit it runs until the camera ends or an exception (Ctrl-C) stops it.

        Raises:
            WatchdogError: a stale or missing frame (the robot was stopped first).
            Exception: whatever else ended the run (the robot was stopped first).
        """
        if steps is not None and (not _is_number(steps, int) or steps < 1):
            raise ConfigError(f"steps: expected None or an integer >= 1, got {steps!r}")
        if duration_s is not None and not (_is_number(duration_s) and duration_s > 0):
            raise ConfigError(f"duration_s: expected None or a number > 0, got {duration_s!r}")
        if self.recorder is not None and self.recorder.closed:
            raise ConfigError(f"{self.recorder!r} is closed: one recording per run, pass a new one")
        self.report = report = RunReport()
        self._previous, self._shape, self._t0 = None, None, None
        try:
            self._connect()
            self._t0 = t0 = next_tick = self.clock()
            while steps is None or report.steps < steps:
                if duration_s is not None and next_tick - t0 >= duration_s - 1e-9:
                    break
                wait = next_tick - self.clock()
                if wait > 0:
                    self.sleep(wait)
                self._tick(report)
                report.steps += 1
                next_tick += self.period
                now = self.clock()
                if now > next_tick:
                    report.overruns += 1
                    late_ms = (now - next_tick) * 1e3
                    logger.debug("tick %d overran by %.1f ms", report.steps, late_ms)
                    next_tick = now
            report.status = "completed"
        except TargetLost as err:
            report.status = "not_visible"
            logger.warning("%s", err)
        except EndOfStream as err:
            report.status = "end_of_stream"
            logger.info("%s", err)
        except BaseException as err:
            report.status = _failure_status(err)
            report.error = f"{type(err).__name__}: {err}"
            logger.error("run stopped after %d steps: %s", report.steps, report.error)
            self._safe_stop()
            self._finish(report)
            raise
        self._safe_stop()
        self._finish(report)
        return report

    def close(self) -> None:
        """Stop the robot (unless dry run) and disconnect the camera, then the robot."""
        self._safe_stop()
        for device in (self.camera, self.robot):
            if device.is_connected:
                device.disconnect()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- one tick ---------------------------------------------------------------------------
    def _tick(self, report: RunReport) -> None:
        clock, stats = self.clock, report.latency
        t_start = clock()
        frame, stamp = self._read_frame()
        observation = self.robot.get_observation()
        t_captured = clock()
        self._check_age(stamp, t_captured, "after capture")
        frame = check_frame(frame, f"frame from {self.camera!r}")
        if self._shape is None:
            self._shape = frame.shape
        elif frame.shape != self._shape:
            raise InputError(
                f"frame from {self.camera!r}: shape {frame.shape}, expected {self._shape} "
                "as the first frame of the run"
            )
        proprio = check_proprio(observation.get("proprio"), f"proprio from {self.robot!r}")
        policy: Any = self.policy
        seen = self._perceive(frame, report)
        hold = seen is not None and not seen["ok"]
        inputs = policy.preprocess(frame, proprio) if self._staged and not hold else None
        t_prepared = clock()
        if hold:
            raw = self._zero_action()
        else:
            raw = policy.infer(inputs) if self._staged else policy.act(frame, proprio)
        t_inferred = clock()
        action = self.limits.check(raw)
        previous = np.zeros_like(action) if self._previous is None else self._previous
        safe = self.limits.apply(action, previous)
        self._check_age(stamp, clock(), "before sending")
        if not self.dry_run:
            self.robot.send_action(safe)
        self._previous = safe
        t_sent = clock()
        marks = (t_start, t_captured, t_prepared, t_inferred, t_sent)
        durations = [end - begin for begin, end in itertools.pairwise(marks)]
        durations.append(t_sent - t_start)
        for stage, seconds in zip(STAGES, durations, strict=True):
            stats.add(stage, seconds)
        if self.recorder is not None:
            sample: dict[str, Any] = {"image": frame}
            if proprio is not None:
                sample["proprio"] = proprio
            sample.update(
                action=action,
                action_sent=safe,
                sent=not self.dry_run,
                step=report.steps,
                time_s=t_start - (self._t0 or 0.0),
                frame_age_s=t_captured - stamp,
                **{f"latency_{s}_s": d for s, d in zip(STAGES, durations, strict=True)},
            )
            if seen is not None:
                sample.update(visible=bool(seen["ok"]), confidence=float(seen["confidence"]))
            self.recorder.add(sample)

    def _zero_action(self) -> np.ndarray:
        """The ``"hold"`` action: zeros shaped like the last action, the policy's
        ``action_low`` or the limits' (end-effector deltas: zero holds the pose)."""
        if self._previous is not None:
            return np.zeros_like(self._previous)
        for low in (getattr(self.policy, "action_low", None), self.limits.low):
            if low is not None and np.ndim(low) >= 1:
                return np.zeros(np.shape(low), np.float32)
        raise ConfigError(
            "not_visible='hold' on the first tick: the action size is unknown (scalar limits "
            "and a policy without action_low); give ActionLimits arrays of the action's size"
        )

    def _perceive(self, frame: np.ndarray, report: RunReport) -> dict[str, Any] | None:
        """``{"ok", "confidence"}`` of this frame (None with ``"pass"``); with ``"stop"`` a
        frame without the target stops the robot and ends the run (:class:`TargetLost`)."""
        if self.not_visible == "pass":
            return None
        seen = self.policy.perceive(frame)  # type: ignore[attr-defined]
        confidence = float(seen.get("confidence", 1.0))
        ok = bool(seen.get("visible", True)) and confidence >= self.min_confidence
        if not ok:
            report.not_visible += 1
            if self.not_visible == "stop":
                raise TargetLost(
                    f"target not visible at step {report.steps} (visible="
                    f"{bool(seen.get('visible', True))}, confidence {confidence:.2f} < "
                    f"{self.min_confidence:g} or not visible); robot stopped"
                )
        return {"ok": ok, "confidence": confidence}

    def _read_frame(self) -> tuple[np.ndarray, float]:
        latest = self.camera.read_latest()
        if latest is None:
            raise WatchdogError(f"{self.camera!r} returned no frame; robot stopped")
        frame, stamp = latest
        if frame is None:
            raise WatchdogError(f"{self.camera!r} returned no frame; robot stopped")
        return frame, float(stamp)

    def _check_age(self, stamp: float, now: float, when: str) -> None:
        age = now - stamp
        if age > self.watchdog_s:
            raise WatchdogError(
                f"frame is {age * 1e3:.0f} ms old {when}, expected at most "
                f"{self.watchdog_s * 1e3:.0f} ms (watchdog_s); robot stopped"
            )
        if age < -self.watchdog_s:
            raise WatchdogError(
                f"frame timestamp is {-age:.3f} s in the future: the camera and the runner "
                "must stamp with the same monotonic clock; robot stopped"
            )

    # -- start and end ----------------------------------------------------------------------
    def _connect(self) -> None:
        if not self.robot.is_connected:
            self.robot.connect()
        if not self.camera.is_connected:
            self.camera.connect()

    def _safe_stop(self) -> None:
        """``robot.stop()`` unless dry run; a failure is logged, never raised."""
        if self.dry_run:
            return
        try:
            if self.robot.is_connected:
                self.robot.stop()
        except Exception:
            logger.exception("robot.stop() failed: the robot may still be moving")

    def _finish(self, report: RunReport) -> None:
        report.duration_s = 0.0 if self._t0 is None else self.clock() - self._t0
        logger.info(
            "run %s: %d steps, %d overruns in %.2f s\n%s",
            report.status,
            report.steps,
            report.overruns,
            report.duration_s,
            report.latency.format(),
        )
        if self.recorder is not None and not self.recorder.closed:
            try:
                self.recorder.set_info("run", report.to_dict())
                self.recorder.set_info("hz", self.hz)
                self.recorder.set_info("dry_run", self.dry_run)
                self.recorder.close()
            except Exception:
                if report.status in ("completed", "end_of_stream"):
                    raise
                logger.exception("closing the recording failed")


def _is_number(value: Any, kind: type = float) -> bool:
    """Whether ``value`` is a finite int/float (an int if ``kind is int``), not a bool."""
    if isinstance(value, bool) or not isinstance(value, int if kind is int else int | float):
        return False
    return math.isfinite(value)


def _failure_status(err: BaseException) -> Status:
    if isinstance(err, WatchdogError):
        return "watchdog"
    return "interrupted" if isinstance(err, KeyboardInterrupt) else "error"
