"""Pure samplers of domain randomisation: ``sample_*(rng, ranges, ..., strength) -> params``.

Each is a function of a ``np.random.Generator`` only; one ``strength`` ``s`` in [0, 1] scales
every range around the scene's nominal values (``s=0`` gives the nominal scene, always).
:func:`sample_all` draws everything in a fixed order. The ranges and params are defined in
:mod:`sim2real.envs.randomization`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim2real.envs.camera import CameraConfig
from sim2real.envs.randomization import (
    CameraRanges,
    DistractorParams,
    DistractorRanges,
    ImageParams,
    ImageRanges,
    LightParams,
    LightRanges,
    PhysicsParams,
    PhysicsRanges,
    RandomizationConfig,
    RandomizationParams,
    VisualParams,
    VisualRanges,
)
from sim2real.envs.scene import SceneConfig


def _lerp(nominal: float, drawn: float, s: float) -> float:
    return float(nominal + s * (drawn - nominal))


def _element_colors(scene_cfg: SceneConfig) -> dict[str, tuple[float, float, float, float]]:
    colors = {
        "table": scene_cfg.table.color,
        "cube": scene_cfg.cube.color,
        "walls": scene_cfg.walls[0].color if scene_cfg.walls else (0.8, 0.8, 0.8, 1.0),
        "distractors": (0.5, 0.5, 0.5, 1.0),
    }
    if scene_cfg.floor is not None:
        colors["floor"] = scene_cfg.floor.color
    if scene_cfg.robot is not None:
        colors["robot"] = scene_cfg.robot.color
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
