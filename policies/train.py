"""``train(...)``: PPO/SAC from pixels with the shared perception encoder; writes a run folder.

RUN/ holds::

    bundle/            the policy bundle (see sim2real.policies.bundle): what deployment loads
    config.json        the TrainConfig used (plus what "auto" resolved to)
    eval.json          success-rate curve: [{timesteps, success_rate, mean_reward, ...}]
    summary.json       env steps (reached and budgeted), why training stopped, wall time
                       (evaluations included), evaluation time, env steps/s (evaluations
                       excluded), final success rate
    monitor.csv        VecMonitor episode log
    tb/                TensorBoard logs
    checkpoints/       step_XXXXXXXX/ bundles (with checkpoint_every > 0)
    sb3_model.zip      SB3's own save, a convenience to resume (pickled: not for deployment)

Envs step in ``SubprocVecEnv`` workers (one PyBullet client each, ``forkserver`` or ``spawn``),
always on CPU; the encoder and the policy run on ``device`` (CUDA when ``auto`` finds one).
Training stops at ``steps``, at the ``minutes`` wall-clock limit, or on Ctrl-C / SIGTERM
(``KeyboardInterrupt``); in every case the bundle and summary are written for the step reached
(``summary["stopped"]`` says which), and an interrupt is then re-raised.
Workers start a fresh interpreter that imports the main module, so a script calling
``train(..., n_envs > 1)`` needs the ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor

from sim2real.errors import ConfigError
from sim2real.perception.encoder import RESIZE_METHOD, Encoder
from sim2real.policies.bundle import METRE_SCALE, position_route, save_bundle
from sim2real.policies.callbacks import (
    AuxPositionLoss,
    BundleCheckpoint,
    RandomizationCurriculum,
    SuccessRateEval,
    TqdmProgress,
    WallClockStop,
)
from sim2real.policies.extractor import (
    EncoderSource,
    FrozenFeatures,
    build_encoder,
    encoded_dim,
    position_available,
)
from sim2real.policies.models import (
    SAC_DEFAULTS,
    actor_head_from_model,
    build_model,
    policy_extractor,
    trained_encoder,
)

logger = logging.getLogger(__name__)


class TrainConfig(BaseModel):
    """Everything ``train`` needs; validated at construction (unknown keys are errors).

    ``None`` means "auto", resolved by :func:`train` and written to ``RUN/config.json``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    env_id: str = "Sim2Real/ReachCube-v0"
    encoder: str | None = Field(None, description="encoder checkpoint folder")
    algo: Literal["ppo", "sac"] = "ppo"
    steps: int = Field(100_000, gt=0, description="env steps")
    minutes: float | None = Field(
        None, gt=0, description="wall-clock limit: stop early (saving everything) once reached"
    )
    n_envs: int = Field(2, ge=1)
    mode: Literal["frozen", "finetune", "scratch"] = "frozen"
    seed: int = 0
    backbone: str = Field("nature_cnn", description="scratch encoder when encoder is None")
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)
    image_size: int | tuple[int, int] = 84
    randomization: str = "default"
    device: str = "auto"
    pool: Literal["mean", "flatten"] = "mean"
    use_position: bool | None = None
    trunk_dim: int = Field(256, ge=0, description="0: policy reads position + proprio only")
    metre_scale: float = Field(METRE_SCALE, gt=0)
    hidden: tuple[int, ...] = (256, 256)
    encoder_lr_scale: float = Field(0.1, gt=0.0)
    lr_decay: float = Field(1.0, gt=0.0, le=1.0)
    augment_pad: int = Field(0, ge=0, description="DrQ random shift in pixels, 0: off")
    cache_features: bool | None = None
    aux_loss: bool = False
    curriculum_start: float | None = Field(None, ge=0.0, le=1.0)
    curriculum_steps: int | None = Field(None, gt=0)
    eval_every: int = Field(10_000, ge=0)
    eval_episodes: int = Field(10, gt=0)
    checkpoint_every: int = Field(0, ge=0)
    save_sb3: bool = True
    vec_env: Literal["auto", "subproc", "dummy"] = "auto"
    start_method: Literal["forkserver", "spawn"] = "forkserver"
    progress_bar: bool = True
    tensorboard: bool = True
    algo_kwargs: dict[str, Any] = Field(default_factory=dict)


def make_env(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
    """Create one env (in a worker process: registers ``Sim2Real/*`` first)."""
    import sim2real.envs  # noqa: F401  (registers the ids in spawned workers)

    return gym.make(env_id, **env_kwargs)


def make_vec_env(
    env_id: str,
    env_kwargs: dict[str, Any],
    n_envs: int,
    kind: str = "auto",
    start_method: str = "forkserver",
) -> VecEnv:
    """``n_envs`` envs, each with its own PyBullet client (``SubprocVecEnv`` when > 1).

    Example:
        >>> venv = make_vec_env("Sim2Real/ReachCube-v0", {"image_size": 84}, 2)  # doctest: +SKIP
    """
    fns = [functools.partial(make_env, env_id, dict(env_kwargs)) for _ in range(n_envs)]
    if kind == "subproc" or (kind == "auto" and n_envs > 1):
        return SubprocVecEnv(fns, start_method=start_method)
    return DummyVecEnv(fns)


def _encoder_source(cfg: TrainConfig) -> EncoderSource:
    if cfg.mode in ("frozen", "finetune"):
        if cfg.encoder is None:
            raise ConfigError(f"mode={cfg.mode!r} needs an encoder checkpoint (encoder=None)")
        return str(cfg.encoder)
    if cfg.encoder is not None:
        return {"path": str(cfg.encoder), "reinit": True}
    size = cfg.image_size if isinstance(cfg.image_size, tuple) else (cfg.image_size,) * 2
    return {
        "backbone": cfg.backbone,
        "backbone_kwargs": dict(cfg.backbone_kwargs),
        "input_size": list(size),
        "heads": {},
        "pretrained": False,
    }


def build_contract(
    cfg: TrainConfig, env: gym.Env, encoder: Encoder, pooled_dim: int, use_position: bool
) -> dict[str, Any]:
    """The observation/action contract of a run (``actor`` is added by ``save_bundle``)."""
    base = env.unwrapped
    space = base.observation_space
    n_joints = space["proprio"].shape[0] - 3
    encoded = [{"name": "encoder", "size": pooled_dim, "pool": cfg.pool}]
    policy_input = [{"name": "trunk", "size": cfg.trunk_dim}]
    if use_position and position_route(encoder) == "keypoint_relative":
        pos = {"name": "position", "size": 3, "frame": "end_effector", "units": "m"}
        pos["route"] = "keypoint_relative"
        encoded.append(pos)
        policy_input.append(pos)
    elif use_position:
        head = encoder.heads["position"]
        pos = {"name": "position", "size": 3, "frame": head.frame, "units": head.units}
        encoded.append(pos)
        policy_input.append(pos)
    policy_input.append({"name": "proprio", "size": n_joints + 3})
    return {
        "algo": cfg.algo,
        "mode": cfg.mode,
        "env_id": cfg.env_id,
        "env_kwargs": {"image_size": cfg.image_size, "randomization": cfg.randomization},
        "observation": {
            "image": {
                "key": "image",
                "shape": list(space["image"].shape),
                "dtype": "uint8",
                "layout": "CHW",
                "colour": "RGB",
                "range": [0, 255],
            },
            "proprio": {
                "key": "proprio",
                "shape": list(space["proprio"].shape),
                "dtype": "float32",
                "names": [f"joint_{i}" for i in range(n_joints)] + ["ee_x", "ee_y", "ee_z"],
                "units": ["rad"] * n_joints + ["m"] * 3,
                "description": "arm joint positions, then end-effector position minus robot "
                "base position (world axes)",
            },
        },
        "preprocessing": {**encoder.preprocessing.to_dict(), "resize_method": RESIZE_METHOD},
        "features": {"pool": cfg.pool, "encoded": encoded, "policy_input": policy_input},
        "action": {
            "shape": list(base.action_space.shape),
            "dtype": "float32",
            "low": base.action_space.low.tolist(),
            "high": base.action_space.high.tolist(),
            "meaning": "end-effector Cartesian delta; the robot moves action * max_step_m",
            "max_step_m": float(base.robot.cfg.max_step_m),
            "postprocess": "tanh then rescale" if cfg.algo == "sac" else "clip",
        },
    }


def train(
    env_id: str,
    encoder: str | Path | None,
    out: str | Path,
    algo: str = "ppo",
    steps: int = 100_000,
    n_envs: int = 2,
    mode: str = "frozen",
    seed: int = 0,
    **options: Any,
) -> Path:
    """Train a PPO/SAC policy from pixels on a ``Sim2Real/*`` env and write ``out``.

    Args:
        env_id: gymnasium id.
        encoder: encoder checkpoint folder; ``None`` only for ``scratch`` (uses ``backbone``).
        out: run folder to write (see the module docstring).
        algo: ``ppo`` or ``sac``.
        steps: env steps in total (all envs).
        n_envs: parallel envs.
        mode: ``frozen``, ``finetune`` or ``scratch``.
        seed: seed of everything (SB3, envs, augmentation, evaluation episodes).
        **options: any other :class:`TrainConfig` field.

    Returns:
        The run folder.

    Raises:
        ConfigError: an invalid option.

    Example:
        >>> run = train("Sim2Real/ReachCube-v0", "runs/reach/encoder", "runs/ppo",
        ...             steps=100_000)  # doctest: +SKIP
        >>> encoder, actor, contract = load_bundle(run / "bundle")  # doctest: +SKIP
    """
    try:
        cfg = TrainConfig(
            env_id=env_id,
            encoder=None if encoder is None else str(encoder),
            algo=algo,
            steps=steps,
            n_envs=n_envs,
            mode=mode,
            seed=seed,
            **options,
        )
    except ValidationError as exc:
        raise ConfigError(f"train: invalid configuration:\n{exc}") from exc
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    source = _encoder_source(cfg)
    encoder_model = build_encoder(source)
    use_position = cfg.use_position
    if use_position is None:
        use_position = position_available(encoder_model) and (cfg.mode != "scratch" or cfg.aux_loss)
    env_kwargs: dict[str, Any] = {
        "image_size": cfg.image_size,
        "randomization": cfg.randomization,
        "labels": "pose" if cfg.aux_loss else "none",
    }
    interrupted = False
    venv = make_vec_env(cfg.env_id, env_kwargs, cfg.n_envs, cfg.vec_env, cfg.start_method)
    eval_env = DummyVecEnv(
        [functools.partial(make_env, cfg.env_id, {**env_kwargs, "labels": "none"})]
    )
    try:
        image_shape = venv.observation_space["image"].shape
        dim = encoded_dim(encoder_model, cfg.pool, use_position)
        cache = _resolve_cache(cfg, dim, image_shape)
        device = get_device(cfg.device)
        if cache:
            venv = FrozenFeatures(venv, encoder_model, cfg.pool, use_position, device=device)
            eval_env = FrozenFeatures(
                eval_env, encoder_model, cfg.pool, use_position, device=device
            )
        venv = VecMonitor(venv, str(run / "monitor.csv"))
        eval_env = VecMonitor(eval_env)
        resolved = {"use_position": use_position, "cache_features": cache, "device": str(device)}
        (run / "config.json").write_text(
            json.dumps({**cfg.model_dump(mode="json"), "resolved": resolved}, indent=2) + "\n"
        )
        logger.info("training %s/%s on %s: %s", cfg.algo, cfg.mode, device, resolved)
        model = build_model(
            cfg.algo,
            venv,
            None if cache else source,
            cfg.mode,
            seed=cfg.seed,
            device=cfg.device,
            pool=cfg.pool,
            use_position=use_position,
            trunk_dim=cfg.trunk_dim,
            metre_scale=cfg.metre_scale,
            hidden=cfg.hidden,
            encoder_lr_scale=cfg.encoder_lr_scale,
            lr_decay=cfg.lr_decay,
            augment_pad=cfg.augment_pad,
            tensorboard_log=str(run / "tb") if cfg.tensorboard else None,
            algo_kwargs=_algo_kwargs(cfg),
        )
        bundle_encoder = encoder_model if cache else trained_encoder(model)
        assert bundle_encoder is not None
        pooled = dim - 3 * use_position
        contract = build_contract(
            cfg, eval_env.unwrapped.envs[0], encoder_model, pooled, use_position
        )
        contract["features"]["cached_during_training"] = cache

        def save(path: Path) -> Path:
            return save_bundle(path, bundle_encoder, actor_head_from_model(model), contract)

        evaluator = SuccessRateEval(
            eval_env, cfg.eval_every, cfg.eval_episodes, cfg.seed + 10_000, run / "eval.json"
        )
        callbacks = _callbacks(cfg, model, evaluator, save, run)
        start = time.perf_counter()
        try:
            with _sigterm_as_interrupt():
                model.learn(cfg.steps, callback=CallbackList(callbacks), tb_log_name="run")
        except KeyboardInterrupt:
            interrupted = True
            logger.warning("interrupted at %d env steps: saving the run", model.num_timesteps)
        wall = time.perf_counter() - start
        save(run / "bundle")
        if cfg.save_sb3:
            model.save(run / "sb3_model.zip")
        timed_out = any(isinstance(c, WallClockStop) and c.stopped for c in callbacks)
        last = evaluator.history[-1] if evaluator.history else {}
        summary = {
            "env_steps": int(model.num_timesteps),
            "steps_budget": cfg.steps,
            "stopped": "interrupted" if interrupted else "time limit" if timed_out else "budget",
            "wall_s": wall,
            "eval_s": evaluator.eval_s,
            "env_steps_per_s": model.num_timesteps / max(wall - evaluator.eval_s, 1e-9),
            "final_success_rate": last.get("success_rate"),
            "final_eval_step": last.get("timesteps"),
        }
        _write_json(run / "summary.json", summary)
        logger.info(
            "trained %d steps in %.0f s (stopped: %s); bundle in %s",
            model.num_timesteps,
            wall,
            summary["stopped"],
            run,
        )
    finally:
        _close_quietly(venv)
        _close_quietly(eval_env)
    if interrupted:
        raise KeyboardInterrupt
    return run


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


def _write_json(path: Path, value: Any) -> None:
    """Write ``value`` to ``path`` atomically (a killed run leaves the old file or the new)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)


def _close_quietly(venv: VecEnv) -> None:
    """Close ``venv``; after Ctrl-C its workers may already be gone (their pipes broken)."""
    try:
        venv.close()
    except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
        logger.debug("closing %s: %s", type(venv).__name__, exc)


def _resolve_cache(cfg: TrainConfig, dim: int, image_shape: tuple[int, ...]) -> bool:
    """Cache frozen features per transition instead of images when that is cheaper.

    PPO: always with a frozen encoder (saves ``n_epochs`` encoder passes per sample). SAC:
    when ``4 * dim`` bytes of float32 features are at most the uint8 image's bytes (the replay
    buffer keeps observation and next observation), which also removes every encoder pass
    from the gradient steps. Never with augmentation (a shift must apply to pixels).
    """
    possible = cfg.mode == "frozen" and cfg.augment_pad == 0 and not cfg.aux_loss
    if cfg.cache_features is None:
        cheaper = cfg.algo == "ppo" or 4 * dim <= int(np.prod(image_shape))
        return possible and cheaper
    if cfg.cache_features and not possible:
        raise ConfigError(
            "cache_features=True needs mode='frozen', augment_pad=0 and aux_loss=False; got "
            f"mode={cfg.mode!r}, augment_pad={cfg.augment_pad}, aux_loss={cfg.aux_loss}"
        )
    return cfg.cache_features


def _algo_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    kwargs = dict(cfg.algo_kwargs)
    if cfg.algo == "sac":
        kwargs.setdefault("buffer_size", min(SAC_DEFAULTS["buffer_size"], cfg.steps))
        kwargs.setdefault("learning_starts", min(SAC_DEFAULTS["learning_starts"], cfg.steps // 10))
    return kwargs


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
        callbacks.append(AuxPositionLoss(policy_extractor(model), seed=cfg.seed))
    return callbacks
