"""Object entries of a scene's ``objects:`` list: :class:`ObjectSpec`, its :class:`SpawnRegion`,
the list's validation, and the legacy single ``cube:`` section converted both ways.

Example:
    >>> spec = ObjectSpec(name="cube", shape="box", size=0.05, colour=(1, 0, 0, 1))
    >>> spec.kind, spec.color, spec.count_range
    ('shape', (1.0, 0.0, 0.0, 1.0), (1, 1))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from sim2real.errors import ConfigError

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


def nominal_size(spec: ObjectSpec) -> float:
    """A shape's height (box: its last edge; cylinder: its length; sphere: its diameter), the
    plane heights and the old ``cube.size`` are taken from; 0.05 m for files (unknown before
    loading).

    Example:
        >>> nominal_size(ObjectSpec(name="ball", shape="sphere", radius=0.03))
        0.06
    """
    if spec.shape == "box":
        return spec.box_size[2]
    if spec.shape == "cylinder":
        return float(spec.length or 0.0)
    if spec.shape == "sphere":
        return 2 * float(spec.radius or 0.0)
    return 0.05


def scene_object_size(scene: Mapping[str, Any]) -> float:
    """The target's :func:`nominal_size` from a scene mapping (a dataset manifest's
    ``spec.scene``): the old ``cube.size``, or the ``objects:`` list's target.

    Example:
        >>> scene_object_size({"cube": {"size": 0.08}})
        0.08
    """
    if "cube" in scene:
        return float(scene["cube"]["size"])
    specs = validate_objects(scene["objects"])
    return nominal_size(target_spec(specs))


def target_spec(specs: Sequence[ObjectSpec]) -> ObjectSpec:
    """The entry the task's target (:func:`target_name`) comes from."""
    name = target_name(specs)
    return next(s for s in specs if name in s.instance_names)


def absolute_files(entry: Any, base_dir: str | Path | None) -> Any:
    """An ``objects:`` entry with its ``mesh``/``urdf`` made absolute when found relative to
    ``base_dir`` (the scene YAML's folder), and a ``glob`` when it matches there: the scene
    then loads from anywhere (a dataset manifest, a policy bundle).
    """
    if base_dir is None or not isinstance(entry, Mapping):
        return entry
    import glob as globlib

    out = dict(entry)
    for key in ("mesh", "urdf"):
        v = out.get(key)
        if isinstance(v, str) and not Path(v).is_absolute() and (Path(base_dir) / v).is_file():
            out[key] = str((Path(base_dir) / v).resolve())
    g = out.get("glob")
    if isinstance(g, str) and not Path(g).is_absolute():
        from sim2real.envs.objects.meshes import shell_glob

        if globlib.glob(str(Path(base_dir) / shell_glob(g))):
            out["glob"] = str(Path(base_dir).resolve() / g)
    return out
