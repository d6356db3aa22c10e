"""Warm-starting PPO by behaviour cloning from a privileged scripted expert (DAgger).

"Learning by cheating" (Chen et al., 2019) and teacher-student setups in general: a teacher
that reads the simulator's true state is easy to write; the student reads only what it will
read at deployment. Here the teacher is :class:`ScriptedReachExpert`, which steers the end
effector straight at the task's target (the point above the cube) from the true positions;
the student is the PPO policy itself -- its features extractor (the frozen encoder's
features, or a CNN learning from pixels) and its actor and critic MLPs -- so what it learns
is what deployment runs, and PPO can go on from it.

:func:`warm_start` runs :class:`~sim2real.policies.config.BCConfig`'s rounds on the training
VecEnv (its envs built with the expert wrapper, see
:class:`~sim2real.policies.vec_env.TrainingEnvs`): round 0 lets the expert drive, the later
rounds let the deterministic student drive (DAgger, Ross et al., 2011), so the student is also
taught how to recover from its own mistakes; each visited state is labelled with the expert's
action for it. After each round the student is fitted on every state gathered so far
(``updates`` minibatch steps, the same number whatever the student: a fixed budget): MSE
between the policy's action mean and the expert's action, plus ``value_coef`` times the MSE
of its value head on the discounted returns of the rollouts (so PPO's first advantages are
not measured against an untrained critic). PPO's log std is then set to ``log_std``.

Example:
    >>> from sim2real.policies.config import BCConfig
    >>> report = warm_start(model, venv, BCConfig(steps=4096))  # doctest: +SKIP
    >>> report["rounds"][-1]["driver"], report["rounds"][-1]["success_rate"]  # doctest: +SKIP
    ('student', 0.8)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv

from sim2real.errors import ConfigError
from sim2real.policies.config import BCConfig

logger = logging.getLogger(__name__)

#: The method the expert wrapper offers through ``VecEnv.env_method``.
EXPERT_METHOD = "expert_action"


class ScriptedReachExpert(gym.Wrapper):
    """Offers ``expert_action()``: the scripted reach controller on the simulator's truth.

    The action moves the end effector straight at ``task.target(scene)`` (for reach, the point
    ``hover`` above the cube), as far as one step allows: ``clip((target - ee) / max_step_m,
    -1, 1)``, world axes like the env's actions. It reads the true target and gripper
    positions, which the policy never sees; observations, rewards and episodes are the env's.

    Raises:
        ConfigError: (on ``expert_action``) the env's task has no ``target`` point.

    Example:
        >>> import sim2real.envs
        >>> env = ScriptedReachExpert(gym.make("Sim2Real/ReachCube-v0", image_size=32))
        >>> _ = env.reset(seed=0)
        >>> a = env.expert_action(); a.shape, bool(np.all(np.abs(a) <= 1))
        ((3,), True)
        >>> env.close()
    """

    def expert_action(self) -> np.ndarray:
        """The expert's action for the env's current state, ``(3,)`` float32 in [-1, 1]."""
        core = self.env.unwrapped
        task = getattr(core, "task", None)
        if not callable(getattr(task, "target", None)):
            raise ConfigError(
                f"the scripted expert needs a task with a target point (reach); got "
                f"{type(task).__name__}"
            )
        target = np.asarray(task.target(core.scene), dtype=np.float64)
        ee = np.asarray(core.robot.ee_position(), dtype=np.float64)
        step = float(core.robot.cfg.max_step_m)
        return np.clip((target - ee) / step, -1.0, 1.0).astype(np.float32)


@dataclass
class Demonstrations:
    """States the student saw, with the expert's action for each and the return from it."""

    obs: dict[str, list[np.ndarray]] = field(default_factory=dict)
    actions: list[np.ndarray] = field(default_factory=list)
    returns: list[np.ndarray] = field(default_factory=list)

    def add(self, obs: dict[str, np.ndarray], actions: np.ndarray, returns: np.ndarray) -> None:
        """Append one rollout (``(N, ...)`` arrays)."""
        for key, value in obs.items():
            self.obs.setdefault(key, []).append(value)
        self.actions.append(actions)
        self.returns.append(returns)

    def arrays(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Everything gathered: observations by key, expert actions, returns."""
        obs = {k: np.concatenate(v) for k, v in self.obs.items()}
        return obs, np.concatenate(self.actions), np.concatenate(self.returns)

    def __len__(self) -> int:
        return sum(len(a) for a in self.actions)


def rollout(
    venv: VecEnv, policy: ActorCriticPolicy | None, steps: int, gamma: float
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict[str, float]]:
    """``steps // n_envs`` steps of every env from a reset, driven by the expert
    (``policy=None``) or by the deterministic ``policy``; each state labelled by the expert.

    Returns:
        The observations by key ``(N, ...)``, the expert's actions ``(N, 3)``, the discounted
        returns from each state within its rollout ``(N,)`` (0 after the last step gathered)
        and statistics: ``episodes`` finished, their ``success_rate`` (``None`` for none),
        ``action_mse`` of the driven actions against the expert's.
    """
    n = venv.num_envs
    obs = venv.reset()
    seen: dict[str, list[np.ndarray]] = {k: [] for k in obs}
    labels, rewards, dones, successes, errors = [], [], [], [], []
    for _ in range(max(1, steps // n)):
        expert = np.stack(venv.env_method(EXPERT_METHOD)).astype(np.float32)
        for key, value in obs.items():
            seen[key].append(np.asarray(value).copy())
        action = expert if policy is None else policy.predict(obs, deterministic=True)[0]
        errors.append(float(np.mean((np.asarray(action) - expert) ** 2)))
        labels.append(expert)
        obs, reward, done, infos = venv.step(np.asarray(action, dtype=np.float32))
        rewards.append(reward)
        dones.append(done)
        successes += [bool(i.get("is_success")) for i, d in zip(infos, done, strict=True) if d]
    returns = discounted_returns(np.asarray(rewards), np.asarray(dones), gamma)
    stats = {
        "episodes": len(successes),
        "success_rate": float(np.mean(successes)) if successes else None,
        "action_mse": float(np.mean(errors)),
    }
    flat = {k: _time_major(np.stack(v)) for k, v in seen.items()}
    return flat, _time_major(np.stack(labels)), _time_major(returns), stats


def discounted_returns(rewards: np.ndarray, dones: np.ndarray, gamma: float) -> np.ndarray:
    """``sum_k gamma^k r_{t+k}`` within each episode, per env (``(T, n_envs)`` arrays).

    Example:
        >>> discounted_returns(np.array([[1.0], [1.0], [1.0]]), np.array([[0], [1], [0]]), 0.5)
        array([[1.5],
               [1. ],
               [1. ]])
    """
    out = np.zeros(rewards.shape, dtype=np.float64)
    running = np.zeros(rewards.shape[1:], dtype=np.float64)
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running * (1.0 - dones[t])
        out[t] = running
    return out


def _time_major(x: np.ndarray) -> np.ndarray:
    """``(T, n_envs, ...)`` -> ``(T * n_envs, ...)``."""
    return x.reshape(-1, *x.shape[2:])


def fit(
    policy: ActorCriticPolicy, data: Demonstrations, cfg: BCConfig, seed: int = 0
) -> list[float]:
    """``cfg.updates`` minibatch Adam steps on the action (and value) MSE over everything in
    ``data`` (minibatches drawn without replacement, pass after pass); the mean action MSE of
    each tenth of the steps."""
    obs, actions, returns = data.arrays()
    rng = np.random.default_rng(seed)
    optimiser = policy.optimizer_class(
        policy.parameters(), lr=cfg.lr, **dict(policy.optimizer_kwargs or {})
    )
    device = policy.device
    target_actions = torch.as_tensor(actions, device=device)
    target_returns = torch.as_tensor(returns, dtype=torch.float32, device=device)
    size = min(cfg.batch_size, len(actions))
    order: list[np.ndarray] = []
    policy.set_training_mode(True)
    losses = []
    for _ in range(cfg.updates):
        if not order:
            perm = rng.permutation(len(actions))
            order = [perm[i : i + size] for i in range(0, len(perm) - size + 1, size)]
        idx = order.pop()
        batch = {k: torch.as_tensor(v[idx], device=device) for k, v in obs.items()}
        mean, value = _heads(policy, batch)
        action_loss = F.mse_loss(mean, target_actions[idx])
        value_loss = F.mse_loss(value, target_returns[idx])
        loss = action_loss + cfg.value_coef * value_loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(action_loss.detach()))
    policy.set_training_mode(False)
    return [float(np.mean(chunk)) for chunk in np.array_split(losses, min(10, len(losses)))]


def _heads(
    policy: ActorCriticPolicy, obs: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy's action mean and value for a batch of observations."""
    features = policy.extract_features(obs, policy.features_extractor)
    latent_pi, latent_vf = policy.mlp_extractor(features)
    return policy.action_net(latent_pi), policy.value_net(latent_vf).flatten()


def warm_start(model: BaseAlgorithm, venv: VecEnv, cfg: BCConfig, seed: int = 0) -> dict[str, Any]:
    """Behaviour-clone the scripted expert into ``model``'s policy (see the module docstring).

    Args:
        model: a PPO model built by :func:`~sim2real.policies.models.build_model`.
        venv: the training VecEnv, its envs wrapped in :class:`ScriptedReachExpert`.
        cfg: rounds, steps, epochs, learning rate, value weight, log std after.
        seed: seed of the minibatch order.

    Returns:
        ``{"env_steps", "wall_s", "rounds": [{driver, env_steps, episodes, success_rate,
        action_mse, fit_mse}], "log_std"}``; ``action_mse`` is the driver's action against
        the expert's on the round's states (before fitting), ``fit_mse`` the last pass's.

    Raises:
        ConfigError: not an actor-critic (PPO) policy.
    """
    policy = model.policy
    if not isinstance(policy, ActorCriticPolicy):
        raise ConfigError(f"bc: expected a PPO actor-critic policy, got {type(policy).__name__}")
    start = time.perf_counter()
    per_round = cfg.steps_per_round(venv.num_envs)
    data, rounds = Demonstrations(), []
    for r in range(cfg.rounds):
        driver = None if r == 0 else policy
        obs, actions, returns, stats = rollout(venv, driver, per_round, float(model.gamma))
        data.add(obs, actions, returns)
        fitted = fit(policy, data, cfg, seed=seed + r)
        rounds.append(
            {
                "driver": "expert" if driver is None else "student",
                "env_steps": len(actions),
                **stats,
                "fit_mse": fitted[-1],
            }
        )
        logger.info("bc round %d: %s", r, rounds[-1])
    if cfg.log_std is not None and hasattr(policy, "log_std"):
        with torch.no_grad():
            policy.log_std.fill_(cfg.log_std)
    return {
        "env_steps": len(data),
        "wall_s": time.perf_counter() - start,
        "rounds": rounds,
        "log_std": cfg.log_std,
    }
