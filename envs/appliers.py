"""Appliers of domain randomisation: ``apply_*(scene, params)`` change the simulated world,
:class:`ImageAugmenter` the rendered image, each from params drawn by
:mod:`sim2real.envs.sampling`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim2real.envs.randomization import (
    DistractorParams,
    ImageParams,
    PhysicsParams,
    RandomizationParams,
    VisualParams,
)
from sim2real.envs.scene import PARKED, PATCH_THICKNESS, Scene
from sim2real.errors import ConfigError


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
    mass: dict[str, float] = {}
    if not scene.cfg.is_legacy:
        # p.mass is the nominal mass times a draw: the target keeps its file's mass times it
        scene.objects.scale_mass(scene.target, p.mass / scene.cfg.cube.mass)
    else:
        mass = {"mass": p.mass}
    scene.client.changeDynamics(
        scene.cube,
        -1,
        **mass,
        lateralFriction=p.lateral_friction,
        spinningFriction=p.spinning_friction,
        rollingFriction=p.rolling_friction,
        restitution=p.restitution,
        linearDamping=p.linear_damping,
        angularDamping=p.angular_damping,
    )
    if scene.robot is not None:
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
