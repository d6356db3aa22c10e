"""``sim2real run``: a policy bundle on a camera and a robot, from command-line specs.

Example:
    >>> result = run_bundle("runs/reach", "sim", "sim", RunSettings(hz=10, steps=100))
    ... # doctest: +SKIP
    >>> print(result.report.latency.format())  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sim2real.deploy.cameras import make_camera
from sim2real.deploy.interfaces import ActionLimits
from sim2real.deploy.policy import Policy
from sim2real.deploy.recording import Recorder
from sim2real.deploy.runner import Runner, RunReport
from sim2real.deploy.sim_robot import make_robot
from sim2real.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What :func:`run_bundle` did.

    Attributes:
        report: the runner's report (status, steps, latency per stage).
        policy: the loaded policy (``repr`` names its contract).
        episodes: finished simulated episodes (``SimRobot`` only), as dicts.
        success_rate: fraction of those episodes that succeeded; ``None`` without any.
        recording: the recording folder, if one was written.
    """

    report: RunReport
    policy: Policy
    episodes: list[dict[str, Any]]
    success_rate: float | None
    recording: Path | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {
            **self.report.to_dict(),
            "policy": repr(self.policy),
            "episodes": self.episodes,
            "success_rate": self.success_rate,
            "recording": str(self.recording) if self.recording else None,
        }


@dataclass(frozen=True)
class RunSettings:
    """How :func:`run_bundle` runs a bundle (checked by :class:`Runner` and the loaders).

    Attributes:
        hz: control rate.
        steps: ticks to run (``None``: until ``duration_s`` or the end of a replay).
        duration_s: seconds to run.
        max_delta: largest change of an action element per tick.
        watchdog_s: largest accepted frame age.
        dry_run: compute actions, send nothing.
        device: where the policy runs.
        seed: seed of the simulated robot's first episode.
        not_visible: what to do when the policy's target is not in view: ``pass``, ``hold``
            or ``stop`` (:meth:`~sim2real.deploy.runner.Runner.set_not_visible`).
        min_confidence: frames with a lower confidence count as not visible too.

    Example:
        >>> RunSettings(hz=20, steps=50).watchdog_s
        0.5
    """

    hz: float = 10.0
    steps: int | None = 100
    duration_s: float | None = None
    max_delta: float | None = None
    watchdog_s: float = 0.5
    dry_run: bool = False
    device: str = "auto"
    seed: int | None = 0
    not_visible: str = "pass"
    min_confidence: float = 0.5


def run_bundle(
    bundle: str | Path,
    camera: str = "sim",
    robot: str = "sim",
    settings: RunSettings | None = None,
    *,
    record: str | Path | None = None,
) -> RunResult:
    """Load a bundle and run it through :class:`Runner` until ``steps`` / ``duration_s``.

    ``robot="sim"`` simulates the bundle's own training env (the contract's ``env_id`` and
    image size, randomisation ``none``); ``sim:ENV_ID`` another one. The policy reads frames
    in the camera's colour order.

    Args:
        bundle: ``RUN`` or ``RUN/bundle``.
        camera: ``sim``, ``replay:DIR``, ``replay@FPS:VIDEO``, ``opencv:0`` (see
            :func:`~sim2real.deploy.cameras.make_camera`).
        robot: ``sim`` or ``sim:ENV_ID``.
        settings: rate, limits and safety settings (default: :class:`RunSettings`' defaults).
        record: folder to record observations, actions and timings into.

    Raises:
        ConfigError: bad specs or settings; CheckpointError: a bad bundle.
    """
    s = RunSettings() if settings is None else settings
    steps, duration_s, hz = s.steps, s.duration_s, s.hz
    if steps is None and duration_s is None and not camera.startswith("replay"):
        raise ConfigError("run: give steps or duration_s (a live camera never ends by itself)")
    policy = Policy.load(bundle, device=s.device)
    env_kwargs: dict[str, Any] = {}
    if robot.startswith("sim"):
        contract_env = policy.contract.get("env_kwargs", {})
        env_kwargs = {"randomization": "none", "seed": s.seed}
        if "image_size" in contract_env:
            env_kwargs["image_size"] = contract_env["image_size"]
        if robot == "sim" and policy.contract.get("env_id"):
            robot = f"sim:{policy.contract['env_id']}"
    sim_robot = make_robot(robot, **env_kwargs)
    cam = make_camera(camera, robot=sim_robot)
    policy.colour_order = cam.colour_order
    recorder = None
    if record is not None:
        meta = {"bundle": str(bundle), "camera": camera, "robot": robot, "hz": hz}
        recorder = Recorder(record, metadata=meta, overwrite=True)
    runner = Runner(
        policy,
        cam,
        sim_robot,
        hz,
        limits=ActionLimits(policy.action_low, policy.action_high, s.max_delta),
        watchdog_s=s.watchdog_s,
        dry_run=s.dry_run,
        recorder=recorder,
    ).set_not_visible(s.not_visible, s.min_confidence)
    with runner:
        report = runner.run(steps=steps, duration_s=duration_s)
        episodes = [asdict(e) for e in getattr(sim_robot, "episodes", [])]
    rate = sum(bool(e.get("success")) for e in episodes) / len(episodes) if episodes else None
    logger.info("run finished: %s, %d steps", report.status, report.steps)
    return RunResult(report, policy, episodes, rate, Path(record) if record else None)
