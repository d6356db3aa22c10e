"""The task interface the env composes with a scene, a robot and a camera."""

from __future__ import annotations

from typing import Any

import numpy as np

from sim2real.envs.scene import Scene


class Task:
    """Places the task's objects, scores the state and says when it is solved."""

    name = "task"
    needs_goal = False
    success_threshold = 0.03

    def reset(self, scene: Scene, rng: np.random.Generator) -> None:
        scene.reset_objects(rng)

    def reward(self, scene: Scene) -> float:
        raise NotImplementedError

    def distance(self, scene: Scene) -> float:
        raise NotImplementedError

    def is_success(self, scene: Scene) -> bool:
        return self.distance(scene) < self.success_threshold

    def info(self, scene: Scene) -> dict[str, Any]:
        return {"distance": self.distance(scene)}
