"""Robot arms from a URDF, by configuration only: the ``robot:`` section of a scene and the
simulated arm (loading, reset, IK-based Cartesian control, proprioception).

A scene's ``robot:`` names a preset (``configs/robots/NAME.yaml``: ``panda``, ``kuka_iiwa``,
``xarm6``) or describes an arm in full; a preset is a description in the same form, and a
scene may override any of its fields::

    robot:
      urdf: xarm/xarm6_with_gripper.urdf   # relative to the YAML, pybullet_data, or absolute
      arm_joints: [joint1, joint2, joint3, joint4, joint5, joint6]
      ee_link: link6                       # + ee_offset: [x, y, z] in that link's frame
      ee_orientation: [3.1416, 0, 0]       # tool pointing down (roll, pitch, yaw), or free
      gripper_joints: [drive_joint]        # optional, held at gripper_open
      rest_pose: [0, -0.3, 0, 0.9, 0, 1.2] # or {joint1: 0.0, joint4: 0.9}
      base_position: [0, 0, 0]

Nothing here knows one arm from another: the names are checked against the URDF (with the
names it has in the error), render meshes are made low-poly from any URDF's collision shapes
(:mod:`sim2real.envs.lowpoly`), and IK, workspace limits and the action mapping use only the
description. ``sim2real inspect URDF`` lists a URDF's joints and links.

Example:
    >>> cfg = RobotConfig(name="kuka_iiwa").resolved()
    >>> cfg.urdf, cfg.ee_link
    ('kuka_iiwa/model.urdf', 'lbr_iiwa_link_7')
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from sim2real.envs.lowpoly import convex_hull_obj, lowpoly_urdf
from sim2real.envs.urdf import MOVABLE, ROTATIONAL, UrdfInfo, find_file, per_joint, read_urdf
from sim2real.envs.workspace import PANDA_BOX, default_box
from sim2real.errors import ConfigError
from sim2real.paths import CONFIGS

logger = logging.getLogger(__name__)

__all__ = [
    "RobotArm",
    "RobotConfig",
    "RobotSpec",
    "convex_hull_obj",
    "load_robot_preset",
    "lowpoly_urdf",
    "robot_presets",
]

RenderMesh = Literal["lowpoly", "visual"]
Vec3 = tuple[float, float, float]
RGBA = tuple[float, float, float, float]

#: The fields that describe the arm itself (a preset's fields); ``None`` in a scene means
#: "the preset's value" and is left out of dumps, so old scenes dump as they did.
DESCRIPTION_FIELDS = (
    "urdf",
    "arm_joints",
    "ee_link",
    "ee_offset",
    "ee_orientation",
    "gripper_joints",
    "gripper_open",
    "gripper_closed",
    "rest_pose",
)


class RobotConfig(BaseModel):
    """Robot part of a scene config: a preset name, or a full description, plus where the arm
    stands and how actions move it.

    Example:
        >>> RobotConfig.model_validate({"name": "panda", "color": [1, 0, 0, 1]}).colour
        (1.0, 0.0, 0.0, 1.0)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        "panda",
        description="a preset (configs/robots/NAME.yaml, or a YAML path) when urdf is not "
        "given; else a label (default: the URDF's file name)",
    )
    urdf: str | None = Field(
        None, description="URDF file: absolute, relative to the scene YAML, or to pybullet_data"
    )
    arm_joints: tuple[str, ...] | None = Field(
        None, min_length=1, description="the joints IK moves (revolute or continuous), by name"
    )
    ee_link: str | None = Field(None, description="the end-effector link, by name")
    ee_offset: Vec3 | None = Field(None, description="end-effector point in ee_link's frame (m)")
    ee_orientation: Vec3 | Literal["free"] | None = Field(
        None, description="IK target orientation (roll, pitch, yaw; world), or free: position only"
    )
    gripper_joints: tuple[str, ...] | None = Field(None, description="held at gripper_open")
    gripper_open: float | tuple[float, ...] | None = None
    gripper_closed: float | tuple[float, ...] | None = None
    rest_pose: tuple[float, ...] | dict[str, float] | None = Field(
        None, description="arm joint positions (list) or {joint: value}; default zeros"
    )
    base_position: Vec3 = (0.0, 0.0, 0.0)
    base_yaw_deg: float = 0.0
    render_mesh: RenderMesh = "lowpoly"
    colour: RGBA = Field((0.9, 0.9, 0.9, 1.0), validation_alias=AliasChoices("colour", "color"))
    max_step_m: float = Field(0.05, gt=0.0, description="end-effector move per unit action")
    #: end-effector box (base frame, m): a preset's PANDA_BOX, a urdf arm's from its reach
    workspace_low: Vec3 | None = None
    workspace_high: Vec3 | None = None
    _base_dir: str | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _label(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("urdf") and "name" not in data:
            data = {**data, "name": Path(str(data["urdf"])).stem}
        if isinstance(data, dict) and not data.get("urdf"):  # a preset: the box scenes had
            data = {"workspace_low": PANDA_BOX[0], "workspace_high": PANDA_BOX[1], **data}
        return data

    @field_validator("urdf")
    @classmethod
    def _relative_to_yaml(cls, v: str | None, info: ValidationInfo) -> str | None:
        base = (info.context or {}).get("base_dir")
        if v and base and not os.path.isabs(v) and (Path(base) / v).is_file():
            return str((Path(base) / v).resolve())
        return v

    @model_validator(mode="after")
    def _remember_base(self, info: ValidationInfo) -> RobotConfig:
        base = (info.context or {}).get("base_dir")
        if base:
            self._base_dir = str(base)
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        for key in (*DESCRIPTION_FIELDS, "workspace_low", "workspace_high"):
            if key in data and data[key] is None:
                del data[key]
        return data

    def __eq__(self, other: object) -> bool:  # the YAML's folder (a private hint) aside
        if not isinstance(other, RobotConfig):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(tuple(_hashable(v) for v in self.__dict__.values()))

    @property
    def color(self) -> RGBA:
        """The former name of :attr:`colour` (old YAML may still say ``color:``)."""
        return self.colour

    def resolved(self) -> RobotConfig:
        """This config with the preset's description filled in (itself when ``urdf`` is set).

        Fields the scene sets win over the preset's.

        Raises:
            ConfigError: ``name`` is not a preset and no ``urdf`` is given.
        """
        if self.urdf is not None:
            return self
        preset = load_robot_preset(self.name)
        own = {k: getattr(self, k) for k in self.model_fields_set if k != "name"}
        return preset.model_copy(update={**own, "name": self.name})

    def urdf_path(self) -> Path:
        """The URDF file (see :func:`sim2real.envs.urdf.find_file` for the places tried)."""
        if self.urdf is None:
            return self.resolved().urdf_path()
        base = [Path(self._base_dir)] if self._base_dir else []
        return find_file(self.urdf, what="robot.urdf", base_dirs=base)


def _hashable(v: Any) -> Any:
    return tuple(sorted(v.items())) if isinstance(v, dict) else v


def robot_presets() -> list[str]:
    """Names of the robot presets in ``configs/robots/``."""
    return sorted(p.stem for p in (CONFIGS / "robots").glob("*.yaml"))


def load_robot_preset(name_or_path: str | Path) -> RobotConfig:
    """A robot preset (``configs/robots/NAME.yaml``) or a robot YAML file, validated.

    A preset holds only the description (:data:`DESCRIPTION_FIELDS`); where the arm stands,
    its workspace and colour are the scene's. Relative ``urdf:`` paths in the file are tried
    relative to the file first.

    Raises:
        ConfigError: unknown name, bad or placement fields, or a preset without ``urdf``.
    """
    p = Path(name_or_path)
    path = p if p.suffix in {".yaml", ".yml"} and p.is_file() else CONFIGS / "robots" / f"{p}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"robot.name is {str(name_or_path)!r}: not a robot preset (expected one of "
            f"{robot_presets()} or a robot YAML path), and no robot.urdf is given to describe "
            "an arm (see `sim2real inspect URDF`)"
        )
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not data.get("urdf"):
        raise ConfigError(f"robot preset {path}: expected a mapping with urdf: (got {data!r})")
    placement = sorted(set(data) - {*DESCRIPTION_FIELDS, "name"})
    if placement:
        raise ConfigError(
            f"robot preset {path}: {placement} belong in a scene's robot: section (where the "
            f"arm stands and how it moves); a preset describes the arm: {list(DESCRIPTION_FIELDS)}"
        )
    data.setdefault("name", path.stem)
    try:
        return RobotConfig.model_validate(data, context={"base_dir": str(path.parent)})
    except ValidationError as exc:
        raise ConfigError(f"robot preset {path}: {exc}") from exc


@dataclass(frozen=True)
class RobotSpec:
    """A description checked against its URDF: what :class:`RobotArm` uses.

    Joint and link names are those of the description; ``rest_pose`` and the gripper values
    are per joint, in the description's order.
    """

    urdf: Path
    arm_joints: tuple[str, ...]
    ee_link: str
    ee_offset: Vec3
    ee_orientation: Vec3 | None  # None: position-only IK
    gripper_joints: tuple[str, ...]
    gripper_open: tuple[float, ...]
    gripper_closed: tuple[float, ...]
    rest_pose: tuple[float, ...]
    lower: tuple[float, ...]  # arm joint limits from the URDF (unlimited: -2 pi .. 2 pi)
    upper: tuple[float, ...]

    @classmethod
    def check(cls, cfg: RobotConfig) -> RobotSpec:
        """Check a (resolved) description against its URDF.

        Raises:
            ConfigError: missing fields or file; an unknown joint or link (the URDF's names
                listed); a fixed or prismatic arm joint; an arm joint that does not move the
                end effector; a rest pose or gripper value of the wrong length.
        """
        cfg = cfg.resolved()
        if not cfg.arm_joints or not cfg.ee_link:
            raise ConfigError(
                f"robot {cfg.name!r}: a urdf description needs arm_joints and ee_link "
                f"(`sim2real inspect {cfg.urdf}` lists the URDF's joints and links)"
            )
        path = cfg.urdf_path()
        info = read_urdf(path)
        info.check_link(cfg.ee_link, "robot.ee_link")
        chain = {j.name for j in info.chain(cfg.ee_link)}
        lower, upper = [], []
        for name in cfg.arm_joints:
            joint = info.joint(name, "robot.arm_joints")
            if joint.type not in ROTATIONAL:
                rotational = [j.name for j in info.joints if j.type in ROTATIONAL]
                raise ConfigError(
                    f"robot.arm_joints: {name!r} is a {joint.type} joint in {path}; arm joints "
                    f"must be revolute or continuous (those here: {rotational})"
                )
            if name not in chain:
                raise ConfigError(
                    f"robot.arm_joints: {name!r} does not move ee_link {cfg.ee_link!r} in "
                    f"{path}; the joints on its chain are "
                    f"{[j.name for j in info.chain(cfg.ee_link)]}"
                )
            lo, hi = joint.lower, joint.upper
            if joint.type == "continuous" or not hi >= lo or (lo == hi == 0.0):
                lo, hi = -2 * np.pi, 2 * np.pi
            lower.append(lo)
            upper.append(hi)
        if len(set(cfg.arm_joints)) != len(cfg.arm_joints):
            raise ConfigError(f"robot.arm_joints: a joint is named twice in {cfg.arm_joints}")
        grip = tuple(cfg.gripper_joints or ())
        for name in grip:
            joint = info.joint(name, "robot.gripper_joints")
            if joint.type not in MOVABLE:
                raise ConfigError(
                    f"robot.gripper_joints: {name!r} is a {joint.type} joint in {path}; "
                    f"expected a movable one ({[j.name for j in info.movable]})"
                )
            if name in cfg.arm_joints:
                raise ConfigError(f"robot.gripper_joints: {name!r} is also an arm joint")
        rest = _rest_pose(cfg, info, lower, upper)
        orientation = cfg.ee_orientation
        return cls(
            urdf=path,
            arm_joints=tuple(cfg.arm_joints),
            ee_link=cfg.ee_link,
            ee_offset=tuple(cfg.ee_offset or (0.0, 0.0, 0.0)),  # type: ignore[arg-type]
            ee_orientation=None if orientation in (None, "free") else orientation,  # type: ignore[arg-type]
            gripper_joints=grip,
            gripper_open=per_joint(cfg.gripper_open, grip, "gripper_open"),
            gripper_closed=per_joint(cfg.gripper_closed, grip, "gripper_closed"),
            rest_pose=rest,
            lower=tuple(lower),
            upper=tuple(upper),
        )


def _rest_pose(
    cfg: RobotConfig, info: UrdfInfo, lower: list[float], upper: list[float]
) -> tuple[float, ...]:
    arm = tuple(cfg.arm_joints or ())
    rest = cfg.rest_pose
    if rest is None:
        return tuple(float(np.clip(0.0, lo, hi)) for lo, hi in zip(lower, upper, strict=True))
    if isinstance(rest, dict):
        for name in rest:
            if name not in arm:
                info.joint(name, "robot.rest_pose")  # names the URDF's joints if unknown
                raise ConfigError(f"robot.rest_pose: {name!r} is not one of arm_joints {list(arm)}")
        return tuple(
            float(rest[n]) if n in rest else float(np.clip(0.0, lo, hi))
            for n, lo, hi in zip(arm, lower, upper, strict=True)
        )
    if len(rest) != len(arm):
        raise ConfigError(
            f"robot.rest_pose: expected {len(arm)} values (one per arm joint {list(arm)}), "
            f"got {len(rest)}"
        )
    return tuple(float(x) for x in rest)


class RobotArm:
    """One arm in one PyBullet client: loading, reset, IK-based Cartesian control, proprio.

    Attributes:
        cfg: the resolved robot config (preset filled in).
        spec: the description checked against the URDF (:class:`RobotSpec`).
        body: PyBullet body id; ``links``: every link index, base (-1) first.
        lower, upper: arm joint limits.
        base_position: where the base stands (world).
    """

    def __init__(self, client: Any, cfg: RobotConfig, table: Any = None) -> None:
        self.client = client
        self.cfg = cfg.resolved()
        self.spec = spec = RobotSpec.check(self.cfg)
        urdf = lowpoly_urdf(spec.urdf) if self.cfg.render_mesh == "lowpoly" else spec.urdf
        orn = client.getQuaternionFromEuler([0.0, 0.0, np.radians(self.cfg.base_yaw_deg)])
        self.body = client.loadURDF(str(urdf), self.cfg.base_position, orn, useFixedBase=True)
        n = client.getNumJoints(self.body)
        self.links = list(range(-1, n))
        joints, links, dof = {}, {}, {}
        for j in range(n):
            info = client.getJointInfo(self.body, j)
            joints[info[1].decode()] = j
            links[info[12].decode()] = j
            if info[3] > -1:  # has a position in the state vector: a degree of freedom
                dof[j] = len(dof)
        self.arm_joints = tuple(joints[name] for name in spec.arm_joints)
        self.gripper_joints = tuple(joints[name] for name in spec.gripper_joints)
        if spec.ee_link not in links:
            raise ConfigError(
                f"robot.ee_link: {spec.ee_link!r} is the base link of {spec.urdf}; "
                "choose a link an arm joint moves"
            )
        self.ee_link = links[spec.ee_link]
        self._arm_dof = [dof[j] for j in self.arm_joints]
        # PyBullet's limits (as the arms always had); (0, -1) when unlimited: the spec's
        limits = [client.getJointInfo(self.body, j)[8:10] for j in self.arm_joints]
        pairs = zip(limits, spec.lower, spec.upper, strict=True)
        chosen = [(lo, hi) if hi > lo else (slo, shi) for (lo, hi), slo, shi in pairs]
        self.lower = np.array([c[0] for c in chosen], dtype=np.float64)
        self.upper = np.array([c[1] for c in chosen], dtype=np.float64)
        self.rest_pose = np.asarray(spec.rest_pose, dtype=np.float64)
        self.ee_offset = np.asarray(spec.ee_offset, dtype=np.float64)
        self._has_offset = bool(np.any(self.ee_offset))
        self.ee_down = (
            None
            if spec.ee_orientation is None
            else client.getQuaternionFromEuler(list(spec.ee_orientation))
        )
        self.base_position = np.asarray(self.cfg.base_position, dtype=np.float64)
        if self.cfg.workspace_low is None or self.cfg.workspace_high is None:  # a urdf arm's
            self.cfg = self.cfg.model_copy(update=default_box(self, table))

    def reset(self, joints: np.ndarray | None = None) -> None:
        """Put the arm at ``joints`` (default: the rest pose), the gripper open, and hold it."""
        q = np.asarray(self.spec.rest_pose if joints is None else joints, dtype=np.float64)
        for j, v in zip(self.arm_joints, q, strict=True):
            self.client.resetJointState(self.body, j, float(v))
        for j, v in zip(self.gripper_joints, self.spec.gripper_open, strict=True):
            self.client.resetJointState(self.body, j, v)
        self._command(q)

    def joint_positions(self) -> np.ndarray:
        states = self.client.getJointStates(self.body, self.arm_joints)
        return np.array([s[0] for s in states], dtype=np.float64)

    def ee_position(self) -> np.ndarray:
        """World position of the end effector (``ee_link`` plus ``ee_offset`` in its frame)."""
        state = self.client.getLinkState(self.body, self.ee_link)
        pos = np.asarray(state[4], dtype=np.float64)
        if self._has_offset:
            pos = pos + self._rotate(state[5], self.ee_offset)
        return pos

    def _rotate(self, quat: Any, v: np.ndarray) -> np.ndarray:
        m = np.asarray(self.client.getMatrixFromQuaternion(quat), dtype=np.float64)
        return m.reshape(3, 3) @ v

    def ik(self, target: np.ndarray) -> np.ndarray:
        """Joint positions that put the end effector at ``target`` (pointing as
        ``ee_orientation`` says, unless it is free)."""
        target = np.asarray(target, dtype=np.float64)
        if self._has_offset:
            quat = self.ee_down
            if quat is None:
                quat = self.client.getLinkState(self.body, self.ee_link)[5]
            target = target - self._rotate(quat, self.ee_offset)
        args: list[Any] = [self.body, self.ee_link, [float(x) for x in target]]
        if self.ee_down is not None:
            args.append(self.ee_down)
        q = self.client.calculateInverseKinematics(
            *args,
            lowerLimits=self.lower.tolist(),
            upperLimits=self.upper.tolist(),
            jointRanges=(self.upper - self.lower).tolist(),
            restPoses=list(self.spec.rest_pose),
            maxNumIterations=50,
        )
        return np.asarray([q[d] for d in self._arm_dof], dtype=np.float64)

    def pose_at(self, target: np.ndarray, iterations: int = 8, tol: float = 1e-3) -> float:
        """Pose the arm (joints reset, no physics) with the end effector at ``target`` by
        repeated IK from the pose reached; returns the remaining distance (metres).

        Example:
            >>> err = arm.pose_at(np.array([0.5, 0.0, 0.3]))  # doctest: +SKIP
        """
        target = np.asarray(target, dtype=np.float64)
        err = float("inf")
        for _ in range(iterations):
            q = np.clip(self.ik(target), self.lower, self.upper)
            self.reset(q)
            err = float(np.linalg.norm(self.ee_position() - target))
            if err < tol:
                break
        return err

    def move_towards(self, target: np.ndarray) -> None:
        """Command the arm joints (position control) to reach ``target``; physics runs later."""
        low = np.asarray(self.cfg.workspace_low) + self.base_position
        high = np.asarray(self.cfg.workspace_high) + self.base_position
        self._command(self.ik(np.clip(target, low, high)))

    def _command(self, q: np.ndarray) -> None:
        self.client.setJointMotorControlArray(
            self.body,
            list(self.arm_joints),
            self.client.POSITION_CONTROL,
            targetPositions=q.tolist(),
            forces=[200.0] * len(q),
        )
        if self.gripper_joints:
            self.client.setJointMotorControlArray(
                self.body,
                list(self.gripper_joints),
                self.client.POSITION_CONTROL,
                targetPositions=list(self.spec.gripper_open),
            )

    def set_joint_damping(self, damping: float) -> None:
        for j in self.arm_joints:
            self.client.changeDynamics(self.body, j, jointDamping=float(damping))

    @property
    def proprio_size(self) -> int:
        return len(self.arm_joints) + 3
