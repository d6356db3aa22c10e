"""Runner with fakes: rate, watchdog, stop on errors, limits, dry run, latency, recording."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from fakes import (  # noqa: E402
    PROPRIO,
    SHAPE,
    FakeCamera,
    FakeClock,
    FakePolicy,
    FakeRobot,
    FakeStagedPolicy,
    solid,
)

from sim2real.data.shards import ShardedDataset, read_manifest  # noqa: E402
from sim2real.deploy import (  # noqa: E402
    ActionLimits,
    CameraError,
    LatencyStats,
    Recorder,
    Runner,
    WatchdogError,
)
from sim2real.errors import ConfigError, DataError, InputError  # noqa: E402

HZ = 10.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, camera: Any = None, robot: Any = None, policy: Any = None, **kw: Any):
    camera = camera or FakeCamera(clock)
    robot = robot or FakeRobot()
    policy = policy or FakePolicy(clock)
    limits = ActionLimits(
        kw.pop("action_low", -1.0), kw.pop("action_high", 1.0), kw.pop("max_delta", None)
    )
    hz = kw.pop("hz", HZ)
    runner = Runner(policy, camera, robot, hz, limits=limits, clock=clock, sleep=clock.sleep, **kw)
    return runner, camera, robot, policy


# -- rate --------------------------------------------------------------------------------------
def test_ticks_start_every_period_and_sleep_the_rest(clock: FakeClock) -> None:
    t0 = clock.now
    runner, camera, robot, _ = make(clock, policy=FakePolicy(clock, cost_s=0.03))
    report = runner.run(steps=5)
    assert report.status == "completed" and report.steps == 5 and report.overruns == 0
    np.testing.assert_allclose(camera.read_times, t0 + np.arange(5) / HZ)
    np.testing.assert_allclose(clock.sleeps, [0.07] * 4)
    assert len(robot.sent) == 5 and robot.events[-1] == "stop" and robot.stops == 1
    np.testing.assert_allclose(report.duration_s, 0.43)


def test_overruns_are_counted_and_the_schedule_reanchors(clock: FakeClock) -> None:
    t0 = clock.now
    costs = [0.02, 0.25, 0.02, 0.02]
    runner, camera, _, _ = make(clock, policy=FakePolicy(clock, cost_s=costs.__getitem__))
    report = runner.run(steps=4)
    assert report.overruns == 1
    # tick 1 overran (ended at 0.35 > 0.2): tick 2 starts at once, tick 3 one period later
    np.testing.assert_allclose(camera.read_times, t0 + np.array([0.0, 0.1, 0.35, 0.45]))


def test_duration_limits_the_number_of_ticks(clock: FakeClock) -> None:
    runner, camera, _, _ = make(clock)
    assert runner.run(duration_s=1.0).steps == 10
    assert len(camera.read_times) == 10


def test_run_connects_robot_then_camera(clock: FakeClock) -> None:
    runner, camera, robot, _ = make(clock)
    camera.events = robot.events
    runner.run(steps=1)
    assert robot.events[:2] == ["robot.connect", "camera.connect"]


def test_close_stops_and_disconnects(clock: FakeClock) -> None:
    runner, camera, robot, _ = make(clock)
    with runner:
        runner.run(steps=2)
        assert camera.is_connected and robot.is_connected
    assert not camera.is_connected and not robot.is_connected and robot.stops == 2


def test_end_of_stream_ends_normally_and_stops(clock: FakeClock) -> None:
    runner, _, robot, _ = make(clock, camera=FakeCamera(clock, end_at=3))
    report = runner.run()
    assert report.status == "end_of_stream" and report.steps == 3
    assert robot.stops == 1 and len(robot.sent) == 3


# -- watchdog and failures ---------------------------------------------------------------------
def test_stale_frame_stops_the_robot(clock: FakeClock) -> None:
    camera = FakeCamera(clock, age_fn=lambda k: 0.6 if k == 2 else 0.01)
    runner, _, robot, _ = make(clock, camera=camera, watchdog_s=0.5)
    with pytest.raises(WatchdogError, match="600 ms old after capture"):
        runner.run(steps=10)
    assert robot.events[-3:] == ["send", "send", "stop"]
    assert runner.report.status == "watchdog" and runner.report.steps == 2


def test_frame_gone_stale_during_inference_is_not_sent(clock: FakeClock) -> None:
    policy = FakePolicy(clock, cost_s=lambda k: 0.7 if k == 1 else 0.0)
    runner, _, robot, _ = make(clock, policy=policy, watchdog_s=0.5)
    with pytest.raises(WatchdogError, match="before sending"):
        runner.run(steps=5)
    assert len(robot.sent) == 1 and robot.stops == 1


@pytest.mark.parametrize(
    ("camera_kw", "match"),
    [
        ({"frame_fn": lambda k: None}, "no frame"),
        ({"age_fn": lambda k: -5.0}, "same monotonic clock"),
    ],
    ids=["missing", "future"],
)
def test_missing_or_future_frame_trips_the_watchdog(
    clock: FakeClock, camera_kw: dict, match: str
) -> None:
    runner, _, robot, _ = make(clock, camera=FakeCamera(clock, **camera_kw))
    with pytest.raises(WatchdogError, match=match):
        runner.run(steps=3)
    assert robot.sent == [] and robot.stops == 1


@pytest.mark.parametrize(
    ("where", "error"),
    [("policy", RuntimeError), ("camera", CameraError), ("robot", OSError)],
)
def test_exception_anywhere_stops_the_robot_and_reraises(
    clock: FakeClock, where: str, error: type[Exception]
) -> None:
    camera = FakeCamera(clock, fail_at=2, error=CameraError("unplugged"))
    parts = {
        "policy": {"policy": FakePolicy(clock, raise_at=2)},
        "camera": {"camera": camera},
        "robot": {"robot": FakeRobot(fail_send_at=2)},
    }[where]
    runner, _, robot, _ = make(clock, **parts)
    with pytest.raises(error):
        runner.run(steps=10)
    assert len(robot.sent) == 2 and robot.events[-1] == "stop"
    assert runner.report.status == "error" and error.__name__ in (runner.report.error or "")


def test_ctrl_c_while_sleeping_stops_the_robot(clock: FakeClock) -> None:
    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    clock.on_sleep = interrupt
    runner, _, robot, _ = make(clock)
    with pytest.raises(KeyboardInterrupt):
        runner.run(steps=5)
    assert runner.report.status == "interrupted" and robot.stops == 1


def test_a_failing_stop_does_not_hide_the_original_error(clock: FakeClock) -> None:
    runner, _, robot, _ = make(
        clock, robot=FakeRobot(fail_stop=True), policy=FakePolicy(clock, raise_at=0)
    )
    with pytest.raises(RuntimeError, match="policy exploded"):
        runner.run(steps=3)
    assert robot.stops == 1


# -- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("action", "match"),
    [
        (np.array([0.1, np.nan, 0.0]), "finite"),
        (np.array([0.1, np.inf, 0.0]), "finite"),
        (np.zeros(4), r"shape \(3,\)"),
        ("left", "float array"),
    ],
    ids=["nan", "inf", "shape", "type"],
)
def test_bad_action_stops_with_a_clear_error(clock: FakeClock, action: Any, match: str) -> None:
    policy = FakePolicy(clock, action_fn=lambda k, f, p: action if k == 1 else np.zeros(3))
    runner, _, robot, _ = make(clock, policy=policy, action_low=[-1] * 3, action_high=[1] * 3)
    with pytest.raises(InputError, match=match):
        runner.run(steps=3)
    assert len(robot.sent) == 1 and robot.stops == 1
    assert all(np.all(np.isfinite(a)) for a in robot.sent)


@pytest.mark.parametrize(
    ("frame_fn", "match"),
    [
        (lambda k: np.zeros(SHAPE, np.float32), "uint8"),
        (lambda k: np.zeros(SHAPE[:2], np.uint8), r"\(H, W, 3\)"),
        (lambda k: np.zeros((*SHAPE[:2], 4), np.uint8), r"\(6, 8, 4\)"),
        (lambda k: [[1, 2, 3]], "numpy"),
        (lambda k: solid(k, (6, 9, 3)) if k == 1 else solid(k), "first frame"),
    ],
    ids=["dtype", "gray", "rgba", "list", "size-change"],
)
def test_bad_frame_stops_with_a_clear_error(clock: FakeClock, frame_fn: Any, match: str) -> None:
    runner, _, robot, _ = make(clock, camera=FakeCamera(clock, frame_fn=frame_fn))
    with pytest.raises(InputError, match=match):
        runner.run(steps=3)
    assert robot.stops == 1


@pytest.mark.parametrize("proprio", [np.array([0.0, np.nan]), np.zeros((2, 2))])
def test_bad_proprio_stops_with_a_clear_error(clock: FakeClock, proprio: np.ndarray) -> None:
    runner, _, robot, _ = make(clock, robot=FakeRobot(proprio=proprio))
    with pytest.raises(InputError, match="proprio"):
        runner.run(steps=2)
    assert robot.sent == [] and robot.stops == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hz": 0}, "hz"),
        ({"hz": -5.0}, "hz"),
        ({"hz": float("nan")}, "hz"),
        ({"hz": True}, "hz"),
        ({"watchdog_s": 0.0}, "watchdog_s"),
        ({"action_low": 1.0, "action_high": -1.0}, "action_low"),
        ({"action_low": [0, 0], "action_high": [1, 1, 1]}, "broadcast"),
        ({"action_low": [np.nan], "action_high": [1.0]}, "finite"),
        ({"max_delta": 0.0}, "max_delta"),
        ({"max_delta": [0.1, -0.1, 0.1]}, "max_delta"),
        ({"policy": object()}, "ActsLike"),
        ({"camera": object()}, "Camera"),
        ({"robot": object()}, "Robot"),
    ],
)
def test_bad_settings_are_rejected(clock: FakeClock, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make(clock, **kwargs)


def test_colour_order_mismatch_is_rejected(clock: FakeClock) -> None:
    policy = FakePolicy(clock)
    policy.colour_order = "BGR"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="expects BGR frames"):
        make(clock, policy=policy)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"steps": 0}, "steps"), ({"duration_s": -1}, "duration")]
)
def test_bad_run_limits_are_rejected(clock: FakeClock, kwargs: dict, match: str) -> None:
    runner, _, robot, _ = make(clock)
    with pytest.raises(ConfigError, match=match):
        runner.run(**kwargs)
    assert not robot.is_connected


# -- limits, dry run, latency ------------------------------------------------------------------
def test_actions_are_clipped_and_rate_limited(clock: FakeClock) -> None:
    policy = FakePolicy(clock, action_fn=lambda k, f, p: np.array([5.0, -5.0, 0.3]))
    runner, _, robot, _ = make(
        clock,
        policy=policy,
        action_low=[-1, -1, -1],
        action_high=[1, 1, 1],
        max_delta=[0.4, 0.4, 1],
    )
    runner.run(steps=4)
    expected = [[0.4, -0.4, 0.3], [0.8, -0.8, 0.3], [1.0, -1.0, 0.3], [1.0, -1.0, 0.3]]
    np.testing.assert_allclose(np.stack(robot.sent), expected, atol=1e-6)


def test_action_limits_alone() -> None:
    limits = ActionLimits([-1.0, 0.0], [1.0, 2.0], max_delta=0.5)
    out = limits.apply(np.array([-3.0, 3.0]), previous=np.array([0.8, 0.2]))
    np.testing.assert_allclose(out, [0.3, 0.7])
    assert out.dtype == np.float32


def test_dry_run_sends_nothing(clock: FakeClock) -> None:
    runner, _, robot, policy = make(clock, dry_run=True, max_delta=0.05)
    assert runner.run(steps=4).steps == 4
    assert len(policy.calls) == 4 and robot.sent == [] and robot.stops == 0
    failing = FakePolicy(clock, raise_at=1)
    runner, _, robot, _ = make(clock, dry_run=True, policy=failing)
    with pytest.raises(RuntimeError):
        runner.run(steps=4)
    assert robot.events == ["robot.connect"]


def test_policy_gets_the_frame_and_proprio(clock: FakeClock) -> None:
    runner, _, _, policy = make(clock)
    runner.run(steps=2)
    frame, proprio = policy.calls[1]
    np.testing.assert_array_equal(frame, solid(1))
    np.testing.assert_array_equal(proprio, PROPRIO)
    runner, _, _, policy = make(clock, robot=FakeRobot(proprio=None))
    runner.run(steps=1)
    assert policy.calls[0][1] is None


def test_latency_per_stage(clock: FakeClock) -> None:
    policy = FakeStagedPolicy(clock, pre_s=0.004, infer_s=0.011)
    runner, _, _, _ = make(clock, policy=policy)
    summary = runner.run(steps=3).latency.summary()
    assert summary["preprocess"]["p50_ms"] == pytest.approx(4.0)
    assert summary["inference"]["p99_ms"] == pytest.approx(11.0)
    assert summary["capture"]["n"] == 3 and summary["total"]["max_ms"] == pytest.approx(15.0)
    assert "inference" in runner.report.latency.format()


def test_latency_stats_percentiles() -> None:
    stats = LatencyStats()
    for ms in range(1, 101):
        stats.add("send", ms / 1000)
    s = stats.summary()["send"]
    assert (s["n"], s["p50_ms"], s["max_ms"]) == (100, pytest.approx(50.5), pytest.approx(100))
    assert s["p95_ms"] == pytest.approx(95.05) and s["p99_ms"] == pytest.approx(99.01)
    assert np.isnan(stats.summary()["capture"]["p50_ms"])


# -- recording ---------------------------------------------------------------------------------
def test_recording_round_trips_through_sharded_dataset(clock: FakeClock, tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "rec", shard_size=2, metadata={"hz": HZ})
    runner, _, robot, _ = make(clock, recorder=recorder, max_delta=0.05)
    runner.run(steps=5)
    assert recorder.closed
    ds = ShardedDataset(tmp_path / "rec")
    assert len(ds) == 5 and ds.manifest["num_shards"] == 3
    for k in range(5):
        sample = ds[k]
        np.testing.assert_array_equal(sample["image"], solid(k))
        np.testing.assert_array_equal(sample["proprio"], PROPRIO)
        np.testing.assert_allclose(sample["action"], [0.1] * 3, rtol=1e-6)
        np.testing.assert_allclose(sample["action_sent"], robot.sent[k])
        assert sample["sent"] and sample["step"] == k
        assert sample["time_s"] == pytest.approx(k / HZ)
        assert sample["frame_age_s"] == pytest.approx(0.01)
        assert sample["latency_total_s"] >= 0
    manifest = read_manifest(tmp_path / "rec")
    assert manifest["recording"]["run"]["status"] == "completed" and manifest["spec"]["hz"] == HZ
    json.dumps(manifest)  # plain JSON: no NaN


def test_a_closed_recorder_is_rejected_before_moving(clock: FakeClock, tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "rec")
    runner, _, robot, _ = make(clock, recorder=recorder)
    runner.run(steps=1)
    with pytest.raises(ConfigError, match="one recording per run"):
        runner.run(steps=1)
    assert len(robot.sent) == 1


def test_recording_survives_a_watchdog_stop(clock: FakeClock, tmp_path: Path) -> None:
    camera = FakeCamera(clock, age_fn=lambda k: 9.0 if k == 3 else 0.0)
    recorder = Recorder(tmp_path / "rec", shard_size=2)
    runner, _, _, _ = make(clock, camera=camera, recorder=recorder, dry_run=True)
    with pytest.raises(WatchdogError):
        runner.run(steps=10)
    ds = ShardedDataset(tmp_path / "rec")
    assert len(ds) == 3 and not ds[0]["sent"]
    assert ds.manifest["recording"]["run"]["status"] == "watchdog"


def test_recorder_rejects_changing_fields_and_used_folders(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "a")
    rec.add({"x": np.zeros(2, np.float32), "t": 0.5})
    with pytest.raises(DataError, match="expected"):
        rec.add({"x": np.zeros(3, np.float32), "t": 0.5})
    with pytest.raises(DataError, match="numeric"):
        rec.add({"x": np.zeros(2, np.float32), "t": "soon"})
    rec.close()
    with pytest.raises(ConfigError, match="closed"):
        rec.add({"x": np.zeros(2, np.float32), "t": 0.5})
    with pytest.raises(ConfigError, match="overwrite=True"):
        Recorder(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="new or empty folder"):
        Recorder(tmp_path / "b", overwrite=True)
    assert len(ShardedDataset(tmp_path / "a")) == 1
    with Recorder(tmp_path / "a", overwrite=True) as rec:
        pass
    assert len(ShardedDataset(tmp_path / "a")) == 0


def test_recorder_caps_shard_bytes(tmp_path: Path) -> None:
    with Recorder(tmp_path / "r", shard_size=100, max_shard_bytes=3 * 48) as rec:
        for k in range(7):
            rec.add({"image": solid(k, (4, 4, 3))})
    ds = ShardedDataset(tmp_path / "r")
    assert ds.manifest["shard_size"] == 3 and ds.manifest["num_shards"] == 3
    np.testing.assert_array_equal(ds[6]["image"], solid(6, (4, 4, 3)))


# -- robot-side imports ------------------------------------------------------------------------
def test_runtime_imports_no_simulator_or_rl_library() -> None:
    code = (
        "import sys, sim2real.deploy\n"
        "bad = {'gymnasium', 'pybullet', 'stable_baselines3'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
