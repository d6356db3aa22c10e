"""How far can perception alone take ReachCube? A scripted controller, no learning.

The controller moves the end effector straight at the reach target (a point above the cube),
taking the cube position from one of three sources:

- ``true``: the simulator's cube position (the task's ceiling under action noise and latency);
- ``encoder-each-step``: the encoder's position estimate on every observed frame (``--route``:
  the position head, or the keypoint back-projected onto the cube's plane through the camera
  in the card; default: the card's chosen route);
- ``encoder-first-frame``: the encoder on the first frame only (before the arm can occlude
  the cube), then held.

An encoder whose position head is end-effector-relative (``pretrain --position-target
ee_relative``) gives the cube as the proprio's gripper position plus its predicted offset;
its ``each-step`` row is then image-based servoing: the offset shrinks as the gripper closes in.

A learned policy that sees only the image and proprioception cannot be expected to beat the
better encoder row by much: this bounds what PPO on the frozen encoder can reach. Prints
success rate, final distance and the encoder's xy error, over ``--episodes`` seeded episodes.

Usage::

    python benchmarks/reach_scripted.py --encoder runs/reach_enc/encoder --episodes 50
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", required=True, help="encoder checkpoint")
    parser.add_argument(
        "--route",
        default=None,
        help="position_head | keypoint_plane | keypoint_relative (default: the card's)",
    )
    parser.add_argument("--env", default="Sim2Real/ReachCube-v0")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--randomization", default="default")
    parser.add_argument("--scene", default=None, help="scene preset or YAML (default: the env's)")
    parser.add_argument(
        "--no-camera-jitter",
        action="store_true",
        help="the preset with its camera ranges zeroed (a calibrated, fixed camera)",
    )
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--seed", type=int, default=1000, help="first episode seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="optional JSON file for the results")
    return parser.parse_args()


def episode(env, encoder, route: str | None, source: str, seed: int) -> dict[str, float]:
    from sim2real.envs.labels import world_to_base
    from sim2real.perception.geometry import predict_positions

    core = env.unwrapped
    scene, task = core.scene, core.task
    yaw = np.radians(core.scene_cfg.robot.base_yaw_deg)
    base = core.robot.base_position
    lift = np.array([0.0, 0.0, scene.cfg.cube.size / 2 + task.hover])
    max_step = core.robot.cfg.max_step_m

    obs, info = env.reset(seed=seed)
    errors: list[float] = []
    held: np.ndarray | None = None
    success = False
    for _ in range(core.max_steps):
        true_cube = np.asarray(info["labels"]["position_base"], dtype=np.float64)
        if source == "true":
            cube = true_cube
        else:
            if held is None or source == "encoder-each-step":
                frame = obs["image"].transpose(1, 2, 0)
                # the gripper's position as the policy sees it (proprio, with its noise): an
                # end-effector-relative head adds its offset to it; other heads ignore it
                seen_ee = obs["proprio"][None, -3:]
                held = predict_positions(encoder, frame, "RGB", route, ee=seen_ee)[0]
                errors.append(float(np.linalg.norm(held[:2] - true_cube[:2])))
            cube = held
        ee = world_to_base(core.robot.ee_position()[None], base, yaw)[0]
        action = np.clip((cube + lift - ee) / max_step, -1.0, 1.0).astype(np.float32)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated:
            success = bool(info["is_success"])
            break
        if truncated:
            break
    return {
        "success": float(success),
        "final_distance_cm": 100 * float(info["distance"]),
        "xy_error_cm": 100 * float(np.mean(errors)) if errors else float("nan"),
    }


def main() -> None:
    args = parse_args()
    import gymnasium as gym
    import torch

    import sim2real.envs  # noqa: F401  (registers the ids)
    from sim2real.envs.randomization import CameraRanges, RandomizationConfig
    from sim2real.perception.encoder import Encoder

    torch.set_num_threads(args.threads)
    encoder = Encoder.load(args.encoder)
    route = args.route  # None: predict_positions takes the card's route
    randomization = RandomizationConfig.load(args.randomization)
    if args.no_camera_jitter:
        randomization = randomization.model_copy(update={"camera": CameraRanges()})
    env = gym.make(
        args.env,
        randomization=randomization,
        image_size=args.image_size,
        labels="pose",
        **({"scene": args.scene} if args.scene else {}),
    )
    results = {}
    print(
        f"{args.env}, randomization {args.randomization}"
        f"{' without camera jitter' if args.no_camera_jitter else ''}, {args.episodes} episodes, "
        f"encoder {args.encoder} (route {route or encoder.card.get('position_route')!r})"
    )
    print("| cube position from | success | final distance cm (median) | encoder xy error cm |")
    print("|---|---|---|---|")
    for source in ("true", "encoder-first-frame", "encoder-each-step"):
        start = time.perf_counter()
        rows = [episode(env, encoder, route, source, args.seed + i) for i in range(args.episodes)]
        success = np.mean([r["success"] for r in rows])
        final = np.median([r["final_distance_cm"] for r in rows])
        error = np.nanmean([r["xy_error_cm"] for r in rows]) if source != "true" else float("nan")
        results[source] = {
            "success_rate": float(success),
            "final_distance_cm_median": float(final),
            "encoder_xy_error_cm_mean": float(error),
            "wall_s": time.perf_counter() - start,
        }
        err = "-" if source == "true" else f"{error:.2f}"
        print(f"| {source} | {success:.0%} | {final:.2f} | {err} |", flush=True)
    env.close()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
