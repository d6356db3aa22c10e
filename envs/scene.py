"""A tabletop world built from a scene config, in a PyBullet client the caller owns.

The scene holds everything that stays for the life of an env: floor, walls, table, robot,
the task's objects, a pool of distractor bodies (parked out of view when unused) and a pool
of procedural textures. Randomisation only moves, recolours and retextures these bodies, so
an episode reset never loads anything and the renderer's memory stays flat.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sim2real.envs.camera import CameraConfig
from sim2real.envs.robots import RobotArm, RobotConfig
from sim2real.envs.textures import TexturePool
from sim2real.errors import ConfigError
from sim2real.paths import preset_path

logger = logging.getLogger(__name__)

RGBA = tuple[float, float, float, float]
PARKED = (0.0, 0.0, 60.0)  # far above: outside every camera's view, culled cheaply
PATCH_THICKNESS = 0.002  # flat distractors: paper markers / tape lying on the table


class TableConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    size: tuple[float, float] = (0.8, 1.0)
    thickness: float = 0.05
    top_height: float = 0.0
    center: tuple[float, float] = (0.5, 0.0)
    color: RGBA = (0.55, 0.42, 0.3, 1.0)


class FloorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    height: float = -0.6
    size: float = Field(3.0, description="side of the square floor (large = slower renders)")
    color: RGBA = (0.3, 0.3, 0.32, 1.0)


class WallConfig(BaseModel):
    """A vertical box standing in for the room behind the scene."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    center: tuple[float, float, float] = (1.5, 0.0, 0.5)
    size: tuple[float, float, float] = (0.05, 4.0, 3.0)
    color: RGBA = (0.85, 0.85, 0.85, 1.0)


class ObjectConfig(BaseModel):
    """The task object: a cube resting on the table, spawned in an (x, y) box."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    size: float = Field(0.05, gt=0.0)
    color: RGBA = (0.85, 0.1, 0.1, 1.0)
    mass: float = Field(0.1, gt=0.0)
    spawn_x: tuple[float, float] = (0.35, 0.65)
    spawn_y: tuple[float, float] = (-0.25, 0.25)
    grid_step: float | None = Field(None, description="snap spawns to a grid (None: continuous)")
    spawn_near: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="fraction of spawns drawn uniform over the image instead of the table "
        "(density ~ 1/d^3 from the scene camera: near positions more often); 0: all uniform",
    )


class DistractorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    pool: int = Field(6, ge=0, le=32, description="bodies loaded once; up to this many shown")
    random_urdfs: tuple[int, ...] = (0, 7, 21, 42, 101, 250)
    area_x: tuple[float, float] = (0.3, 0.7)
    area_y: tuple[float, float] = (-0.35, 0.35)


class LightConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    direction: tuple[float, float, float] = (0.5, 0.3, 1.0)
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ambient: float = 0.6
    diffuse: float = 0.35
    specular: float = 0.05
    shadows: bool = False


class SceneConfig(BaseModel):
    """Everything a tabletop world is made of. Presets live in ``configs/scenes/``.

    Example:
        >>> cfg = SceneConfig.load("tabletop_panda")
        >>> cfg.robot.name
        'panda'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "scene"
    robot: RobotConfig = RobotConfig()
    table: TableConfig = TableConfig()
    floor: FloorConfig | None = FloorConfig()  # None when the camera never sees it (faster)
    walls: tuple[WallConfig, ...] = (WallConfig(),)
    cube: ObjectConfig = ObjectConfig()
    goal_radius: float = 0.06
    distractors: DistractorConfig = DistractorConfig()
    camera: CameraConfig = CameraConfig()
    light: LightConfig = LightConfig()
    texture_pool_size: int = Field(24, ge=1, le=128)
    texture_folder: str | None = None
    physics_hz: int = Field(240, ge=60)
    control_hz: int = Field(20, ge=1)

    @classmethod
    def load(cls, name_or_path: str | Path) -> SceneConfig:
        """Load a preset name (``tabletop_panda``) or a YAML path, validating every field."""
        path = preset_path("scenes", name_or_path)
        data = yaml.safe_load(path.read_text()) or {}
        try:
            # relative paths inside (robot.urdf) are tried relative to the YAML first
            return cls.model_validate(data, context={"base_dir": str(path.parent.resolve())})
        except ValidationError as exc:
            raise ConfigError(f"scene config {path}: {exc}") from exc

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @property
    def table_top(self) -> float:
        return self.table.top_height

    @property
    def cube_z(self) -> float:
        return self.table.top_height + self.cube.size / 2


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
        self.robot = RobotArm(client, cfg.robot)
        self.body_ids["robot"] = self.robot.body
        self.colorable["robot"] = [(self.robot.body, link) for link in self.robot.links]
        for body, link in self.colorable["robot"]:
            client.changeVisualShape(body, link, rgbaColor=_rgba(cfg.robot.colour))
        self.cube = self._box(
            "cube", (cfg.cube.size / 2,) * 3, (0, 0, cfg.cube_z), cfg.cube.color, mass=cfg.cube.mass
        )
        self.goal: int | None = None
        if with_goal:
            self.goal = self._disc("goal", cfg.goal_radius, (0.1, 0.8, 0.2, 1.0))
        self.distractors = self._build_distractors()
        self.patches = self._build_patches(patches, patch_size)
        self._build_static()
        self.textures = TexturePool(client, cfg.texture_pool_size, cfg.texture_folder)

    # -- construction -------------------------------------------------------------------
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
    def place_cube(self, xy: np.ndarray, yaw: float = 0.0) -> None:
        orn = self.client.getQuaternionFromEuler([0.0, 0.0, float(yaw)])
        pos = [float(xy[0]), float(xy[1]), self.cfg.cube_z]
        self.client.resetBasePositionAndOrientation(self.cube, pos, orn)
        self.client.resetBaseVelocity(self.cube, [0, 0, 0], [0, 0, 0])

    def place_goal(self, xy: np.ndarray) -> None:
        if self.goal is None:
            raise ConfigError("this scene was built without a goal marker (with_goal=False)")
        pos = [float(xy[0]), float(xy[1]), self.cfg.table_top + 0.001]
        self.client.resetBasePositionAndOrientation(self.goal, pos, [0, 0, 0, 1])

    def cube_pose(self) -> tuple[np.ndarray, np.ndarray]:
        pos, orn = self.client.getBasePositionAndOrientation(self.cube)
        return np.asarray(pos, dtype=np.float64), np.asarray(orn, dtype=np.float64)

    def sample_cube_xy(self, rng: np.random.Generator) -> np.ndarray:
        """A spawn position for the cube (see :func:`sample_spawn`)."""
        return sample_spawn(self.cfg, rng)


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
