"""Behaviour cloning from the scripted expert: the expert solves the task, cloning moves the
student's actions towards the expert's, and train() runs it before PPO."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

import sim2real.envs  # noqa: F401  (registers the ids)
from sim2real.errors import ConfigError
from sim2real.perception.encoder import Encoder
from sim2real.policies.bc import (
    Demonstrations,
    ScriptedReachExpert,
    discounted_returns,
    fit,
    rollout,
)
from sim2real.policies.config import BCConfig, TrainConfig, make_config
from sim2real.policies.extractor import FrozenFeatures
from sim2real.policies.models import build_model
from sim2real.policies.train import train

ENV = "Sim2Real/ReachCube-v0"
SIZE = 40
POSITION = {"position": {"type": "position", "frame": "robot_base", "hidden": 16}}


def _expert_env() -> gym.Env:
    return ScriptedReachExpert(gym.make(ENV, image_size=SIZE, randomization="default"))


def test_the_expert_reaches_the_cube() -> None:
    env = _expert_env()
    successes = []
    for seed in range(3):
        env.reset(seed=seed)
        for _ in range(env.unwrapped.max_steps):
            _, _, terminated, truncated, info = env.step(env.expert_action())
            if terminated or truncated:
                break
        successes.append(bool(info["is_success"]))
    env.close()
    assert sum(successes) >= 2, successes


def test_the_expert_needs_a_target_point() -> None:
    env = _expert_env()
    env.reset(seed=0)
    env.unwrapped.task = object()  # a task with no target()
    with pytest.raises(ConfigError, match="task with a target point"):
        env.expert_action()
    env.close()


def test_discounted_returns_stop_at_episode_ends() -> None:
    rewards = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    dones = np.array([[0, 1], [1, 0], [0, 0]])
    out = discounted_returns(rewards, dones, 0.5)
    np.testing.assert_allclose(out[:, 0], [1.5, 1.0, 1.0])
    np.testing.assert_allclose(out[:, 1], [2.0, 3.0, 2.0])


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    enc = Encoder("nature_cnn", POSITION, input_size=(SIZE, SIZE), pretrained=False)
    enc.heads["position"].set_target_stats([0.5, 0.0, 0.03], [0.1, 0.1, 0.01])
    return str(enc.save(tmp_path_factory.mktemp("enc") / "enc"))


def test_cloning_brings_the_students_actions_to_the_experts(encoder: str) -> None:
    """On the frozen features (position + proprio), fitting the expert's labels lowers the
    student's action error on fresh states of the expert's, well below where it started."""
    venv = FrozenFeatures(DummyVecEnv([_expert_env]), Encoder.load(encoder), use_position=True)
    cfg = make_config(mode="frozen", encoder=encoder, trunk_dim=0, use_position=True,
                      hidden=(64, 64), seed=0, device="cpu")  # fmt: skip
    model = build_model(venv, None, cfg)
    bc = BCConfig(steps=300, rounds=1, updates=250, batch_size=64, lr=3e-3)
    data = Demonstrations()
    obs, actions, returns, stats = rollout(venv, None, 300, 0.95)
    assert stats["action_mse"] == 0.0 and obs["features"].shape[0] == 300
    data.add(obs, actions, returns)
    held_obs, held_actions, _, _ = rollout(venv, None, 100, 0.95)

    def error() -> float:
        predicted = model.policy.predict(held_obs, deterministic=True)[0]
        return float(np.mean((predicted - held_actions) ** 2))

    before = error()
    history = fit(model.policy, data, bc, seed=0)
    after = error()
    venv.close()
    assert history[-1] < history[0]
    assert after < 0.5 * before, (before, after)


def test_train_clones_before_ppo_and_reports_it(tmp_path: Path, encoder: str) -> None:
    run = train(
        ENV, encoder, tmp_path / "run", mode="frozen", steps=64, n_envs=1, image_size=SIZE,
        trunk_dim=0, hidden=(16, 16), eval_every=0, eval_episodes=1, progress_bar=False,
        tensorboard=False, save_sb3=False, device="cpu",
        algo_kwargs={"n_steps": 32, "batch_size": 32, "n_epochs": 1},
        bc={"steps": 40, "rounds": 2, "updates": 3, "log_std": -1.5},
    )  # fmt: skip
    report = json.loads((run / "bc.json").read_text())
    assert [r["driver"] for r in report["rounds"]] == ["expert", "student"]
    assert report["env_steps"] == 40
    summary = json.loads((run / "summary.json").read_text())
    assert summary["bc_env_steps"] == 40 and summary["env_steps"] == 64


def test_bc_config_validates() -> None:
    assert BCConfig(steps=1000, rounds=3).steps_per_round(2) == 332
    with pytest.raises(ConfigError, match="needs algo='ppo'"):
        make_config(algo="sac", bc={"steps": 10})
    with pytest.raises(ConfigError, match="rounds"):
        make_config(bc={"steps": 10, "rounds": 0})
    assert TrainConfig().bc.steps == 0  # off by default
