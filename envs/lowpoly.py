"""Low-poly render meshes for any URDF, made at load time from its own collision geometry.

PyBullet's CPU renderer spends its time in triangles, so robots are rendered with meshes made
from their collision shapes: the URDF is rewritten with each link's ``<visual>`` replaced by its
``<collision>`` geometry (a link without collision geometry keeps its visuals), and meshes
heavier than a budget are replaced by their convex hull (a few hundred triangles). Nothing is
copied by hand; the generated files live in a per-user cache folder keyed by the URDF's text
and its mesh files.

A hull never fails: a thin part (the xArm6 gripper's 12 mm knuckles) that collapses flat on the
snapping grid is retried on finer grids, then on its raw vertices, and a part that is flat
whatever the grid gets its oriented bounding box (thickened to a millimetre); each fallback is
logged.

Example:
    >>> from sim2real.envs.urdf import find_file
    >>> lowpoly_urdf(find_file("kuka_iiwa/model.urdf", what="urdf")).suffix  # doctest: +SKIP
    '.urdf'
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from sim2real.atomic import write_text
from sim2real.envs.urdf import mesh_path
from sim2real.errors import ConfigError

logger = logging.getLogger(__name__)

#: Bumped when the generated files change for the same inputs (it is part of the cache key).
LOWPOLY_VERSION = 3
#: Smallest box side (metres) of a flat part's bounding-box fallback.
MIN_THICKNESS = 0.001


def cache_dir() -> Path:
    """``$SIM2REAL_CACHE`` or ``TMPDIR/sim2real-cache``, created."""
    root = Path(os.environ.get("SIM2REAL_CACHE", Path(tempfile.gettempdir()) / "sim2real-cache"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def load_mesh(path: Path):  # -> trimesh.Trimesh
    """One triangle mesh from a mesh file (.obj, .stl, .ply, .glb, ...; scenes concatenated).

    Raises:
        ConfigError: the file is missing or trimesh cannot read it.
    """
    import trimesh

    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types on bad files
        raise ConfigError(f"mesh {path}: cannot be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(mesh, trimesh.Trimesh):
        raise ConfigError(f"mesh {path}: expected triangles, got {type(mesh).__name__}")
    return mesh


def mesh_vertices(path: Path) -> np.ndarray:
    """Vertices of a mesh file, shape (N, 3), float64."""
    return np.asarray(load_mesh(path).vertices, dtype=np.float64)


def count_faces(path: Path) -> int:
    """Triangles of a mesh file."""
    return len(load_mesh(path).faces)


def _hull(points: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Hull vertices and faces of ``points``, or None when they are flat (Qhull refuses)."""
    from scipy.spatial import ConvexHull, QhullError

    if len(points) < 4 or np.linalg.matrix_rank(points - points.mean(axis=0), tol=1e-9) < 3:
        return None
    try:
        hull = ConvexHull(points)
    except QhullError:
        return None
    used, inverse = np.unique(hull.simplices, return_inverse=True)
    return points[used], inverse.reshape(-1, 3)


def _box(verts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The smaller of the axis-aligned and the principal-axes bounding box of ``verts``, no
    side under MIN_THICKNESS (a flat part stays visible, a millimetre thick)."""
    centre = verts.mean(axis=0)
    _, _, principal = np.linalg.svd(verts - centre, full_matrices=True)
    best = None
    for axes in (np.eye(3), principal):
        local = (verts - centre) @ axes.T
        lo, hi = local.min(axis=0), local.max(axis=0)
        half = np.maximum((hi - lo) / 2, MIN_THICKNESS / 2)
        if best is None or np.prod(half) < np.prod(best[2]) - 1e-15:
            best = (axes, (lo + hi) / 2, half)
    axes, mid, half = best
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    hull = _hull(centre + (mid + corners * half) @ axes)
    assert hull is not None, "a thickened box is never flat"
    return hull


#: Most authored parts (OBJ objects, scene geometries) a mesh is hulled part by part with;
#: a mesh of more parts (or of one) gets one hull.
MAX_PARTS = 8


def mesh_parts(path: Path) -> list[np.ndarray]:
    """Vertices of each authored part of a mesh file: the objects of an OBJ (``o`` lines, as a
    convex decomposition such as VHACD writes them) or the geometries of a scene file; one
    array for a single-part mesh."""
    import trimesh

    kwargs = (
        {"split_objects": True, "group_material": False} if path.suffix.lower() == ".obj" else {}
    )
    try:
        loaded = trimesh.load(str(path), process=False, **kwargs)
    except Exception as exc:  # trimesh raises many types on bad files
        raise ConfigError(f"mesh {path}: cannot be read ({type(exc).__name__}: {exc})") from exc
    if isinstance(loaded, trimesh.Scene):
        meshes = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh) and len(g.vertices)]
        if 1 < len(meshes) <= MAX_PARTS:
            return [np.asarray(m.vertices, dtype=np.float64) for m in meshes]
    return [mesh_vertices(path)]


def _part_hull(verts: np.ndarray, grid: float, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Hull of one part on ``grid``, with the fallbacks (finer grids, raw vertices, box)."""
    for g in (grid, grid / 4, grid / 16, 0.0):
        pts = np.unique(np.round(verts / g) * g, axis=0) if g else np.unique(verts, axis=0)
        result = _hull(pts)
        if result is not None:
            if g != grid:
                how = f"a {g:g} m grid" if g else "its raw vertices"
                logger.info(
                    "low-poly: %s is flat on the %g m hull grid (a thin part); hull of %s",
                    name,
                    grid,
                    how,
                )
            return result
    logger.info("low-poly: %s is flat whatever the grid; rendered as its bounding box", name)
    return _box(verts)


def convex_hull_obj(src: Path, dst: Path, grid: float = 0.004) -> int:
    """Write the convex hull of a mesh's vertices as an .obj; returns its triangle count.

    Vertices are snapped to a ``grid`` (metres) first, which keeps hulls small. Where the
    snapped points are flat (a part thinner than the grid), finer grids are tried, then the
    raw vertices, then the part's oriented bounding box; each fallback is logged. A mesh of
    a few authored parts (a convex decomposition, :func:`mesh_parts`) gets one hull per part,
    so a bent link keeps its bend.
    """
    parts = mesh_parts(src)
    if not any(len(v) for v in parts):
        raise ConfigError(f"mesh {src}: has no vertices")
    lines: list[str] = []
    faces_out: list[str] = []
    n_faces = offset = 0
    for i, verts in enumerate(parts):
        name = src.name if len(parts) == 1 else f"{src.name} (part {i})"
        pts, faces = _part_hull(verts, grid, name)
        pts = pts + 0.0  # -0.0 -> 0.0: the same file whichever reader listed the vertices
        centre = pts.mean(axis=0)
        lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in pts]
        for a, b, c in faces:  # orient outwards
            n = np.cross(pts[b] - pts[a], pts[c] - pts[a])
            if np.dot(n, pts[a] - centre) < 0:
                b, c = c, b
            faces_out.append(f"f {a + 1 + offset} {b + 1 + offset} {c + 1 + offset}")
        offset += len(pts)
        n_faces += len(faces)
    write_text(dst, "\n".join(lines + faces_out) + "\n")
    return n_faces


def _mesh_files(root: ET.Element, base: Path) -> list[Path]:
    out = []
    for mesh in root.iter("mesh"):
        fn = mesh.get("filename", "")
        try:
            out.append(mesh_path(fn, base))
        except ConfigError:
            continue  # reported where the mesh is used
    return out


def _cache_key(
    urdf_path: Path, src_text: str, root: ET.Element, max_faces: int, grid: float
) -> str:
    h = hashlib.sha256(f"v{LOWPOLY_VERSION}|{urdf_path}|{max_faces}|{grid}|{src_text}".encode())
    for p in sorted(set(_mesh_files(root, urdf_path.parent))):
        st = p.stat()
        h.update(f"|{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def lowpoly_urdf(urdf_path: Path, max_faces: int = 150, grid: float = 0.012) -> Path:
    """Rewrite a URDF so every link renders with low-poly meshes made from its collision shapes.

    Args:
        urdf_path: the source URDF (its mesh paths are resolved relative to its folder,
            ``package://`` prefixes included, see :func:`sim2real.envs.urdf.mesh_path`).
        max_faces: meshes with more triangles are replaced by their convex hull.
        grid: hull vertices are snapped to this grid (metres).

    Returns:
        Path of the generated URDF in the cache folder (reused when it exists).

    Raises:
        ConfigError: a mesh the URDF names is missing or unreadable (the paths tried named).
    """
    urdf_path = Path(urdf_path)
    src_text = urdf_path.read_text()
    root = ET.fromstring(src_text)
    base = urdf_path.parent
    key = _cache_key(urdf_path, src_text, root, max_faces, grid)
    out_dir = cache_dir() / f"{urdf_path.stem}-{key}"
    out = out_dir / urdf_path.name
    if out.exists():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    total = 0
    for link in root.iter("link"):
        collisions = link.findall("collision")
        sources = collisions or link.findall("visual")  # no collision shape: keep the visual
        for visual in list(link.findall("visual")):
            link.remove(visual)
        for i, shape in enumerate(sources):
            visual = ET.SubElement(link, "visual")
            for child in shape:
                if child.tag in ("origin", "geometry"):
                    visual.append(_clone(child))
            mesh = visual.find("geometry/mesh")
            if mesh is not None:
                src_mesh = mesh_path(mesh.get("filename", ""), base)
                faces = count_faces(src_mesh)
                if faces > max_faces:
                    hull = out_dir / f"{link.get('name')}_{i}_hull.obj"
                    total += convex_hull_obj(src_mesh, hull, grid)
                    mesh.set("filename", str(hull))
                else:
                    total += faces
                    mesh.set("filename", str(src_mesh))
            material = ET.SubElement(visual, "material", name="sim2real_lowpoly")
            ET.SubElement(material, "color", rgba="0.9 0.9 0.9 1")
    for collision_mesh in root.iter("mesh"):
        fn = collision_mesh.get("filename", "")
        if not os.path.isabs(fn):
            collision_mesh.set("filename", str(mesh_path(fn, base)))
    write_text(out, ET.tostring(root, encoding="unicode"))
    logger.info("low-poly render URDF for %s: %d triangles -> %s", urdf_path.name, total, out)
    return out


def _clone(elem: ET.Element) -> ET.Element:
    return ET.fromstring(ET.tostring(elem))
