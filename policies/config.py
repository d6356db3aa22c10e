"""The one configuration of a policy training run: :class:`TrainConfig`.

:func:`sim2real.policies.train.train`, ``sim2real train`` (its flags and ``--set KEY=VALUE``)
and the pipeline's ``policy`` section all build this model, so a new setting is declared here
once and reaches all three (and ``RUN/config.json``).

Example:
    >>> cfg = make_config(mode="scratch", steps=1_000, trunk_dim=8)
    >>> cfg.algo, cfg.steps, cfg.trunk_dim
    ('ppo', 1000, 8)
    >>> make_config(steps=0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sim2real.errors.ConfigError: train: invalid configuration:...
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sim2real.errors import ConfigError

#: An encoder source: a checkpoint folder (str), ``{"path": str, "reinit": True}`` (the
#: checkpoint's architecture, randomly initialised) or ``Encoder(**spec)`` keyword arguments.
EncoderSource = str | Mapping[str, Any]

METRE_SCALE = 10.0
"""Default factor on the metre-valued policy inputs (predicted cube position, end-effector
position): decimetres span about +-5 over a tabletop, like the trunk's tanh features. In
metres (factor 1) PPO learnt to ignore them: moving the predicted position by 10 cm changed
the trained policy's action by 0.001 (see benchmarks/reach_transfer.py in the README)."""


class TrainConfig(BaseModel):
    """Everything ``train`` needs; validated at construction (unknown keys are errors).

    ``None`` means "auto", resolved by :func:`~sim2real.policies.train.train` and written to
    ``RUN/config.json``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    env_id: str = "Sim2Real/ReachCube-v0"
    scene: str | None = Field(
        None,
        description="scene preset or YAML in place of the env id's own "
        "(Sim2Real/Reach-v0 reaches any scene's target); None: the env id's scene",
    )
    encoder: str | None = Field(None, description="encoder checkpoint folder")
    target: str | None = Field(
        None,
        description="the object whose predicted position joins the policy features (an "
        "encoder target, sim2real.perception.targets); None: the encoder's one target",
    )
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


#: TrainConfig fields a resumed run may change (the rest must match RUN/config.json).
RESUME_MAY_CHANGE = frozenset(
    {"steps", "minutes", "device", "progress_bar", "tensorboard", "resume_every", "save_sb3"}
)


def make_config(config: TrainConfig | None = None, **fields: Any) -> TrainConfig:
    """``config`` (default: all defaults) with ``fields`` replaced, validated.

    Raises:
        ConfigError: an unknown field or an invalid value (pydantic's report, every field).
    """
    base = {} if config is None else config.model_dump()
    try:
        return TrainConfig(**{**base, **fields})
    except ValidationError as exc:
        raise ConfigError(f"train: invalid configuration:\n{exc}") from exc


def encoder_source(cfg: TrainConfig) -> EncoderSource:
    """What the run's encoder is built from: the checkpoint, or a fresh ``backbone``."""
    if cfg.mode in ("frozen", "finetune"):
        if cfg.encoder is None:
            raise ConfigError(f"mode={cfg.mode!r} needs an encoder checkpoint (encoder=None)")
        if cfg.target is not None:
            return {"path": str(cfg.encoder), "target": cfg.target}
        return str(cfg.encoder)
    if cfg.encoder is not None and cfg.target is not None:
        return {"path": str(cfg.encoder), "reinit": True, "target": cfg.target}
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


def resolve_cache(cfg: TrainConfig, dim: int, image_shape: tuple[int, ...]) -> bool:
    """Cache frozen features per transition instead of images when that is cheaper.

    PPO: always with a frozen encoder (saves ``n_epochs`` encoder passes per sample). SAC:
    when ``4 * dim`` bytes of float32 features are at most the uint8 image's bytes (the replay
    buffer keeps observation and next observation), which also removes every encoder pass
    from the gradient steps. Never with augmentation (a shift must apply to pixels).
    """
    possible = cfg.mode == "frozen" and cfg.augment_pad == 0 and not cfg.aux_loss
    if cfg.cache_features is None:
        cheaper = cfg.algo == "ppo" or 4 * dim <= math.prod(image_shape)
        return possible and cheaper
    if cfg.cache_features and not possible:
        raise ConfigError(
            "cache_features=True needs mode='frozen', augment_pad=0 and aux_loss=False; got "
            f"mode={cfg.mode!r}, augment_pad={cfg.augment_pad}, aux_loss={cfg.aux_loss}"
        )
    return cfg.cache_features
