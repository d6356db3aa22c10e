"""The Runner's behaviour when the policy's target is not in view: pass, hold, stop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim2real.data.shards import ShardedDataset
from sim2real.deploy import ActionLimits, Recorder, Runner
from sim2real.errors import ConfigError
from tests.deploy.fakes import SHAPE, FakeCamera, FakeClock, FakePolicy, FakeRobot, FakeSeeingPolicy

HZ = 10.0
LOST = range(2, 5)  # reads 2, 3, 4 show no object


def no_object_between(k: int) -> np.ndarray:
    """A camera whose frames show nothing (black) on reads in ``LOST``."""
    return np.zeros(SHAPE, np.uint8) if k in LOST else np.full(SHAPE, 200, np.uint8)


def make(
    clock: FakeClock, behaviour: str, **kw: object
) -> tuple[Runner, FakeRobot, FakeSeeingPolicy]:
    policy = FakeSeeingPolicy(clock)
    robot = FakeRobot()
    camera = FakeCamera(clock, frame_fn=no_object_between)
    limits = ActionLimits(-1.0, 1.0, kw.pop("max_delta", None))  # type: ignore[arg-type]
    runner = Runner(
        policy,
        camera,
        robot,
        HZ,
        limits=limits,
        clock=clock,
        sleep=clock.sleep,
        **kw,  # type: ignore[arg-type]
    )
    return runner.set_not_visible(behaviour), robot, policy


def test_pass_acts_as_usual_and_does_not_ask() -> None:
    runner, robot, policy = make(FakeClock(), "pass")
    report = runner.run(steps=6)
    assert report.status == "completed" and report.not_visible == 0
    assert policy.perceived == 0 and len(policy.calls) == 6
    np.testing.assert_allclose(np.stack(robot.sent), 0.1)


def test_hold_sends_zero_actions_while_the_object_is_out_of_view() -> None:
    runner, robot, policy = make(FakeClock(), "hold")
    report = runner.run(steps=6)
    assert report.status == "completed" and report.steps == 6 and report.not_visible == 3
    sent = np.stack(robot.sent)
    np.testing.assert_allclose(sent[[0, 1, 5]], 0.1)
    np.testing.assert_allclose(sent[2:5], 0.0)
    assert len(policy.calls) == 3  # the policy is not run on frames without the object


def test_hold_is_rate_limited_by_max_delta() -> None:
    runner, robot, _ = make(FakeClock(), "hold", max_delta=0.04)
    runner.run(steps=6)
    sent = np.stack(robot.sent)[:, 0]
    np.testing.assert_allclose(sent, [0.04, 0.08, 0.04, 0.0, 0.0, 0.04], atol=1e-6)


def test_stop_stops_the_robot_and_ends_the_run(tmp_path: Path) -> None:
    clock = FakeClock()
    recorder = Recorder(tmp_path / "rec")
    runner, robot, _ = make(clock, "stop", recorder=recorder)
    report = runner.run(steps=6)
    assert report.status == "not_visible" and report.steps == 2 and report.not_visible == 1
    assert len(robot.sent) == 2 and robot.events[-1] == "stop" and robot.stops == 1
    assert report.to_dict()["not_visible"] == 1
    ds = ShardedDataset(tmp_path / "rec", verify=False)
    assert len(ds) == 2 and bool(ds[0]["visible"]) and ds[0]["confidence"] == pytest.approx(0.9)


def test_low_confidence_counts_as_not_visible() -> None:
    clock = FakeClock()
    policy = FakeSeeingPolicy(clock, confidence=0.3)
    runner = Runner(
        policy, FakeCamera(clock), FakeRobot(), HZ, limits=ActionLimits(-1.0, 1.0),
        clock=clock, sleep=clock.sleep,
    )  # fmt: skip
    assert runner.set_not_visible("hold").run(steps=3).not_visible == 3
    assert runner.set_not_visible("hold", min_confidence=0.2).run(steps=3).not_visible == 0


def test_bad_not_visible_settings() -> None:
    clock = FakeClock()
    runner = Runner(
        FakePolicy(clock), FakeCamera(clock), FakeRobot(), HZ, limits=ActionLimits(-1.0, 1.0),
        clock=clock, sleep=clock.sleep,
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"expected one of \['pass', 'hold', 'stop'\]"):
        runner.set_not_visible("freeze")
    with pytest.raises(ConfigError, match="perceive"):
        runner.set_not_visible("hold")
    with pytest.raises(ConfigError, match="min_confidence"):
        runner.set_not_visible("pass", min_confidence=1.5)
    assert runner.set_not_visible("pass") is runner
