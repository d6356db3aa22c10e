"""Labelled-frame sources for dataset generation (``sim2real generate``).

A source renders sample ``index`` of a dataset as a pure function of ``(spec, seed, index)``:
its random generator is ``np.random.default_rng([seed, index])``, and it restores a saved
simulator state first, so a sample does not depend on which samples a worker rendered before.

Example:
    >>> src = make_source({"scene": "kuka_cube", "randomization": "default",
    ...                    "size": [128, 96], "seed": 0})
    >>> sample = src(0)
    >>> sample["image"].shape, sample["position"].shape
    ((96, 128, 3), (3,))
    >>> src.close()
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from sim2real.envs.appliers import ImageAugmenter, apply_world
from sim2real.envs.camera import CameraGeometry, render
from sim2real.envs.core import connect, image_size_tuple
from sim2real.envs.labels import compute_labels, world_to_base
from sim2real.envs.object_labels import dataset_fields, dataset_schema
from sim2real.envs.randomization import RandomizationConfig
from sim2real.envs.sampling import sample_all
from sim2real.envs.scene import Scene, SceneConfig
from sim2real.envs.scene_config import robot_record
from sim2real.errors import ConfigError

#: Label schema written into dataset manifests.
LABEL_SCHEMA = {
    "image": "uint8 (H, W, 3) RGB",
    "position": "float32 (3,) cube centre, robot-base frame, metres",
    "position_world": "float32 (3,) cube centre, world frame, metres",
    "uv": "float32 (2,) projected cube centre, continuous pixels (pixel i covers [i, i+1))",
    "box": "float32 (4,) tight x0, y0, x1, y1 of the cube's mask (NaN when not visible)",
    "visible_pixels": "int32 () number of cube pixels in the frame",
    "ee_position": "float32 (3,) end-effector position, robot-base frame, metres",
    "K": "float32 (3, 3) intrinsics at the image size",
    "R": "float32 (3, 3) world-to-camera rotation (OpenCV camera frame)",
    "t": "float32 (3,) world-to-camera translation",
    "params": "str JSON of every sampled randomisation parameter and the robot joints",
    "mask": "uint8 (H, W) cube instance mask (with --masks)",
    "depth": "float32 (H, W) metric camera-frame z (with --depth)",
}


def label_schema(cfg: SceneConfig) -> dict[str, str]:
    """The manifest's label schema: :data:`LABEL_SCHEMA` (the target's labels), plus the
    per-object fields ``objects.NAME.FIELD`` for scenes beyond the single cube (the old
    scenes' datasets keep their schema, so they still resume).

    Example:
        >>> label_schema(SceneConfig.load("kuka_cube")) == LABEL_SCHEMA
        True
    """
    if not per_object_labels(cfg):
        return dict(LABEL_SCHEMA)
    schema = dict(LABEL_SCHEMA)
    if not cfg.has_robot:
        schema["position"] = CAMERA_POSITION
        del schema["ee_position"]
    return {**schema, **dataset_schema(instance_names(cfg), cfg.position_frame)}


#: The ``position`` label of a scene without a robot (``robot: null``).
CAMERA_POSITION = "float32 (3,) target centre, OpenCV camera frame (no robot), metres"


def per_object_labels(cfg: SceneConfig) -> bool:
    """Whether a scene's samples carry ``objects.NAME.*`` fields: every scene but the old
    single cube at a robot (whose datasets keep their fields, so they still resume)."""
    return not cfg.is_legacy or not cfg.has_robot


def instance_names(cfg: SceneConfig) -> list[str]:
    """Every object instance a scene can show, in its ``objects:`` order."""
    return [name for spec in cfg.objects for name in spec.instance_names]


def scene_spec(
    scene: str,
    randomization: str = "default",
    size: tuple[int, int] = (128, 96),
    masks: bool = False,
    depth: bool = False,
    renderer: str = "tiny",
    arm_jitter: float = 0.35,
    reach_poses: float = 0.0,
) -> dict[str, Any]:
    """The JSON spec of a dataset: the full scene and randomisation configs are embedded, so
    the manifest describes the data even if the preset files change later.

    ``reach_poses`` is the fraction of samples whose arm is posed (by inverse kinematics)
    with the end effector near and above the cube, as on the way in of a reach, instead of
    the rest pose plus ``arm_jitter``: what a gripper-relative position head needs to learn
    the last centimetres (see :class:`LabelledFrameSource`)."""
    if not 0.0 <= reach_poses <= 1.0:
        raise ConfigError(f"reach_poses {reach_poses!r}: expected a fraction in [0, 1]")
    cfg = SceneConfig.load(scene)
    # a scene that is still the single cube is written with its old cube: section, so
    # datasets made before objects: existed still resume and compare equal
    scene_json = cfg.legacy_dump()
    if "cube" in scene_json and not scene_json["cube"]["spawn_near"]:
        # a field added after datasets were made: at its default the spec stays as it was, so
        # those datasets still resume and compare equal
        del scene_json["cube"]["spawn_near"]
    # the robot's description resolved from its preset (the manifest describes the data even
    # if configs/robots/ changes); robot.color kept under its old key (both load). Old
    # manifests, with a preset name only, still resume (see comparable_spec)
    scene_json["robot"] = robot_record(cfg.robot)
    spec = {
        "source": "sim2real.envs.sources:make_source",
        "scene": scene_json,
        "randomization": RandomizationConfig.load(randomization).spec(),
        "size": list(size),
        "masks": bool(masks),
        "depth": bool(depth),
        "renderer": renderer,
        "arm_jitter": float(arm_jitter),
        "label_schema": label_schema(cfg),
    }
    if reach_poses:
        # absent at 0, so specs written before the option existed still compare equal
        spec["reach_poses"] = float(reach_poses)
    return spec


def comparable_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """An older dataset spec in today's form, to compare on resume: a ``robot:`` that names
    a preset only gets the preset's description filled in (as :func:`scene_spec` writes it).

    Example:
        >>> old = {"scene": {"robot": {"name": "panda"}}}
        >>> comparable_spec(old)["scene"]["robot"]["urdf"]
        'franka_panda/panda.urdf'
    """
    scene = spec.get("scene")
    if not isinstance(scene, dict) or not isinstance(scene.get("robot"), dict):
        return spec
    if "urdf" in scene["robot"]:
        return spec
    return {**spec, "scene": {**scene, "robot": robot_record(scene["robot"])}}


#: Where ``reach_poses`` puts the end effector: cube top + hover + an offset drawn in this box
#: (metres; x and y scaled by ``u ** 2`` for ``u ~ U(0, 1)`` so the last centimetres, where a
#: reach succeeds or fails, are dense).
REACH_OFFSET_XY = 0.20
REACH_HEIGHT = (-0.02, 0.25)
REACH_HOVER = 0.05


class LabelledFrameSource:
    """Renders randomised frames of a scene with the cube at a random spawn position.

    The arm is at its rest pose plus ``U(-arm_jitter, arm_jitter)`` per joint, or, for a
    ``reach_poses`` fraction of samples, posed by inverse kinematics with the end effector at
    the cube's top + ``REACH_HOVER`` + an offset (``REACH_OFFSET_XY``, ``REACH_HEIGHT``). The
    ``ee_position`` label is read back from the posed arm, so it is exact whatever IK reached.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        import cv2

        # Per-sample image ops are tiny; library thread pools in every worker would only
        # oversubscribe the cores that the worker processes already fill.
        cv2.setNumThreads(1)
        scene = spec["scene"]
        if isinstance(scene, dict):
            self.scene_cfg = SceneConfig.model_validate(scene)
        else:
            self.scene_cfg = SceneConfig.load(scene)
        self.rand_cfg = RandomizationConfig.load(spec.get("randomization", "default"))
        self.width, self.height = image_size_tuple(spec.get("size", (128, 96)))
        self.masks = bool(spec.get("masks", False))
        self.depth = bool(spec.get("depth", False))
        self.arm_jitter = float(spec.get("arm_jitter", 0.35))
        self.reach_poses = float(spec.get("reach_poses", 0.0))
        self.seed = int(spec.get("seed", 0))
        if self.reach_poses and not self.scene_cfg.has_robot:
            raise ConfigError(
                f"reach_poses={self.reach_poses}: scene {self.scene_cfg.name!r} has no robot "
                "(robot: null) to pose; expected reach_poses 0"
            )
        self.client, self.renderer = connect(spec.get("renderer", "tiny"))
        self.scene = Scene(
            self.client,
            self.scene_cfg,
            patches=self.rand_cfg.distractors.flat_count[1],
            patch_size=self.rand_cfg.distractors.flat_size,
        )
        if self.scene.robot is not None:
            self.scene.robot.reset()
        if not self.scene_cfg.is_legacy:  # resting in the snapshot: contacts restored too
            self.scene.rest_objects()
            for _ in range(10):
                self.client.stepSimulation()
        self.initial = self.client.saveState()
        self.augment = ImageAugmenter()

    def __call__(self, index: int) -> dict[str, np.ndarray | str]:
        rng = np.random.default_rng([self.seed, int(index)])
        self.client.restoreState(self.initial)
        params = sample_all(rng, self.rand_cfg, self.scene_cfg, len(self.scene.textures))
        apply_world(self.scene, params)
        robot = self.scene.robot
        joints = self._pose_world(rng)
        geom = CameraGeometry.from_config(params.camera.resized(self.width, self.height))
        frame = render(
            self.client,
            geom,
            segmentation=True,
            depth=self.depth,
            shadows=params.light.shadows,
            light=params.light.render_kwargs(),
            renderer=self.renderer,
        )
        frame.rgb = self.augment(frame.rgb, params.image)
        pos, orn = self.scene.cube_pose()
        base, base_yaw = self._base()
        lab = compute_labels(geom, frame, self.scene.cube, pos, orn, base, base_yaw)
        record = params.to_dict()
        record["joints"] = [float(x) for x in joints]
        record["reach_pose"] = self._reach
        position = lab.position_base if robot is not None else lab.position_camera
        sample: dict[str, np.ndarray | str] = {
            "image": frame.rgb,
            "position": position.astype(np.float32),
            "position_world": lab.position_world.astype(np.float32),
            "uv": lab.uv.astype(np.float32),
            "box": lab.box.astype(np.float32),
            "visible_pixels": np.array(lab.visible_pixels, dtype=np.int32),
        }
        if robot is not None:  # no end effector in a camera-only cell
            ee = world_to_base(robot.ee_position(), base, base_yaw)
            sample["ee_position"] = ee.astype(np.float32)
        sample["K"] = geom.K.astype(np.float32)
        sample["R"] = geom.R.astype(np.float32)
        sample["t"] = geom.t.astype(np.float32)
        sample["params"] = json.dumps(record, sort_keys=True)
        if per_object_labels(self.scene_cfg):
            per_object = self.scene.objects.labels(
                geom, base_position=base, base_yaw=base_yaw, seg=frame.seg
            )
            names = instance_names(self.scene_cfg)
            sample.update(dataset_fields(per_object, names, self.scene_cfg.position_frame))
        if self.masks:
            sample["mask"] = lab.mask.astype(np.uint8)
        if self.depth:
            sample["depth"] = frame.depth
        return sample

    def _pose_world(self, rng: np.random.Generator) -> np.ndarray:
        """Place the objects and pose the arm (if any) for one sample; the joints drawn
        (empty without a robot). The draws of a scene with a robot are as they always were."""
        robot = self.scene.robot
        joints = np.zeros(0)
        if robot is not None:
            rest = np.asarray(robot.spec.rest_pose)
            joints = rest + rng.uniform(-1.0, 1.0, rest.shape) * self.arm_jitter
        reach = self.reach_poses > 0.0 and rng.uniform() < self.reach_poses
        self._reach = bool(reach)
        if self.scene_cfg.is_legacy:
            xy = self.scene.sample_cube_xy(rng)
            if reach:
                joints = self._reach_joints(xy, rng)
            if robot is not None:
                robot.reset(np.clip(joints, robot.lower, robot.upper))
            self.scene.place_cube(xy, yaw=float(rng.uniform(-np.pi, np.pi)))
        else:
            self.scene.reset_objects(rng)
            if reach:
                joints = self._reach_joints(self.scene.cube_pose()[0][:2], rng)
            if robot is not None:
                robot.reset(np.clip(joints, robot.lower, robot.upper))
        return joints

    def _base(self) -> tuple[np.ndarray, float]:
        """The robot base's world position and yaw (radians); the origin without a robot."""
        robot = self.scene.robot
        if robot is None:
            return np.zeros(3), 0.0
        return robot.base_position, float(np.radians(self.scene_cfg.robot.base_yaw_deg))

    def _reach_joints(self, cube_xy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Joints (by IK from the rest pose) with the end effector near and above the cube."""
        robot = self.scene.robot
        robot.reset()
        offset = rng.uniform(-1.0, 1.0, 2) * rng.uniform(0.0, 1.0) ** 2 * REACH_OFFSET_XY
        if self.scene_cfg.is_legacy:
            top = self.scene.cfg.cube_z + self.scene.cfg.cube.size / 2 + REACH_HOVER
        else:
            top = float(self.scene.target_top(REACH_HOVER)[2])
        target = np.array([cube_xy[0] + offset[0], cube_xy[1] + offset[1], top])
        target[2] += rng.uniform(*REACH_HEIGHT)
        low = np.asarray(robot.cfg.workspace_low) + robot.base_position
        high = np.asarray(robot.cfg.workspace_high) + robot.base_position
        return robot.ik(np.clip(target, low, high))

    def close(self) -> None:
        if self.client is not None:
            self.scene.close()
            self.client.disconnect()
            self.client = None


def make_source(spec: dict[str, Any]) -> LabelledFrameSource:
    """Source factory for :func:`sim2real.data.generate.generate_dataset`."""
    return LabelledFrameSource(spec)
