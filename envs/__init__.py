"""Simulation side: PyBullet tabletop envs with domain randomisation.

Importing this package registers the ``Sim2Real/*`` ids with gymnasium.

Example:
    >>> import gymnasium as gym, sim2real.envs
    >>> env = gym.make("Sim2Real/ReachCube-v0", randomization="none")
"""

from __future__ import annotations

import gymnasium

from sim2real.envs.quiet import quiet_native_output

with quiet_native_output():  # PyBullet prints its build time on import
    import pybullet  # noqa: F401

ENV_IDS = {
    "Sim2Real/ReachCube-v0": {"scene": "tabletop_panda", "task": "reach", "max_steps": 50},
    "Sim2Real/PushCube-v0": {"scene": "tabletop_panda", "task": "push", "max_steps": 100},
    "Sim2Real/KukaCubeReach-v0": {"scene": "kuka_cube", "task": "reach", "max_steps": 80},
    # reach the target object of any scene: gym.make("Sim2Real/Reach-v0", scene="xarm_mug")
    "Sim2Real/Reach-v0": {"scene": "tabletop_panda", "task": "reach", "max_steps": 50},
}

for _id, _kwargs in ENV_IDS.items():
    if _id not in gymnasium.registry:
        gymnasium.register(_id, entry_point="sim2real.envs.core:TabletopEnv", kwargs=dict(_kwargs))

__all__ = ["ENV_IDS"]
