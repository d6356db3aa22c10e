"""PPO and SAC built around one shared :class:`~sim2real.policies.extractor.EncoderExtractor`.

PPO: one extractor for actor and critic (``share_features_extractor=True``), trained by the
whole PPO loss. SB3's orthogonal initialisation would overwrite every Linear/Conv of the
features extractor, pretrained encoder included; :class:`EncoderActorCriticPolicy` puts the
encoder's own weights back after it (the trunk keeps SB3's initialisation).

SAC: SB3's default (``share_features_extractor=False``) gives actor and critic two encoders,
each trained by its own loss; SB3's ``share_features_extractor=True`` trains the shared encoder
with the *actor* loss only (the critic sees detached features). We do neither and follow
DrQ/SAC-AE (Yarats et al.): one encoder (and trunk), trained by the **critic's TD loss only**;
the actor reads detached features, and the actor loss's pass through the critic does not
reach the encoder either. Actor gradients through a pixel encoder are known to destabilise
SAC, and the TD loss is the denser signal. "Encoder" here includes the extractor's trunk; the
actor's own MLP and mean/log-std layers learn from the actor loss. The target critic keeps its
own Polyak-averaged copy of the extractor, as in SB3, and runs in eval mode, so the DrQ shift
(when on) applies to current observations only, not to the target's next observations.

Finetuning: :class:`ScaledAdam` reads a per-parameter learning-rate scale that the extractor
tags on encoder parameters (SB3 resets every group's ``lr`` from its schedule before each
update, so plain param groups would not keep a lower encoder rate).

Example:
    >>> model = build_model(venv, "runs/reach/encoder", TrainConfig(algo="ppo"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ContinuousCritic, MultiInputActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.sac.policies import Actor, MultiInputPolicy
from torch import nn

from sim2real.errors import ConfigError
from sim2real.perception.encoder import Encoder
from sim2real.policies.bundle import ACTIVATIONS, ActorHead
from sim2real.policies.config import EncoderSource, TrainConfig
from sim2real.policies.extractor import (
    LR_SCALE_ATTR,
    EncoderExtractor,
    ExtractorSettings,
)

logger = logging.getLogger(__name__)

ALGOS = ("ppo", "sac")


class ScaledAdam(torch.optim.Adam):
    """Adam with one group per learning-rate scale found on the parameters.

    A parameter carrying ``_sim2real_lr_scale = s`` is stepped at ``s * lr`` whatever ``lr``
    SB3's schedule sets on the groups.

    Example:
        >>> w = nn.Parameter(torch.zeros(2)); setattr(w, LR_SCALE_ATTR, 0.1)
        >>> [g["lr_scale"] for g in ScaledAdam([w, nn.Parameter(torch.zeros(1))]).param_groups]
        [1.0, 0.1]
    """

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 1e-3, **kwargs: Any) -> None:
        groups: dict[float, list[nn.Parameter]] = {}
        for p in params:
            groups.setdefault(float(getattr(p, LR_SCALE_ATTR, 1.0)), []).append(p)
        ordered = sorted(groups.items(), key=lambda kv: -kv[0])
        super().__init__([{"params": ps, "lr_scale": s} for s, ps in ordered], lr=lr, **kwargs)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        base = [g["lr"] for g in self.param_groups]
        for g in self.param_groups:
            g["lr"] = g["lr"] * g.get("lr_scale", 1.0)
        try:
            return super().step(closure)
        finally:
            for g, lr in zip(self.param_groups, base, strict=True):
                g["lr"] = lr


class EncoderActorCriticPolicy(MultiInputActorCriticPolicy):
    """PPO policy: shared extractor; the encoder keeps its weights through SB3's ortho init."""

    def _build(self, lr_schedule: Callable[[float], float]) -> None:
        encoder = getattr(self.features_extractor, "encoder", None)
        saved = None if encoder is None else {k: v.clone() for k, v in encoder.state_dict().items()}
        super()._build(lr_schedule)
        if encoder is not None and saved is not None:
            encoder.load_state_dict(saved)


class _DetachedActor(Actor):
    """SAC actor that reads detached features: the encoder does not learn from the actor loss."""

    def extract_features(self, obs: Any, features_extractor: nn.Module) -> torch.Tensor:  # type: ignore[override]
        return super().extract_features(obs, features_extractor).detach()


class _TDTrainedCritic(ContinuousCritic):
    """SAC critic whose encoder gradient comes from the TD loss only.

    In SB3's SAC update the critic runs on replay actions (TD loss) and on the actor's
    reparameterised actions (actor loss); only the latter require grad, so features are
    computed with gradient exactly for the TD loss.
    """

    def forward(self, obs: Any, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        td_loss = torch.is_grad_enabled() and not actions.requires_grad
        with torch.set_grad_enabled(td_loss):
            features = self.extract_features(obs, self.features_extractor)
        qvalue_input = torch.cat([features, actions], dim=1)
        return tuple(q_net(qvalue_input) for q_net in self.q_networks)


class EncoderSACPolicy(MultiInputPolicy):
    """SAC policy: one encoder shared by actor and critic, trained by the critic (DrQ)."""

    def make_actor(self, features_extractor: nn.Module | None = None) -> Actor:
        kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return _DetachedActor(**kwargs).to(self.device)

    def make_critic(self, features_extractor: nn.Module | None = None) -> ContinuousCritic:
        kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        kwargs["share_features_extractor"] = False  # our forward decides; see _TDTrainedCritic
        return _TDTrainedCritic(**kwargs).to(self.device)

    def _build(self, lr_schedule: Callable[[float], float]) -> None:
        self.share_features_extractor = True
        self.actor = self.make_actor()
        shared = self.actor.features_extractor
        encoder_ids = {id(p) for p in shared.parameters()}
        actor_params = [p for p in self.actor.parameters() if id(p) not in encoder_ids]
        self.actor.optimizer = self.optimizer_class(
            actor_params, lr=lr_schedule(1), **self.optimizer_kwargs
        )
        self.critic = self.make_critic(features_extractor=shared)
        self.critic_target = self.make_critic(features_extractor=None)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic.optimizer = self.optimizer_class(
            self.critic.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )
        self.critic_target.set_training_mode(False)


PPO_DEFAULTS: dict[str, Any] = {
    "n_steps": 256,
    "batch_size": 128,
    "n_epochs": 10,
    "gamma": 0.98,
    "gae_lambda": 0.95,
    "ent_coef": 0.0,
    "learning_rate": 3e-4,
}
SAC_DEFAULTS: dict[str, Any] = {
    "buffer_size": 100_000,
    "learning_starts": 1_000,
    "batch_size": 128,
    "gamma": 0.98,
    "tau": 0.01,
    "train_freq": 1,
    "gradient_steps": 1,
    "learning_rate": 3e-4,
}


def algo_kwargs(config: TrainConfig) -> dict[str, Any]:
    """``config.algo_kwargs`` with SAC's buffer and warm-up capped by the step budget.

    Example:
        >>> algo_kwargs(TrainConfig(algo="sac", steps=5_000))
        {'buffer_size': 5000, 'learning_starts': 500}
    """
    kwargs = dict(config.algo_kwargs)
    if config.algo == "sac":
        kwargs.setdefault("buffer_size", min(SAC_DEFAULTS["buffer_size"], config.steps))
        kwargs.setdefault(
            "learning_starts", min(SAC_DEFAULTS["learning_starts"], config.steps // 10)
        )
    return kwargs


def build_model(
    env: VecEnv,
    encoder: EncoderSource | None,
    config: TrainConfig | None = None,
    *,
    tensorboard_log: str | None = None,
) -> BaseAlgorithm:
    """Build PPO or SAC with the shared encoder extractor (see the module docstring).

    Args:
        env: the training VecEnv (``Dict(image|features, proprio)`` observations).
        encoder: the extractor's encoder source (``None`` behind ``FrozenFeatures``).
        config: the run's settings (default: :class:`TrainConfig`'s defaults). Read here:
            ``algo``, ``mode``, ``seed`` (SB3: torch, numpy, action space, env), ``device``,
            ``pool``, ``use_position`` (``None`` counts as ``False``: :func:`train` resolves
            "auto" before), ``trunk_dim``, ``metre_scale``, ``hidden`` (actor and critic MLP
            sizes), ``encoder_lr_scale`` and ``lr_decay`` (``finetune``), ``augment_pad``
            (DrQ shift) and ``algo_kwargs`` (overrides of ``PPO_DEFAULTS`` /
            ``SAC_DEFAULTS``, see :func:`algo_kwargs`).
        tensorboard_log: TensorBoard folder or ``None``.

    Example:
        >>> cfg = TrainConfig(algo="sac", mode="finetune")
        >>> model = build_model(venv, "runs/reach/encoder", cfg)  # doctest: +SKIP
    """
    cfg = TrainConfig() if config is None else config
    if cfg.algo not in ALGOS:
        raise ConfigError(f"algo {cfg.algo!r}: expected one of {list(ALGOS)}")
    settings = ExtractorSettings(
        mode=cfg.mode,
        pool=cfg.pool,
        use_position=bool(cfg.use_position),
        trunk_dim=cfg.trunk_dim,
        metre_scale=cfg.metre_scale,
        encoder_lr_scale=cfg.encoder_lr_scale,
        lr_decay=cfg.lr_decay,
        augment_pad=cfg.augment_pad,
        seed=cfg.seed,
    )
    extractor_kwargs = {"encoder": encoder, "settings": settings}
    policy_kwargs: dict[str, Any] = {
        "features_extractor_class": EncoderExtractor,
        "features_extractor_kwargs": extractor_kwargs,
        "normalize_images": False,
        "share_features_extractor": True,
        "optimizer_class": ScaledAdam,
    }
    common = {
        "seed": cfg.seed,
        "device": cfg.device,
        "tensorboard_log": tensorboard_log,
        "verbose": 0,
    }
    hidden = list(cfg.hidden)
    if cfg.algo == "ppo":
        policy_kwargs |= {"net_arch": {"pi": hidden, "vf": hidden}}
        policy_kwargs["optimizer_kwargs"] = {"eps": 1e-5}
        kwargs = {**PPO_DEFAULTS, **algo_kwargs(cfg)}
        return PPO(EncoderActorCriticPolicy, env, policy_kwargs=policy_kwargs, **common, **kwargs)
    policy_kwargs |= {"net_arch": hidden}
    kwargs = {**SAC_DEFAULTS, **algo_kwargs(cfg)}
    return SAC(EncoderSACPolicy, env, policy_kwargs=policy_kwargs, **common, **kwargs)


def policy_extractor(model: BaseAlgorithm) -> EncoderExtractor:
    """The (shared) :class:`EncoderExtractor` of a model built by :func:`build_model`."""
    policy = model.policy
    extractor = (
        policy.actor.features_extractor if isinstance(model, SAC) else policy.features_extractor
    )
    assert isinstance(extractor, EncoderExtractor)
    return extractor


def trained_encoder(model: BaseAlgorithm) -> Encoder | None:
    """The encoder inside the policy (``None`` when features are cached outside it)."""
    return policy_extractor(model).encoder


def _activation_name(fn: type[nn.Module]) -> str:
    for name, cls in ACTIVATIONS.items():
        if fn is cls:
            return name
    raise ConfigError(f"activation {fn.__name__}: bundles support {list(ACTIVATIONS)}")


def actor_head_from_model(model: BaseAlgorithm) -> ActorHead:
    """Copy the deterministic actor (trunk, policy MLP, action mean) into an :class:`ActorHead`.

    Example:
        >>> head = actor_head_from_model(model)  # doctest: +SKIP
    """
    extractor = policy_extractor(model)
    policy = model.policy
    space = model.action_space
    proprio_dim = int(extractor._observation_space["proprio"].shape[0])
    if isinstance(model, SAC):
        pi, mu, squash = policy.actor.latent_pi, policy.actor.mu, "tanh"
        hidden = list(policy.actor.net_arch)
    else:
        pi, mu, squash = policy.mlp_extractor.policy_net, policy.action_net, "clip"
        hidden = list(policy.net_arch["pi"]) if isinstance(policy.net_arch, dict) else []
    if not isinstance(mu, nn.Linear):
        raise ConfigError(f"actor mean is {type(mu).__name__}; bundles need a Linear (no gSDE)")
    head = ActorHead(
        pooled_dim=extractor.pooled_dim,
        use_position=extractor.use_position,
        proprio_dim=proprio_dim,
        trunk_dim=extractor.trunk_dim,
        hidden=hidden,
        activation=_activation_name(policy.activation_fn),
        action_low=[float(v) for v in space.low],
        action_high=[float(v) for v in space.high],
        squash=squash,
        metre_scale=extractor.metre_scale,
    )
    head.trunk.load_state_dict(extractor.trunk.state_dict())
    head.pi.load_state_dict(pi.state_dict())
    head.mu.load_state_dict(mu.state_dict())
    return head.eval()
