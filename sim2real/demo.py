"""``sim2real demo``: the main job on the embedded default.

Today it runs the simulation stage end to end: a randomised preview grid of the reach scene
with labels overlaid, a short scripted rollout with its success rate, and the render speed.
Later stages (data, encoder, transfer, policy, deployment) join as they land.
"""

from __future__ import annotations

import logging
from pathlib import Path

import gymnasium as gym
import numpy as np
from tqdm import tqdm

import sim2real.envs  # noqa: F401  (registers ids)
from sim2real.bench import bench_render, format_render
from sim2real.preview import preview_scene

logger = logging.getLogger(__name__)


def scripted_reach(env_id: str, episodes: int, seed: int = 0) -> float:
    """Success rate of a proportional controller that reads the cube position from the
    env's labels (privileged information; a sanity check of the task, not a policy)."""
    env = gym.make(env_id, randomization="default", image_size=64)
    successes = 0
    for ep in tqdm(range(episodes), desc="scripted rollout", unit="ep"):
        _, info = env.reset(seed=seed + ep)
        core = env.unwrapped
        done = False
        while not done:
            delta = core.task.target(core.scene) - core.robot.ee_position()
            action = np.clip(delta / core.robot.cfg.max_step_m, -1, 1).astype(np.float32)
            _, _, term, trunc, info = env.step(action)
            done = term or trunc
        successes += bool(info["is_success"])
    env.close()
    return successes / episodes


def run_demo(out: Path, tiny: bool = False) -> Path:
    """Run the demo into ``out`` and return the path of its Markdown report."""
    out.mkdir(parents=True, exist_ok=True)
    n = 4 if tiny else 16
    grid = preview_scene("tabletop_panda", out / "samples.png", "default", n=n)
    rate = scripted_reach("Sim2Real/ReachCube-v0", episodes=2 if tiny else 10)
    bench = bench_render("Sim2Real/ReachCube-v0", (84, 84), seconds=1.0 if tiny else 6.0)
    report = out / "report.md"
    report.write_text(
        "# sim2real demo\n\n"
        f"## Randomised samples\n\n![samples]({grid.name})\n\n"
        f"## Scripted reach (privileged controller)\n\nsuccess rate: {rate:.0%}\n\n"
        f"## Render speed\n\n{format_render(bench)}\n"
    )
    logger.info("report: %s", report)
    return report
