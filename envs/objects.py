"""The objects of a scene: primitives, meshes, URDFs and sets of files, described in YAML.

A scene's ``objects:`` list holds one :class:`ObjectSpec` per entry; each names exactly one
kind of geometry::

    objects:
      - {name: cube, shape: box, size: 0.05, color: [0.9, 0.1, 0.1, 1], mass: 0.1,
         spawn: {x: [0.35, 0.65], y: [-0.25, 0.25]}, role: target}
      - {name: can, shape: cylinder, radius: 0.03, length: 0.1}
      - {name: bunny, mesh: meshes/bunny.obj, scale: 0.1}       # .obj/.stl/.ply/.glb
      - {name: mug, urdf: objects/mug.urdf}
      - {name: clutter, set: random_urdfs, glob: "random_urdfs/*[^0]/*.urdf", count: [1, 3],
         pool: 12, role: distractor}

Files resolve as an absolute path, relative to the scene YAML (``base_dir``), or relative to
``pybullet_data``; a missing file lists every path tried. Globs follow the shell: ``[^0]``
and ``[!0]`` both mean "any character but 0" (Python's ``glob`` alone reads ``[^0]`` as
"``^`` or ``0``", the opposite split), so ``random_urdfs/*[^0]/*.urdf`` is the 900-object
training split of bullet3's ``KukaDiverseObjectEnv`` and ``random_urdfs/*0/*.urdf`` its
100-object test split.

:func:`load_object` is the one loader (dispatching on the kind, as pybullet-planning's
``load_pybullet`` does on the suffix). Meshes go through ``trimesh``: the collision shape is
the convex hull (``collision: vhacd`` asks for PyBullet's convex decomposition instead), the
render geometry is simplified to ``max_triangles`` when heavier (quadric decimation when
``fast_simplification`` is installed, else the convex hull, with a logged note) and mass
properties come from the mesh (its hull when the mesh is not watertight).

Every loaded object carries its convex hull in its body frame (:class:`LoadedObject`), from
which :func:`sample_placements` takes footprints and rest heights and
:mod:`sim2real.envs.object_labels` projects silhouettes.

Example:
    >>> spec = ObjectSpec(name="cube", shape="box", size=0.05, colour=(1, 0, 0, 1))
    >>> spec.kind, spec.color, spec.count_range
    ('shape', (1.0, 0.0, 0.0, 1.0), (1, 1))
"""

from __future__ import annotations

import functools
import glob as globlib
import hashlib
import logging
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from sim2real.errors import ConfigError

logger = logging.getLogger(__name__)

RGBA = tuple[float, float, float, float]
Shape = Literal["box", "cylinder", "sphere"]
Role = Literal["target", "distractor"]
#: Rotational symmetry of an object's appearance, for orientation labels: none, 2- or 4-fold
#: about its vertical axis, continuous about it (``z``: cylinders), or any rotation (spheres).
Symmetry = Literal["none", "z2", "z4", "z", "full"]
MESH_SUFFIXES = (".obj", ".stl", ".ply", ".glb", ".gltf")
PARKED = (0.0, 0.0, 60.0)  # far above the scene: outside every camera's view
DEFAULT_MASS = 0.1
DEFAULT_COLOR: RGBA = (0.6, 0.6, 0.6, 1.0)
REST_EPS = 1e-4  # spawn this far above the table so nothing starts in contact overlap
RANDOM_URDFS_GLOB = "random_urdfs/*/*.urdf"


class SpawnRegion(BaseModel):
    """Where on the table an object spawns: ``x``/``y`` ranges (world metres) and a yaw range
    (radians). ``grid_step`` snaps positions to a grid; ``near`` is the fraction of draws
    made uniform over the image instead (needs the camera eye, see :func:`sample_placements`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    x: tuple[float, float]
    y: tuple[float, float]
    yaw: tuple[float, float] = (-math.pi, math.pi)
    grid_step: float | None = Field(None, gt=0.0)
    near: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> SpawnRegion:
        for key in ("x", "y", "yaw"):
            lo, hi = getattr(self, key)
            if lo > hi:
                raise ValueError(f"spawn.{key} is [{lo}, {hi}]: expected low <= high")
        return self


class ObjectSpec(BaseModel):
    """One entry of a scene's ``objects:`` list (see the module docstring).

    Exactly one of ``shape``, ``mesh``, ``urdf`` or ``set`` gives the geometry. Sizes:
    ``box`` takes ``size`` (one edge, or three), ``cylinder`` ``radius`` and ``length``,
    ``sphere`` ``radius``. ``count`` (an int or ``[lo, hi]``) makes that many instances,
    named ``NAME_0``, ``NAME_1``, ... (a plain ``NAME`` when the count is exactly 1); with a
    range, ``hi`` bodies are loaded once and each episode shows a number drawn in the range.
    A set's ``pool`` loads that many distinct members instead, of which each episode shows
    ``count`` at random (variety without loading at reset).
    ``mass`` None keeps a URDF's own masses (0.1 kg for shapes and meshes); ``color`` (or
    ``colour``) None keeps the file's colours. The task's target is the first ``target``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")
    shape: Shape | None = None
    size: float | tuple[float, float, float] | None = None
    radius: float | None = Field(None, gt=0.0)
    length: float | None = Field(None, gt=0.0)
    mesh: str | None = None
    urdf: str | None = None
    set: str | None = None
    glob: str | None = None
    scale: float | tuple[float, float, float] = 1.0
    count: int | tuple[int, int] = 1
    pool: int | None = Field(
        None,
        ge=1,
        description="a set: members loaded once (>= count); each episode shows "
        "count of them, drawn at random (default: the count's upper bound)",
    )
    mass: float | None = Field(None, gt=0.0)
    color: RGBA | None = Field(None, validation_alias=AliasChoices("color", "colour"))
    spawn: SpawnRegion | None = None
    role: Role = "target"
    symmetry: Symmetry | None = None
    collision: Literal["hull", "vhacd"] = "hull"
    max_triangles: int = Field(1000, ge=12, description="render triangle budget of a mesh")
    fixed: bool = Field(False, description="a static body (mass 0)")

    @model_validator(mode="after")
    def _consistent(self) -> ObjectSpec:
        where = f"object {self.name!r}"
        given = [k for k in ("shape", "mesh", "urdf", "set") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"{where}: expected exactly one of shape, mesh, urdf, set; got {given or 'none'}"
            )
        kind = given[0]
        sizes = {k: getattr(self, k) for k in ("size", "radius", "length")}
        needed = {
            "box": {"size"},
            "cylinder": {"radius", "length"},
            "sphere": {"radius"},
        }.get(self.shape or "", set())
        extra = sorted(k for k, v in sizes.items() if v is not None and k not in needed)
        missing = sorted(k for k in needed if sizes[k] is None)
        if extra:
            what = f"shape {self.shape}" if self.shape else kind
            raise ValueError(f"{where}: {', '.join(extra)} not used by {what} (takes {needed})")
        if missing:
            raise ValueError(f"{where}: shape {self.shape} needs {', '.join(missing)}")
        if self.size is not None:
            edges = (self.size,) * 3 if isinstance(self.size, (int, float)) else self.size
            if min(edges) <= 0:
                raise ValueError(f"{where}: size {self.size} must be positive")
        if self.glob is not None and kind != "set":
            raise ValueError(f"{where}: glob is for sets (set: NAME), got {kind}")
        if kind == "set" and self.glob is None and self.set != "random_urdfs":
            raise ValueError(f"{where}: set {self.set!r} needs a glob pattern")
        if self.mesh is not None and Path(self.mesh).suffix.lower() not in MESH_SUFFIXES:
            raise ValueError(f"{where}: mesh {self.mesh!r}: expected one of {MESH_SUFFIXES}")
        if self.urdf is not None and Path(self.urdf).suffix.lower() != ".urdf":
            raise ValueError(f"{where}: urdf {self.urdf!r}: expected a .urdf file")
        scales = (self.scale,) if isinstance(self.scale, (int, float)) else self.scale
        if min(scales) <= 0:
            raise ValueError(f"{where}: scale {self.scale} must be positive")
        if not isinstance(self.scale, (int, float)) and kind in ("urdf", "set"):
            raise ValueError(f"{where}: a {kind} takes one scale factor, got {self.scale}")
        lo, hi = self.count_range
        if lo < 0 or lo > hi:
            raise ValueError(f"{where}: count {self.count}: expected n >= 0 or [lo, hi], lo<=hi")
        if self.pool is not None and kind != "set":
            raise ValueError(f"{where}: pool is for sets (set: NAME), got {kind}")
        if self.pool is not None and self.pool < hi:
            raise ValueError(f"{where}: pool {self.pool} is smaller than the count {self.count}")
        return self

    @property
    def kind(self) -> Literal["shape", "mesh", "urdf", "set"]:
        for k in ("shape", "mesh", "urdf", "set"):
            if getattr(self, k) is not None:
                return k  # type: ignore[return-value]
        raise AssertionError("validated: one kind is set")

    @property
    def count_range(self) -> tuple[int, int]:
        if isinstance(self.count, int):
            return self.count, self.count
        return int(self.count[0]), int(self.count[1])

    @property
    def instance_names(self) -> list[str]:
        """Names of the bodies this entry loads (its pool, else ``hi`` of the count)."""
        lo, hi = self.count_range
        n = self.pool or hi
        if lo == hi == n == 1:
            return [self.name]
        return [f"{self.name}_{i}" for i in range(n)]

    @property
    def box_size(self) -> tuple[float, float, float]:
        s = self.size
        assert s is not None
        return (float(s),) * 3 if isinstance(s, (int, float)) else tuple(float(x) for x in s)


def validate_objects(entries: Sequence[Mapping[str, Any] | ObjectSpec]) -> tuple[ObjectSpec, ...]:
    """Validate an ``objects:`` list: each entry, and unique instance names across entries.

    Example:
        >>> [o.name for o in validate_objects([{"name": "a", "shape": "sphere", "radius": 0.02}])]
        ['a']
    """
    specs = tuple(e if isinstance(e, ObjectSpec) else ObjectSpec.model_validate(e) for e in entries)
    seen: dict[str, str] = {}
    for spec in specs:
        for inst in spec.instance_names:
            if inst in seen:
                raise ConfigError(
                    f"objects: instance name {inst!r} of {spec.name!r} clashes with {seen[inst]!r}"
                )
            seen[inst] = spec.name
    return specs


def target_name(specs: Sequence[ObjectSpec]) -> str:
    """Instance name of the task's target: the first instance of the first ``target`` entry."""
    for spec in specs:
        if spec.role == "target" and spec.instance_names:
            return spec.instance_names[0]
    raise ConfigError(f"objects: no entry has role 'target' (got {[s.name for s in specs]})")


# -- the legacy single cube ----------------------------------------------------------------
def legacy_cube(cube: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    """The old ``cube:`` section (``envs/scene.py`` ``ObjectConfig``) as one ``objects:`` entry.

    Example:
        >>> legacy_cube({"size": 0.08, "spawn_x": [-1.25, -0.5], "spawn_y": [-0.6, 0.6]})["shape"]
        'box'
    """
    c = dict(cube.model_dump() if isinstance(cube, BaseModel) else cube)
    known = {"size", "color", "mass", "spawn_x", "spawn_y", "grid_step", "spawn_near"}
    unknown = sorted(set(c) - known)
    if unknown:
        raise ConfigError(f"cube: unknown fields {unknown}; expected some of {sorted(known)}")
    spawn: dict[str, Any] = {
        "x": list(c.get("spawn_x", (0.35, 0.65))),
        "y": list(c.get("spawn_y", (-0.25, 0.25))),
    }
    if c.get("grid_step"):
        spawn["grid_step"] = c["grid_step"]
    if c.get("spawn_near"):
        spawn["near"] = c["spawn_near"]
    return {
        "name": "cube",
        "shape": "box",
        "size": float(c.get("size", 0.05)),
        "color": list(c.get("color", (0.85, 0.1, 0.1, 1.0))),
        "mass": float(c.get("mass", 0.1)),
        "spawn": spawn,
        "role": "target",
        "symmetry": "z4",
    }


def legacy_cube_view(specs: Sequence[ObjectSpec]) -> dict[str, Any] | None:
    """The old ``cube:`` section (all of ``ObjectConfig``'s fields) when ``specs`` is exactly
    what :func:`legacy_cube` makes of one, else None: the inverse, so a scene that is still
    the single cube can be written (and compared with old dataset manifests) as it was.

    Example:
        >>> old = {"size": 0.08, "color": [1, 1, 1, 1], "mass": 0.2,
        ...        "spawn_x": [-1.2, -0.5], "spawn_y": [-0.6, 0.6]}
        >>> legacy_cube_view([ObjectSpec.model_validate(legacy_cube(old))])["size"]
        0.08
    """
    if len(specs) != 1:
        return None
    spec = specs[0]
    try:
        view: dict[str, Any] = {
            "size": spec.box_size[0] if spec.shape == "box" else None,
            "color": list(spec.color or ()),
            "mass": spec.mass,
            "spawn_x": list(spec.spawn.x) if spec.spawn else None,
            "spawn_y": list(spec.spawn.y) if spec.spawn else None,
            "grid_step": spec.spawn.grid_step if spec.spawn else None,
            "spawn_near": spec.spawn.near if spec.spawn else 0.0,
        }
    except AssertionError:
        return None
    if view["size"] is None or view["mass"] is None or not view["color"] or not spec.spawn:
        return None
    again = ObjectSpec.model_validate(legacy_cube(view))
    return view if again == spec else None


def upgrade_scene_dict(data: Mapping[str, Any]) -> dict[str, Any]:
    """A scene YAML mapping with an old ``cube:`` section rewritten as ``objects:``.

    For a ``model_validator(mode="before")`` on the scene config, so old YAMLs and the scene
    JSON embedded in old dataset manifests still load. Both sections at once is an error.
    """
    out = dict(data)
    if "cube" in out:
        if out.get("objects"):
            raise ConfigError("scene: give either the old cube: section or objects:, not both")
        out["objects"] = [legacy_cube(out.pop("cube") or {})]
    return out


# -- files ---------------------------------------------------------------------------------
def _data_root() -> Path:
    import pybullet_data

    return Path(pybullet_data.getDataPath())


def _roots(base_dir: str | Path | None) -> list[Path]:
    roots = [Path(base_dir)] if base_dir is not None else []
    return [*roots, _data_root()]


def resolve_file(
    name: str | Path, *, base_dir: str | Path | None = None, what: str = "file"
) -> Path:
    """An absolute path, else relative to ``base_dir`` (the scene YAML's folder), else to
    ``pybullet_data``; a missing file raises :class:`ConfigError` listing the paths tried.

    Example:
        >>> resolve_file("objects/mug.urdf").name
        'mug.urdf'
    """
    p = Path(name).expanduser()
    tried = [p] if p.is_absolute() else [r / p for r in _roots(base_dir)]
    for cand in tried:
        if cand.is_file():
            return cand.resolve()
    raise ConfigError(f"{what} {str(name)!r} not found; tried {[str(t) for t in tried]}")


def shell_glob(pattern: str) -> str:
    """A shell-style pattern for Python's ``glob``: ``[^...]`` becomes ``[!...]``."""
    return re.sub(r"\[\^", "[!", pattern)


def resolve_glob(
    pattern: str, *, base_dir: str | Path | None = None, what: str = "glob"
) -> list[Path]:
    """Sorted files matching ``pattern`` under the first root where it matches anything
    (absolute, ``base_dir``, ``pybullet_data``); none raises naming the places tried."""
    pat = shell_glob(pattern)
    tried = [pat] if Path(pat).is_absolute() else [str(r / pat) for r in _roots(base_dir)]
    for cand in tried:
        files = sorted(Path(f) for f in globlib.glob(cand) if Path(f).is_file())
        if files:
            return [f.resolve() for f in files]
    raise ConfigError(f"{what} {pattern!r} matches no file; tried {tried}")


def _cache_dir() -> Path:
    root = Path(os.environ.get("SIM2REAL_CACHE", Path(tempfile.gettempdir()) / "sim2real-cache"))
    path = root / "objects"
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- loading -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadedObject:
    """One body in a PyBullet client, with the geometry placements and labels need.

    Attributes:
        name: instance name (``cube``, ``clutter_0``...).
        spec: the entry it came from.
        body: PyBullet body id.
        file: the mesh or URDF file loaded (None for shapes).
        hull: (N, 3) convex-hull vertices of the render geometry in the body frame (the frame
            ``getBasePositionAndOrientation`` reports: the base's centre of mass).
        hull_edges: (E, 2) vertex index pairs of the hull's edges.
        rest_orientation: (4,) base quaternion of the object standing upright (identity for
            shapes and meshes; a URDF's inertial frame may be rotated).
        center: (3,) centre of the hull's bounding box, body frame: the labelled position.
        render_triangles: triangles drawn (after simplification) for meshes and boxes, -1
            otherwise.
        mass: base mass while placed (0 for fixed objects); parked bodies are made static
            (mass 0) so they hang out of view instead of falling.
        inertia: base's local inertia diagonal while placed (PyBullet recomputes it from
            the collision shape when the mass changes, so placing restores it).
    """

    name: str
    spec: ObjectSpec
    body: int
    file: Path | None
    hull: np.ndarray
    hull_edges: np.ndarray
    rest_orientation: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 0.0, 1.0]))
    render_triangles: int = -1
    mass: float = 0.0
    inertia: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @functools.cached_property
    def center(self) -> np.ndarray:
        return (self.hull.min(axis=0) + self.hull.max(axis=0)) / 2

    @functools.cached_property
    def upright_hull(self) -> np.ndarray:
        """(N, 3) hull vertices rotated to the upright pose, relative to the base position."""
        return self.hull @ quat_matrix(self.rest_orientation).T

    @functools.cached_property
    def radius(self) -> float:
        """Footprint radius about the base position, covering every yaw."""
        return float(np.linalg.norm(self.upright_hull[:, :2], axis=1).max())

    @functools.cached_property
    def bottom(self) -> float:
        """Height of the base position above the object's lowest point when upright."""
        return float(-self.upright_hull[:, 2].min())

    def points_world(self, position: np.ndarray, orientation: np.ndarray) -> np.ndarray:
        """(N, 3) hull vertices at a base pose."""
        return np.asarray(position) + self.hull @ quat_matrix(orientation).T

    def center_world(self, position: np.ndarray, orientation: np.ndarray) -> np.ndarray:
        return np.asarray(position) + quat_matrix(orientation) @ self.center


def quat_matrix(q: Sequence[float] | np.ndarray) -> np.ndarray:
    """Rotation matrix of an ``(x, y, z, w)`` quaternion."""
    x, y, z, w = (float(v) for v in q)
    n = x * x + y * y + z * z + w * w
    s = 2.0 / n if n > 0 else 0.0
    return np.array(
        [
            [1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
            [s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)],
            [s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)],
        ]
    )


def yaw_quat(yaw: float) -> np.ndarray:
    return np.array([0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)])


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` of ``(x, y, z, w)`` quaternions."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ]
    )


def _hull_of(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convex hull vertices and edges of a point cloud (a flat cloud keeps its box corners)."""
    import trimesh

    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    try:
        hull = trimesh.convex.convex_hull(pts)
        if len(hull.vertices) >= 4 and hull.volume > 0:
            return np.asarray(hull.vertices), np.asarray(hull.edges_unique)
    except Exception as exc:  # qhull fails on flat or degenerate clouds
        logger.info("convex hull failed (%s); using the bounding box", exc)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    box = trimesh.creation.box(bounds=[lo, hi + 1e-9])
    return np.asarray(box.vertices), np.asarray(box.edges_unique)


@functools.lru_cache(maxsize=256)
def _read_mesh_cached(path: str) -> Any:
    import trimesh

    try:
        mesh = trimesh.load(path, force="mesh", process=True)
    except Exception as exc:
        raise ConfigError(f"mesh {path!r}: trimesh could not read it ({exc})") from exc
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ConfigError(f"mesh {path!r}: no triangles in the file")
    return mesh


def read_mesh(path: str | Path, scale: float | Sequence[float] = 1.0) -> Any:
    """A ``trimesh.Trimesh`` of a mesh file, scaled (a copy: the cached one stays intact)."""
    mesh = _read_mesh_cached(str(path)).copy()
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64), (3,))
    if not np.allclose(s, 1.0):
        mesh.apply_transform(np.diag([*s, 1.0]))
    return mesh


def simplify(mesh: Any, max_triangles: int, what: str = "mesh") -> Any:
    """``mesh`` with at most ``max_triangles`` faces: quadric decimation when available, else
    the convex hull (logged), thinned to the budget when the hull itself is heavier (a hull
    of ``V`` vertices has at most ``2V - 4`` faces); meshes under budget come back unchanged.
    """
    import trimesh

    if len(mesh.faces) <= max_triangles:
        return mesh
    try:
        out = mesh.simplify_quadric_decimation(face_count=max_triangles)
        if 0 < len(out.faces) <= max_triangles:
            return out
        raise ValueError(f"decimation left {len(out.faces)} faces")
    except Exception as exc:  # fast_simplification missing, or it failed
        logger.info(
            "%s: %d triangles over the budget of %d; decimation unavailable (%s), "
            "rendering its convex hull",
            what,
            len(mesh.faces),
            max_triangles,
            exc,
        )
    hull = mesh.convex_hull
    verts = np.asarray(hull.vertices)
    keep = max(4, (max_triangles + 4) // 2)
    while len(hull.faces) > max_triangles and len(verts) > keep:
        step = int(np.ceil(len(verts) / keep))
        verts = verts[::step]
        hull = trimesh.convex.convex_hull(verts)
        verts = np.asarray(hull.vertices)
    return hull


def _vhacd(client: Any, mesh: Any, tag: str) -> str:
    """Convex decomposition of ``mesh`` by PyBullet's VHACD, cached by content."""
    data = mesh.export(file_type="obj")
    data = data.encode() if isinstance(data, str) else data
    key = hashlib.sha1(data).hexdigest()[:16]
    root = _cache_dir()
    src, out = root / f"{tag}-{key}.obj", root / f"{tag}-{key}-vhacd.obj"
    if not out.exists():
        from sim2real.atomic import write_bytes

        write_bytes(src, data)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        client.vhacd(str(src), str(tmp), str(root / f"{tag}-{key}-vhacd.log"))
        if not tmp.exists():
            raise ConfigError(f"mesh {tag!r}: VHACD produced no decomposition")
        os.replace(tmp, out)
    return str(out)


def load_object(
    client: Any,
    spec: ObjectSpec,
    *,
    base_dir: str | Path | None = None,
    name: str | None = None,
    file: str | Path | None = None,
    rng: np.random.Generator | None = None,
    position: Sequence[float] = PARKED,
) -> LoadedObject:
    """Load one body of ``spec`` into ``client`` (parked out of view unless ``position``).

    Args:
        client: a connected PyBullet client.
        spec: the object entry.
        base_dir: folder of the scene YAML, for relative file names.
        name: instance name (default: ``spec.name``).
        file: the file to load, already resolved (default: the spec's file; for a set, a
            member drawn from the glob's matches with ``rng``, or the first without one).
        rng: draws a set's member.
        position: where the base goes (upright).

    Example:
        >>> import pybullet as p
        >>> from pybullet_utils.bullet_client import BulletClient
        >>> c = BulletClient(p.DIRECT)
        >>> obj = load_object(c, ObjectSpec(name="ball", shape="sphere", radius=0.02))
        >>> round(obj.bottom, 3)
        0.02
        >>> c.disconnect()
    """
    name = name or spec.name
    kind = spec.kind
    if kind == "set":
        if file is None:
            files = resolve_glob(
                spec.glob or RANDOM_URDFS_GLOB, base_dir=base_dir, what=f"object {spec.name!r} glob"
            )
            file = files[int(rng.integers(len(files)))] if rng is not None else files[0]
        path = Path(file)
        if path.suffix.lower() == ".urdf":
            obj = _load_urdf(client, spec, name, path, position)
        elif path.suffix.lower() in MESH_SUFFIXES:
            obj = _load_mesh(client, spec, name, path, position)
        else:
            raise ConfigError(
                f"object {spec.name!r}: set member {str(path)!r}: expected .urdf or {MESH_SUFFIXES}"
            )
    elif kind == "shape":
        obj = _load_shape(client, spec, name, position)
    elif kind == "mesh":
        path = (
            Path(file)
            if file is not None
            else resolve_file(spec.mesh or "", base_dir=base_dir, what=f"object {spec.name!r} mesh")
        )
        obj = _load_mesh(client, spec, name, path, position)
    else:
        path = (
            Path(file)
            if file is not None
            else resolve_file(spec.urdf or "", base_dir=base_dir, what=f"object {spec.name!r} urdf")
        )
        obj = _load_urdf(client, spec, name, path, position)
    if spec.color is not None:
        for link in range(-1, client.getNumJoints(obj.body)):
            client.changeVisualShape(obj.body, link, rgbaColor=[float(c) for c in spec.color])
    dyn = client.getDynamicsInfo(obj.body, -1)
    mass = 0.0 if spec.fixed else float(dyn[0])
    obj = replace(obj, mass=mass, inertia=tuple(float(v) for v in dyn[2]))
    if mass > 0 and tuple(position) == PARKED:
        client.changeDynamics(obj.body, -1, mass=0.0)
    return obj


def load_objects(
    client: Any,
    specs: Sequence[ObjectSpec],
    rng: np.random.Generator,
    *,
    base_dir: str | Path | None = None,
) -> dict[str, LoadedObject]:
    """Every instance of every entry (its pool, else ``hi`` of its count), parked; instance
    name -> object.

    A set's members are drawn here with ``rng``, distinct while the glob has enough files (a
    scene loads nothing after it is built; a ``pool`` larger than the count gives episodes
    variety without loading).
    """
    out: dict[str, LoadedObject] = {}
    for spec in validate_objects(specs):
        names = spec.instance_names
        files: list[Path | None] = [None] * len(names)
        if spec.kind == "set":
            matches = resolve_glob(
                spec.glob or RANDOM_URDFS_GLOB, base_dir=base_dir, what=f"object {spec.name!r} glob"
            )
            idx = rng.choice(len(matches), size=len(names), replace=len(matches) < len(names))
            files = [matches[int(i)] for i in idx]
        for inst, file in zip(names, files, strict=True):
            out[inst] = load_object(client, spec, base_dir=base_dir, name=inst, file=file)
    return out


def _load_shape(
    client: Any, spec: ObjectSpec, name: str, position: Sequence[float]
) -> LoadedObject:
    import trimesh

    c = client
    color = [float(x) for x in (spec.color or DEFAULT_COLOR)]
    if spec.shape == "box":
        half = [s / 2 for s in spec.box_size]
        geom = trimesh.creation.box(extents=spec.box_size)
        vis = c.createVisualShape(c.GEOM_BOX, halfExtents=half, rgbaColor=color)
        col = c.createCollisionShape(c.GEOM_BOX, halfExtents=half)
        triangles = 12
    elif spec.shape == "cylinder":
        r, h = float(spec.radius or 0), float(spec.length or 0)
        geom = trimesh.creation.cylinder(radius=r, height=h, sections=24)
        vis = c.createVisualShape(c.GEOM_CYLINDER, radius=r, length=h, rgbaColor=color)
        col = c.createCollisionShape(c.GEOM_CYLINDER, radius=r, height=h)
        triangles = -1
    else:
        r = float(spec.radius or 0)
        geom = trimesh.creation.icosphere(subdivisions=2, radius=r)
        vis = c.createVisualShape(c.GEOM_SPHERE, radius=r, rgbaColor=color)
        col = c.createCollisionShape(c.GEOM_SPHERE, radius=r)
        triangles = -1
    mass = 0.0 if spec.fixed else float(spec.mass or DEFAULT_MASS)
    body = c.createMultiBody(mass, col, vis, list(position))
    hull, edges = _hull_of(geom.vertices)
    return LoadedObject(name, spec, body, None, hull, edges, render_triangles=triangles)


def _load_mesh(
    client: Any, spec: ObjectSpec, name: str, path: Path, position: Sequence[float]
) -> LoadedObject:
    c = client
    mesh = read_mesh(path, spec.scale)
    hull_mesh = mesh.convex_hull
    props = mesh if mesh.is_watertight and mesh.volume > 1e-12 else hull_mesh
    com = np.asarray(props.center_mass, dtype=np.float64)
    mesh.apply_translation(-com)  # the body frame is the centre of mass, axes of the file
    hull_mesh = mesh.convex_hull
    mass = 0.0 if spec.fixed else float(spec.mass or DEFAULT_MASS)
    render = simplify(mesh, spec.max_triangles, what=f"object {spec.name!r} ({path.name})")
    color = [float(x) for x in (spec.color or DEFAULT_COLOR)]
    vis = c.createVisualShape(
        c.GEOM_MESH,
        vertices=np.asarray(render.vertices).tolist(),
        indices=np.asarray(render.faces).reshape(-1).astype(int).tolist(),
        normals=np.asarray(render.vertex_normals).tolist(),
        uvs=_uvs(render).tolist(),
        rgbaColor=color,
    )
    if spec.collision == "vhacd":
        col = c.createCollisionShape(c.GEOM_MESH, fileName=_vhacd(c, mesh, path.stem))
    else:
        col = c.createCollisionShape(c.GEOM_MESH, vertices=np.asarray(hull_mesh.vertices).tolist())
    body = c.createMultiBody(mass, col, vis, list(position))
    if mass > 0 and props.mass > 0:
        inertia = np.asarray(props.moment_inertia) * (mass / float(props.mass))
        c.changeDynamics(
            body, -1, localInertiaDiagonal=np.clip(np.diag(inertia), 1e-9, None).tolist()
        )
    hull, edges = _hull_of(np.asarray(render.vertices))
    return LoadedObject(name, spec, body, path, hull, edges, render_triangles=len(render.faces))


def _uvs(mesh: Any) -> np.ndarray:
    """Texture coordinates per vertex: the mesh's own, else a planar projection onto its two
    longest extents (so randomised textures map onto any mesh)."""
    uv = getattr(mesh.visual, "uv", None)
    if uv is not None and len(uv) == len(mesh.vertices):
        return np.asarray(uv, dtype=np.float64)
    v = np.asarray(mesh.vertices)
    extent = np.ptp(v, axis=0)
    axes = np.argsort(extent)[::-1][:2]
    return (v[:, axes] - v[:, axes].min(axis=0)) / np.maximum(extent[axes], 1e-9)


def _load_urdf(
    client: Any, spec: ObjectSpec, name: str, path: Path, position: Sequence[float]
) -> LoadedObject:
    c = client
    scale = float(spec.scale)  # type: ignore[arg-type]  # validated: one factor
    try:
        body = c.loadURDF(str(path), list(position), globalScaling=scale, useFixedBase=spec.fixed)
    except Exception as exc:  # pybullet.error: "Cannot load URDF file."
        raise ConfigError(
            f"object {spec.name!r}: PyBullet could not load {str(path)!r} ({exc})"
        ) from exc
    if spec.mass is not None and not spec.fixed:
        c.changeDynamics(body, -1, mass=float(spec.mass))
    orn = c.getBasePositionAndOrientation(body)[1]
    points = body_points(c, body)
    hull, edges = _hull_of(points)
    return LoadedObject(name, spec, body, path, hull, edges, rest_orientation=np.asarray(orn))


def body_points(client: Any, body: int) -> np.ndarray:
    """(N, 3) points of a loaded body's visual geometry in its base (centre of mass) frame.

    Reads ``getVisualShapeData`` (mesh files through trimesh; box, sphere, cylinder, capsule
    from their dimensions); a body without readable visuals falls back to its collision AABB.
    """
    import trimesh

    c = client
    bpos, born = c.getBasePositionAndOrientation(body)
    inv_pos, inv_orn = c.invertTransform(bpos, born)
    dyn = c.getDynamicsInfo(body, -1)
    base_link = c.multiplyTransforms(bpos, born, *c.invertTransform(dyn[3], dyn[4]))
    clouds: list[np.ndarray] = []
    for vs in c.getVisualShapeData(body):
        link, geom, dims, fname, lpos, lorn = vs[1], vs[2], vs[3], vs[4], vs[5], vs[6]
        if link == -1:
            lp, lo = base_link
        else:
            state = c.getLinkState(body, link, computeForwardKinematics=True)
            lp, lo = state[4], state[5]
        wp, wo = c.multiplyTransforms(lp, lo, lpos, lorn)
        rp, ro = c.multiplyTransforms(inv_pos, inv_orn, wp, wo)
        if geom == c.GEOM_MESH:
            mesh_file = fname.decode() if isinstance(fname, bytes) else str(fname)
            try:
                pts = read_mesh(mesh_file, dims).vertices
            except ConfigError as exc:
                logger.info("body %d: %s; its AABB stands in", body, exc)
                continue
        elif geom == c.GEOM_BOX:
            pts = trimesh.creation.box(extents=dims).vertices
        elif geom == c.GEOM_SPHERE:
            pts = trimesh.creation.icosphere(subdivisions=2, radius=dims[0]).vertices
        elif geom in (c.GEOM_CYLINDER, c.GEOM_CAPSULE):
            length, r = dims[0], dims[1]
            if geom == c.GEOM_CYLINDER:
                pts = trimesh.creation.cylinder(radius=r, height=length, sections=24).vertices
            else:
                pts = trimesh.creation.capsule(radius=r, height=length).vertices
        else:
            continue
        clouds.append(np.asarray(pts) @ quat_matrix(ro).T + np.asarray(rp))
    if not clouds:
        lo_w, hi_w = (np.asarray(v) for v in c.getAABB(body, -1))
        corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)])
        world = lo_w + corners * (hi_w - lo_w)
        return (world - np.asarray(bpos)) @ quat_matrix(born)
    return np.concatenate(clouds)


# -- spawning ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Placement:
    """Where one object goes: base ``position`` (3,), ``orientation`` (4,) and the yaw drawn."""

    position: np.ndarray
    orientation: np.ndarray
    yaw: float


def sample_counts(specs: Sequence[ObjectSpec], rng: np.random.Generator) -> list[str]:
    """The instance names shown this episode: for each entry a count drawn in its range
    (its first instances; for a set with a ``pool``, that many pool members at random)."""
    shown: list[str] = []
    for spec in specs:
        lo, hi = spec.count_range
        n = lo if lo == hi else int(rng.integers(lo, hi + 1))
        names = spec.instance_names
        if spec.pool is not None and spec.pool > n:
            picked = np.sort(rng.choice(len(names), size=n, replace=False))
            shown.extend(names[int(i)] for i in picked)
        else:
            shown.extend(names[:n])
    return shown


def sample_placements(
    objects: Sequence[LoadedObject],
    rng: np.random.Generator,
    *,
    table_top: float,
    region: SpawnRegion | None = None,
    keep_out: Sequence[tuple[float, float, float]] = (),
    margin: float = 0.005,
    max_tries: int = 500,
    camera_eye: Sequence[float] | None = None,
    preset: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Placement]:
    """Non-interpenetrating upright poses resting on the table, by rejection sampling.

    Each object's footprint is a disc of :attr:`LoadedObject.radius` about its base
    position (covers every yaw); a draw is rejected while its disc (plus ``margin``) meets
    an already placed one or a ``keep_out`` disc ``(x, y, radius)`` (e.g. the robot base).
    Positions are drawn in the object's own ``spawn`` region, else ``region``; the base goes
    at ``table_top + bottom`` (+0.1 mm), so the lowest point touches the table top. Objects
    are placed in the order given; the result depends only on ``rng``'s state. ``preset``
    fixes some objects' ``(x, y)`` or ``(x, y, yaw)`` (a task placing its target itself):
    they are placed first, as given, and the others avoid them.

    Raises:
        ConfigError: an object has no region, or found no free spot in ``max_tries`` draws.

    Example:
        >>> import pybullet as p
        >>> from pybullet_utils.bullet_client import BulletClient
        >>> c = BulletClient(p.DIRECT)
        >>> obj = load_object(c, ObjectSpec(name="cube", shape="box", size=0.04))
        >>> pl = sample_placements([obj], np.random.default_rng(0), table_top=0.0,
        ...                        region=SpawnRegion(x=(0.4, 0.6), y=(-0.1, 0.1)))
        >>> round(float(pl["cube"].position[2]), 4)
        0.0201
        >>> c.disconnect()
    """
    placed: list[tuple[float, float, float]] = [tuple(map(float, k)) for k in keep_out]  # type: ignore[misc]
    out: dict[str, Placement] = {}
    preset = dict(preset or {})
    unknown = sorted(set(preset) - {o.name for o in objects})
    if unknown:
        raise ConfigError(f"preset placements {unknown}: not among {[o.name for o in objects]}")
    for obj in objects:
        if obj.name in preset:
            xy = [float(v) for v in preset[obj.name]]
            yaw = xy[2] if len(xy) > 2 else 0.0
            orn = quat_mul(yaw_quat(yaw), obj.rest_orientation)
            pos = np.array([xy[0], xy[1], table_top + obj.bottom + REST_EPS])
            out[obj.name] = Placement(pos, orn, yaw)
            placed.append((xy[0], xy[1], obj.radius))
    for obj in objects:
        if obj.name in out:
            continue
        reg = obj.spec.spawn or region
        if reg is None:
            raise ConfigError(f"object {obj.name!r}: no spawn region (spawn: {{x, y}}) given")
        r = obj.radius
        for _ in range(max_tries):
            xy = _draw_xy(reg, rng, camera_eye, table_top)
            if all(math.hypot(xy[0] - x, xy[1] - y) >= r + rr + margin for x, y, rr in placed):
                break
        else:
            raise ConfigError(
                f"object {obj.name!r}: no free spot of radius {r:.3f} m in spawn x={reg.x} "
                f"y={reg.y} after {max_tries} draws; widen the region or show fewer objects"
            )
        yaw = float(rng.uniform(*reg.yaw))
        orn = quat_mul(yaw_quat(yaw), obj.rest_orientation)
        z = table_top + obj.bottom + REST_EPS
        out[obj.name] = Placement(np.array([xy[0], xy[1], z]), orn, yaw)
        placed.append((float(xy[0]), float(xy[1]), r))
    return out


def _draw_xy(
    reg: SpawnRegion, rng: np.random.Generator, eye: Sequence[float] | None, z: float
) -> np.ndarray:
    lo, hi = np.array([reg.x[0], reg.y[0]]), np.array([reg.x[1], reg.y[1]])
    if reg.grid_step:
        xs = np.arange(lo[0], hi[0] + 1e-9, reg.grid_step)
        ys = np.arange(lo[1], hi[1] + 1e-9, reg.grid_step)
        return np.array([rng.choice(xs), rng.choice(ys)])
    if reg.near > 0.0 and eye is not None and rng.uniform() < reg.near:
        # uniform per image pixel: accept with (d_min / d)^3 (see envs/scene.py _sample_near)
        e = np.asarray(eye, dtype=np.float64)
        dz = e[2] - z
        d_min = float(np.hypot(np.linalg.norm(np.clip(e[:2], lo, hi) - e[:2]), dz))
        while True:
            xy = rng.uniform(lo, hi)
            d = float(np.hypot(np.linalg.norm(xy - e[:2]), dz))
            if rng.uniform() < (d_min / d) ** 3:
                return xy
    return rng.uniform(lo, hi)


def apply_placements(
    client: Any, objects: Mapping[str, LoadedObject], placements: Mapping[str, Placement]
) -> None:
    """Move the placed objects (velocities zeroed, mass restored) and park every other one
    out of view (static, so it does not fall)."""
    for name, obj in objects.items():
        pl = placements.get(name)
        if pl is None:
            client.resetBasePositionAndOrientation(obj.body, PARKED, obj.rest_orientation.tolist())
            if obj.mass > 0:
                client.changeDynamics(obj.body, -1, mass=0.0)
        else:
            client.resetBasePositionAndOrientation(
                obj.body, pl.position.tolist(), pl.orientation.tolist()
            )
            if obj.mass > 0:
                client.changeDynamics(
                    obj.body, -1, mass=obj.mass, localInertiaDiagonal=list(obj.inertia)
                )
        client.resetBaseVelocity(obj.body, [0, 0, 0], [0, 0, 0])


class SceneObjects:
    """Every object of a scene in one client: loaded once, shown and placed per episode,
    labelled per frame. The glue a scene holds (one attribute, a few calls).

    Example:
        >>> import pybullet as p
        >>> from pybullet_utils.bullet_client import BulletClient
        >>> c = BulletClient(p.DIRECT)
        >>> objs = SceneObjects(c, [{"name": "cube", "shape": "box", "size": 0.05,
        ...                          "spawn": {"x": [0.4, 0.6], "y": [-0.1, 0.1]}}])
        >>> objs.target, sorted(objs.reset(np.random.default_rng(0)))
        ('cube', ['cube'])
        >>> objs.close(); c.disconnect()
    """

    def __init__(
        self,
        client: Any,
        specs: Sequence[Mapping[str, Any] | ObjectSpec],
        *,
        table_top: float = 0.0,
        region: SpawnRegion | None = None,
        base_dir: str | Path | None = None,
        seed: int = 0,
    ) -> None:
        """Load every instance (parked).

        Args:
            client: the scene's PyBullet client.
            specs: the scene's ``objects:`` entries.
            table_top: height the objects rest on.
            region: spawn region of entries without their own ``spawn``.
            base_dir: the scene YAML's folder, for relative files.
            seed: draws the members of sets (fixed for the life of the scene).
        """
        self.client = client
        self.specs = validate_objects(specs)
        self.table_top = float(table_top)
        self.region = region
        self.objects = load_objects(
            client, self.specs, np.random.default_rng(seed), base_dir=base_dir
        )
        roles = [s.role for s in self.specs]
        self.target: str | None = target_name(self.specs) if "target" in roles else None
        self.shown: list[str] = []
        self._silhouettes: Any = None

    @property
    def body_ids(self) -> dict[str, int]:
        return {name: obj.body for name, obj in self.objects.items()}

    @property
    def colorable(self) -> dict[str, list[tuple[int, int]]]:
        """Instance name -> (body, link) pairs, for randomisation's recolouring."""
        c = self.client
        return {
            name: [(obj.body, link) for link in range(-1, c.getNumJoints(obj.body))]
            for name, obj in self.objects.items()
        }

    def reset(
        self,
        rng: np.random.Generator,
        *,
        keep_out: Sequence[tuple[float, float, float]] = (),
        camera_eye: Sequence[float] | None = None,
        preset: Mapping[str, Sequence[float]] | None = None,
    ) -> dict[str, Placement]:
        """Draw which instances show (counts) and where (placements); move them; park the
        rest. Instances in ``preset`` always show, at the ``(x, y[, yaw])`` given."""
        shown = sample_counts(self.specs, rng)
        shown += [n for n in preset or {} if n not in shown]
        placements = sample_placements(
            [self.objects[n] for n in shown],
            rng,
            table_top=self.table_top,
            region=self.region,
            keep_out=keep_out,
            camera_eye=camera_eye,
            preset=preset,
        )
        apply_placements(self.client, self.objects, placements)
        self.shown = list(placements)
        return placements

    def place(self, name: str, xy: Sequence[float], yaw: float = 0.0) -> None:
        """Put one instance upright on the table at ``xy`` (others unchanged)."""
        if name not in self.objects:
            raise ConfigError(f"object {name!r}: expected one of {sorted(self.objects)}")
        obj = self.objects[name]
        pos = np.array([float(xy[0]), float(xy[1]), self.table_top + obj.bottom + REST_EPS])
        orn = quat_mul(yaw_quat(float(yaw)), obj.rest_orientation)
        apply_placements(self.client, {name: obj}, {name: Placement(pos, orn, float(yaw))})
        if name not in self.shown:
            self.shown.append(name)

    def pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Base position (3,) and quaternion (4,) of one instance."""
        pos, orn = self.client.getBasePositionAndOrientation(self.objects[name].body)
        return np.asarray(pos, dtype=np.float64), np.asarray(orn, dtype=np.float64)

    def labels(
        self,
        geometry: Any,
        *,
        base_position: np.ndarray,
        base_yaw: float = 0.0,
        seg: np.ndarray | None = None,
        exact_silhouettes: bool = True,
    ) -> dict[str, Any]:
        """Per-object labels of a frame (:func:`sim2real.envs.object_labels.object_labels`):
        cheap without ``seg``, exact with it (the silhouette renderer starts on first use)."""
        from sim2real.envs.object_labels import SilhouetteRenderer, object_labels

        sil = None
        if seg is not None and exact_silhouettes:
            if self._silhouettes is None:
                self._silhouettes = SilhouetteRenderer(self.objects)
            sil = self._silhouettes
        return object_labels(
            self.client,
            geometry,
            self.objects,
            base_position=base_position,
            base_yaw=base_yaw,
            seg=seg,
            silhouettes=sil,
            names=self.shown,
        )

    def info(self, geometry: Any, **kwargs: Any) -> dict[str, dict[str, Any]]:
        """``info["objects"]``: name -> label mapping (see :meth:`labels`)."""
        return {name: lab.as_info() for name, lab in self.labels(geometry, **kwargs).items()}

    def close(self) -> None:
        """Close the silhouette renderer's client (the scene's client is the caller's)."""
        if self._silhouettes is not None:
            self._silhouettes.close()
            self._silhouettes = None
