"""Robots from a URDF by configuration only: presets, a YAML-described arm, low-poly meshes
that never crash, errors that name what is wrong, and ``sim2real inspect``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from gymnasium.utils.env_checker import check_env

from sim2real.cli import main
from sim2real.envs.core import TabletopEnv, connect
from sim2real.envs.lowpoly import convex_hull_obj, load_mesh, lowpoly_urdf
from sim2real.envs.robots import RobotArm, RobotConfig, RobotSpec, robot_presets
from sim2real.envs.scene import SceneConfig
from sim2real.envs.scene_config import TableConfig
from sim2real.envs.urdf import find_file, read_urdf
from sim2real.envs.workspace import PANDA_BOX, reach_workspace
from sim2real.errors import ConfigError

PRESETS = ["kuka_iiwa", "panda", "xarm6"]
#: Reachable end-effector targets (robot-base frame) for every preset: in front, over a table.
TARGETS = [(x, y, z) for x in (0.4, 0.55) for y in (-0.15, 0.15) for z in (0.2, 0.35)]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM2REAL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _scene(robot: RobotConfig) -> SceneConfig:
    """tabletop_panda with another robot, a small camera (fast)."""
    base = SceneConfig.load("tabletop_panda")
    return base.model_copy(update={"robot": robot})


def test_presets_are_shipped() -> None:
    assert set(PRESETS) <= set(robot_presets())
    for name in PRESETS:
        cfg = RobotConfig(name=name).resolved()
        assert cfg.urdf and cfg.arm_joints and cfg.ee_link and cfg.name == name


@pytest.mark.parametrize("name", PRESETS)
def test_preset_check_env(name: str) -> None:
    env = TabletopEnv(scene=_scene(RobotConfig(name=name)), randomization="default", image_size=32)
    check_env(env, skip_render_check=True)
    n = len(RobotConfig(name=name).resolved().arm_joints or ())
    assert env.observation_space["proprio"].shape == (n + 3,)
    env.close()


@pytest.mark.parametrize("name", PRESETS)
def test_preset_same_seed_same_trajectory(name: str) -> None:
    scene = _scene(RobotConfig(name=name))
    envs = [TabletopEnv(scene=scene, randomization="default", image_size=32) for _ in range(2)]
    obs = [e.reset(seed=5)[0] for e in envs]
    rng = np.random.default_rng(1)
    for _ in range(12):
        np.testing.assert_array_equal(obs[0]["image"], obs[1]["image"])
        np.testing.assert_array_equal(obs[0]["proprio"], obs[1]["proprio"])
        action = rng.uniform(-1, 1, 3).astype(np.float32)
        obs = [e.step(action)[0] for e in envs]
    first = obs[0]["proprio"]
    envs[0].reset(seed=5)
    rng = np.random.default_rng(1)
    for _ in range(12):
        again = envs[0].step(rng.uniform(-1, 1, 3).astype(np.float32))[0]
    np.testing.assert_array_equal(first, again["proprio"])  # a reset restores everything
    for e in envs:
        e.close()


def _arm(cfg: RobotConfig) -> tuple[object, RobotArm]:
    client, _ = connect()
    return client, RobotArm(client, cfg)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_ik_reaches_within_1cm(name: str) -> None:
    client, arm = _arm(RobotConfig(name=name, render_mesh="visual"))
    arm.reset()
    for target in TARGETS:
        err = arm.pose_at(np.array(target))
        assert err < 0.01, f"{name}: {target} missed by {err * 100:.1f} cm"
        # the arm is posed: the end effector read back is where IK put it
        assert np.linalg.norm(arm.ee_position() - np.array(target)) < 0.01
        assert np.all(arm.joint_positions() >= arm.lower - 1e-6)
        assert np.all(arm.joint_positions() <= arm.upper + 1e-6)
    client.disconnect()


# -- a robot described only by YAML around a URDF written here ------------------------------


def _box_obj(path: Path, size: tuple[float, float, float], centre: tuple[float, float, float]):
    sx, sy, sz = (s / 2 for s in size)
    cx, cy, cz = centre
    verts = [(cx + x, cy + y, cz + z) for x in (-sx, sx) for y in (-sy, sy) for z in (-sz, sz)]
    faces = [
        (1, 3, 2), (2, 3, 4), (5, 6, 7), (6, 8, 7), (1, 2, 5), (2, 6, 5),
        (3, 7, 4), (4, 7, 8), (1, 5, 3), (3, 5, 7), (2, 4, 6), (4, 8, 6),
    ]  # fmt: skip
    lines = [f"v {x} {y} {z}" for x, y, z in verts] + [f"f {a} {b} {c}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")


def _cylinder_obj(path: Path, radius: float, length: float, segments: int = 80) -> None:
    """A z-axis cylinder of 4 * segments triangles (heavier than the low-poly budget)."""
    ang = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = [(radius * np.cos(a), radius * np.sin(a)) for a in ang]
    lines = [f"v {x:.6f} {y:.6f} 0" for x, y in ring] + [
        f"v {x:.6f} {y:.6f} {length}" for x, y in ring
    ]
    lines += ["v 0 0 0", f"v 0 0 {length}"]
    bottom, top = 2 * segments + 1, 2 * segments + 2
    for i in range(segments):
        j = (i + 1) % segments
        a, b, c, d = i + 1, j + 1, i + 1 + segments, j + 1 + segments
        lines += [f"f {a} {b} {d}", f"f {a} {d} {c}", f"f {bottom} {b} {a}", f"f {top} {c} {d}"]
    path.write_text("\n".join(lines) + "\n")


def _flat_obj(path: Path, side: float = 0.05, n: int = 12) -> None:
    """A plate 1 mm thick and fine (2 * n * n * 2 triangles): flat on a 12 mm hull grid."""
    lines, faces = [], []
    xs = np.linspace(-side / 2, side / 2, n + 1)
    for z in (0.0, 0.001):
        for x in xs:
            for y in xs:
                lines.append(f"v {x:.6f} {y:.6f} {z}")
    k = n + 1
    for layer in range(2):
        off = layer * k * k
        for i in range(n):
            for j in range(n):
                a = off + i * k + j + 1
                faces += [f"f {a} {a + k} {a + 1}", f"f {a + 1} {a + k} {a + k + 1}"]
    path.write_text("\n".join(lines + faces) + "\n")


LINK = """  <link name="{name}">
    <visual><geometry><mesh filename="{mesh}"/></geometry></visual>
    <collision><geometry><mesh filename="{mesh}"/></geometry></collision>
    <inertial><mass value="0.5"/>
      <inertia ixx="0.01" ixy="0" ixz="0" iyy="0.01" iyz="0" izz="0.01"/></inertial>
  </link>
"""
JOINT = """  <joint name="{name}" type="{type}">
    <parent link="{parent}"/><child link="{child}"/>
    <origin xyz="{xyz}" rpy="0 0 0"/><axis xyz="{axis}"/>
    <limit lower="{lower}" upper="{upper}" effort="50" velocity="2"/>
  </joint>
"""


def write_arm(folder: Path) -> Path:
    """A 3-revolute-joint arm (yaw, shoulder pitch, elbow pitch) of mesh links written here,
    a fixed tool link and a prismatic slider (a one-finger gripper)."""
    meshes = folder / "meshes"
    meshes.mkdir(parents=True)
    _box_obj(meshes / "base.obj", (0.12, 0.12, 0.05), (0, 0, 0.025))
    _cylinder_obj(meshes / "upper.obj", 0.03, 0.25)
    _box_obj(meshes / "arm.obj", (0.35, 0.04, 0.04), (0.175, 0, 0))
    _box_obj(meshes / "forearm.obj", (0.3, 0.03, 0.03), (0.15, 0, 0))
    _flat_obj(meshes / "plate.obj")
    links = [
        ("base", "meshes/base.obj"),
        ("upper", "meshes/upper.obj"),
        ("arm", "meshes/arm.obj"),
        ("forearm", "package://my_arm/meshes/forearm.obj"),
        ("tool", "meshes/plate.obj"),
        ("finger", "meshes/plate.obj"),
    ]
    joints = [
        ("yaw", "revolute", "base", "upper", "0 0 0.05", "0 0 1", -3.0, 3.0),
        ("shoulder", "revolute", "upper", "arm", "0 0 0.25", "0 1 0", -1.5, 1.5),
        ("elbow", "revolute", "arm", "forearm", "0.35 0 0", "0 1 0", -2.5, 2.5),
        ("tool_mount", "fixed", "forearm", "tool", "0.3 0 0", "0 0 1", 0, 0),
        ("slide", "prismatic", "tool", "finger", "0 0 0", "1 0 0", 0.0, 0.02),
    ]
    body = "".join(LINK.format(name=n, mesh=m) for n, m in links)
    body += "".join(
        JOINT.format(name=n, type=t, parent=p, child=c, xyz=x, axis=a, lower=lo, upper=hi)
        for n, t, p, c, x, a, lo, hi in joints
    )
    urdf = folder / "my_arm.urdf"
    urdf.write_text(f'<?xml version="1.0"?>\n<robot name="my_arm">\n{body}</robot>\n')
    return urdf


ROBOT = {
    "urdf": "my_arm/my_arm.urdf",  # relative to the scene YAML
    "arm_joints": ["yaw", "shoulder", "elbow"],
    "ee_link": "tool",
    "gripper_joints": ["slide"],
    "gripper_open": 0.01,
    "rest_pose": {"shoulder": -0.3, "elbow": 1.2},
    "ee_orientation": "free",
    "colour": [0.2, 0.6, 0.9, 1.0],
    "workspace_low": [0.3, -0.2, 0.05],
    "workspace_high": [0.55, 0.2, 0.3],
}


def _scene_yaml(tmp_path: Path, **robot: object) -> Path:
    if not (tmp_path / "my_arm" / "my_arm.urdf").exists():
        write_arm(tmp_path / "my_arm")
    scene = {
        "name": "my_arm_scene",
        "robot": {**ROBOT, **robot},
        "cube": {"spawn_x": [0.35, 0.5], "spawn_y": [-0.15, 0.15]},
        "camera": {"eye": [1.1, 0.0, 0.7], "target": [0.35, 0.0, 0.05], "width": 48, "height": 48},
    }
    path = tmp_path / "my_scene.yaml"
    path.write_text(yaml.safe_dump(scene, sort_keys=False))
    return path


def test_yaml_robot_runs_the_reach_env(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _scene_yaml(tmp_path)
    cfg = SceneConfig.load(path)
    assert cfg.robot.name == "my_arm" and Path(cfg.robot.urdf).is_absolute()
    with caplog.at_level(logging.INFO, logger="sim2real.envs.lowpoly"):
        env = TabletopEnv(scene=path, task="reach", randomization="default", image_size=32)
    assert "plate.obj" in caplog.text  # the flat plate fell back, with a note
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert obs["proprio"].shape == (6,) and obs["image"].shape == (3, 32, 32)
    np.testing.assert_allclose(obs["proprio"][:3], [0.0, -0.3, 1.2], atol=0.05)
    distances = []
    target = env.task.target(env.scene)
    for _ in range(30):  # a proportional controller on the true target: the reach closes
        delta = (target - env.robot.ee_position()) / env.robot.cfg.max_step_m
        obs, reward, terminated, _, info = env.step(np.clip(delta, -1, 1).astype(np.float32))
        distances.append(-reward)
        if terminated:
            break
    assert distances[-1] < 0.03 and info["is_success"], distances
    # the gripper joint is held where the description says
    client = env.scene.client
    assert client.getJointState(env.robot.body, env.robot.gripper_joints[0])[0] == pytest.approx(
        0.01, abs=2e-3
    )
    env.close()
    client, arm = _arm(cfg.robot)
    for target in [(0.4, 0.1, 0.15), (0.5, -0.1, 0.25), (0.35, 0.0, 0.1)]:
        assert arm.pose_at(np.array(target)) < 0.01
    client.disconnect()


def test_yaml_robot_renders_low_poly_without_hand_work(tmp_path: Path) -> None:
    urdf = write_arm(tmp_path / "arm")
    out = lowpoly_urdf(urdf)
    text = out.read_text()
    assert "upper_0_hull.obj" in text  # 320 triangles: replaced by its hull
    assert "tool_0_hull.obj" in text  # the flat plate: a hull after all (finer grid / box)
    hull = load_mesh(out.parent / "upper_0_hull.obj")
    assert len(hull.faces) < 320 and hull.is_watertight
    assert lowpoly_urdf(urdf) == out  # cached


def test_thin_and_flat_meshes_never_crash(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # the xArm6 gripper's knuckles: 12 mm thin, flat on the 12 mm grid (QhullError before)
    knuckle = find_file("xarm/xarm_gripper/meshes/left_outer_knuckle.STL", what="mesh")
    with caplog.at_level(logging.INFO, logger="sim2real.envs.lowpoly"):
        n = convex_hull_obj(knuckle, tmp_path / "knuckle.obj", grid=0.012)
    assert n >= 4 and "thin part" in caplog.text
    # a truly flat mesh (zero thickness): its bounding box, a millimetre thick
    flat = tmp_path / "flat.obj"
    flat.write_text("v 0 0 0\nv 0.1 0 0\nv 0 0.1 0\nv 0.1 0.1 0\nf 1 2 3\nf 2 4 3\n")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sim2real.envs.lowpoly"):
        assert convex_hull_obj(flat, tmp_path / "flat_hull.obj") == 12
    assert "bounding box" in caplog.text
    box = load_mesh(tmp_path / "flat_hull.obj")
    np.testing.assert_allclose(box.extents, [0.1, 0.1, 0.001], atol=1e-6)


# -- errors that help ------------------------------------------------------------------------


def _check(tmp_path: Path, **robot: object) -> RobotSpec:
    return RobotSpec.check(SceneConfig.load(_scene_yaml(tmp_path, **robot)).robot)


def test_unknown_joint_lists_the_urdf_joints(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"'elbo' is not a joint .*'shoulder'.*did you mean 'elbow'"
    ):
        _check(tmp_path, arm_joints=["yaw", "shoulder", "elbo"])


def test_unknown_link_lists_the_urdf_links(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ee_link: 'hand' is not a link .*'forearm'"):
        _check(tmp_path, ee_link="hand")


def test_missing_urdf_names_the_paths_tried(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found; tried") as err:
        _check(tmp_path, urdf="nowhere/arm.urdf")
    assert str(tmp_path / "nowhere" / "arm.urdf") in str(err.value)  # next to the YAML
    assert "pybullet_data" in str(err.value)


def test_missing_mesh_names_the_paths_tried(tmp_path: Path) -> None:
    urdf = write_arm(tmp_path / "arm")
    (tmp_path / "arm" / "meshes" / "forearm.obj").unlink()
    with pytest.raises(ConfigError, match=r"package://my_arm/meshes/forearm.obj.*tried"):
        lowpoly_urdf(urdf)


@pytest.mark.parametrize(("joint", "kind"), [("tool_mount", "fixed"), ("slide", "prismatic")])
def test_fixed_or_prismatic_arm_joint_says_which(tmp_path: Path, joint: str, kind: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{joint}' is a {kind} joint"):
        _check(tmp_path, arm_joints=["yaw", "shoulder", joint], gripper_joints=[])


def test_other_bad_descriptions(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rest_pose: expected 3 values"):
        _check(tmp_path, rest_pose=[0.0, 0.1])
    with pytest.raises(ConfigError, match=r"rest_pose: 'slide' is not one of arm_joints"):
        _check(tmp_path, rest_pose={"slide": 0.0})
    with pytest.raises(ConfigError, match=r"does not move ee_link 'arm'"):
        _check(tmp_path, ee_link="arm")
    with pytest.raises(ConfigError, match=r"not a robot preset .*'kuka_iiwa'.*'panda'"):
        RobotSpec.check(RobotConfig(name="ur5"))
    with pytest.raises(ConfigError, match="needs arm_joints and ee_link"):
        RobotSpec.check(RobotConfig(urdf="kuka_iiwa/model.urdf"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("robot:\n  name: panda\n  arm_joint: [a]\n")
    with pytest.raises(ConfigError, match="arm_joint"):
        SceneConfig.load(bad)


def test_old_scene_yaml_and_overrides(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    old.write_text("robot:\n  name: kuka_iiwa\n  color: [0.95, 0.45, 0.1, 1.0]\n")
    cfg = SceneConfig.load(old).robot
    assert cfg.colour == cfg.color == (0.95, 0.45, 0.1, 1.0)
    assert "urdf" not in cfg.model_dump()  # a preset scene dumps as it did
    assert SceneConfig.model_validate(SceneConfig.load(old).model_dump()).robot == cfg
    # a scene overrides any field of its preset
    moved = RobotConfig(name="panda", rest_pose=[0.1, -0.3, 0.0, -2.2, 0.0, 2.0, 0.785])
    assert moved.resolved().rest_pose[0] == 0.1 and moved.resolved().ee_link == "panda_grasptarget"


def test_inspect_prints_joints_links_and_a_starter(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    urdf = write_arm(tmp_path / "arm")
    assert main(["inspect", str(urdf)]) == 0
    out = capsys.readouterr().out
    for word in (
        "yaw",
        "revolute",
        "[-3, 3]",
        "tool_mount",
        "fixed",
        "slide",
        "prismatic",
        "forearm",
    ):
        assert word in out
    assert "arm_joints: [yaw, shoulder, elbow]" in out and "ee_link: tool" in out
    info = read_urdf(urdf)
    assert [j.name for j in info.movable] == ["yaw", "shoulder", "elbow", "slide"]
    assert main(["inspect", str(tmp_path / "missing.urdf")]) == 2


def test_a_convex_decomposition_is_hulled_part_by_part(tmp_path: Path) -> None:
    one, two = tmp_path / "a.obj", tmp_path / "b.obj"
    _box_obj(one, (0.1, 0.02, 0.02), (0.05, 0, 0))
    _box_obj(two, (0.02, 0.02, 0.1), (0.1, 0, 0.05))  # an L: its single hull fills the corner
    b_lines = two.read_text().splitlines()
    shifted = [
        f"f {' '.join(str(int(i) + 8) for i in ln.split()[1:])}" if ln.startswith("f") else ln
        for ln in b_lines
    ]
    both = tmp_path / "l_shape.obj"
    both.write_text("o a\n" + one.read_text() + "o b\n" + "\n".join(shifted) + "\n")
    assert convex_hull_obj(both, tmp_path / "hull.obj", grid=0.001) == 24
    parts = load_mesh(tmp_path / "hull.obj").split(only_watertight=False)
    assert len(parts) == 2


def test_a_robot_yaml_file_is_a_preset(tmp_path: Path) -> None:
    write_arm(tmp_path / "my_arm")
    description = {k: v for k, v in ROBOT.items() if not k.startswith(("workspace", "colour"))}
    (tmp_path / "my_arm.yaml").write_text(yaml.safe_dump(description))
    spec = RobotSpec.check(RobotConfig(name=str(tmp_path / "my_arm.yaml")))
    assert spec.arm_joints == ("yaw", "shoulder", "elbow") and spec.urdf.is_file()
    (tmp_path / "placed.yaml").write_text(yaml.safe_dump({**description, "base_yaw_deg": 90}))
    with pytest.raises(ConfigError, match=r"\['base_yaw_deg'\] belong in a scene"):
        RobotSpec.check(RobotConfig(name=str(tmp_path / "placed.yaml")))


@pytest.mark.parametrize(
    ("name", "arm", "gripper", "ee", "rest"),
    [
        ("panda", tuple(range(7)), (9, 10), 11, (0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.785)),
        ("kuka_iiwa", tuple(range(7)), (), 6, (0.0, 0.4, 0.0, -1.4, 0.0, 1.2, 0.0)),
    ],
)
def test_presets_are_the_arms_the_scenes_were_made_with(
    name: str, arm: tuple[int, ...], gripper: tuple[int, ...], ee: int, rest: tuple[float, ...]
) -> None:
    """The joint and link indices, rest pose and tool orientation of the former built-ins."""
    client, robot = _arm(RobotConfig(name=name, render_mesh="visual"))
    assert (robot.arm_joints, robot.gripper_joints, robot.ee_link) == (arm, gripper, ee)
    assert robot.spec.rest_pose == rest
    down = (np.pi, 0.0, 0.0) if name == "panda" else (0.0, np.pi, 0.0)
    assert robot.ee_down == client.getQuaternionFromEuler(down)
    client.disconnect()


def test_a_urdf_arm_without_a_workspace_gets_one_from_its_reach(tmp_path: Path) -> None:
    robot = {k: v for k, v in ROBOT.items() if not k.startswith("workspace")}
    path = tmp_path / "scene.yaml"
    _scene_yaml(tmp_path)  # writes the arm
    scene = yaml.safe_load((tmp_path / "my_scene.yaml").read_text())
    path.write_text(yaml.safe_dump({**scene, "robot": robot}, sort_keys=False))
    cfg = SceneConfig.load(path)
    assert cfg.robot.workspace_low is None and "workspace_low" not in cfg.robot.model_dump()
    env = TabletopEnv(scene=cfg, task="reach", randomization="none", image_size=32)
    # link frames 0.05 + 0.25 up, 0.35 + 0.3 out: reach 0.95 m; the default table holds the box
    np.testing.assert_allclose(env.robot.cfg.workspace_low, (0.171, -0.2375, 0.02))
    np.testing.assert_allclose(env.robot.cfg.workspace_high, (0.5225, 0.2375, 0.3135))
    env.reset(seed=0)
    target = env.task.target(env.scene)
    for _ in range(30):
        delta = (target - env.robot.ee_position()) / env.robot.cfg.max_step_m
        *_, terminated, _, info = env.step(np.clip(delta, -1, 1).astype(np.float32))
        if terminated:
            break
    assert info["is_success"]
    env.close()
    # one corner given is kept; a small table clips x/y and lifts the floor to its top
    client, arm = _arm(cfg.robot.model_copy(update={"workspace_low": (0.3, -0.1, 0.05)}))
    assert arm.cfg.workspace_low == (0.3, -0.1, 0.05)
    assert arm.cfg.workspace_high == pytest.approx((0.5225, 0.2375, 0.3135))
    client.disconnect()
    table = TableConfig(center=(0.4, 0.0), size=(0.4, 0.3), top_height=0.1)
    low, high = reach_workspace(0.95, base_position=np.zeros(3), table=table)
    assert low == pytest.approx((0.2, -0.15, 0.12))
    assert high == pytest.approx((0.5225, 0.15, 0.3135))


def test_presets_keep_the_box_every_scene_was_made_with() -> None:
    for name in robot_presets():
        cfg = RobotConfig(name=name)
        assert (cfg.workspace_low, cfg.workspace_high) == PANDA_BOX, name
        assert cfg.resolved().workspace_low == PANDA_BOX[0]
