"""The envs of a training run: ``SubprocVecEnv`` workers (one PyBullet client each) or a
``DummyVecEnv``, always on CPU, and the single evaluation env.

Workers start a fresh interpreter that imports the main module, so a script calling
``train(..., n_envs > 1)`` needs the ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from sim2real.policies.config import TrainConfig

logger = logging.getLogger(__name__)


def make_env(env_id: str, env_kwargs: dict[str, Any], expert: bool = False) -> gym.Env:
    """Create one env (in a worker process: registers ``Sim2Real/*`` first); ``expert``
    wraps it in :class:`~sim2real.policies.bc.ScriptedReachExpert` (behaviour cloning)."""
    import sim2real.envs  # noqa: F401  (registers the ids in spawned workers)

    env = gym.make(env_id, **env_kwargs)
    if expert:
        from sim2real.policies.bc import ScriptedReachExpert

        env = ScriptedReachExpert(env)
    return env


def make_vec_env(
    env_id: str,
    env_kwargs: dict[str, Any],
    n_envs: int,
    kind: str = "auto",
    start_method: str = "forkserver",
    expert: bool = False,
) -> VecEnv:
    """``n_envs`` envs, each with its own PyBullet client (``SubprocVecEnv`` when > 1);
    ``expert``: each offers the scripted expert's action (see :func:`make_env`).

    Example:
        >>> venv = make_vec_env("Sim2Real/ReachCube-v0", {"image_size": 84}, 2)  # doctest: +SKIP
    """
    fns = [functools.partial(make_env, env_id, dict(env_kwargs), expert) for _ in range(n_envs)]
    if kind == "subproc" or (kind == "auto" and n_envs > 1):
        return SubprocVecEnv(fns, start_method=start_method)
    return DummyVecEnv(fns)


@dataclass
class TrainingEnvs:
    """The training envs and the evaluation env of a run (wrappers replace them in place).

    Example:
        >>> envs = TrainingEnvs.open(TrainConfig(n_envs=1, image_size=48))  # doctest: +SKIP
        >>> envs.close()  # doctest: +SKIP
    """

    train: VecEnv
    eval: VecEnv

    @classmethod
    def open(cls, cfg: TrainConfig) -> TrainingEnvs:
        """``cfg.n_envs`` training envs (with pose labels for ``aux_loss``, the scripted
        expert for ``bc``), one eval env."""
        env_kwargs: dict[str, Any] = {
            "image_size": cfg.image_size,
            "randomization": cfg.randomization,
            "labels": "pose" if cfg.aux_loss else "none",
        }
        if cfg.scene is not None:
            env_kwargs["scene"] = cfg.scene
        venv = make_vec_env(
            cfg.env_id, env_kwargs, cfg.n_envs, cfg.vec_env, cfg.start_method, cfg.bc.steps > 0
        )
        eval_env = DummyVecEnv(
            [functools.partial(make_env, cfg.env_id, {**env_kwargs, "labels": "none"})]
        )
        return cls(venv, eval_env)

    def close(self) -> None:
        """Close both; after Ctrl-C the workers may already be gone."""
        close_quietly(self.train)
        close_quietly(self.eval)


def close_quietly(venv: VecEnv) -> None:
    """Close ``venv``; after Ctrl-C its workers may already be gone (their pipes broken)."""
    try:
        venv.close()
    except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
        logger.debug("closing %s: %s", type(venv).__name__, exc)
