"""Files and geometry of scene objects: paths and globs resolved against the scene YAML's
folder and ``pybullet_data``, meshes read (cached) and simplified through ``trimesh``, convex
hulls, VHACD decompositions, and ``(x, y, z, w)`` quaternion helpers.

Example:
    >>> shell_glob("random_urdfs/*[^0]/*.urdf")
    'random_urdfs/*[!0]/*.urdf'
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.errors import ConfigError

logger = logging.getLogger(__name__)


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
