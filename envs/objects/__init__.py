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

from sim2real.envs.objects.collection import SceneObjects
from sim2real.envs.objects.loading import (
    LoadedObject,
    body_points,
    load_object,
    load_objects,
    loaded_box,
)
from sim2real.envs.objects.meshes import (
    quat_matrix,
    quat_mul,
    read_mesh,
    resolve_file,
    resolve_glob,
    shell_glob,
    simplify,
    yaw_quat,
)
from sim2real.envs.objects.placement import (
    Placement,
    apply_placements,
    sample_counts,
    sample_placements,
)
from sim2real.envs.objects.specs import (
    DEFAULT_COLOR,
    DEFAULT_MASS,
    MESH_SUFFIXES,
    PARKED,
    RANDOM_URDFS_GLOB,
    REST_EPS,
    ObjectSpec,
    SpawnRegion,
    legacy_cube,
    legacy_cube_view,
    nominal_size,
    target_name,
    upgrade_scene_dict,
    validate_objects,
)

__all__ = [
    "DEFAULT_COLOR",
    "DEFAULT_MASS",
    "MESH_SUFFIXES",
    "PARKED",
    "RANDOM_URDFS_GLOB",
    "REST_EPS",
    "LoadedObject",
    "ObjectSpec",
    "Placement",
    "SceneObjects",
    "SpawnRegion",
    "apply_placements",
    "body_points",
    "legacy_cube",
    "legacy_cube_view",
    "load_object",
    "load_objects",
    "loaded_box",
    "nominal_size",
    "quat_matrix",
    "quat_mul",
    "read_mesh",
    "resolve_file",
    "resolve_glob",
    "sample_counts",
    "sample_placements",
    "shell_glob",
    "simplify",
    "target_name",
    "upgrade_scene_dict",
    "validate_objects",
    "yaw_quat",
]
