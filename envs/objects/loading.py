"""Loading scene objects into a PyBullet client: :func:`load_object` (one loader dispatching
on the kind: shape, mesh, URDF, member of a set) and :class:`LoadedObject`, the body with the
convex hull that placements and labels use.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.envs.objects.meshes import (
    _hull_of,
    _vhacd,
    quat_matrix,
    read_mesh,
    resolve_file,
    resolve_glob,
    simplify,
)
from sim2real.envs.objects.specs import (
    DEFAULT_COLOR,
    DEFAULT_MASS,
    MESH_SUFFIXES,
    PARKED,
    RANDOM_URDFS_GLOB,
    ObjectSpec,
    validate_objects,
)
from sim2real.errors import ConfigError

logger = logging.getLogger(__name__)


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


def loaded_box(client: Any, spec: ObjectSpec, body: int, name: str | None = None) -> LoadedObject:
    """A :class:`LoadedObject` for a box body built elsewhere (the old scene's cube, made as
    it always was so its frames stay bit-identical), with its hull and dynamics read back.
    """
    import trimesh

    geom = trimesh.creation.box(extents=spec.box_size)
    hull, edges = _hull_of(geom.vertices)
    dyn = client.getDynamicsInfo(body, -1)
    return LoadedObject(
        name or spec.name,
        spec,
        body,
        None,
        hull,
        edges,
        render_triangles=12,
        mass=0.0 if spec.fixed else float(dyn[0]),
        inertia=tuple(float(v) for v in dyn[2]),
    )
