"""The scene config: everything a tabletop world is made of (table, floor, walls, robot,
objects, distractors, camera, light), loaded from ``configs/scenes/`` presets or a YAML.

Old YAMLs and manifests with a ``cube:`` section load as ``objects: [{name: cube, ...}]``;
:meth:`SceneConfig.legacy_dump` writes such a scene back in its old form.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sim2real.envs.camera import CameraConfig
from sim2real.envs.objects import (
    ObjectSpec,
    SpawnRegion,
    legacy_cube,
    legacy_cube_view,
    target_name,
    upgrade_scene_dict,
    validate_objects,
)
from sim2real.envs.objects.specs import absolute_files, nominal_size, target_spec
from sim2real.envs.robots import RobotConfig
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
    robot: RobotConfig | None = Field(
        RobotConfig(),
        description="the arm; null for a camera-only cell (a fixed camera watching objects): "
        "its labels are in the camera frame and it has no policy env",
    )
    table: TableConfig = TableConfig()
    floor: FloorConfig | None = FloorConfig()  # None when the camera never sees it (faster)
    walls: tuple[WallConfig, ...] = (WallConfig(),)
    objects: tuple[ObjectSpec, ...] = Field(
        (ObjectSpec.model_validate(legacy_cube({})),),
        description="the scene's objects (envs/objects): shapes, meshes, URDFs, sets; the "
        "task's target is the first 'target' entry (an old cube: section is one box 'cube')",
    )
    goal_radius: float = 0.06
    distractors: DistractorConfig = DistractorConfig()
    camera: CameraConfig = CameraConfig()
    light: LightConfig = LightConfig()
    texture_pool_size: int = Field(24, ge=1, le=128)
    texture_folder: str | None = None
    physics_hz: int = Field(240, ge=60)
    control_hz: int = Field(20, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "cube" in data:
            ObjectConfig.model_validate(data["cube"] or {})  # old field names in the errors
            return upgrade_scene_dict(data)
        return data

    @field_validator("objects", mode="before")
    @classmethod
    def _objects(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, (list, tuple)):
            base = (info.context or {}).get("base_dir")
            return validate_objects([absolute_files(e, base) for e in v])
        return v

    def model_copy(
        self, *, update: Mapping[str, Any] | None = None, deep: bool = False
    ) -> SceneConfig:
        """As pydantic's, and an ``update`` may give the old ``cube`` (an ObjectConfig)."""
        if update and "cube" in update:
            update = dict(update)
            update["objects"] = validate_objects([legacy_cube(update.pop("cube"))])
        return super().model_copy(update=update, deep=deep)

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
        return yaml.safe_dump(self.legacy_dump(), sort_keys=False)

    def legacy_dump(self) -> dict[str, Any]:
        """``model_dump(mode="json")``, with a scene that is still the single cube written as
        the old ``cube:`` section, in its place (old YAMLs and manifests compare equal)."""
        data = self.model_dump(mode="json")
        view = legacy_cube_view(self.objects)
        if view is None:
            return data
        return {
            ("cube" if k == "objects" else k): (view if k == "objects" else v)
            for k, v in data.items()
        }

    def record(self) -> dict[str, Any]:
        """The full scene as JSON for what is made from it (a dataset manifest, a policy
        bundle): :meth:`legacy_dump` with the robot's description resolved from its preset
        (:meth:`RobotConfig.resolved`), so the record describes the scene even if the preset
        files change later. ``robot.colour`` is written ``color`` (both load).

        Example:
            >>> SceneConfig.load("kuka_cube").record()["robot"]["urdf"]
            'kuka_iiwa/model.urdf'
        """
        data = self.legacy_dump()
        data["robot"] = robot_record(self.robot)
        return data

    @property
    def has_robot(self) -> bool:
        """Whether the scene has an arm (``robot: null``: a camera-only cell)."""
        return self.robot is not None

    @property
    def position_frame(self) -> str:
        """The frame of the scene's position labels: ``robot_base``, or ``camera`` (OpenCV
        camera frame) for a scene without a robot.

        Example:
            >>> SceneConfig.load("bin_camera").position_frame
            'camera'
        """
        return "robot_base" if self.has_robot else "camera"

    @property
    def is_legacy(self) -> bool:
        """The scene's objects are exactly the old single cube (the old code paths run)."""
        return _is_legacy(self.objects)

    @property
    def target(self) -> str:
        """Instance name of the task's target object."""
        return target_name(self.objects)

    @property
    def cube(self) -> ObjectConfig:
        """The old ``cube:`` section: the single cube's, else the target's values (size: its
        nominal height; spawn: its region, else the distractor area)."""
        return _cube_view(self.objects, self.distractors.area_x, self.distractors.area_y)

    @property
    def table_top(self) -> float:
        return self.table.top_height

    @property
    def cube_z(self) -> float:
        return self.table.top_height + self.cube.size / 2


def robot_record(robot: RobotConfig | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A scene's ``robot:`` section with its preset's description filled in, as JSON
    (``colour`` written ``color``: datasets made before the rename compare equal); None for
    a scene without a robot."""
    if robot is None:
        return None
    cfg = robot if isinstance(robot, RobotConfig) else RobotConfig.model_validate(robot)
    data = cfg.resolved().model_dump(mode="json")
    return {("color" if k == "colour" else k): v for k, v in data.items()}


@functools.lru_cache(maxsize=64)
def _is_legacy(objects: tuple[ObjectSpec, ...]) -> bool:
    return legacy_cube_view(objects) is not None


@functools.lru_cache(maxsize=64)
def _cube_view(
    objects: tuple[ObjectSpec, ...], area_x: tuple[float, float], area_y: tuple[float, float]
) -> ObjectConfig:
    view = legacy_cube_view(objects)
    if view is not None:
        return ObjectConfig(**view)
    spec = target_spec(objects)
    spawn = spec.spawn or SpawnRegion(x=area_x, y=area_y)
    return ObjectConfig(
        size=nominal_size(spec),
        color=spec.color or ObjectConfig().color,
        mass=spec.mass or ObjectConfig().mass,
        spawn_x=spawn.x,
        spawn_y=spawn.y,
        grid_step=spawn.grid_step,
        spawn_near=spawn.near,
    )
