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
import functools
import json
import logging
import shutil
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

from sim2real.errors import CheckpointError, ConfigError
from sim2real.perception.encoder import RESIZE_METHOD, Encoder
from sim2real.policies.augment import RandomShift
from sim2real.policies.bundle import METRE_SCALE, position_route, save_bundle
from sim2real.policies.callbacks import (
    AuxPositionLoss,
    BundleCheckpoint,
    RandomizationCurriculum,
    ResumeCheckpoint,
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
from sim2real.policies.resume import find_resume_state, load_resume_state, save_resume_state

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
    resume_every: int = Field(
        10_000, ge=0, description="env steps between resume-state saves (0: only at the stop)"
    )
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
    resume: bool = False,
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
        resume: go on from ``out/resume`` (same configuration as ``out/config.json`` except
            ``steps``, ``minutes`` and the fields in ``RESUME_MAY_CHANGE``); see
            :func:`resume_training`, which reads the configuration for you.
        **options: any other :class:`TrainConfig` field.

    Returns:
        The run folder.

    Raises:
        ConfigError: an invalid option, or (resume) a configuration other than the run's or a
            run already at ``steps``.
        CheckpointError: (resume) no resume state in ``out``, or one that does not fit.

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
    state_dir = _check_resume(cfg, run) if resume else None
    run.mkdir(parents=True, exist_ok=True)
    if state_dir is None:
        _clear_previous_run(run)
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
        monitor = run / "monitor.csv"
        if state_dir is not None:
            _merge_monitor(run)  # a session killed outright may have left one
            if monitor.is_file():
                _truncate_monitor(monitor, _saved_monitor_rows(state_dir))
                monitor.rename(run / "monitor.csv.prev")
        venv = VecMonitor(venv, str(monitor))
        eval_env = VecMonitor(eval_env)
        resolved = {"use_position": use_position, "cache_features": cache, "device": str(device)}
        _write_json(run / "config.json", {**cfg.model_dump(mode="json"), "resolved": resolved})
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

        before: dict[str, Any] = {"wall_s": 0.0, "eval_s": 0.0, "train_s": 0.0, "sessions": 0}
        history: list[dict[str, float]] = []
        if state_dir is not None:
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
        start_steps = int(model.num_timesteps)
        evaluator = SuccessRateEval(
            eval_env,
            cfg.eval_every,
            cfg.eval_episodes,
            cfg.seed + 10_000,
            run / "eval.json",
            history=history,
            wall_offset=before["wall_s"],
        )
        start = time.perf_counter()

        def totals() -> dict[str, Any]:
            wall = time.perf_counter() - start
            return {
                "wall_s": before["wall_s"] + wall,
                "eval_s": before["eval_s"] + evaluator.eval_s,
                "train_s": before["train_s"] + wall - evaluator.eval_s,
                "sessions": before["sessions"] + 1,
                "monitor_rows": _monitor_rows(run),
            }

        def save_state() -> Path:
            return save_resume_state(model, run / "resume", totals())

        callbacks = _callbacks(cfg, model, evaluator, save, run)
        if cfg.resume_every:
            callbacks.append(ResumeCheckpoint(save_state, cfg.resume_every))
        try:
            with _sigterm_as_interrupt():
                model.learn(
                    cfg.steps - start_steps,
                    callback=CallbackList(callbacks),
                    tb_log_name="run",
                    reset_num_timesteps=state_dir is None,
                )
        except KeyboardInterrupt:
            interrupted = True
            logger.warning("interrupted at %d env steps: saving the run", model.num_timesteps)
        total = totals()
        save(run / "bundle")
        save_state()
        if cfg.save_sb3:
            model.save(run / "sb3_model.zip")
        timed_out = any(isinstance(c, WallClockStop) and c.stopped for c in callbacks)
        last = evaluator.history[-1] if evaluator.history else {}
        summary = {
            "env_steps": int(model.num_timesteps),
            "steps_budget": cfg.steps,
            "stopped": "interrupted" if interrupted else "time limit" if timed_out else "budget",
            "wall_s": total["wall_s"],
            "eval_s": total["eval_s"],
            "env_steps_per_s": model.num_timesteps / max(total["train_s"], 1e-9),
            "sessions": total["sessions"],
            "resumed_from_step": start_steps if state_dir is not None else None,
            "final_success_rate": last.get("success_rate"),
            "final_eval_step": last.get("timesteps"),
        }
        _write_json(run / "summary.json", summary)
        logger.info(
            "trained %d steps in %.0f s (stopped: %s); bundle in %s",
            model.num_timesteps,
            summary["wall_s"],
            summary["stopped"],
            run,
        )
    finally:
        _close_quietly(venv)
        _close_quietly(eval_env)
        if state_dir is not None:
            _merge_monitor(run)
    if interrupted:
        raise KeyboardInterrupt
    return run


#: TrainConfig fields a resumed run may change (the rest must match RUN/config.json).
RESUME_MAY_CHANGE = frozenset(
    {"steps", "minutes", "device", "progress_bar", "tensorboard", "resume_every", "save_sb3"}
)


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
    return train(
        options.pop("env_id"),
        options.pop("encoder"),
        run,
        algo=options.pop("algo"),
        steps=options.pop("steps"),
        n_envs=options.pop("n_envs"),
        mode=options.pop("mode"),
        seed=options.pop("seed"),
        resume=True,
        **options,
    )


def _check_resume(cfg: TrainConfig, run: Path) -> Path:
    """The resume state to go on from; the run's config must match ``cfg``."""
    state = find_resume_state(run)
    if state is None:
        raise CheckpointError(
            f"resume: no resume state in {run} (expected {run / 'resume'}/state.json: written "
            "every resume_every env steps and when training stops)"
        )
    if not (run / "config.json").is_file():
        raise CheckpointError(f"resume: {run / 'config.json'} not found beside {state}")
    saved = json.loads((run / "config.json").read_text())
    mine = cfg.model_dump(mode="json")
    differ = {
        k: (saved.get(k), v)
        for k, v in mine.items()
        if k not in RESUME_MAY_CHANGE and saved.get(k) != v
    }
    if differ:
        raise ConfigError(
            f"resume: the configuration differs from {run / 'config.json'} in "
            + ", ".join(f"{k} (run: {a!r}, now: {b!r})" for k, (a, b) in differ.items())
        )
    return state


def _clear_previous_run(run: Path) -> None:
    """Remove what an earlier run in ``run`` left that a new one would not overwrite at once,
    so a new run killed early is never mistaken for the old one (its summary, eval curve or
    resume state)."""
    for name in ("summary.json", "eval.json", "monitor.csv.prev"):
        (run / name).unlink(missing_ok=True)
    for name in ("resume", "resume.old", "resume.tmp"):
        shutil.rmtree(run / name, ignore_errors=True)


def _t_start(header: str) -> float | None:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return float(json.loads(header[1:])["t_start"])
    return None


def _merge_monitor(run: Path) -> None:
    """Append this session's ``monitor.csv`` rows to the earlier sessions' (``.prev``), with
    ``t`` kept relative to the first session's start. A cut-off last row is dropped; a
    ``monitor.csv`` that is already the merge (killed before ``.prev`` went) is kept."""
    prev, cur = run / "monitor.csv.prev", run / "monitor.csv"
    if not prev.is_file():
        return
    lines = prev.read_text().splitlines()
    if cur.is_file():
        new = cur.read_text().splitlines()
        if new and _t_start(new[0]) == _t_start(lines[0]):  # merged already
            prev.unlink()
            return
        shift = 0.0
        if new and _t_start(new[0]) is not None and _t_start(lines[0]) is not None:
            shift = _t_start(new[0]) - _t_start(lines[0])  # type: ignore[operator]
        for row in new[2:]:
            try:
                r, length, t = row.split(",")[:3]
                lines.append(f"{float(r):.6f},{int(length)},{float(t) + shift:.6f}")
            except ValueError:
                logger.warning("%s: dropped a malformed row %r", cur, row)
    tmp = run / "monitor.csv.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(cur)
    prev.unlink()


def _monitor_rows(run: Path) -> int:
    """Episodes logged so far: data rows of ``monitor.csv.prev`` and ``monitor.csv``."""
    rows = 0
    for path in (run / "monitor.csv.prev", run / "monitor.csv"):
        if path.is_file():
            rows += max(0, len(path.read_text().splitlines()) - 2)
    return rows


def _saved_monitor_rows(state: Path) -> int | None:
    extra = json.loads((state / "state.json").read_text()).get("extra", {})
    return extra.get("monitor_rows")


def _truncate_monitor(path: Path, rows: int | None) -> None:
    """Keep the first ``rows`` episodes: those logged after the resume state was saved are
    played again by the resumed run."""
    if rows is None:
        return
    lines = path.read_text().splitlines()
    if len(lines) - 2 > rows:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("\n".join(lines[: 2 + rows]) + "\n")
        tmp.replace(path)


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
        seed = cfg.seed + model.num_timesteps  # a resumed run draws other batches
        callbacks.append(AuxPositionLoss(policy_extractor(model), seed=seed))
    return callbacks
