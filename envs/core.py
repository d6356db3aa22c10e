"""The env: scene + robot + task + camera + randomiser, composed from configs.

Example:
    >>> import gymnasium as gym, sim2real.envs
    >>> env = gym.make("Sim2Real/ReachCube-v0", randomization="default", image_size=84)
    >>> obs, info = env.reset(seed=0)
    >>> obs["image"].shape, obs["image"].dtype
    ((3, 84, 84), dtype('uint8'))
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sim2real.envs.appliers import ImageAugmenter, apply_world
from sim2real.envs.camera import CameraGeometry, RenderOutput, render
from sim2real.envs.labels import FrameLabels, compute_labels
from sim2real.envs.randomization import RandomizationConfig, RandomizationParams
from sim2real.envs.sampling import sample_all
from sim2real.envs.scene import Scene, SceneConfig
from sim2real.envs.tasks import Task, make_task
from sim2real.errors import ConfigError, InputError, RendererError, Sim2RealError

logger = logging.getLogger(__name__)


class ResetNeeded(Sim2RealError, gym.error.ResetNeeded):
    """The env was stepped, rendered or asked for labels before its first ``reset()``.

    Also a :class:`gymnasium.error.ResetNeeded`, as Gymnasium's order-enforcing wrapper raises.

    Example:
        >>> env = TabletopEnv(randomization="none", image_size=32)
        >>> env.step(np.zeros(3, np.float32))  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ...
        sim2real.envs.core.ResetNeeded: step() was called before reset(): call env.reset(...
        >>> env.close()
    """


LabelLevel = Literal["none", "pose", "full"]


def image_size_tuple(size: int | tuple[int, int] | list[int] | str) -> tuple[int, int]:
    """``84`` -> (84, 84); ``"160x120"`` or ``(160, 120)`` -> (160, 120) as (width, height)."""
    if isinstance(size, str):
        parts = size.lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ConfigError(f"image size {size!r}: expected 'WxH' such as '160x120'")
        return int(parts[0]), int(parts[1])
    if isinstance(size, int):
        return size, size
    if len(size) == 2:
        return int(size[0]), int(size[1])
    raise ConfigError(f"image size {size!r}: expected an int or (width, height)")


def connect(renderer: str = "tiny") -> tuple[Any, int]:
    """A new PyBullet DIRECT client and the renderer constant for ``getCameraImage``.

    ``renderer="egl"`` loads PyBullet's EGL plugin (GPU or Mesa); a clear RendererError says
    why when it cannot be loaded.
    """
    import pybullet as p
    from pybullet_utils import bullet_client

    from sim2real.envs.quiet import quiet_native_output

    with quiet_native_output():  # PyBullet prints "argv[0]=" on every connect
        client = bullet_client.BulletClient(connection_mode=p.DIRECT)
    if renderer == "tiny":
        return client, p.ER_TINY_RENDERER
    if renderer == "egl":
        try:
            import pkgutil

            egl = pkgutil.get_loader("eglRenderer")
            plugin = (
                client.loadPlugin(egl.get_filename(), "_eglRendererPlugin")
                if egl is not None
                else client.loadPlugin("eglRendererPlugin")
            )
        except Exception as exc:  # pybullet raises plain errors here
            client.disconnect()
            raise RendererError(
                f"renderer='egl': loading PyBullet's EGL plugin failed: {exc}"
            ) from exc
        if plugin < 0:
            client.disconnect()
            raise RendererError(
                "renderer='egl': PyBullet's EGL plugin did not load (no EGL driver found); "
                "use renderer='tiny' (CPU) or install an EGL driver (libegl1 + a GPU/Mesa driver)"
            )
        return client, p.ER_BULLET_HARDWARE_OPENGL
    raise ConfigError(f"renderer {renderer!r}: expected 'tiny' or 'egl'")


class TabletopEnv(gym.Env):
    """A tabletop arm task seen through a randomised camera.

    Observation: ``Dict(image: uint8 (3, H, W), proprio: float32 (n_joints + 3,))`` with the arm's
    joint positions then the end-effector position (robot-base frame). Action: ``Box(-1, 1,
    (3,))``, an end-effector Cartesian delta scaled by ``robot.max_step_m`` (IK inside).

    Args:
        scene: preset name, YAML path or ``SceneConfig``.
        task: ``"reach"``, ``"push"`` or a ``Task``.
        randomization: preset name, YAML path, dict or ``RandomizationConfig``.
        image_size: int or (width, height) of the observation image.
        max_steps: truncation length.
        labels: ``"none"``, ``"pose"`` (cheap: poses and pixel centre in ``info``) or
            ``"full"`` (adds mask, box and depth, which needs the segmentation buffer).
            ``info["labels"]`` is the target's; ``info["objects"][name]`` every shown
            object's (:mod:`sim2real.envs.object_labels`: cheap at ``pose``, exact at
            ``full``).
        renderer: ``"tiny"`` (CPU) or ``"egl"``.
        render_mode: ``"rgb_array"`` or None.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        scene: str | Path | SceneConfig = "tabletop_panda",
        task: str | Task = "reach",
        randomization: str | Path | dict | RandomizationConfig | None = "default",
        image_size: int | tuple[int, int] = 84,
        max_steps: int = 100,
        labels: LabelLevel = "pose",
        renderer: str = "tiny",
        render_mode: str | None = None,
    ) -> None:
        super().__init__()
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode {render_mode!r}: expected None or 'rgb_array'")
        if labels not in ("none", "pose", "full"):
            raise ConfigError(f"labels {labels!r}: expected 'none', 'pose' or 'full'")
        self.scene_cfg = scene if isinstance(scene, SceneConfig) else SceneConfig.load(scene)
        if self.scene_cfg.robot is None:
            raise ConfigError(
                f"scene {self.scene_cfg.name!r} has no robot (robot: null), but a "
                f"{task if isinstance(task, str) else type(task).__name__!r} env needs an arm "
                "to act: a camera-only scene makes datasets (sim2real generate --scene), "
                "encoders (pretrain) and evaluations, not policy envs; give the scene a robot: "
                "section for a task env"
            )
        self.rand_cfg = RandomizationConfig.load(randomization)
        self.task = make_task(task)
        self.width, self.height = image_size_tuple(image_size)
        self.max_steps = int(max_steps)
        self.labels = labels
        self.render_mode = render_mode
        self.client, self._renderer = connect(renderer)
        self.scene = Scene(
            self.client,
            self.scene_cfg,
            with_goal=self.task.needs_goal,
            patches=self.rand_cfg.distractors.flat_count[1],
            patch_size=self.rand_cfg.distractors.flat_size,
        )
        self.robot = self.scene.robot
        self._augment = ImageAugmenter()
        self._substeps = max(1, self.scene_cfg.physics_hz // self.scene_cfg.control_hz)
        n = self.robot.proprio_size
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (3, self.height, self.width), np.uint8),
                "proprio": spaces.Box(-np.inf, np.inf, (n,), np.float32),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.params: RandomizationParams | None = None
        self._steps = 0
        self._frame: RenderOutput | None = None
        self._geometry: CameraGeometry | None = None
        self._pending: deque[np.ndarray] = deque()
        # Every reset restores this snapshot, contact cache included, so the same seed gives
        # the same trajectory bit for bit whatever ran before. restoreState only restores the
        # contacts the snapshot holds: one taken with the cube off the table (kuka_cube's
        # origin) left the last episode's cube-table contact in place, and the same seed
        # drifted by ~1e-6 m in 8 of 40 seeds. So the cube rests on the table in the snapshot.
        self.scene.rest_objects()  # every object, in scenes beyond the one cube
        for _ in range(10):
            self.client.stepSimulation()
        self.robot.reset()
        self._initial_state = self.client.saveState()

    # -- gymnasium API ----------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self._steps = 0
        self.client.restoreState(self._initial_state)
        self._redraw()
        self.robot.reset()
        self.task.reset(self.scene, self.np_random)
        for _ in range(10):
            self.client.stepSimulation()
        self._pending = deque(
            np.zeros(3, dtype=np.float32) for _ in range(self.params.physics.action_latency_steps)
        )
        obs = self._observe()
        return obs, self._info()

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (3,):
            raise InputError(f"action: expected shape (3,), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise InputError(f"action: expected finite values, got {action}")
        if self.params is None:
            raise ResetNeeded("step() was called before reset(): call env.reset(seed=...) first")
        phys = self.params.physics
        self._pending.append(np.clip(action, -1.0, 1.0))
        applied = self._pending.popleft()
        if phys.action_noise_std:
            applied = applied + self.np_random.normal(0, phys.action_noise_std, 3)
        target = self.robot.ee_position() + np.clip(applied, -1, 1) * self.robot.cfg.max_step_m
        self.robot.move_towards(target)
        for _ in range(self._substeps):
            self.client.stepSimulation()
        self._steps += 1
        every = self.rand_cfg.every_n_steps
        if every and self._steps % every == 0:
            self._redraw(physics=False)
        obs = self._observe()
        info = self._info()
        terminated = bool(info["is_success"])
        truncated = self._steps >= self.max_steps
        return obs, float(self.task.reward(self.scene)), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if self._frame is None:
            raise ResetNeeded("render() was called before reset(): call env.reset(seed=...) first")
        return self._frame.rgb

    def close(self) -> None:
        if getattr(self, "client", None) is not None:
            self.scene.close()
            self.client.disconnect()
            self.client = None

    # -- internals --------------------------------------------------------------------------
    def _redraw(self, physics: bool = True) -> None:
        """Draw new randomisation params from ``self.np_random`` and apply them."""
        params = sample_all(self.np_random, self.rand_cfg, self.scene_cfg, len(self.scene.textures))
        if not physics and self.params is not None:
            params = RandomizationParams(
                params.visual,
                params.camera,
                params.light,
                params.distractors,
                params.image,
                self.params.physics,
            )
        self.params = params
        apply_world(self.scene, params)
        cam = params.camera.resized(self.width, self.height)
        self._geometry = CameraGeometry.from_config(cam)

    def _render(self) -> RenderOutput:
        assert self.params is not None and self._geometry is not None
        full = self.labels == "full"
        out = render(
            self.client,
            self._geometry,
            segmentation=full,
            depth=full,
            shadows=self.params.light.shadows,
            light=self.params.light.render_kwargs(),
            renderer=self._renderer,
        )
        out.rgb = self._augment(out.rgb, self.params.image)
        return out

    def _observe(self) -> dict[str, np.ndarray]:
        self._frame = self._render()
        proprio = np.concatenate(
            [self.robot.joint_positions(), self.robot.ee_position() - self.robot.base_position]
        ).astype(np.float32)
        noise = self.params.physics.obs_noise_std
        if noise:
            proprio = proprio + self.np_random.normal(0, noise, proprio.shape).astype(np.float32)
        image = np.ascontiguousarray(self._frame.rgb.transpose(2, 0, 1))
        return {"image": image, "proprio": proprio}

    def frame_labels(self) -> FrameLabels:
        """Labels of the cube in the last rendered frame."""
        if self._frame is None or self._geometry is None:
            raise ResetNeeded(
                "frame_labels() was called before reset(): call env.reset(seed=...) first"
            )
        pos, orn = self.scene.cube_pose()
        return compute_labels(
            self._geometry,
            self._frame,
            self.scene.cube,
            pos,
            orn,
            self.robot.base_position,
            np.radians(self.scene_cfg.robot.base_yaw_deg),
        )

    def _info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "is_success": self.task.is_success(self.scene),
            **self.task.info(self.scene),
            "randomization": self.params.to_dict() if self.params else None,
        }
        if self.labels != "none":
            lab = self.frame_labels()
            info["labels"] = {
                "position_world": lab.position_world,
                "position_base": lab.position_base,
                "position_camera": lab.position_camera,
                "orientation_world": lab.orientation_world,
                "uv": lab.uv,
                "K": self._geometry.K.copy(),
                "R": self._geometry.R.copy(),
                "t": self._geometry.t.copy(),
            }
            if self.labels == "full":
                info["labels"]["box"] = lab.box
                info["labels"]["visible_pixels"] = lab.visible_pixels
                info["labels"]["mask"] = lab.mask
                info["labels"]["depth"] = lab.depth
            info["objects"] = self.scene.objects.info(
                self._geometry,
                base_position=self.robot.base_position,
                base_yaw=float(np.radians(self.scene_cfg.robot.base_yaw_deg)),
                seg=self._frame.seg if self.labels == "full" else None,
                # the cube is convex: its hull polygon is its whole silhouette, no extra render
                exact_silhouettes=not self.scene_cfg.is_legacy,
            )
        return info
