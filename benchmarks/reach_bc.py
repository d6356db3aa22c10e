"""Behaviour cloning + PPO on a frozen encoder, scored in a target scene: a quick recipe check.

Trains like the demo's ``policy`` stage (frozen encoder, ``trunk_dim`` 0, 2 envs, PPO with
the demo's rollout settings) with ``--bc`` (a :class:`~sim2real.policies.config.BCConfig` as
JSON) and ``--steps`` PPO env steps (``--ppo '{"learning_rate": 0.0}'``: the cloned policy
unchanged), then drives the bundle through a plain gym loop (no ``Runner``, no 20 Hz clock, so
it is quicker than the demo's ``run`` stage, on other episodes: seeds 5000..) in the lab and
in the training randomisation. It informs choices; the demo's report gives the figures.

Usage::

    python benchmarks/reach_bc.py --encoder runs/demo/adapt/encoder --out runs/bc \\
        --bc '{"steps": 8192, "rounds": 8, "updates": 300}' --steps 1024 \\
        --ppo '{"learning_rate": 0.0}'
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def score(bundle: Path, scene: str | None, randomization: str, episodes: int, seed: int) -> float:
    """Success rate of the bundle's deterministic policy over ``episodes`` seeded episodes."""
    import gymnasium as gym

    import sim2real.envs  # noqa: F401  (registers the ids)
    from sim2real.deploy.policy import Policy

    policy = Policy.load(bundle, device="cpu")
    kwargs: dict = {"randomization": randomization, "image_size": 64}
    if scene:
        kwargs["scene"] = scene
    env = gym.make("Sim2Real/ReachCube-v0", **kwargs)
    successes = []
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        for _ in range(env.unwrapped.max_steps):
            action = policy.act(obs["image"].transpose(1, 2, 0), obs["proprio"])
            obs, _, terminated, truncated, info = env.step(np.asarray(action, dtype=np.float32))
            if terminated or truncated:
                break
        successes.append(bool(info["is_success"]))
    env.close()
    return float(np.mean(successes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", required=True, help="encoder checkpoint (frozen)")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--bc", default="{}", help="BCConfig as JSON")
    parser.add_argument("--steps", type=int, default=1024, help="PPO env steps")
    parser.add_argument("--ppo", default="{}", help="PPO keyword overrides as JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--scene", default="tabletop_panda_lab", help="target scene")
    parser.add_argument("--randomization", default="lab", help="target randomisation")
    args = parser.parse_args()
    import torch

    from sim2real.policies.train import train

    torch.set_num_threads(1)
    start = time.perf_counter()
    ppo = {"n_steps": 512, "batch_size": 128, "n_epochs": 10, "gamma": 0.95}
    train(
        "Sim2Real/ReachCube-v0", args.encoder, args.out, mode="frozen", steps=args.steps,
        n_envs=2, image_size=[64, 64], trunk_dim=0, eval_every=4096, eval_episodes=10,
        progress_bar=False, tensorboard=False, save_sb3=False, device="cpu", seed=args.seed,
        algo_kwargs={**ppo, **json.loads(args.ppo)}, bc=json.loads(args.bc),
    )  # fmt: skip
    trained = time.perf_counter()
    bundle = Path(args.out) / "bundle"
    target = score(bundle, args.scene, args.randomization, args.episodes, 5000)
    training = score(bundle, None, "default", args.episodes, 5000)
    print(f"target ({args.scene}, {args.randomization}): {target:.0%} of {args.episodes}")
    print(f"training domain (default): {training:.0%} of {args.episodes}")
    print(f"train {trained - start:.0f} s, score {time.perf_counter() - trained:.0f} s")


if __name__ == "__main__":
    main()
