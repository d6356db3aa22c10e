"""Domain randomisation: what may vary (the ranges) and what one draw produced (the params).

``sample_*(rng, ranges, ...) -> params`` (:mod:`sim2real.envs.sampling`) are pure functions of
a ``np.random.Generator``; the params are frozen dataclasses that go into ``info`` so any frame
can be rebuilt exactly. ``apply_*(scene, params)`` (:mod:`sim2real.envs.appliers`) change the
world. One ``strength`` in [0, 1] scales every range
around the scene's nominal values: ``strength=0`` gives the nominal scene, always.
Presets live in ``configs/randomization/`` (none, default, strong).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sim2real.envs.camera import CameraConfig
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
