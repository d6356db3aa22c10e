"""SimRobot: the real PyBullet env behind the Robot protocol, and the Runner driving it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from fakes import FakeClock, FakePolicy  # noqa: E402

from sim2real.data.shards import ShardedDataset  # noqa: E402
from sim2real.deploy import (  # noqa: E402
    ActionLimits,
    DeviceNotConnectedError,
    Recorder,
    Runner,
    SimRobot,
    make_camera,
    make_robot,
)
from sim2real.errors import ConfigError, InputError  # noqa: E402

SIZE = 32
ENV_KW = {"randomization": "none", "image_size": SIZE, "labels": "none"}


@pytest.fixture
def robot() -> Iterator[SimRobot]:
    robot = SimRobot(seed=0, max_steps=6, **ENV_KW)
    robot.connect()
    yield robot
    robot.disconnect()


def ee(robot: SimRobot) -> np.ndarray:
    """End-effector position: the last 3 proprio entries."""
    return robot.get_observation()["proprio"][-3:]


def test_observation_matches_the_env_spaces(robot: SimRobot) -> None:
    obs = robot.get_observation()
    assert obs["image"].dtype == np.uint8 and obs["image"].shape == (SIZE, SIZE, 3)
    assert obs["proprio"].dtype == np.float32 and obs["proprio"].ndim == 1
    assert obs["episode"] == 0 and obs["is_success"] is False
    assert robot.action_shape == (3,)


def test_actions_move_the_arm_and_stop_holds_it(robot: SimRobot) -> None:
    p0 = ee(robot)
    applied = robot.send_action(np.array([2.0, 0.0, 0.0]))
    np.testing.assert_array_equal(applied, [1.0, 0.0, 0.0])  # clipped to the action box
    p1 = ee(robot)
    assert p1[0] - p0[0] > 0.01  # moved along +x
    robot.stop()
    p2 = ee(robot)
    robot.stop()
    p3 = ee(robot)
    assert np.linalg.norm(p2 - p1) < 0.5 * np.linalg.norm(p1 - p0)  # brakes, does not go on
    assert np.linalg.norm(p3 - p2) < 2e-3  # then holds
    assert robot.stops == 2


def test_episodes_are_counted_and_reset(robot: SimRobot) -> None:
    for _ in range(6):
        robot.send_action(np.zeros(3))
    assert robot.episode == 1 and len(robot.episodes) == 1
    result = robot.episodes[0]
    assert (result.index, result.steps, result.success, result.truncated) == (0, 6, False, True)
    assert robot.success_rate == 0.0
    assert robot.get_observation()["episode"] == 1


def test_same_seed_same_observations() -> None:
    frames = []
    for _ in range(2):
        robot = SimRobot(seed=3, **ENV_KW)
        robot.connect()
        robot.send_action(np.array([0.5, -0.5, 0.2]))
        frames.append(robot.get_observation())
        robot.disconnect()
    np.testing.assert_array_equal(frames[0]["image"], frames[1]["image"])
    np.testing.assert_array_equal(frames[0]["proprio"], frames[1]["proprio"])


@pytest.mark.parametrize(
    ("action", "match"), [(np.zeros(4), r"shape \(3,\)"), (np.array([0, np.nan, 0]), "finite")]
)
def test_bad_actions_are_rejected(robot: SimRobot, action: np.ndarray, match: str) -> None:
    with pytest.raises(InputError, match=match):
        robot.send_action(action)


def test_use_before_connect_and_bad_settings() -> None:
    robot = SimRobot(**ENV_KW)
    for call in (robot.get_observation, robot.stop, lambda: robot.send_action(np.zeros(3))):
        with pytest.raises(DeviceNotConnectedError, match="connect"):
            call()
    with pytest.raises(DeviceNotConnectedError, match="connect the robot"):
        robot.camera().connect()
    assert np.isnan(robot.success_rate)
    with pytest.raises(ConfigError, match="not registered"):
        SimRobot("Sim2Real/FlyCube-v0").connect()
    with pytest.raises(ConfigError, match="seed"):
        SimRobot(seed=1.5)  # type: ignore[arg-type]


def test_sim_camera_serves_the_rendered_frame(robot: SimRobot) -> None:
    clock = FakeClock()
    robot.clock = clock
    rgb, bgr = robot.camera(), robot.camera(colour="BGR")
    rgb.connect()
    bgr.connect()
    frame, stamp = rgb.read_latest()
    assert stamp == clock.now
    np.testing.assert_array_equal(frame, robot.get_observation()["image"])
    np.testing.assert_array_equal(bgr.read(), frame[..., ::-1])
    rgb.disconnect()
    with pytest.raises(DeviceNotConnectedError):
        rgb.read()


def test_runner_drives_the_sim_robot_and_records(tmp_path: Path) -> None:
    clock = FakeClock()
    robot = make_robot("sim", seed=0, clock=clock, **ENV_KW)
    camera = make_camera("sim", robot=robot)
    robot.connect()  # the sim camera needs its robot connected
    policy = FakePolicy(clock, action_fn=lambda k, frame, proprio: np.array([1.0, 0.0, 0.0]))
    recorder = Recorder(tmp_path / "rec")
    limits = ActionLimits(-1.0, 1.0, max_delta=0.5)
    runner = Runner(
        policy, camera, robot, 10, limits=limits, recorder=recorder, clock=clock, sleep=clock.sleep
    )
    start = ee(robot)
    report = runner.run(steps=4)
    assert report.status == "completed" and report.steps == 4 and robot.stops == 1
    assert ee(robot)[0] > start[0] + 0.02
    ds = ShardedDataset(tmp_path / "rec")
    assert len(ds) == 4 and ds[0]["image"].shape == (SIZE, SIZE, 3)
    np.testing.assert_allclose(ds[0]["action_sent"], [0.5, 0, 0])
    np.testing.assert_allclose(ds[1]["action_sent"], [1.0, 0, 0])
    np.testing.assert_array_equal(ds[0]["proprio"], policy.calls[0][1])
    robot.disconnect()


def test_make_robot_specs() -> None:
    assert make_robot("sim").env_id == "Sim2Real/ReachCube-v0"
    assert make_robot("sim:Sim2Real/PushCube-v0").env_id == "Sim2Real/PushCube-v0"
    with pytest.raises(ConfigError, match="expected 'sim'"):
        make_robot("ur5:192.168.0.2")
