"""Speed measurements shared by ``sim2real bench`` and ``benchmarks/``.

Figures are medians over repeats; nothing here asserts on time.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import gymnasium as gym


@dataclass(frozen=True)
class RenderBench:
    env_id: str
    width: int
    height: int
    randomization: str
    frames_per_s: float
    env_steps_per_s: float
    repeats: int
    scene: str | None = None


def bench_render(
    env_id: str,
    size: tuple[int, int],
    seconds: float = 5.0,
    randomization: str = "default",
    episode_frames: int = 50,
    repeats: int = 3,
    seed: int = 0,
    scene: str | None = None,
) -> RenderBench:
    """Frames/s of the env's camera with visual randomisation redrawn every
    ``episode_frames`` frames (what a per-episode schedule costs), and env steps/s
    (physics + IK + render) for the same env. Medians over ``repeats``. ``scene`` (a preset
    or YAML) replaces the env id's own scene (``Sim2Real/Reach-v0`` takes any).

    Example:
        >>> b = bench_render("Sim2Real/ReachCube-v0", (84, 84), seconds=0.2, repeats=1)
        >>> b.frames_per_s > 0
        True
    """
    import sim2real.envs  # noqa: F401  (registers ids)

    kwargs = {"scene": scene} if scene is not None else {}
    env = gym.make(env_id, randomization=randomization, image_size=size, labels="none", **kwargs)
    core = env.unwrapped
    env.reset(seed=seed)
    env.action_space.seed(seed)
    per_repeat = seconds / (2 * repeats)
    fps, sps = [], []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < per_repeat:
            if n % episode_frames == 0:
                core._redraw()
            core._render()
            n += 1
        fps.append(n / (time.perf_counter() - t0))
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < per_repeat:
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            if term or trunc:
                env.reset()
            n += 1
        sps.append(n / (time.perf_counter() - t0))
    env.close()
    return RenderBench(
        env_id,
        size[0],
        size[1],
        randomization,
        float(statistics.median(fps)),
        float(statistics.median(sps)),
        repeats,
        scene,
    )


def format_render(b: RenderBench) -> str:
    return (
        f"{b.env_id}{f' scene={b.scene}' if b.scene else ''} {b.width}x{b.height} "
        f"randomization={b.randomization}: "
        f"{b.frames_per_s:.0f} frames/s (render + image aug, per-episode redraw), "
        f"{b.env_steps_per_s:.0f} env steps/s (physics + IK + render); median of {b.repeats}"
    )
