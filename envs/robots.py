"""Robot arms: low-poly render meshes, inverse kinematics and the action mapping.

PyBullet's CPU renderer spends its time in triangles, so robots are rendered with meshes made
at load time from their own collision geometry: the URDF is rewritten with each link's
``<visual>`` replaced by its ``<collision>`` geometry, and meshes heavier than a budget are
replaced by their convex hull (a few hundred triangles). Nothing is copied by hand; the
generated files live in a per-user cache folder keyed by the source file's content.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sim2real.errors import ConfigError

logger = logging.getLogger(__name__)

RenderMesh = Literal["lowpoly", "visual"]


@dataclass(frozen=True)
class RobotSpec:
    """What the code needs to know about one arm model."""

    urdf: str  # relative to pybullet_data
    arm_joints: tuple[int, ...]
    finger_joints: tuple[int, ...]
    ee_link: int
    rest_pose: tuple[float, ...]
    finger_open: float
    ee_down_euler: tuple[float, float, float]


ROBOTS: dict[str, RobotSpec] = {
    "panda": RobotSpec(
        urdf="franka_panda/panda.urdf",
        arm_joints=(0, 1, 2, 3, 4, 5, 6),
        finger_joints=(9, 10),
        ee_link=11,
        rest_pose=(0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.785),
        finger_open=0.0,
        ee_down_euler=(np.pi, 0.0, 0.0),
    ),
    "kuka_iiwa": RobotSpec(
        urdf="kuka_iiwa/model.urdf",
        arm_joints=(0, 1, 2, 3, 4, 5, 6),
        finger_joints=(),
        ee_link=6,
        rest_pose=(0.0, 0.4, 0.0, -1.4, 0.0, 1.2, 0.0),
        finger_open=0.0,
        ee_down_euler=(0.0, np.pi, 0.0),
    ),
}


class RobotConfig(BaseModel):
    """Robot part of a scene config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "panda"
    base_position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    base_yaw_deg: float = 0.0
    render_mesh: RenderMesh = "lowpoly"
    color: tuple[float, float, float, float] = (0.9, 0.9, 0.9, 1.0)
    max_step_m: float = Field(0.05, gt=0.0, description="end-effector move per unit action")
    workspace_low: tuple[float, float, float] = (0.25, -0.35, 0.02)
    workspace_high: tuple[float, float, float] = (0.75, 0.35, 0.45)

    def spec(self) -> RobotSpec:
        if self.name not in ROBOTS:
            raise ConfigError(f"robot.name is {self.name!r}; expected one of {sorted(ROBOTS)}")
        return ROBOTS[self.name]


def _cache_dir() -> Path:
    root = Path(os.environ.get("SIM2REAL_CACHE", Path(tempfile.gettempdir()) / "sim2real-cache"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _read_mesh_vertices(path: Path) -> np.ndarray:
    """Vertices of an .obj or binary/ascii .stl mesh, shape (N, 3)."""
    if path.suffix.lower() == ".obj":
        verts = [
            [float(x) for x in line.split()[1:4]]
            for line in path.read_text(errors="ignore").splitlines()
            if line.startswith("v ")
        ]
        return np.asarray(verts, dtype=np.float64)
    data = path.read_bytes()
    if data[:5] == b"solid" and b"facet" in data[:400]:
        verts = [
            [float(x) for x in line.split()[1:4]]
            for line in data.decode(errors="ignore").splitlines()
            if line.strip().startswith("vertex")
        ]
        return np.asarray(verts, dtype=np.float64)
    n = int(np.frombuffer(data[80:84], dtype="<u4")[0])
    rec = np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    tris = np.frombuffer(data[84 : 84 + n * 50], dtype=rec)
    return tris["v"].reshape(-1, 3).astype(np.float64)


def _count_faces(path: Path) -> int:
    if path.suffix.lower() == ".obj":
        return sum(
            1 for line in path.read_text(errors="ignore").splitlines() if line.startswith("f ")
        )
    return len(_read_mesh_vertices(path)) // 3


def convex_hull_obj(src: Path, dst: Path, grid: float = 0.004) -> int:
    """Write the convex hull of a mesh's vertices as an .obj; returns its triangle count.

    Vertices are snapped to a ``grid`` (metres) first, which keeps hulls small.
    """
    from scipy.spatial import ConvexHull

    verts = _read_mesh_vertices(src)
    snapped = np.unique(np.round(verts / grid) * grid, axis=0)
    hull = ConvexHull(snapped)
    used, inverse = np.unique(hull.simplices, return_inverse=True)
    faces = inverse.reshape(-1, 3)
    pts = snapped[used]
    centre = pts.mean(axis=0)
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in pts]
    for a, b, c in faces:  # orient outwards
        n = np.cross(pts[b] - pts[a], pts[c] - pts[a])
        if np.dot(n, pts[a] - centre) < 0:
            b, c = c, b
        lines.append(f"f {a + 1} {b + 1} {c + 1}")
    tmp = dst.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, dst)
    return len(faces)


def lowpoly_urdf(urdf_path: Path, max_faces: int = 150, grid: float = 0.012) -> Path:
    """Rewrite a URDF so every link renders with low-poly meshes made from its collision shapes.

    Args:
        urdf_path: the source URDF (its mesh paths are resolved relative to its folder,
            ``package://`` prefixes included).
        max_faces: meshes with more triangles are replaced by their convex hull.

    Returns:
        Path of the generated URDF in the cache folder (reused when it exists).
    """
    src_text = urdf_path.read_text()
    key = hashlib.sha256(f"{urdf_path}|{max_faces}|{grid}|{src_text}".encode()).hexdigest()[:16]
    out_dir = _cache_dir() / f"{urdf_path.stem}-{key}"
    out = out_dir / urdf_path.name
    if out.exists():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    root = ET.fromstring(src_text)
    base = urdf_path.parent
    total = 0
    for link in root.iter("link"):
        for visual in list(link.findall("visual")):
            link.remove(visual)
        for i, collision in enumerate(link.findall("collision")):
            visual = ET.SubElement(link, "visual")
            for child in collision:
                if child.tag in ("origin", "geometry"):
                    visual.append(_clone(child))
            mesh = visual.find("geometry/mesh")
            if mesh is not None:
                mesh_path = base / mesh.get("filename", "").replace("package://", "")
                if _count_faces(mesh_path) > max_faces:
                    hull = out_dir / f"{link.get('name')}_{i}_hull.obj"
                    total += convex_hull_obj(mesh_path, hull, grid)
                    mesh.set("filename", str(hull))
                else:
                    total += _count_faces(mesh_path)
                    mesh.set("filename", str(mesh_path.resolve()))
            material = ET.SubElement(visual, "material", name="sim2real_lowpoly")
            ET.SubElement(material, "color", rgba="0.9 0.9 0.9 1")
    for collision_mesh in root.iter("mesh"):
        fn = collision_mesh.get("filename", "")
        if not os.path.isabs(fn):
            collision_mesh.set("filename", str((base / fn.replace("package://", "")).resolve()))
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    ET.ElementTree(root).write(tmp)
    os.replace(tmp, out)
    logger.info("low-poly render URDF for %s: %d triangles -> %s", urdf_path.name, total, out)
    return out


def _clone(elem: ET.Element) -> ET.Element:
    return ET.fromstring(ET.tostring(elem))


class Robot:
    """One arm in one PyBullet client: loading, reset, IK-based Cartesian control, proprio."""

    def __init__(self, client: Any, cfg: RobotConfig) -> None:
        import pybullet_data

        self.client = client
        self.cfg = cfg
        self.spec = cfg.spec()
        urdf = Path(pybullet_data.getDataPath()) / self.spec.urdf
        if cfg.render_mesh == "lowpoly":
            urdf = lowpoly_urdf(urdf)
        orn = client.getQuaternionFromEuler([0.0, 0.0, np.radians(cfg.base_yaw_deg)])
        self.body = client.loadURDF(str(urdf), cfg.base_position, orn, useFixedBase=True)
        self.links = list(range(-1, client.getNumJoints(self.body)))
        info = [client.getJointInfo(self.body, j) for j in self.spec.arm_joints]
        self.lower = np.array([i[8] for i in info])
        self.upper = np.array([i[9] for i in info])
        self.ee_down = client.getQuaternionFromEuler(self.spec.ee_down_euler)
        self.base_position = np.asarray(cfg.base_position, dtype=np.float64)

    def reset(self, joints: np.ndarray | None = None) -> None:
        q = np.asarray(self.spec.rest_pose if joints is None else joints, dtype=np.float64)
        for j, v in zip(self.spec.arm_joints, q, strict=True):
            self.client.resetJointState(self.body, j, float(v))
        for j in self.spec.finger_joints:
            self.client.resetJointState(self.body, j, self.spec.finger_open)
        self._command(q)

    def joint_positions(self) -> np.ndarray:
        states = self.client.getJointStates(self.body, self.spec.arm_joints)
        return np.array([s[0] for s in states], dtype=np.float64)

    def ee_position(self) -> np.ndarray:
        return np.asarray(
            self.client.getLinkState(self.body, self.spec.ee_link)[4], dtype=np.float64
        )

    def ik(self, target: np.ndarray) -> np.ndarray:
        """Joint positions that put the end effector at ``target`` pointing down."""
        q = self.client.calculateInverseKinematics(
            self.body,
            self.spec.ee_link,
            [float(x) for x in target],
            self.ee_down,
            lowerLimits=self.lower.tolist(),
            upperLimits=self.upper.tolist(),
            jointRanges=(self.upper - self.lower).tolist(),
            restPoses=list(self.spec.rest_pose),
            maxNumIterations=50,
        )
        return np.asarray(q[: len(self.spec.arm_joints)], dtype=np.float64)

    def move_towards(self, target: np.ndarray) -> None:
        """Command the arm joints (position control) to reach ``target``; physics runs later."""
        low = np.asarray(self.cfg.workspace_low) + self.base_position
        high = np.asarray(self.cfg.workspace_high) + self.base_position
        self._command(self.ik(np.clip(target, low, high)))

    def _command(self, q: np.ndarray) -> None:
        self.client.setJointMotorControlArray(
            self.body,
            list(self.spec.arm_joints),
            self.client.POSITION_CONTROL,
            targetPositions=q.tolist(),
            forces=[200.0] * len(q),
        )
        if self.spec.finger_joints:
            self.client.setJointMotorControlArray(
                self.body,
                list(self.spec.finger_joints),
                self.client.POSITION_CONTROL,
                targetPositions=[self.spec.finger_open] * len(self.spec.finger_joints),
            )

    def set_joint_damping(self, damping: float) -> None:
        for j in self.spec.arm_joints:
            self.client.changeDynamics(self.body, j, jointDamping=float(damping))

    @property
    def proprio_size(self) -> int:
        return len(self.spec.arm_joints) + 3
