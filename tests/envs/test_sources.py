"""The labelled-frame source behind ``sim2real generate``: a pure function of (seed, index)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sim2real.data.generate import generate_dataset
from sim2real.data.shards import ShardedDataset
from sim2real.envs.sources import make_source, scene_spec


def test_sample_depends_only_on_seed_and_index() -> None:
    spec = {**scene_spec("kuka_cube", "default", (64, 48), masks=True), "seed": 3}
    a, b = make_source(spec), make_source(spec)
    a(5), a(1)  # render others first: state must not leak into sample 7
    sa, sb = a(7), b(7)
    for key in sa:
        if isinstance(sa[key], str):
            assert sa[key] == sb[key]
        else:
            np.testing.assert_array_equal(sa[key], sb[key])
    assert not np.array_equal(a(8)["image"], sa["image"])
    params = json.loads(sa["params"])
    assert {"visual", "camera", "light", "joints"} <= set(params)
    assert sa["mask"].shape == (48, 64) and sa["image"].dtype == np.uint8
    a.close(), b.close()


def test_generate_is_identical_with_one_and_two_workers(tmp_path: Path) -> None:
    spec = scene_spec("tabletop_panda", "strong", (48, 48))
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        generate_dataset(
            spec["source"], spec, 12, out, workers=workers, seed=1, shard_size=4, progress=False
        )
        outs.append(out)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(outs[1]) for p in outs[1].rglob("*") if p.is_file())
    for f in files:
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f
    ds = ShardedDataset(outs[0])
    assert len(ds) == 12 and ds[11]["image"].shape == (48, 48, 3)


def test_reach_poses_put_the_gripper_near_the_cube_and_label_it() -> None:
    from sim2real.envs.labels import world_to_base
    from sim2real.envs.sources import REACH_HEIGHT, REACH_HOVER, REACH_OFFSET_XY

    spec = {**scene_spec("tabletop_panda", "default", (48, 48), reach_poses=1.0), "seed": 2}
    assert spec["reach_poses"] == 1.0
    src = make_source(spec)
    cube_top = src.scene.cfg.cube.size / 2 + REACH_HOVER
    offsets = []
    for i in range(6):
        sample = src(i)
        robot = src.scene.robot
        assert json.loads(sample["params"])["reach_pose"] is True
        # the label is the posed arm's end effector, in the robot-base frame
        ee = world_to_base(robot.ee_position(), robot.base_position, 0.0)
        np.testing.assert_allclose(sample["ee_position"], ee, atol=1e-6)
        offsets.append(sample["ee_position"] - sample["position"])
    src.close()
    offsets = np.array(offsets)
    # IK reaches the drawn target to within a couple of centimetres
    assert np.all(np.abs(offsets[:, :2]) <= REACH_OFFSET_XY + 0.02)
    assert np.all(offsets[:, 2] >= cube_top + REACH_HEIGHT[0] - 0.02)
    assert np.all(offsets[:, 2] <= cube_top + REACH_HEIGHT[1] + 0.02)
    # the rest pose (no reach poses) keeps the gripper high above the table
    rest = make_source({**scene_spec("tabletop_panda", "default", (48, 48)), "seed": 2})
    far = [rest(i)["ee_position"] - rest(i)["position"] for i in range(6)]
    rest.close()
    assert np.median(np.linalg.norm(far, axis=1)) > np.median(np.linalg.norm(offsets, axis=1))


def test_reach_poses_spec_and_bad_fraction() -> None:
    from sim2real.errors import ConfigError

    # at 0 the spec is the one written before the option existed (old datasets still resume)
    assert "reach_poses" not in scene_spec("tabletop_panda", "default", (48, 48))
    with pytest.raises(ConfigError, match=r"reach_poses 1.5: expected a fraction in \[0, 1\]"):
        scene_spec("tabletop_panda", "default", (48, 48), reach_poses=1.5)
