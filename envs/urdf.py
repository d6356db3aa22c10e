"""URDF files read without a simulator: where a file is, its joints and links, its meshes.

What :class:`sim2real.envs.robots.RobotArm` checks a robot description against, what
``sim2real inspect URDF`` prints, and where the low-poly render meshes find their sources.

Example:
    >>> info = read_urdf(find_file("kuka_iiwa/model.urdf", what="urdf"))
    >>> [j.name for j in info.movable][:2]
    ['lbr_iiwa_joint_1', 'lbr_iiwa_joint_2']
    >>> info.joint("lbr_iiwa_joint_1").type
    'revolute'
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sim2real.errors import ConfigError

#: Joint types an arm joint may have (one rotational degree of freedom each).
ROTATIONAL = ("revolute", "continuous")
#: Joint types PyBullet moves (every other type is fixed for it).
MOVABLE = ("revolute", "continuous", "prismatic")


@dataclass(frozen=True)
class JointInfo:
    """One ``<joint>`` of a URDF."""

    name: str
    type: str  # revolute, continuous, prismatic, fixed, floating, planar
    parent: str
    child: str
    lower: float
    upper: float
    mimic: str | None = None  # the joint this one mimics, if any

    @property
    def limits(self) -> str:
        if self.type == "continuous":
            return "unlimited"
        if self.type not in MOVABLE:
            return "-"
        return f"[{self.lower:.4g}, {self.upper:.4g}]"


@dataclass(frozen=True)
class UrdfInfo:
    """The joints and links of one URDF, in file order."""

    path: Path
    robot: str
    links: tuple[str, ...]
    joints: tuple[JointInfo, ...]

    @property
    def movable(self) -> tuple[JointInfo, ...]:
        return tuple(j for j in self.joints if j.type in MOVABLE)

    @property
    def root_link(self) -> str:
        children = {j.child for j in self.joints}
        roots = [link for link in self.links if link not in children]
        return roots[0] if roots else (self.links[0] if self.links else "")

    def joint(self, name: str, field: str = "joint") -> JointInfo:
        """The joint called ``name``; a ConfigError that lists the URDF's joints otherwise."""
        for j in self.joints:
            if j.name == name:
                return j
        names = [j.name for j in self.joints]
        raise ConfigError(
            f"{field}: {name!r} is not a joint of {self.path}; its joints are {names}"
            + _close(name, names)
        )

    def check_link(self, name: str, field: str = "link") -> None:
        """ConfigError listing the URDF's links unless it has a link called ``name``."""
        if name not in self.links:
            raise ConfigError(
                f"{field}: {name!r} is not a link of {self.path}; its links are "
                f"{list(self.links)}" + _close(name, self.links)
            )

    def chain(self, link: str) -> list[JointInfo]:
        """The joints from the root link down to ``link``, root first."""
        by_child = {j.child: j for j in self.joints}
        out: list[JointInfo] = []
        while link in by_child and len(out) <= len(self.joints):
            joint = by_child[link]
            out.append(joint)
            link = joint.parent
        return out[::-1]


def _close(name: str, names: Iterable[str]) -> str:
    import difflib

    near = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def read_urdf(path: str | Path) -> UrdfInfo:
    """Parse a URDF's joints and links (no simulator needed).

    Raises:
        ConfigError: the file is missing or is not a URDF.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError as exc:
        raise ConfigError(f"URDF {path} not found") from exc
    except ET.ParseError as exc:
        raise ConfigError(f"URDF {path}: not valid XML ({exc})") from exc
    if root.tag != "robot":
        raise ConfigError(f"URDF {path}: expected a <robot> root element, got <{root.tag}>")
    joints = []
    for j in root.findall("joint"):
        limit = j.find("limit")
        lower = float(limit.get("lower", 0.0)) if limit is not None else 0.0
        upper = float(limit.get("upper", 0.0)) if limit is not None else 0.0
        jtype = j.get("type", "fixed")
        if jtype == "continuous":
            lower, upper = -math.inf, math.inf
        mimic = j.find("mimic")
        joints.append(
            JointInfo(
                name=j.get("name", ""),
                type=jtype,
                parent=_attr(j, "parent", "link"),
                child=_attr(j, "child", "link"),
                lower=lower,
                upper=upper,
                mimic=mimic.get("joint") if mimic is not None else None,
            )
        )
    links = tuple(link.get("name", "") for link in root.findall("link"))
    return UrdfInfo(path=path, robot=root.get("name", path.stem), links=links, joints=tuple(joints))


def _attr(elem: ET.Element, child: str, attr: str) -> str:
    c = elem.find(child)
    return c.get(attr, "") if c is not None else ""


def pybullet_data_dir() -> Path | None:
    """pybullet_data's folder, or None when PyBullet is not installed (a robot computer)."""
    try:
        import pybullet_data
    except ImportError:
        return None
    return Path(pybullet_data.getDataPath())


def candidates(name: str | Path, base_dirs: Iterable[Path] = ()) -> list[Path]:
    """Where a file called ``name`` may be, in the order tried: the path itself when
    absolute, else relative to each of ``base_dirs``, to pybullet_data, then to the working
    folder."""
    p = Path(str(name).replace("file://", "", 1)).expanduser()
    if p.is_absolute():
        return [p]
    dirs = [*base_dirs]
    data = pybullet_data_dir()
    if data is not None:
        dirs.append(data)
    dirs.append(Path.cwd())
    out: list[Path] = []
    for d in dirs:
        c = Path(d) / p
        if c not in out:
            out.append(c)
    return out


def find_file(name: str | Path, *, what: str, base_dirs: Iterable[Path] = ()) -> Path:
    """The first existing path of :func:`candidates`.

    Raises:
        ConfigError: none exists; the message names every path tried.

    Example:
        >>> find_file("franka_panda/panda.urdf", what="robot.urdf").name
        'panda.urdf'
    """
    tried = candidates(name, base_dirs)
    for c in tried:
        if c.is_file():
            return c.resolve()
    raise ConfigError(f"{what}: {str(name)!r} not found; tried " + ", ".join(str(t) for t in tried))


def mesh_path(filename: str, urdf_dir: Path) -> Path:
    """The file a URDF ``<mesh filename=...>`` names: absolute, relative to the URDF's folder,
    or ``package://PKG/REST`` (tried as ``PKG/REST`` and ``REST`` relative to the URDF's
    folder and each folder above it, the ROS layouts).

    Raises:
        ConfigError: no candidate exists; the message names every path tried.
    """
    tried: list[Path] = []
    if filename.startswith("package://"):
        rest = filename[len("package://") :]
        parts = Path(rest).parts
        tails = [Path(rest)] + ([Path(*parts[1:])] if len(parts) > 1 else [])
        for d in [urdf_dir, *urdf_dir.parents]:
            tried.extend(d / t for t in tails)
    else:
        p = Path(filename.replace("file://", "", 1))
        tried.append(p if p.is_absolute() else urdf_dir / p)
    for c in tried:
        if c.is_file():
            return c.resolve()
    shown = ", ".join(str(t) for t in tried[:6]) + (" ..." if len(tried) > 6 else "")
    raise ConfigError(f"mesh {filename!r} of {urdf_dir}: not found; tried {shown}")


def format_urdf(info: UrdfInfo, shown: str | None = None) -> str:
    """A URDF's joints (name, type, limits, parent -> child) and links as a text table, then a
    starter ``robot:`` section for a scene YAML (see :func:`starter_yaml`); ``shown`` is the
    URDF path to put in it (default: the full path)."""
    rows = [("#", "joint", "type", "limits", "parent -> child")]
    rows += [
        (
            str(i),
            j.name,
            j.type + (f" (mimics {j.mimic})" if j.mimic else ""),
            j.limits,
            f"{j.parent} -> {j.child}",
        )
        for i, j in enumerate(info.joints)
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    lines = [
        f"URDF {info.path} (robot {info.robot!r}): {len(info.joints)} joints, "
        f"{len(info.movable)} movable, {len(info.links)} links",
        "",
    ]
    for r in rows:
        lines.append("  ".join(r[c].ljust(widths[c]) for c in range(4)) + "  " + r[4])
    lines += ["", "links: " + ", ".join(info.links), ""]
    lines += ["a starting point for a scene's robot: section (check the joints and ee_link):"]
    lines += ["  " + line for line in starter_yaml(info, shown).splitlines()]
    return "\n".join(lines)


def arm_guess(info: UrdfInfo) -> tuple[list[str], str]:
    """The arm a URDF most likely has: from the root link down while each link has one child
    joint (a gripper branches) and that joint is fixed or rotational (a prismatic or mimic
    joint is a gripper's), the rotational joints; and the link where that walk stops."""
    children: dict[str, list[JointInfo]] = {}
    for j in info.joints:
        children.setdefault(j.parent, []).append(j)
    link, arm, seen = info.root_link, [], set()
    while len(children.get(link, [])) == 1 and link not in seen:
        seen.add(link)
        joint = children[link][0]
        if joint.type in MOVABLE and (joint.type not in ROTATIONAL or joint.mimic):
            break
        if joint.type in ROTATIONAL:
            arm.append(joint.name)
        link = joint.child
    return arm, link


def starter_yaml(info: UrdfInfo, shown: str | None = None) -> str:
    """A ``robot:`` section naming the joints and end link of :func:`arm_guess`."""
    arm, ee = arm_guess(info)
    return (
        "robot:\n"
        f"  urdf: {shown or info.path}\n"
        f"  arm_joints: [{', '.join(arm)}]\n"
        f"  ee_link: {ee}\n"
        "  ee_orientation: free   # or [roll, pitch, yaw] of the tool pointing down\n"
    )


def per_joint(
    value: float | tuple[float, ...] | None, joints: tuple[str, ...], field: str
) -> tuple[float, ...]:
    """One float per joint from a single value, one per joint, or None (zeros)."""
    if value is None:
        return (0.0,) * len(joints)
    if isinstance(value, (int, float)):
        return (float(value),) * len(joints)
    if len(value) != len(joints):
        raise ConfigError(
            f"robot.{field}: expected one value or {len(joints)} (one per gripper joint), "
            f"got {len(value)}"
        )
    return tuple(float(x) for x in value)
