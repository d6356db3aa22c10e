"""The observation/action contract a training run writes into its bundle (``contract.json``).

What deployment needs to feed the policy the inputs it was trained on and to read its actions
(see :mod:`sim2real.policies.bundle` for the ``actor`` part that ``save_bundle`` adds).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from sim2real.perception.encoder import RESIZE_METHOD, Encoder
from sim2real.perception.scores import visibility_contract
from sim2real.policies.bundle import policy_target, position_head_name, position_route
from sim2real.policies.config import TrainConfig


def build_contract(
    cfg: TrainConfig, env: gym.Env, encoder: Encoder, pooled_dim: int, use_position: bool
) -> dict[str, Any]:
    """The observation/action contract of a run (``actor`` is added by ``save_bundle``)."""
    base = env.unwrapped
    space = base.observation_space
    n_joints = space["proprio"].shape[0] - 3
    encoded, policy_input = _feature_layout(cfg, encoder, pooled_dim, use_position)
    policy_input.append({"name": "proprio", "size": n_joints + 3})
    return {
        "algo": cfg.algo,
        "mode": cfg.mode,
        "env_id": cfg.env_id,
        "env_kwargs": {
            "image_size": cfg.image_size,
            "randomization": cfg.randomization,
            **({"scene": cfg.scene} if cfg.scene is not None else {}),
        },
        "scene": base.scene_cfg.record(),  # the full scene trained on, robot resolved
        "observation": {
            "image": {
                "key": "image",
                "shape": list(space["image"].shape),
                "dtype": "uint8",
                "layout": "CHW",
                "colour": "RGB",
                "range": [0, 255],
            },
            "proprio": {
                "key": "proprio",
                "shape": list(space["proprio"].shape),
                "dtype": "float32",
                "names": [f"joint_{i}" for i in range(n_joints)] + ["ee_x", "ee_y", "ee_z"],
                "units": ["rad"] * n_joints + ["m"] * 3,
                "description": "arm joint positions, then end-effector position minus robot "
                "base position (world axes)",
            },
        },
        "preprocessing": {**encoder.preprocessing.to_dict(), "resize_method": RESIZE_METHOD},
        "features": {"pool": cfg.pool, "encoded": encoded, "policy_input": policy_input},
        "visibility": visibility_contract(encoder),
        "action": {
            "shape": list(base.action_space.shape),
            "dtype": "float32",
            "low": base.action_space.low.tolist(),
            "high": base.action_space.high.tolist(),
            "meaning": "end-effector Cartesian delta; the robot moves action * max_step_m",
            "max_step_m": float(base.robot.cfg.max_step_m),
            "postprocess": "tanh then rescale" if cfg.algo == "sac" else "clip",
        },
    }


def _feature_layout(
    cfg: TrainConfig, encoder: Encoder, pooled_dim: int, use_position: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(encoded, policy_input)``: what the encoder gives, and what the actor reads (before
    proprio)."""
    encoded: list[dict[str, Any]] = [{"name": "encoder", "size": pooled_dim, "pool": cfg.pool}]
    policy_input: list[dict[str, Any]] = [{"name": "trunk", "size": cfg.trunk_dim}]
    if use_position and position_route(encoder) == "keypoint_relative":
        pos = {"name": "position", "size": 3, "frame": "end_effector", "units": "m"}
        pos["route"] = "keypoint_relative"
        encoded.append(pos)
        policy_input.append(pos)
    elif use_position:
        head = encoder.heads[str(position_head_name(encoder))]
        pos = {"name": "position", "size": 3, "frame": head.frame, "units": head.units}
        encoded.append(pos)
        policy_input.append(pos)
    if use_position:  # the object whose position it is (task.target)
        pos["object"] = policy_target(encoder)
    return encoded, policy_input
