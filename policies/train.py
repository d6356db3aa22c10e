"""``train(...)``: PPO/SAC from pixels with the shared perception encoder; writes a run folder.

RUN/ holds::

    bundle/            the policy bundle (see sim2real.policies.bundle): what deployment loads
    config.json        the TrainConfig used (plus what "auto" resolved to)
    eval.json          success-rate curve: [{timesteps, success_rate, mean_reward, ...}]
    summary.json       env steps (reached and budgeted), why training stopped, wall time
                       (evaluations included), evaluation time, env steps/s (evaluations
                       excluded, behaviour cloning's steps included), final success rate,
                       behaviour cloning's env steps and seconds (``bc``)
    bc.json            with ``bc.steps``: the behaviour-cloning rounds before RL (see
                       sim2real.policies.bc)
    monitor.csv        VecMonitor episode log
    tb/                TensorBoard logs
    checkpoints/       step_XXXXXXXX/ bundles (with checkpoint_every > 0)
    resume/            the training state (every resume_every env steps and when training
                       stops): ``resume_training(RUN)`` / ``sim2real train --resume RUN`` go on
                       from it (see sim2real.policies.resume)
    sb3_model.zip      SB3's own save (with save_sb3; pickled: not for deployment)

Envs step in ``SubprocVecEnv`` workers (one PyBullet client each, ``forkserver`` or ``spawn``),
always on CPU; the encoder and the policy run on ``device`` (CUDA when ``auto`` finds one).
Training stops at ``steps``, at the ``minutes`` wall-clock limit, or on Ctrl-C / SIGTERM
(``KeyboardInterrupt``); in every case the bundle and summary are written for the step reached
(``summary["stopped"]`` says which), and an interrupt is then re-raised. A run killed outright
(power cut, OOM) keeps its last ``resume/`` state; ``resume_training(RUN, steps=..., minutes=...)``
continues any stopped run toward its (or a new) step budget, appending to eval.json and
monitor.csv; summary.json then covers all sessions.
Workers start a fresh interpreter that imports the main module, so a script calling
``train(..., n_envs > 1)`` needs the ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import VecMonitor

from sim2real.atomic import write_json
from sim2real.errors import ConfigError
from sim2real.perception.encoder import Encoder
from sim2real.policies.augment import RandomShift
from sim2real.policies.bundle import save_bundle
from sim2real.policies.callbacks import (
    AuxPositionLoss,
    BundleCheckpoint,
    RandomizationCurriculum,
    ResumeCheckpoint,
    SuccessRateEval,
    TqdmProgress,
    WallClockStop,
)
from sim2real.policies.config import (
    RESUME_MAY_CHANGE,
    EncoderSource,
    TrainConfig,
    encoder_source,
    make_config,
    resolve_cache,
)
from sim2real.policies.contract import build_contract
from sim2real.policies.extractor import (
    FrozenFeatures,
    build_encoder,
    encoded_dim,
    position_available,
)
from sim2real.policies.models import (
    actor_head_from_model,
    build_model,
    policy_extractor,
    trained_encoder,
)
from sim2real.policies.resume import load_resume_state, save_resume_state
from sim2real.policies.run_folder import (
    merge_monitor,
    monitor_rows,
    prepare_run_folder,
    set_aside_monitor,
)
from sim2real.policies.vec_env import TrainingEnvs

logger = logging.getLogger(__name__)


def train(
    env_id: str,
    encoder: str | Path | None,
    out: str | Path,
    *,
    config: TrainConfig | None = None,
    resume: bool = False,
    **options: Any,
) -> Path:
    """Train a PPO/SAC policy from pixels on a ``Sim2Real/*`` env and write ``out``.

    Steps: prepare the run folder, build the encoder and the envs, build the model (and load
    the resume state), learn, write the bundle, resume state and summary.

    Args:
        env_id: gymnasium id.
        encoder: encoder checkpoint folder; ``None`` only for ``scratch`` (uses ``backbone``).
        out: run folder to write (see the module docstring).
        config: the run's :class:`~sim2real.policies.config.TrainConfig` (default: its
            defaults); ``env_id``, ``encoder`` and ``options`` replace its fields.
        resume: go on from ``out/resume`` (same configuration as ``out/config.json`` except
            ``steps``, ``minutes`` and the fields in ``RESUME_MAY_CHANGE``); see
            :func:`resume_training`, which reads the configuration for you.
        **options: any :class:`~sim2real.policies.config.TrainConfig` field, e.g.
            ``algo`` (``ppo`` or ``sac``), ``steps`` (env steps in total, all envs),
            ``n_envs``, ``mode`` (``frozen``, ``finetune`` or ``scratch``), ``seed`` (of
            everything: SB3, envs, augmentation, evaluation episodes).

    Returns:
        The run folder.

    Raises:
        ConfigError: an invalid option, or (resume) a configuration other than the run's or a
            run already at ``steps``.
        CheckpointError: (resume) no resume state in ``out``, or one that does not fit.

    Example:
        >>> run = train("Sim2Real/ReachCube-v0", "runs/reach/encoder", "runs/ppo",
        ...             algo="sac", steps=100_000, seed=1)  # doctest: +SKIP
        >>> encoder, actor, contract = load_bundle(run / "bundle")  # doctest: +SKIP
    """
    cfg = make_config(
        config, env_id=env_id, encoder=None if encoder is None else str(encoder), **options
    )
    run = Path(out)
    state_dir = prepare_run_folder(cfg, run, resume=resume)
    source = encoder_source(cfg)
    encoder_model = build_encoder(source)
    use_position = _resolve_use_position(cfg, encoder_model)
    envs = TrainingEnvs.open(cfg)
    interrupted = False
    try:
        session = _start_session(cfg, run, state_dir, envs, source, encoder_model, use_position)
        if cfg.bc.steps and state_dir is None:
            session.clone(envs)
        interrupted = session.learn()
        session.finish(interrupted)
    finally:
        envs.close()
        if state_dir is not None:
            merge_monitor(run)
    if interrupted:
        raise KeyboardInterrupt
    return run


def _resolve_use_position(cfg: TrainConfig, encoder: Encoder) -> bool:
    """``use_position`` "auto": when the encoder predicts a position and it is not trained
    from scratch without the auxiliary loss."""
    if cfg.use_position is not None:
        return cfg.use_position
    return position_available(encoder) and (cfg.mode != "scratch" or cfg.aux_loss)


@dataclass(frozen=True)
class BundleWriter:
    """Writes the run's bundle (encoder, actor, contract) to a folder: at the end, and for
    ``checkpoint_every``."""

    encoder: Encoder
    model: BaseAlgorithm
    contract: dict[str, Any]

    def __call__(self, path: Path) -> Path:
        return save_bundle(path, self.encoder, actor_head_from_model(self.model), self.contract)


def _start_session(
    cfg: TrainConfig,
    run: Path,
    state_dir: Path | None,
    envs: TrainingEnvs,
    source: EncoderSource,
    encoder_model: Encoder,
    use_position: bool,
) -> _Session:
    """Wrap the envs, write ``config.json``, build the model (from the resume state when
    resuming) and its evaluator."""
    dim = encoded_dim(encoder_model, cfg.pool, use_position)
    cache = resolve_cache(cfg, dim, envs.train.observation_space["image"].shape)
    device = get_device(cfg.device)
    features = {"encoder": encoder_model, "pool": cfg.pool, "use_position": use_position}
    _wrap_envs(envs, run, state_dir, {**features, "device": device} if cache else None)
    resolved = {"use_position": use_position, "cache_features": cache, "device": str(device)}
    write_json(run / "config.json", {**cfg.model_dump(mode="json"), "resolved": resolved})
    logger.info("training %s/%s on %s: %s", cfg.algo, cfg.mode, device, resolved)
    model = build_model(
        envs.train,
        None if cache else source,
        make_config(cfg, use_position=use_position),
        tensorboard_log=str(run / "tb") if cfg.tensorboard else None,
    )
    bundle_encoder = encoder_model if cache else trained_encoder(model)
    assert bundle_encoder is not None
    pooled = dim - 3 * use_position
    contract = build_contract(cfg, envs.eval.unwrapped.envs[0], encoder_model, pooled, use_position)
    contract["features"]["cached_during_training"] = cache
    bundle = BundleWriter(bundle_encoder, model, contract)
    before, history = _restore(cfg, run, state_dir, model)
    evaluator = SuccessRateEval(
        envs.eval,
        cfg.eval_every,
        cfg.eval_episodes,
        cfg.seed + 10_000,
        run / "eval.json",
        history=history,
        wall_offset=before["wall_s"],
    )
    return _Session(cfg, run, model, evaluator, bundle, before, resumed=state_dir is not None)


def _wrap_envs(
    envs: TrainingEnvs, run: Path, state_dir: Path | None, features: dict[str, Any] | None
) -> None:
    """Cache frozen features (``features``: :class:`FrozenFeatures`' arguments) and log the
    episodes to ``monitor.csv`` (after setting the earlier sessions' aside when resuming)."""
    if features is not None:
        envs.train = FrozenFeatures(envs.train, **features)
        envs.eval = FrozenFeatures(envs.eval, **features)
    if state_dir is not None:
        set_aside_monitor(run, state_dir)
    envs.train = VecMonitor(envs.train, str(run / "monitor.csv"))
    envs.eval = VecMonitor(envs.eval)


def _restore(
    cfg: TrainConfig, run: Path, state_dir: Path | None, model: BaseAlgorithm
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """The earlier sessions' totals and evaluation curve; loads the resume state into
    ``model`` and reseeds it for the steps from there (nothing for a fresh run)."""
    before: dict[str, Any] = {"wall_s": 0.0, "eval_s": 0.0, "train_s": 0.0, "sessions": 0}
    history: list[dict[str, float]] = []
    if state_dir is None:
        return before, history
    before.update(load_resume_state(model, state_dir))
    if model.num_timesteps >= cfg.steps:
        raise ConfigError(
            f"{run} is already at {model.num_timesteps} env steps (steps={cfg.steps}): "
            "pass a larger steps to train further"
        )
    model.set_random_seed(cfg.seed + model.num_timesteps)
    for module in model.policy.modules():
        if isinstance(module, RandomShift):
            module.generator.manual_seed(cfg.seed + model.num_timesteps)
    if (run / "eval.json").is_file():
        history = json.loads((run / "eval.json").read_text())
    return before, history


class _Session:
    """One training session of a run: learns from the step reached, then writes the bundle,
    the resume state and ``summary.json`` (totals over every session)."""

    def __init__(
        self,
        cfg: TrainConfig,
        run: Path,
        model: BaseAlgorithm,
        evaluator: SuccessRateEval,
        bundle: BundleWriter,
        before: dict[str, Any],
        *,
        resumed: bool,
    ) -> None:
        self.cfg, self.run, self.model = cfg, run, model
        self.evaluator, self.bundle, self.before, self.resumed = evaluator, bundle, before, resumed
        self.start_steps = int(model.num_timesteps)
        self.timed_out = False
        self.start = time.perf_counter()
        self.bc: dict[str, Any] | None = None

    def clone(self, envs: TrainingEnvs) -> None:
        """Behaviour cloning before RL (``cfg.bc``) on the training envs, under the episode
        log (``monitor.csv`` keeps RL's episodes only); writes ``RUN/bc.json``."""
        from sim2real.policies.bc import warm_start

        venv = envs.train.venv if isinstance(envs.train, VecMonitor) else envs.train
        self.bc = warm_start(self.model, venv, self.cfg.bc, seed=self.cfg.seed)
        write_json(self.run / "bc.json", self.bc)

    def totals(self) -> dict[str, Any]:
        """Wall, evaluation and training time, sessions and episodes, this one included."""
        wall = time.perf_counter() - self.start
        before, eval_s = self.before, self.evaluator.eval_s
        return {
            "wall_s": before["wall_s"] + wall,
            "eval_s": before["eval_s"] + eval_s,
            "train_s": before["train_s"] + wall - eval_s,
            "sessions": before["sessions"] + 1,
            "monitor_rows": monitor_rows(self.run),
        }

    def save_state(self) -> Path:
        """Write ``RUN/resume`` (the model, optimiser, replay buffer and the totals)."""
        return save_resume_state(self.model, self.run / "resume", self.totals())

    def learn(self) -> bool:
        """Train up to ``steps`` (or the time limit); ``True`` when interrupted (Ctrl-C,
        SIGTERM)."""
        cfg = self.cfg
        callbacks = _callbacks(cfg, self.model, self.evaluator, self.bundle, self.run)
        if cfg.resume_every:
            callbacks.append(ResumeCheckpoint(self.save_state, cfg.resume_every))
        interrupted = False
        try:
            with _sigterm_as_interrupt():
                self.model.learn(
                    cfg.steps - self.start_steps,
                    callback=CallbackList(callbacks),
                    tb_log_name="run",
                    reset_num_timesteps=not self.resumed,
                )
        except KeyboardInterrupt:
            interrupted = True
            logger.warning("interrupted at %d env steps: saving the run", self.model.num_timesteps)
        self.timed_out = any(isinstance(c, WallClockStop) and c.stopped for c in callbacks)
        return interrupted

    def finish(self, interrupted: bool) -> None:
        """Write the bundle, the resume state, SB3's zip (``save_sb3``) and the summary."""
        total = self.totals()
        self.bundle(self.run / "bundle")
        self.save_state()
        if self.cfg.save_sb3:
            self.model.save(self.run / "sb3_model.zip")
        summary = self.summary(total, interrupted)
        write_json(self.run / "summary.json", summary)
        logger.info(
            "trained %d steps in %.0f s (stopped: %s); bundle in %s",
            self.model.num_timesteps,
            summary["wall_s"],
            summary["stopped"],
            self.run,
        )

    def summary(self, total: dict[str, Any], interrupted: bool) -> dict[str, Any]:
        """``summary.json``: steps reached and budgeted, why it stopped, times, success."""
        steps = self.model.num_timesteps
        bc_steps = self.bc["env_steps"] if self.bc else 0
        last = self.evaluator.history[-1] if self.evaluator.history else {}
        stopped = "interrupted" if interrupted else "time limit" if self.timed_out else "budget"
        return {
            "env_steps": int(steps),
            "steps_budget": self.cfg.steps,
            "stopped": stopped,
            "wall_s": total["wall_s"],
            "eval_s": total["eval_s"],
            "env_steps_per_s": (steps + bc_steps) / max(total["train_s"], 1e-9),
            "sessions": total["sessions"],
            "resumed_from_step": self.start_steps if self.resumed else None,
            "final_success_rate": last.get("success_rate"),
            "final_eval_step": last.get("timesteps"),
            "bc_env_steps": bc_steps,
            "bc_s": self.bc["wall_s"] if self.bc else 0.0,
        }


def resume_training(out: str | Path, **changes: Any) -> Path:
    """Go on training the run in ``out`` from its ``resume/`` state, with its own
    configuration (``config.json``) and the ``changes`` allowed by ``RESUME_MAY_CHANGE``.

    A larger ``steps`` stretches what is scheduled over the budget from there on (SB3's
    learning-rate and clip schedules, ``lr_decay``, the curriculum ramp when
    ``curriculum_steps`` is unset, SAC's default buffer size); ``minutes`` limits this session.

    Raises:
        ConfigError: no config.json in ``out``, or a change to another field.
        CheckpointError: no resume state in ``out``.

    Example:
        >>> resume_training("runs/ppo", steps=200_000, minutes=60)  # doctest: +SKIP
    """
    run = Path(out)
    if not (run / "config.json").is_file():
        raise ConfigError(f"resume: {run / 'config.json'} not found (is {run} a train run?)")
    saved = json.loads((run / "config.json").read_text())
    saved.pop("resolved", None)
    other = sorted(set(changes) - RESUME_MAY_CHANGE)
    if other:
        raise ConfigError(
            f"resume: {other} cannot change in a resumed run; expected only "
            f"{sorted(RESUME_MAY_CHANGE)}"
        )
    options = {**saved, **changes}
    return train(options.pop("env_id"), options.pop("encoder"), run, resume=True, **options)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (``kill PID``, a batch scheduler's stop) raises
    ``KeyboardInterrupt`` as Ctrl-C does, so a killed run still saves its bundle and summary."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _callbacks(
    cfg: TrainConfig, model: Any, evaluator: SuccessRateEval, save: Any, run: Path
) -> list[BaseCallback]:
    callbacks: list[BaseCallback] = [evaluator]
    if cfg.progress_bar:
        callbacks.append(TqdmProgress(cfg.steps, desc=f"{cfg.algo}/{cfg.mode}"))
    if cfg.checkpoint_every:
        callbacks.append(BundleCheckpoint(save, run / "checkpoints", cfg.checkpoint_every))
    if cfg.minutes is not None:
        callbacks.append(WallClockStop(cfg.minutes))
    if cfg.curriculum_start is not None:
        ramp = cfg.curriculum_steps or max(1, cfg.steps // 2)
        callbacks.append(RandomizationCurriculum(cfg.curriculum_start, None, ramp))
    if cfg.aux_loss:
        seed = cfg.seed + model.num_timesteps  # a resumed run draws other batches
        callbacks.append(AuxPositionLoss(policy_extractor(model), seed=seed))
    return callbacks
