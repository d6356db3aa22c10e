"""Is RL or perception the limit on ReachCube? PPO on privileged state, no image features.

The policy sees the proprio (joints, gripper position) and the true cube-minus-gripper offset
from the simulator (plus optional Gaussian noise of ``--noise`` metres per axis and step, to
stand in for a perception error), both in decimetres as the library's policy inputs. The
image is rendered at 16 px and not used. Same env, reward, action and PPO defaults as
``sim2real train`` (``PPO_DEFAULTS``; SB3's MlpPolicy, 2 DummyVecEnv envs). Evaluation:
``--eval-episodes`` deterministic episodes on fixed seeds every ``--eval-every`` steps.

If this reaches the goal quickly, PPO's sample efficiency is not what keeps a pixel policy
under it; the perception features are.

Usage::

    python benchmarks/reach_oracle.py --steps 50000 --seeds 3
    python benchmarks/reach_oracle.py --steps 50000 --noise 0.02   # 2 cm perception noise
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="Sim2Real/ReachCube-v0")
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--noise", type=float, default=0.0, help="offset noise std, metres")
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ppo", default="{}", help="JSON overrides of PPO_DEFAULTS")
    parser.add_argument("--out", default=None, help="optional JSON file for the results")
    return parser.parse_args()


def make_env(env_id: str, noise: float):
    import gymnasium as gym
    from gymnasium import spaces

    import sim2real.envs  # noqa: F401  (registers the ids)
    from sim2real.policies.config import METRE_SCALE

    class Oracle(gym.Wrapper):
        """``[joints, s * gripper, s * (cube - gripper + noise)]`` from the simulator."""

        def __init__(self, env: gym.Env) -> None:
            super().__init__(env)
            n = env.observation_space["proprio"].shape[0] + 3
            self.observation_space = spaces.Box(-np.inf, np.inf, (n,), np.float32)

        def _obs(self, obs: dict, info: dict) -> np.ndarray:
            proprio = obs["proprio"]
            cube = np.asarray(info["labels"]["position_base"])
            offset = cube - proprio[-3:] + self.np_random.normal(0.0, noise, 3)
            parts = [proprio[:-3], proprio[-3:] * METRE_SCALE, offset * METRE_SCALE]
            return np.concatenate(parts).astype(np.float32)

        def reset(self, **kwargs):
            obs, info = self.env.reset(**kwargs)
            return self._obs(obs, info), info

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            return self._obs(obs, info), reward, terminated, truncated, info

    return Oracle(gym.make(env_id, image_size=16, labels="pose"))


def evaluate(model, env, episodes: int) -> float:
    wins = 0
    for e in range(episodes):
        obs, _ = env.reset(seed=10_000 + e)
        while True:
            action, _ = model.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                wins += bool(info["is_success"])
                break
    return wins / episodes


def run(args: argparse.Namespace, seed: int) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from sim2real.policies.models import PPO_DEFAULTS

    venv = DummyVecEnv([lambda: make_env(args.env, args.noise) for _ in range(2)])
    venv.seed(seed)
    eval_env = make_env(args.env, args.noise)
    kwargs = {**PPO_DEFAULTS, **json.loads(args.ppo)}
    model = PPO("MlpPolicy", venv, seed=seed, verbose=0, **kwargs)
    start = time.perf_counter()
    history = [{"timesteps": 0, "success_rate": evaluate(model, eval_env, args.eval_episodes)}]
    while model.num_timesteps < args.steps:
        model.learn(args.eval_every, reset_num_timesteps=False)
        rate = evaluate(model, eval_env, args.eval_episodes)
        history.append({"timesteps": int(model.num_timesteps), "success_rate": rate})
        print(f"seed {seed}: {model.num_timesteps} steps, success {rate:.2f}", flush=True)
    return {"seed": seed, "history": history, "wall_s": time.perf_counter() - start}


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    runs = [run(args, seed) for seed in range(args.seeds)]
    print(f"{args.env}, oracle offset noise {args.noise} m, PPO overrides {args.ppo}")
    print("| seed | " + " | ".join(f"{h['timesteps']}" for h in runs[0]["history"]) + " | wall s |")
    print("|---" * (len(runs[0]["history"]) + 2) + "|")
    for r in runs:
        cells = " | ".join(f"{h['success_rate']:.2f}" for h in r["history"])
        print(f"| {r['seed']} | {cells} | {r['wall_s']:.0f} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(runs, indent=1) + "\n")


if __name__ == "__main__":
    main()
