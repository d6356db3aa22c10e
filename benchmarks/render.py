"""Render speed of the envs' cameras, and what the low-poly robot meshes buy.

Prints frames/s (median of repeats) for the Panda reach scene and the xarm_mug scene (xArm6,
mug, three random_urdfs distractors) at 84x84 and kuka_cube at 160x120 with default
randomisation (every group on), then the Panda scene with the stock visual meshes and with
the low-poly ones, measured interleaved in one run so machine noise hits both.

    .venv/bin/python benchmarks/render.py [--seconds 10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from sim2real.bench import bench_render, format_render
from sim2real.envs.camera import render
from sim2real.envs.core import TabletopEnv
from sim2real.envs.scene import SceneConfig


def mesh_fps(render_mesh: str, seconds: float, size: int = 84) -> float:
    cfg = SceneConfig.load("tabletop_panda")
    cfg = cfg.model_copy(
        update={"robot": cfg.robot.model_copy(update={"render_mesh": render_mesh})}
    )
    env = TabletopEnv(scene=cfg, randomization="default", image_size=size, labels="none")
    env.reset(seed=0)
    env.robot.move_towards(np.array([0.5, 0.0, 0.15]))  # bring the arm into view
    for _ in range(60):
        env.client.stepSimulation()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        render(env.client, env._geometry, light=env.params.light.render_kwargs())
        n += 1
    env.close()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    for env_id, size, scene in (
        ("Sim2Real/ReachCube-v0", (84, 84), None),
        ("Sim2Real/Reach-v0", (84, 84), "xarm_mug"),
        ("Sim2Real/KukaCubeReach-v0", (160, 120), None),
    ):
        b = bench_render(env_id, size, args.seconds, repeats=args.repeats, scene=scene)
        print(format_render(b))
    rates: dict[str, list[float]] = {"visual": [], "lowpoly": []}
    for _ in range(args.repeats):
        for mesh in rates:
            rates[mesh].append(mesh_fps(mesh, args.seconds / (2 * args.repeats)))
    vis, low = (statistics.median(rates[m]) for m in ("visual", "lowpoly"))
    print(
        f"Panda 84x84 camera only, arm in view: stock visual meshes {vis:.0f} frames/s, "
        f"low-poly collision meshes {low:.0f} frames/s ({low / vis:.1f}x); median of {args.repeats}"
    )


if __name__ == "__main__":
    main()
