"""The robot runtime: device protocols, cameras, a simulated robot, the control loop.

Everything here imports only numpy, OpenCV and (for replayed data) torch, so it installs on a
robot computer; :class:`SimRobot` imports gymnasium and PyBullet when it connects.

Example:
    >>> from sim2real.deploy import ActionLimits, ReplayCamera, Runner, SimRobot  # doctest: +SKIP
    >>> robot = SimRobot(randomization="none")  # doctest: +SKIP
    >>> runner = Runner(policy, ReplayCamera("real/kuka_cube"), robot, hz=10,
    ...                 limits=ActionLimits(-1.0, 1.0))  # doctest: +SKIP
    >>> runner.run(steps=100).latency.format()  # doctest: +SKIP
"""

from __future__ import annotations

from sim2real.deploy.cameras import OpenCVCamera, ReplayCamera, make_camera
from sim2real.deploy.interfaces import (
    ActionLimits,
    ActsLike,
    Camera,
    CameraError,
    DeviceAlreadyConnectedError,
    DeviceNotConnectedError,
    EndOfStream,
    Robot,
    StagedPolicy,
    WatchdogError,
)
from sim2real.deploy.recording import Recorder
from sim2real.deploy.runner import LatencyStats, Runner, RunReport
from sim2real.deploy.sim_robot import EpisodeResult, SimCamera, SimRobot, make_robot

__all__ = [
    "ActionLimits",
    "ActsLike",
    "Camera",
    "CameraError",
    "DeviceAlreadyConnectedError",
    "DeviceNotConnectedError",
    "EndOfStream",
    "EpisodeResult",
    "LatencyStats",
    "OpenCVCamera",
    "Recorder",
    "ReplayCamera",
    "Robot",
    "RunReport",
    "Runner",
    "SimCamera",
    "SimRobot",
    "StagedPolicy",
    "WatchdogError",
    "make_camera",
    "make_robot",
]
