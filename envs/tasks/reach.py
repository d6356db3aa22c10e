"""Reach: bring the gripper above the scene's target object (the cube of ReachCube)."""

from __future__ import annotations

import numpy as np

from sim2real.envs.scene import Scene
from sim2real.envs.tasks.base import Task


class ReachTask(Task):
    """Dense reward ``-distance`` from the end effector to a point ``hover`` above the cube
    centre (above the top of its hull for another target object); success within
    ``success_threshold`` (3 cm)."""

    name = "reach"
    hover = 0.05

    def target(self, scene: Scene) -> np.ndarray:
        return scene.target_top(self.hover)

    def distance(self, scene: Scene) -> float:
        return float(np.linalg.norm(scene.robot.ee_position() - self.target(scene)))

    def reward(self, scene: Scene) -> float:
        return -self.distance(scene)
