"""A tabletop world built from a scene config, in a PyBullet client the caller owns.

The scene holds everything that stays for the life of an env: floor, walls, table, robot,
the task's objects, a pool of distractor bodies (parked out of view when unused) and a pool
of procedural textures. Randomisation only moves, recolours and retextures these bodies, so
an episode reset never loads anything and the renderer's memory stays flat. The configs
live in :mod:`sim2real.envs.scene_config` (re-exported here).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.envs.objects import SceneObjects, SpawnRegion, loaded_box
from sim2real.envs.objects.placement import apply_placements, draw_xy, sample_placements
from sim2real.envs.objects.specs import target_spec
from sim2real.envs.robots import RobotArm
from sim2real.envs.scene_config import (
    PARKED,
    PATCH_THICKNESS,
    RGBA,
    DistractorConfig,
    FloorConfig,
    LightConfig,
    ObjectConfig,
    SceneConfig,
    TableConfig,
    WallConfig,
)
from sim2real.envs.textures import TexturePool
from sim2real.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "PARKED",
    "PATCH_THICKNESS",
    "DistractorConfig",
    "FloorConfig",
    "LightConfig",
    "ObjectConfig",
    "Scene",
    "SceneConfig",
    "TableConfig",
    "WallConfig",
    "sample_spawn",
]

BASE_KEEP_OUT = 0.15  # objects spawn at least this far (m) from the robot base's axis


def _rgba(c: RGBA) -> list[float]:
    return [float(x) for x in c]


class Scene:
    """The bodies of one world. Owns nothing but ids; the client belongs to the env.

    Attributes:
        body_ids: name -> PyBullet body id for every named body (``table``, ``cube``...).
        colorable: name -> list of (body, link) pairs that randomisation recolours.
    """

    def __init__(
        self,
        client: Any,
        cfg: SceneConfig,
        *,
        with_goal: bool = False,
        patches: int = 0,
        patch_size: tuple[float, float] = (0.02, 0.05),
    ) -> None:
        """Build the world.

        Args:
            client: a connected PyBullet client.
            cfg: the scene config.
            with_goal: add the goal disc (push tasks).
            patches: size of the pool of flat square patches (randomisation's
                ``distractors.flat_count`` upper bound); their sides spread evenly over
                ``patch_size`` (metres).
        """
        self.client = client
        self.cfg = cfg
        client.setGravity(0, 0, -9.81)
        client.setTimeStep(1.0 / cfg.physics_hz)
        self.body_ids: dict[str, int] = {}
        self.colorable: dict[str, list[tuple[int, int]]] = {}
        # The CPU renderer draws bodies in creation order and rejects hidden fragments early,
        # so small near things come first and large far surfaces (table, walls, floor) last.
        self.robot: RobotArm | None = None  # None: a camera-only cell (robot: null)
        if cfg.robot is not None:
            self.robot = RobotArm(client, cfg.robot, table=cfg.table)
            self.body_ids["robot"] = self.robot.body
            self.colorable["robot"] = [(self.robot.body, link) for link in self.robot.links]
            for body, link in self.colorable["robot"]:
                client.changeVisualShape(body, link, rgbaColor=_rgba(cfg.robot.colour))
        self.objects = self._build_objects()
        self.cube: int = self.objects.objects[self.target].body
        self.goal: int | None = None
        if with_goal:
            self.goal = self._disc("goal", cfg.goal_radius, (0.1, 0.8, 0.2, 1.0))
        self.distractors = self._build_distractors()
        self.patches = self._build_patches(patches, patch_size)
        self._build_static()
        self.textures = TexturePool(client, cfg.texture_pool_size, cfg.texture_folder)

    # -- construction -------------------------------------------------------------------
    def _build_objects(self) -> SceneObjects:
        """The scene's objects; the old single cube is built exactly as before (same body
        order and shapes, so its frames stay bit-identical) and adopted."""
        cfg, c = self.cfg, self.client
        area = SpawnRegion(x=cfg.distractors.area_x, y=cfg.distractors.area_y)
        loaded = None
        if cfg.is_legacy:
            cube = cfg.cube
            half = (cube.size / 2,) * 3
            body = self._box("cube", half, (0, 0, cfg.cube_z), cube.color, mass=cube.mass)
            loaded = {"cube": loaded_box(c, cfg.objects[0], body)}
        objects = SceneObjects(c, cfg.objects, table_top=cfg.table_top, region=area, loaded=loaded)
        if objects.target is None:
            raise ConfigError(f"scene {cfg.name!r}: objects: expected one entry with role target")
        if cfg.is_legacy:
            objects.shown = ["cube"]
            return objects
        for name, body in objects.body_ids.items():
            self.body_ids[name] = body
        for name, parts in objects.colorable.items():
            self.colorable[name] = parts
        if target_spec(cfg.objects).color is not None:  # the randomisation element "cube"
            self.colorable["cube"] = objects.colorable[objects.target]
        return objects

    def _build_static(self) -> None:
        cfg = self.cfg
        t = cfg.table
        half = (t.size[0] / 2, t.size[1] / 2, t.thickness / 2)
        center = (t.center[0], t.center[1], t.top_height - t.thickness / 2)
        self._box("table", half, center, t.color)
        for i, w in enumerate(cfg.walls):
            self._box(f"wall{i}", tuple(s / 2 for s in w.size), w.center, w.color, collide=False)
        f = cfg.floor
        if f is not None:
            floor_center = (t.center[0], t.center[1], f.height - 0.01)
            self._box("floor", (f.size / 2, f.size / 2, 0.01), floor_center, f.color)

    def _box(
        self,
        name: str,
        half: tuple[float, ...],
        pos: tuple[float, ...],
        color: RGBA,
        mass: float = 0.0,
        collide: bool = True,
    ) -> int:
        c = self.client
        vis = c.createVisualShape(c.GEOM_BOX, halfExtents=list(half), rgbaColor=_rgba(color))
        col = c.createCollisionShape(c.GEOM_BOX, halfExtents=list(half)) if collide else -1
        body = c.createMultiBody(mass, col, vis, list(pos))
        self.body_ids[name] = body
        self.colorable[name] = [(body, -1)]
        return body

    def _disc(self, name: str, radius: float, color: RGBA) -> int:
        c = self.client
        vis = c.createVisualShape(
            c.GEOM_CYLINDER, radius=radius, length=0.002, rgbaColor=_rgba(color)
        )
        body = c.createMultiBody(0.0, -1, vis, [0, 0, self.cfg.table_top + 0.001])
        self.body_ids[name] = body
        return body

    def _build_distractors(self) -> list[int]:
        import pybullet_data

        c, d = self.client, self.cfg.distractors
        bodies: list[int] = []
        root = Path(pybullet_data.getDataPath()) / "random_urdfs"
        shapes = [
            (c.GEOM_BOX, {"halfExtents": [0.03, 0.02, 0.025]}),
            (c.GEOM_SPHERE, {"radius": 0.03}),
            (c.GEOM_CYLINDER, {"radius": 0.025, "length": 0.06}),
        ]
        for i in range(d.pool):
            if i % 2 == 0 and d.random_urdfs:
                idx = d.random_urdfs[(i // 2) % len(d.random_urdfs)]
                path = root / f"{idx:03d}" / f"{idx:03d}.urdf"
                if not path.exists():
                    raise ConfigError(
                        f"distractors.random_urdfs: {idx} not in pybullet_data ({path})"
                    )
                body = c.loadURDF(str(path), PARKED, useFixedBase=True, globalScaling=1.5)
                c.setCollisionFilterGroupMask(body, -1, 0, 0)
            else:
                geom, kw = shapes[(i // 2) % len(shapes)]
                vis = c.createVisualShape(geom, rgbaColor=[0.5, 0.5, 0.5, 1], **kw)
                body = c.createMultiBody(0.0, -1, vis, PARKED)
            bodies.append(body)
            self.colorable[f"distractor{i}"] = [(body, -1)]
        return bodies

    def _build_patches(self, n: int, size: tuple[float, float]) -> list[int]:
        if n < 0 or not 0 < size[0] <= size[1]:
            raise ConfigError(f"patches: expected n >= 0 and 0 < size low <= high, got {n}, {size}")
        c, bodies = self.client, []
        for side in np.linspace(size[0], size[1], n):
            half = [float(side) / 2, float(side) / 2, PATCH_THICKNESS / 2]
            vis = c.createVisualShape(c.GEOM_BOX, halfExtents=half, rgbaColor=[1, 1, 1, 1])
            bodies.append(c.createMultiBody(0.0, -1, vis, PARKED))
        return bodies

    # -- state --------------------------------------------------------------------------
    @property
    def target(self) -> str:
        """Instance name of the task's target object (``cube`` in the old scenes)."""
        return self.objects.target or "cube"

    def place_cube(self, xy: np.ndarray, yaw: float = 0.0) -> None:
        """Put the task's target upright on the table at ``xy``."""
        if not self.cfg.is_legacy:
            self.objects.place(self.target, xy, yaw)
            return
        orn = self.client.getQuaternionFromEuler([0.0, 0.0, float(yaw)])
        pos = [float(xy[0]), float(xy[1]), self.cfg.cube_z]
        self.client.resetBasePositionAndOrientation(self.cube, pos, orn)
        self.client.resetBaseVelocity(self.cube, [0, 0, 0], [0, 0, 0])

    def reset_objects(self, rng: np.random.Generator) -> None:
        """A new episode's objects: the old cube at a spawn with a random yaw (the draws as
        they always were); else counts and non-interpenetrating placements of every object,
        clear of the robot base."""
        if self.cfg.is_legacy:
            self.place_cube(self.sample_cube_xy(rng), yaw=float(rng.uniform(-np.pi, np.pi)))
            return
        self.objects.reset(rng, keep_out=self._keep_out(), camera_eye=self.cfg.camera.eye)

    def rest_objects(self) -> None:
        """Put the objects on the table for a snapshot (``saveState``): the old cube at the
        middle of its spawn box; else every instance at once, apart. A body resting in the
        snapshot has its table contact restored with it; one that does not keeps the last
        episode's contacts, and the same seed drifts (see ``TabletopEnv.__init__``)."""
        if self.cfg.is_legacy:
            cube = self.cfg.cube
            self.place_cube(np.array([np.mean(cube.spawn_x), np.mean(cube.spawn_y)]))
            return
        objects = list(self.objects.objects.values())
        try:
            placements = sample_placements(
                objects,
                np.random.default_rng(0),
                table_top=self.cfg.table_top,
                region=self.objects.region,
                keep_out=self._keep_out(),
            )
        except ConfigError:  # too many to stand apart in their regions: the target alone
            self.place_cube(
                np.array([np.mean(self.cfg.cube.spawn_x), np.mean(self.cfg.cube.spawn_y)])
            )
            return
        apply_placements(self.client, self.objects.objects, placements)
        self.objects.shown = list(placements)

    def _keep_out(self) -> list[tuple[float, float, float]]:
        """Discs ``(x, y, radius)`` objects do not spawn in: the robot base's, if any."""
        if self.robot is None:
            return []
        base = self.robot.base_position
        return [(float(base[0]), float(base[1]), BASE_KEEP_OUT)]

    def target_top(self, hover: float = 0.0) -> np.ndarray:
        """The point ``hover`` above the top of the target, centred over it (world)."""
        pos, orn = self.cube_pose()
        if self.cfg.is_legacy:
            return pos + np.array([0.0, 0.0, self.cfg.cube.size / 2 + hover])
        obj = self.objects.objects[self.target]
        center = obj.center_world(pos, orn)
        top = float(obj.points_world(pos, orn)[:, 2].max())
        return np.array([center[0], center[1], top + hover])

    def place_goal(self, xy: np.ndarray) -> None:
        if self.goal is None:
            raise ConfigError("this scene was built without a goal marker (with_goal=False)")
        pos = [float(xy[0]), float(xy[1]), self.cfg.table_top + 0.001]
        self.client.resetBasePositionAndOrientation(self.goal, pos, [0, 0, 0, 1])

    def cube_pose(self) -> tuple[np.ndarray, np.ndarray]:
        pos, orn = self.client.getBasePositionAndOrientation(self.cube)
        return np.asarray(pos, dtype=np.float64), np.asarray(orn, dtype=np.float64)

    def sample_cube_xy(self, rng: np.random.Generator) -> np.ndarray:
        """A spawn position for the target (see :func:`sample_spawn`)."""
        if self.cfg.is_legacy:
            return sample_spawn(self.cfg, rng)
        spec = target_spec(self.cfg.objects)
        area = SpawnRegion(x=self.cfg.distractors.area_x, y=self.cfg.distractors.area_y)
        return draw_xy(spec.spawn or area, rng, self.cfg.camera.eye, self.cfg.table_top)

    def close(self) -> None:
        """Release what the objects hold beyond the client (the silhouette renderer)."""
        self.objects.close()


def sample_spawn(cfg: SceneConfig, rng: np.random.Generator) -> np.ndarray:
    """A cube spawn ``(x, y)``: uniform in the spawn box, or on its grid; with
    ``cube.spawn_near`` > 0 that fraction of draws is uniform over the image instead.

    Example:
        >>> cfg = SceneConfig.load("kuka_cube")
        >>> xy = sample_spawn(cfg, np.random.default_rng(0))
        >>> bool(cfg.cube.spawn_x[0] <= xy[0] <= cfg.cube.spawn_x[1])
        True
    """
    c = cfg.cube
    if c.grid_step:
        xs = np.arange(c.spawn_x[0], c.spawn_x[1] + 1e-9, c.grid_step)
        ys = np.arange(c.spawn_y[0], c.spawn_y[1] + 1e-9, c.grid_step)
        return np.array([rng.choice(xs), rng.choice(ys)])
    if c.spawn_near > 0.0 and rng.uniform() < c.spawn_near:
        return _sample_near(cfg, rng)
    return np.array([rng.uniform(*c.spawn_x), rng.uniform(*c.spawn_y)])


def _sample_near(cfg: SceneConfig, rng: np.random.Generator) -> np.ndarray:
    """Uniform over the image area of the spawn box (nominal camera), by rejection.

    A table patch at distance ``d`` from the camera covers image area ~ ``h / d^3`` (``h`` the
    camera height above the plane), so accepting with ``(d_min / d)^3`` gives equal density
    per pixel: camera-near positions, large in the image and rare under a uniform spawn, are
    drawn as often as their pixels.
    """
    c, eye = cfg.cube, np.asarray(cfg.camera.eye, dtype=np.float64)
    lo, hi = np.array([c.spawn_x[0], c.spawn_y[0]]), np.array([c.spawn_x[1], c.spawn_y[1]])
    dz = eye[2] - cfg.cube_z
    d_min = float(np.hypot(np.linalg.norm(np.clip(eye[:2], lo, hi) - eye[:2]), dz))
    while True:
        xy = rng.uniform(lo, hi)
        d = float(np.hypot(np.linalg.norm(xy - eye[:2]), dz))
        if rng.uniform() < (d_min / d) ** 3:
            return xy
