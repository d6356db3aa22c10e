"""PushCube: push the cube into a goal region marked on the table."""

from __future__ import annotations

import numpy as np

from sim2real.envs.scene import Scene
from sim2real.envs.tasks.base import Task


class PushTask(Task):
    """Reward ``-|cube - goal| - 0.5 |gripper - cube|``; success when the cube centre is within
    the goal disc (``goal_radius`` of the scene)."""

    name = "push"
    needs_goal = True
    min_goal_distance = 0.1

    def reset(self, scene: Scene, rng: np.random.Generator) -> None:
        super().reset(scene, rng)
        cube_xy, _ = scene.cube_pose()
        goal = scene.sample_cube_xy(rng)
        for _ in range(20):
            if np.linalg.norm(goal - cube_xy[:2]) >= self.min_goal_distance:
                break
            goal = scene.sample_cube_xy(rng)
        self.goal_xy = goal
        scene.place_goal(goal)
        self.success_threshold = scene.cfg.goal_radius

    def distance(self, scene: Scene) -> float:
        pos, _ = scene.cube_pose()
        return float(np.linalg.norm(pos[:2] - self.goal_xy))

    def reward(self, scene: Scene) -> float:
        pos, _ = scene.cube_pose()
        reach = float(np.linalg.norm(scene.robot.ee_position() - pos))
        return -self.distance(scene) - 0.5 * reach
