"""Training callbacks: success-rate evaluation, bundle checkpoints, randomisation curriculum,
a wall-clock limit, a tqdm progress bar and the auxiliary position loss.

All schedules count env steps (``model.num_timesteps``), not callback calls, so they mean the
same whatever the number of envs.

Example:
    >>> from sim2real.policies.callbacks import RandomizationCurriculum
    >>> cb = RandomizationCurriculum(start=0.0, ramp_steps=50_000)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv
from tqdm.auto import tqdm

from sim2real.atomic import write_json
from sim2real.errors import ConfigError
from sim2real.policies.bundle import position_head_name
from sim2real.policies.extractor import EncoderExtractor, images_to_input

logger = logging.getLogger(__name__)

#: Position head frame -> the env's ``info["labels"]`` key.
LABEL_KEYS = {"robot_base": "position_base", "world": "position_world", "camera": "position_camera"}


class SuccessRateEval(BaseCallback):
    """Evaluate the deterministic policy every ``eval_every`` env steps; log success rate.

    The eval env is re-seeded before each evaluation, so every point of the curve is measured
    on the same episodes. Evaluates at the start (step 0) and at the end too. Each result goes
    to TensorBoard (``eval/success_rate``, ``eval/mean_reward``) and to ``history_path`` (JSON
    list of ``{timesteps, success_rate, mean_reward, mean_length, wall_s}``).

    Args:
        eval_env: VecEnv (observations as in training; wrapped in ``VecMonitor``).
        eval_every: env steps between evaluations (0: start and end only).
        n_episodes: episodes per evaluation.
        seed: seed of the evaluation episodes.
        history_path: JSON file to (re)write after each evaluation, or ``None``.
        history: earlier evaluations of a resumed run (kept up to the step it resumes from;
            with any, the start is not evaluated again).
        wall_offset: seconds already spent by the earlier sessions of a resumed run (added to
            each new evaluation's ``wall_s``).

    Example:
        >>> cb = SuccessRateEval(eval_env, eval_every=10_000, n_episodes=20)  # doctest: +SKIP
    """

    def __init__(
        self,
        eval_env: VecEnv,
        eval_every: int = 10_000,
        n_episodes: int = 10,
        seed: int = 10_000,
        history_path: str | Path | None = None,
        history: list[dict[str, float]] | None = None,
        wall_offset: float = 0.0,
    ) -> None:
        super().__init__()
        self.eval_env, self.eval_every, self.n_episodes = eval_env, int(eval_every), n_episodes
        self.seed = seed
        self.history_path = Path(history_path) if history_path else None
        self.history: list[dict[str, float]] = list(history or [])
        self.wall_offset = float(wall_offset)
        self._next = 0
        self._start = 0.0
        self.eval_s = 0.0  # wall time spent evaluating (this session)

    def _on_training_start(self) -> None:
        self._start = time.perf_counter()
        self.history = [h for h in self.history if h["timesteps"] <= self.num_timesteps]
        if not self.history:  # a resumed run keeps its grid: no extra point where it resumes
            self.evaluate()
        # the next multiple of eval_every: a resumed run keeps the curve's grid
        every = self.eval_every
        self._next = (self.num_timesteps // every + 1) * every if every else -1

    def _on_step(self) -> bool:
        if self._next >= 0 and self.num_timesteps >= self._next:
            self.evaluate()
            self._next += self.eval_every * max(
                1, (self.num_timesteps - self._next) // self.eval_every + 1
            )
        return True

    def _on_training_end(self) -> None:
        if not self.history or self.history[-1]["timesteps"] != self.num_timesteps:
            self.evaluate()

    def evaluate(self) -> dict[str, float]:
        """Run ``n_episodes`` deterministic episodes now; return and record the result."""
        successes: list[bool] = []
        start = time.perf_counter()

        def on_step(local: dict[str, Any], _: dict[str, Any]) -> None:
            if local["done"]:
                successes.append(bool(local["info"].get("is_success", False)))

        self.eval_env.seed(self.seed)
        rewards, lengths = evaluate_policy(
            self.model,
            self.eval_env,
            n_eval_episodes=self.n_episodes,
            deterministic=True,
            return_episode_rewards=True,
            callback=on_step,
            warn=False,
        )
        result = {
            "timesteps": int(self.num_timesteps),
            "success_rate": float(np.mean(successes)) if successes else 0.0,
            "mean_reward": float(np.mean(rewards)),
            "mean_length": float(np.mean(lengths)),
            "wall_s": time.perf_counter() - self._start + self.wall_offset,
        }
        self.history.append(result)
        self.eval_s += time.perf_counter() - start
        self.logger.record("eval/success_rate", result["success_rate"])
        self.logger.record("eval/mean_reward", result["mean_reward"])
        self.logger.dump(self.num_timesteps)
        logger.info(
            "eval at %d steps: success %.0f%%, return %.2f",
            result["timesteps"],
            100 * result["success_rate"],
            result["mean_reward"],
        )
        if self.history_path is not None:
            write_json(self.history_path, self.history, indent=1)
        return result


class BundleCheckpoint(BaseCallback):
    """Call ``save(folder / f"step_{N:08d}")`` every ``save_every`` env steps.

    Example:
        >>> cb = BundleCheckpoint(save_fn, "RUN/checkpoints", save_every=10_000)  # doctest: +SKIP
    """

    def __init__(self, save: Callable[[Path], Any], folder: str | Path, save_every: int) -> None:
        super().__init__()
        if save_every <= 0:
            raise ConfigError(f"checkpoint save_every must be > 0 env steps, got {save_every}")
        self.save, self.folder, self.save_every = save, Path(folder), int(save_every)
        self._next = self.save_every

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.save_every + 1) * self.save_every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            path = self.folder / f"step_{self.num_timesteps:08d}"
            self.save(path)
            logger.info("checkpoint at %d steps: %s", self.num_timesteps, path)
            while self._next <= self.num_timesteps:
                self._next += self.save_every
        return True


class ResumeCheckpoint(BaseCallback):
    """Call ``save()`` (write the run's resume state) every ``save_every`` env steps.

    Saves at the start of a rollout, after the previous rollout's update, so the state holds
    every step counted so far (nothing half-collected).

    Example:
        >>> cb = ResumeCheckpoint(lambda: None, save_every=10_000)
    """

    def __init__(self, save: Callable[[], Any], save_every: int) -> None:
        super().__init__()
        if save_every <= 0:
            raise ConfigError(f"resume save_every must be > 0 env steps, got {save_every}")
        self.save, self.save_every = save, int(save_every)
        self._next = 0

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.save_every + 1) * self.save_every

    def _on_rollout_start(self) -> None:
        if self.num_timesteps >= self._next:
            self.save()
            self._next = (self.num_timesteps // self.save_every + 1) * self.save_every

    def _on_step(self) -> bool:
        return True


class RandomizationCurriculum(BaseCallback):
    """Ramp the training envs' randomisation ``strength`` linearly from ``start`` to ``end``.

    Sets ``env.unwrapped.rand_cfg = base.with_strength(s)`` in every training env (through
    ``VecEnv.set_attr``); the new strength applies from each env's next redraw (reset). The
    eval env is left alone: it measures the target distribution.

    Args:
        start: strength at step 0.
        end: strength reached after ``ramp_steps``; default: the envs' configured strength.
        ramp_steps: env steps of the ramp.
        update_every: env steps between updates.

    Example:
        >>> cb = RandomizationCurriculum(start=0.0, ramp_steps=50_000)
    """

    def __init__(
        self,
        start: float = 0.0,
        end: float | None = None,
        ramp_steps: int = 50_000,
        update_every: int = 1_000,
    ) -> None:
        super().__init__()
        for name, value in (("start", start), ("end", end)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"curriculum {name}={value}: expected a strength in [0, 1]")
        if ramp_steps <= 0 or update_every <= 0:
            raise ConfigError(
                f"curriculum ramp_steps={ramp_steps}, update_every={update_every}: expected > 0"
            )
        self.start, self.end, self.ramp_steps, self.update_every = (
            start,
            end,
            ramp_steps,
            update_every,
        )
        self._base: Any = None
        self._next = 0
        self.strength = start

    def strength_at(self, timesteps: int) -> float:
        """The scheduled strength after ``timesteps`` env steps."""
        if self.end is not None:
            end = self.end
        else:  # the envs' own strength, known once training starts
            end = self.start if self._base is None else self._base.strength
        frac = min(1.0, timesteps / self.ramp_steps)
        return float(self.start + (end - self.start) * frac)

    def _on_training_start(self) -> None:
        self._base = self.training_env.get_attr("rand_cfg", indices=[0])[0]
        self._apply(self.strength_at(self.num_timesteps))
        self._next = self.num_timesteps + self.update_every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._apply(self.strength_at(self.num_timesteps))
            self._next = self.num_timesteps + self.update_every
        return True

    def _apply(self, strength: float) -> None:
        self.strength = strength
        self.training_env.set_attr("rand_cfg", self._base.with_strength(strength))
        self.logger.record("curriculum/strength", strength)


class WallClockStop(BaseCallback):
    """Stop training once ``minutes`` of wall time have passed since training started.

    Returning ``False`` from ``_on_step`` ends ``model.learn`` the way SB3 ends it at the
    budget: the other callbacks' ``_on_training_end`` still run (the evaluator evaluates at the
    step reached) and ``train`` saves the bundle and summary as after a full run.

    Example:
        >>> cb = WallClockStop(minutes=90)  # doctest: +SKIP
    """

    def __init__(self, minutes: float) -> None:
        super().__init__()
        if minutes <= 0:
            raise ConfigError(f"WallClockStop needs minutes > 0, got {minutes}")
        self.minutes = float(minutes)
        self.stopped = False
        self._deadline = 0.0

    def _on_training_start(self) -> None:
        self._deadline = time.perf_counter() + 60.0 * self.minutes

    def _on_step(self) -> bool:
        if time.perf_counter() < self._deadline:
            return True
        self.stopped = True
        logger.info(
            "time limit of %g min reached at %d env steps: stopping",
            self.minutes,
            self.num_timesteps,
        )
        return False


class TqdmProgress(BaseCallback):
    """A tqdm bar over env steps (SB3's own bar needs ``rich``, which we do not depend on)."""

    def __init__(self, total: int, desc: str = "train") -> None:
        super().__init__()
        self.total, self.desc = total, desc
        self.bar: Any = None

    def _on_training_start(self) -> None:
        self.bar = tqdm(
            total=self.total,
            initial=self.num_timesteps,  # a resumed run starts where it stopped
            desc=self.desc,
            unit="step",
            dynamic_ncols=True,
        )

    def _on_step(self) -> bool:
        self.bar.update(self.num_timesteps - self.bar.n)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


class AuxPositionLoss(BaseCallback):
    """Auxiliary perception loss during RL: the position head keeps learning from sim labels.

    Hard parameter sharing: the loss trains the same encoder the policy uses (backbone and
    position head), alternating with the RL updates: at the first rollout end (PPO: each
    rollout; SAC: each collection phase) after every ``every`` env steps, ``updates`` Adam steps
    on the head's standardised MSE over a FIFO of recent frames and their ``info["labels"]``
    positions (the envs need ``labels="pose"``).

    Args:
        extractor: the policy's :class:`EncoderExtractor` (mode ``finetune`` or ``scratch``).
        capacity: frames kept.
        batch_size: frames per update.
        updates: Adam steps per round.
        every: env steps between rounds.
        lr: Adam learning rate.
        seed: seed of the batch sampling.

    Example:
        >>> cb = AuxPositionLoss(policy_extractor(model))  # doctest: +SKIP
    """

    def __init__(
        self,
        extractor: EncoderExtractor,
        capacity: int = 2048,
        batch_size: int = 64,
        updates: int = 4,
        every: int = 256,
        lr: float = 1e-4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        encoder = extractor.encoder
        if encoder is None or extractor.mode == "frozen":
            raise ConfigError("aux position loss needs a trainable encoder (finetune or scratch)")
        self.head_name = position_head_name(encoder) or "position"
        if self.head_name not in encoder.heads:
            raise ConfigError(
                f"aux position loss needs a 'position' head; has {list(encoder.heads)}"
            )
        frame = encoder.heads[self.head_name].frame
        if frame not in LABEL_KEYS:
            raise ConfigError(f"position head frame {frame!r}: expected one of {list(LABEL_KEYS)}")
        self.extractor, self.encoder, self.label_key = extractor, encoder, LABEL_KEYS[frame]
        self.capacity, self.batch_size, self.updates = capacity, batch_size, updates
        self.every, self._next = every, every
        params = [p for p in encoder.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=lr)
        self.rng = np.random.default_rng(seed)
        self.images: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []

    def _on_step(self) -> bool:
        new_obs, infos, dones = self.locals["new_obs"], self.locals["infos"], self.locals["dones"]
        for i, info in enumerate(infos):
            labels = info.get("labels")
            if labels is None:
                continue
            image = info["terminal_observation"]["image"] if dones[i] else new_obs["image"][i]
            self.images.append(np.asarray(image, dtype=np.uint8))
            self.targets.append(np.asarray(labels[self.label_key], dtype=np.float32))
        overflow = len(self.images) - self.capacity
        if overflow > 0:
            del self.images[:overflow], self.targets[:overflow]
        return True

    def _on_rollout_end(self) -> None:
        if len(self.images) < self.batch_size or self.num_timesteps < self._next:
            return
        self._next = self.num_timesteps + self.every
        head = self.encoder.heads[self.head_name]
        was_training = self.extractor.training
        self.extractor.train(True)
        losses = []
        for _ in range(self.updates):
            idx = self.rng.choice(len(self.images), self.batch_size, replace=False)
            device = self.encoder.device
            image = torch.from_numpy(np.stack([self.images[i] for i in idx])).to(device)
            target = torch.from_numpy(np.stack([self.targets[i] for i in idx])).to(device)
            x = images_to_input(self.encoder, image, self.extractor.image_colour)
            pred = head.forward_normalised(self.encoder.backbone(x))
            loss = F.mse_loss(pred.float(), head.normalise(target))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
        self.extractor.train(was_training)
        self.logger.record("aux/position_loss", float(np.mean(losses)))
