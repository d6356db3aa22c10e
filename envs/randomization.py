"""Domain randomisation: pure samplers and separate appliers.

``sample_*(rng, ranges, ...) -> params`` are pure functions of a ``np.random.Generator``; the
params are frozen dataclasses that go into ``info`` so any frame can be rebuilt exactly.
``apply_*(scene, params)`` change the world. One ``strength`` in [0, 1] scales every range
around the scene's nominal values: ``strength=0`` gives the nominal scene, always.
Presets live in ``configs/randomization/`` (none, default, strong).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sim2real.envs.camera import CameraConfig
from sim2real.envs.scene import PARKED, PATCH_THICKNESS, Scene, SceneConfig
from sim2real.errors import ConfigError
from sim2real.paths import preset_path

Pair = tuple[float, float]


class _Ranges(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VisualRanges(_Ranges):
    color: float = Field(0.0, ge=0, le=1, description="0: nominal colours, 1: uniform random")
    texture_prob: float = Field(0.0, ge=0, le=1)
    elements: tuple[str, ...] = ("table", "floor", "walls", "cube", "robot", "distractors")


class CameraRanges(_Ranges):
    eye_m: float = Field(0.0, ge=0, description="uniform jitter per axis of the camera position")
    target_m: float = Field(0.0, ge=0, description="uniform jitter per axis of the look-at point")
    roll_deg: float = Field(0.0, ge=0)
    fov_deg: float = Field(0.0, ge=0)


class LightRanges(_Ranges):
    direction: float = Field(0.0, ge=0, description="uniform jitter per axis of the direction")
    color: float = Field(0.0, ge=0, le=1)
    ambient: Pair = (0.6, 0.6)
    diffuse: Pair = (0.35, 0.35)
    specular: Pair = (0.05, 0.05)
    shadow_prob: float = Field(0.0, ge=0, le=1)


class DistractorRanges(_Ranges):
    count: tuple[int, int] = (0, 0)
    flat_count: tuple[int, int] = Field(
        (0, 0),
        description="thin square patches lying on the table (paper markers, tape): how many; "
        "the upper bound is the size of the scene's patch pool",
    )
    flat_size: Pair = Field(
        (0.02, 0.05), description="side of a patch, metres (spread over the pool)"
    )
    flat_light_prob: float = Field(
        0.0, ge=0, le=1, description="chance a patch is paper-white instead of a random colour"
    )

    @model_validator(mode="after")
    def _check(self) -> DistractorRanges:
        for name in ("count", "flat_count"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name}: expected 0 <= low <= high, got {(lo, hi)}")
        if not 0 < self.flat_size[0] <= self.flat_size[1]:
            raise ValueError(f"flat_size: expected 0 < low <= high metres, got {self.flat_size}")
        return self

    def spec(self) -> dict[str, Any]:
        """JSON form; the flat-patch keys (added after datasets were made) are left out while
        patches are off, so the specs of those datasets stay as they were."""
        data = self.model_dump(mode="json")
        if not self.flat_count[1]:
            for key in ("flat_count", "flat_size", "flat_light_prob"):
                del data[key]
        return data


class ImageRanges(_Ranges):
    noise_std: float = Field(0.0, ge=0, le=0.5, description="Gaussian noise std, fraction of 255")
    blur_prob: float = Field(0.0, ge=0, le=1)
    brightness: float = Field(0.0, ge=0, le=1)
    contrast: float = Field(0.0, ge=0, le=1)
    saturation: float = Field(0.0, ge=0, le=1)
    hue: float = Field(0.0, ge=0, le=0.5)
    jpeg_prob: float = Field(0.0, ge=0, le=1)
    jpeg_quality: tuple[int, int] = (40, 95)


class PhysicsRanges(_Ranges):
    mass_scale: Pair = (1.0, 1.0)
    lateral_friction: Pair = (0.8, 0.8)
    spinning_friction: Pair = (0.001, 0.001)
    rolling_friction: Pair = (0.0001, 0.0001)
    restitution: Pair = (0.0, 0.0)
    linear_damping: Pair = (0.04, 0.04)
    angular_damping: Pair = (0.04, 0.04)
    joint_damping: Pair = (0.0, 0.0)
    action_noise_std: float = Field(0.0, ge=0)
    action_latency_steps: tuple[int, int] = (0, 0)
    obs_noise_std: float = Field(0.0, ge=0)


class RandomizationConfig(_Ranges):
    """All ranges, the global ``strength`` and how often visuals are redrawn.

    Example:
        >>> RandomizationConfig.load("none").strength
        0.0
    """

    strength: float = Field(1.0, ge=0.0, le=1.0)
    every_n_steps: int | None = Field(None, ge=1, description="None: once per episode")
    visual: VisualRanges = VisualRanges()
    camera: CameraRanges = CameraRanges()
    light: LightRanges = LightRanges()
    distractors: DistractorRanges = DistractorRanges()
    image: ImageRanges = ImageRanges()
    physics: PhysicsRanges = PhysicsRanges()

    @classmethod
    def load(cls, spec: str | Path | dict | RandomizationConfig | None) -> RandomizationConfig:
        """A preset name, a YAML path, a dict of fields, or a config (returned as is)."""
        if isinstance(spec, RandomizationConfig):
            return spec
        if spec is None:
            spec = "none"
        if isinstance(spec, dict):
            data, where = spec, "randomization"
        else:
            path = preset_path("randomization", spec)
            data, where = yaml.safe_load(path.read_text()) or {}, str(path)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {exc}") from exc

    def spec(self) -> dict[str, Any]:
        """JSON form for dataset specs (fields at their pre-existing defaults left out)."""
        return {**self.model_dump(mode="json"), "distractors": self.distractors.spec()}

    def with_strength(self, strength: float) -> RandomizationConfig:
        if not 0.0 <= strength <= 1.0:
            raise ConfigError(f"randomization strength must be in [0, 1], got {strength}")
        return self.model_copy(update={"strength": float(strength)})


# ---------------------------------------------------------------------------------------
# Params (what a draw produced)


@dataclass(frozen=True)
class VisualParams:
    colors: dict[str, tuple[float, float, float, float]]
    textures: dict[str, int]


@dataclass(frozen=True)
class LightParams:
    direction: tuple[float, float, float]
    color: tuple[float, float, float]
    ambient: float
    diffuse: float
    specular: float
    shadows: bool

    def render_kwargs(self) -> dict[str, Any]:
        return {
            "lightDirection": list(self.direction),
            "lightColor": list(self.color),
            "lightAmbientCoeff": self.ambient,
            "lightDiffuseCoeff": self.diffuse,
            "lightSpecularCoeff": self.specular,
        }


@dataclass(frozen=True)
class DistractorParams:
    placed: tuple[tuple[int, float, float, float, tuple[float, float, float, float]], ...]
    """(pool slot, x, y, yaw, rgba) for each shown distractor."""
    flat: tuple[tuple[int, float, float, float, tuple[float, float, float, float]], ...] = ()
    """(patch pool slot, x, y, yaw, rgba) for each shown flat patch."""


@dataclass(frozen=True)
class ImageParams:
    seed: int
    noise_std: float
    blur_sigma: float
    brightness: float
    contrast: float
    saturation: float
    hue: float
    jpeg_quality: int | None

    @property
    def identity(self) -> bool:
        return (
            self.noise_std == 0
            and self.blur_sigma == 0
            and self.brightness == self.contrast == self.saturation == self.hue == 0
            and self.jpeg_quality is None
        )


@dataclass(frozen=True)
class PhysicsParams:
    mass: float
    lateral_friction: float
    spinning_friction: float
    rolling_friction: float
    restitution: float
    linear_damping: float
    angular_damping: float
    joint_damping: float
    action_noise_std: float
    action_latency_steps: int
    obs_noise_std: float


@dataclass(frozen=True)
class RandomizationParams:
    visual: VisualParams
    camera: CameraConfig
    light: LightParams
    distractors: DistractorParams
    image: ImageParams
    physics: PhysicsParams

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["camera"] = self.camera.model_dump(mode="json")
        return d


# ---------------------------------------------------------------------------------------
# Samplers (pure)


def _lerp(nominal: float, drawn: float, s: float) -> float:
    return float(nominal + s * (drawn - nominal))


def _element_colors(scene_cfg: SceneConfig) -> dict[str, tuple[float, float, float, float]]:
    colors = {
        "table": scene_cfg.table.color,
        "cube": scene_cfg.cube.color,
        "robot": scene_cfg.robot.color,
        "walls": scene_cfg.walls[0].color if scene_cfg.walls else (0.8, 0.8, 0.8, 1.0),
        "distractors": (0.5, 0.5, 0.5, 1.0),
    }
    if scene_cfg.floor is not None:
        colors["floor"] = scene_cfg.floor.color
    return colors


def sample_visual(
    rng: np.random.Generator, r: VisualRanges, scene_cfg: SceneConfig, n_textures: int, s: float
) -> VisualParams:
    """Colours moved from nominal towards a random colour by ``r.color * s``; textures drawn
    with probability ``r.texture_prob * s`` (index 0 = flat)."""
    colors: dict[str, tuple[float, float, float, float]] = {}
    textures: dict[str, int] = {}
    nominal = _element_colors(scene_cfg)
    for name in r.elements:
        if name not in nominal:
            continue
        drawn = rng.uniform(0.05, 1.0, 3)
        base = np.asarray(nominal[name][:3])
        rgb = base + r.color * s * (drawn - base)
        colors[name] = (*(float(x) for x in rgb), 1.0)
        use_tex = rng.uniform() < r.texture_prob * s
        tex = int(rng.integers(1, n_textures)) if n_textures > 1 else 0
        textures[name] = tex if use_tex else 0
    return VisualParams(colors=colors, textures=textures)


def sample_camera(
    rng: np.random.Generator, r: CameraRanges, nominal: CameraConfig, s: float
) -> CameraConfig:
    eye = np.asarray(nominal.eye) + rng.uniform(-1, 1, 3) * r.eye_m * s
    target = np.asarray(nominal.target) + rng.uniform(-1, 1, 3) * r.target_m * s
    roll = nominal.roll_deg + rng.uniform(-1, 1) * r.roll_deg * s
    fov = nominal.fov_deg + rng.uniform(-1, 1) * r.fov_deg * s
    return nominal.model_copy(
        update={
            "eye": tuple(float(x) for x in eye),
            "target": tuple(float(x) for x in target),
            "roll_deg": float(roll),
            "fov_deg": float(fov),
        }
    )


def sample_light(rng: np.random.Generator, r: LightRanges, nominal: Any, s: float) -> LightParams:
    direction = np.asarray(nominal.direction) + rng.uniform(-1, 1, 3) * r.direction * s
    color = np.asarray(nominal.color) + r.color * s * (rng.uniform(0.5, 1.0, 3) - nominal.color)
    return LightParams(
        direction=tuple(float(x) for x in direction),
        color=tuple(float(x) for x in color),
        ambient=_lerp(nominal.ambient, rng.uniform(*r.ambient), s),
        diffuse=_lerp(nominal.diffuse, rng.uniform(*r.diffuse), s),
        specular=_lerp(nominal.specular, rng.uniform(*r.specular), s),
        shadows=bool(nominal.shadows or rng.uniform() < r.shadow_prob * s),
    )


def sample_distractors(
    rng: np.random.Generator, r: DistractorRanges, scene_cfg: SceneConfig, s: float
) -> DistractorParams:
    pool = scene_cfg.distractors.pool
    lo, hi = round(r.count[0] * s), round(r.count[1] * s)
    n = min(int(rng.integers(lo, hi + 1)), pool) if hi > 0 else 0
    slots = rng.permutation(pool)[:n] if n else []
    area = scene_cfg.distractors
    placed = tuple(
        (
            int(slot),
            float(rng.uniform(*area.area_x)),
            float(rng.uniform(*area.area_y)),
            float(rng.uniform(0, 2 * np.pi)),
            (*(float(x) for x in rng.uniform(0.05, 1.0, 3)), 1.0),
        )
        for slot in slots
    )
    return DistractorParams(placed=placed, flat=_sample_flat(rng, r, area, s))


def _sample_flat(
    rng: np.random.Generator, r: DistractorRanges, area: Any, s: float
) -> tuple[tuple[int, float, float, float, tuple[float, float, float, float]], ...]:
    """Flat patches; draws nothing from ``rng`` while they are off (older streams unchanged)."""
    pool = r.flat_count[1]
    if not pool:
        return ()
    lo, hi = round(r.flat_count[0] * s), round(pool * s)
    n = int(rng.integers(lo, hi + 1)) if hi > 0 else 0
    placed = []
    for slot in rng.permutation(pool)[:n]:
        x, y = float(rng.uniform(*area.area_x)), float(rng.uniform(*area.area_y))
        yaw = float(rng.uniform(0, np.pi / 2))
        if rng.uniform() < r.flat_light_prob:
            rgb = np.clip(rng.uniform(0.75, 1.0) + rng.uniform(-0.04, 0.04, 3), 0.0, 1.0)
        else:
            rgb = rng.uniform(0.05, 1.0, 3)
        placed.append((int(slot), x, y, yaw, (*(float(v) for v in rgb), 1.0)))
    return tuple(placed)


def sample_image(rng: np.random.Generator, r: ImageRanges, s: float) -> ImageParams:
    blur = rng.uniform() < r.blur_prob * s
    jpeg = rng.uniform() < r.jpeg_prob * s
    seed = int(rng.integers(0, 2**31 - 1))
    return ImageParams(
        seed=seed if s > 0 else 0,
        noise_std=float(rng.uniform(0, r.noise_std * s)),
        blur_sigma=float(rng.uniform(0.3, 1.2)) if blur else 0.0,
        brightness=float(rng.uniform(-1, 1) * r.brightness * s),
        contrast=float(rng.uniform(-1, 1) * r.contrast * s),
        saturation=float(rng.uniform(-1, 1) * r.saturation * s),
        hue=float(rng.uniform(-1, 1) * r.hue * s),
        jpeg_quality=int(rng.integers(r.jpeg_quality[0], r.jpeg_quality[1] + 1)) if jpeg else None,
    )


def sample_physics(
    rng: np.random.Generator, r: PhysicsRanges, scene_cfg: SceneConfig, s: float
) -> PhysicsParams:
    nominal = PhysicsRanges()

    def draw(name: str) -> float:
        return _lerp(getattr(nominal, name)[0], rng.uniform(*getattr(r, name)), s)

    lat_hi = round(r.action_latency_steps[1] * s)
    lat_lo = min(round(r.action_latency_steps[0] * s), lat_hi)
    return PhysicsParams(
        mass=scene_cfg.cube.mass * draw("mass_scale"),
        lateral_friction=draw("lateral_friction"),
        spinning_friction=draw("spinning_friction"),
        rolling_friction=draw("rolling_friction"),
        restitution=draw("restitution"),
        linear_damping=draw("linear_damping"),
        angular_damping=draw("angular_damping"),
        joint_damping=draw("joint_damping"),
        action_noise_std=r.action_noise_std * s,
        action_latency_steps=int(rng.integers(lat_lo, lat_hi + 1)),
        obs_noise_std=r.obs_noise_std * s,
    )


def sample_all(
    rng: np.random.Generator, cfg: RandomizationConfig, scene_cfg: SceneConfig, n_textures: int
) -> RandomizationParams:
    """One draw of every randomised quantity, in a fixed order."""
    s = cfg.strength
    return RandomizationParams(
        visual=sample_visual(rng, cfg.visual, scene_cfg, n_textures, s),
        camera=sample_camera(rng, cfg.camera, scene_cfg.camera, s),
        light=sample_light(rng, cfg.light, scene_cfg.light, s),
        distractors=sample_distractors(rng, cfg.distractors, scene_cfg, s),
        image=sample_image(rng, cfg.image, s),
        physics=sample_physics(rng, cfg.physics, scene_cfg, s),
    )


# ---------------------------------------------------------------------------------------
# Appliers


def apply_visual(scene: Scene, p: VisualParams) -> None:
    c = scene.client
    for name, rgba in p.colors.items():
        tex = scene.textures.ids[p.textures.get(name, 0)]
        for key, parts in scene.colorable.items():
            group = "walls" if key.startswith("wall") else key
            group = "distractors" if key.startswith("distractor") else group
            if group != name:
                continue
            for body, link in parts:
                if name == "distractors":  # distractors get their own colour when placed
                    continue
                c.changeVisualShape(body, link, rgbaColor=list(rgba), textureUniqueId=tex)


def apply_distractors(scene: Scene, p: DistractorParams, textures: VisualParams | None) -> None:
    c = scene.client
    shown = {slot for slot, *_ in p.placed}
    for slot, body in enumerate(scene.distractors):
        if slot not in shown:
            c.resetBasePositionAndOrientation(body, PARKED, [0, 0, 0, 1])
    tex_index = textures.textures.get("distractors", 0) if textures else 0
    for slot, x, y, yaw, rgba in p.placed:
        body = scene.distractors[slot]
        z = scene.cfg.table_top + 0.03
        orn = c.getQuaternionFromEuler([0.0, 0.0, yaw])
        c.resetBasePositionAndOrientation(body, [x, y, z], orn)
        c.changeVisualShape(
            body, -1, rgbaColor=list(rgba), textureUniqueId=scene.textures.ids[tex_index]
        )
    top = max((slot for slot, *_ in p.flat), default=-1)
    if top >= len(scene.patches):
        raise ConfigError(
            f"flat distractors: the draw uses patch slot {top} but the scene was built with "
            f"{len(scene.patches)} patches; build it with "
            "Scene(..., patches=randomization.distractors.flat_count[1])"
        )
    shown_flat = {slot for slot, *_ in p.flat}
    for slot, body in enumerate(scene.patches):
        if slot not in shown_flat:
            c.resetBasePositionAndOrientation(body, PARKED, [0, 0, 0, 1])
    for slot, x, y, yaw, rgba in p.flat:
        body = scene.patches[slot]
        z = scene.cfg.table_top + PATCH_THICKNESS / 2
        orn = c.getQuaternionFromEuler([0.0, 0.0, yaw])
        c.resetBasePositionAndOrientation(body, [x, y, z], orn)
        c.changeVisualShape(body, -1, rgbaColor=list(rgba), textureUniqueId=scene.textures.ids[0])


def apply_physics(scene: Scene, p: PhysicsParams) -> None:
    scene.client.changeDynamics(
        scene.cube,
        -1,
        mass=p.mass,
        lateralFriction=p.lateral_friction,
        spinningFriction=p.spinning_friction,
        rollingFriction=p.rolling_friction,
        restitution=p.restitution,
        linearDamping=p.linear_damping,
        angularDamping=p.angular_damping,
    )
    scene.robot.set_joint_damping(p.joint_damping)


def apply_world(scene: Scene, p: RandomizationParams) -> None:
    """Apply everything that lives in the simulator (not the camera, light or image)."""
    apply_visual(scene, p.visual)
    apply_distractors(scene, p.distractors, p.visual)
    apply_physics(scene, p.physics)


class ImageAugmenter:
    """Image-level noise, blur, colour jitter and JPEG through albumentations, with every
    magnitude fixed by ``ImageParams`` so the output is a pure function of (image, params)."""

    def __init__(self) -> None:
        self._key: ImageParams | None = None
        self._compose: Any = None

    def __call__(self, image: np.ndarray, p: ImageParams) -> np.ndarray:
        """Shape: (H, W, 3) uint8 RGB -> (H, W, 3) uint8 RGB."""
        if p.identity:
            return image
        if self._key != p:
            self._compose = self._build(p)
            self._key = p
        self._compose.set_random_seed(p.seed)
        return self._compose(image=image)["image"]

    @staticmethod
    def _build(p: ImageParams) -> Any:
        import albumentations as A

        ops: list[Any] = []
        if p.brightness or p.contrast or p.saturation or p.hue:
            ops.append(
                A.ColorJitter(
                    brightness=(1 + p.brightness,) * 2,
                    contrast=(1 + p.contrast,) * 2,
                    saturation=(1 + p.saturation,) * 2,
                    hue=(p.hue,) * 2,
                    p=1.0,
                )
            )
        if p.blur_sigma:
            ops.append(A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(p.blur_sigma,) * 2, p=1.0))
        if p.noise_std:
            ops.append(A.GaussNoise(std_range=(p.noise_std,) * 2, p=1.0))
        if p.jpeg_quality is not None:
            ops.append(A.ImageCompression(quality_range=(p.jpeg_quality,) * 2, p=1.0))
        return A.Compose(ops, seed=p.seed)
