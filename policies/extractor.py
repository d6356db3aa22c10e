"""The perception encoder as Stable-Baselines3's features extractor, and the frozen-feature cache.

:class:`EncoderExtractor` reads ``Dict(image: uint8 (3, H, W), proprio: (P,))`` observations.
SB3 hands it the image as 0-255 floats (``normalize_images=False`` everywhere, so SB3 never
divides by 255); the extractor applies the encoder's own preprocessing (the one
:func:`~sim2real.perception.encoder.resize_frames` resize and the card's mean/std), so the
pixels the policy sees are computed exactly as in perception training and at deployment.

Features (see :mod:`sim2real.policies.bundle`): ``[trunk(pooled encoder features) (T),
predicted position (3, optional), proprio (P)]``.

Modes:
    ``frozen``: no gradient into the encoder and BatchNorm in eval mode whatever SB3's training
        flag says. Only the trunk and the policy learn.
    ``finetune``: the encoder learns at ``encoder_lr_scale`` times the policy's learning rate
        (per-block, see ``Encoder.param_groups``; applied by ``models.ScaledAdam``);
        BatchNorm statistics stay frozen (eval mode) so rollouts and updates see the same net.
    ``scratch``: a randomly initialised encoder that learns at the policy's rate, BatchNorm in
        SB3's usual train/eval switching.

With a frozen encoder the work can be done once per transition: :class:`FrozenFeatures` wraps
the VecEnv and replaces ``image`` by ``features`` (the encoded vector); the extractor then
only runs the trunk.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from torch import nn

from sim2real.errors import ConfigError
from sim2real.perception.encoder import Encoder
from sim2real.policies.augment import RandomShift
from sim2real.policies.bundle import (
    POOLS,
    check_trunk_dim,
    encode,
    make_trunk,
    policy_input,
    position_route,
    set_policy_target,
)
from sim2real.policies.config import METRE_SCALE, EncoderSource

logger = logging.getLogger(__name__)

MODES = ("frozen", "finetune", "scratch")
LR_SCALE_ATTR = "_sim2real_lr_scale"
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def build_encoder(source: EncoderSource) -> Encoder:
    """Build the encoder an :class:`EncoderSource` describes (JSON-friendly for SB3's kwargs).

    Example:
        >>> enc = build_encoder({"backbone": "nature_cnn", "input_size": [84, 84],
        ...                      "pretrained": False})
        >>> enc.feature_dim
        64
    """
    if isinstance(source, str | Path):
        return Encoder.load(source)
    spec = dict(source)
    if "path" in spec:
        if not spec.get("reinit", False):
            encoder = Encoder.load(spec["path"])
        else:
            encoder = Encoder.from_card(Encoder.load(spec["path"]).card, pretrained=False)
        if spec.get("target") is not None:  # the object whose position the policy reads
            set_policy_target(encoder, str(spec["target"]))
        return encoder
    spec["input_size"] = tuple(spec.get("input_size", (84, 84)))
    return Encoder(**spec)


def position_available(encoder: Encoder) -> bool:
    """Whether the encoder offers a position that can join the features: a 3-D ``position``
    head, or the ``keypoint_relative`` route (see :func:`~sim2real.policies.bundle.
    position_route`)."""
    return position_route(encoder) is not None


def encoded_dim(encoder: Encoder, pool: str, position: bool) -> int:
    """Size ``E[+3]`` of :func:`~sim2real.policies.bundle.encode` (images at the input size)."""
    pre = encoder.preprocessing
    with torch.no_grad():
        x = torch.zeros(1, 3, pre.height, pre.width, device=encoder.device)
        proprio = torch.zeros(1, 3, device=encoder.device)
        was_training = encoder.training
        encoder.eval()
        dim = encode(encoder, x, pool, position, proprio).shape[1]
        encoder.train(was_training)
    return int(dim)


def images_to_input(encoder: Encoder, image: torch.Tensor, colour: str = "RGB") -> torch.Tensor:
    """SB3's image batch (0-255 values, ``(B, 3, H, W)``) -> the encoder's normalised input.

    Shape:
        - image: ``(B, 3, H, W)`` float or uint8; returns ``(B, 3, h, w)`` at the input size.
    """
    frames = image if image.dtype == torch.uint8 else image.round().clamp(0, 255).to(torch.uint8)
    return encoder.preprocessing(frames.permute(0, 2, 3, 1), colour=colour, device=image.device)


@dataclass(frozen=True)
class ExtractorSettings:
    """How :class:`EncoderExtractor` uses its encoder (checked when the extractor is built).

    Attributes:
        mode: ``frozen``, ``finetune`` or ``scratch``.
        pool: ``mean`` (global average, what the heads see) or ``flatten`` (the whole map).
        use_position: append the position head's prediction to the features.
        trunk_dim: output size ``T`` of the trunk on the pooled features; 0 leaves them out
            (needs ``use_position``: the policy reads the predicted position and proprio).
        metre_scale: factor on the metre-valued inputs (predicted position, end effector).
        encoder_lr_scale: encoder learning rate / policy learning rate (``finetune``).
        lr_decay: per-block decay of that rate towards the input (``Encoder.param_groups``).
        augment_pad: DrQ random-shift pad in pixels at the encoder input (0: off).
        image_colour: channel order of the env's images.
        seed: seed of the augmentation's generator.
    """

    mode: str = "frozen"
    pool: str = "mean"
    use_position: bool = False
    trunk_dim: int = 256
    metre_scale: float = METRE_SCALE
    encoder_lr_scale: float = 0.1
    lr_decay: float = 1.0
    augment_pad: int = 0
    image_colour: str = "RGB"
    seed: int = 0


class EncoderExtractor(BaseFeaturesExtractor):
    """Features for SB3 policies from an :class:`~sim2real.perception.encoder.Encoder`.

    Args:
        observation_space: ``Dict(image, proprio)``, or ``Dict(features, proprio)`` behind
            :class:`FrozenFeatures` (then no encoder is built here).
        encoder: an :class:`EncoderSource`; required unless the space has ``features``.
        settings: mode, pooling, position, trunk, scales, augmentation (default:
            :class:`ExtractorSettings`' defaults).

    Shape:
        - image ``(B, 3, H, W)``, proprio ``(B, P)``; returns ``(B, T [+3] + P)``.

    Example:
        >>> space = spaces.Dict({"image": spaces.Box(0, 255, (3, 84, 84), np.uint8),
        ...                      "proprio": spaces.Box(-np.inf, np.inf, (10,), np.float32)})
        >>> ex = EncoderExtractor(space, {"backbone": "nature_cnn", "pretrained": False},
        ...                       ExtractorSettings(mode="scratch", trunk_dim=32))
        >>> ex.features_dim
        42
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        encoder: EncoderSource | None = None,
        settings: ExtractorSettings | None = None,
    ) -> None:
        cfg = ExtractorSettings() if settings is None else settings
        if not isinstance(cfg, ExtractorSettings):
            raise ConfigError(
                f"EncoderExtractor: settings must be an ExtractorSettings, got {type(cfg).__name__}"
            )
        mode, pool, use_position, trunk_dim = cfg.mode, cfg.pool, cfg.use_position, cfg.trunk_dim
        metre_scale, augment_pad, seed = cfg.metre_scale, cfg.augment_pad, cfg.seed
        if mode not in MODES:
            raise ConfigError(f"mode {mode!r}: expected one of {list(MODES)}")
        if pool not in POOLS:
            raise ConfigError(f"pool {pool!r}: expected one of {list(POOLS)}")
        keys = observation_space.spaces if isinstance(observation_space, spaces.Dict) else {}
        if "proprio" not in keys or not {"image", "features"} & set(keys):
            raise ConfigError(
                f"EncoderExtractor needs Dict(image|features, proprio), got {observation_space}"
            )
        if not metre_scale > 0:
            raise ConfigError(f"metre_scale {metre_scale!r}: expected a positive factor")
        cached = "features" in observation_space.spaces
        proprio_dim = int(np.prod(observation_space["proprio"].shape))
        built: Encoder | None = None
        if cached:
            enc_dim = int(observation_space["features"].shape[0])
        else:
            if encoder is None:
                raise ConfigError("EncoderExtractor: encoder is required for image observations")
            built = build_encoder(encoder)
            if use_position and not position_available(built):
                raise ConfigError(
                    "use_position=True but the encoder has no 3-D 'position' head and no "
                    f"keypoint_relative route (heads {sorted(built.heads)})"
                )
            enc_dim = encoded_dim(built, pool, use_position)
        check_trunk_dim(trunk_dim, use_position)
        pooled_dim = enc_dim - 3 * bool(use_position)
        super().__init__(observation_space, trunk_dim + 3 * bool(use_position) + proprio_dim)
        self.mode, self.pool, self.use_position, self.cached = mode, pool, use_position, cached
        self.image_colour, self.pooled_dim, self.trunk_dim = cfg.image_colour, pooled_dim, trunk_dim
        self.metre_scale = float(metre_scale)
        self.encoder = built
        self.trunk = make_trunk(pooled_dim, trunk_dim)
        self.augment = RandomShift(augment_pad, seed) if augment_pad > 0 and not cached else None
        if built is not None:
            self._configure_encoder(built, cfg.encoder_lr_scale, cfg.lr_decay)

    def _configure_encoder(self, encoder: Encoder, lr_scale: float, lr_decay: float) -> None:
        if self.mode == "frozen":
            encoder.requires_grad_(False)
        elif self.mode == "finetune":
            for group in encoder.param_groups(base_lr=lr_scale, decay=lr_decay):
                for p in group["params"]:
                    setattr(p, LR_SCALE_ATTR, float(group["lr"]))
        self.train(self.training)

    def train(self, mode: bool = True) -> EncoderExtractor:
        """SB3's train/eval switch; a frozen encoder and finetuned BatchNorms stay in eval."""
        super().train(mode)
        if self.encoder is not None and self.mode == "frozen":
            self.encoder.eval()
        elif self.encoder is not None and self.mode == "finetune":
            for m in self.encoder.modules():
                if isinstance(m, _BATCHNORMS):
                    m.eval()
        return self

    def encode_images(
        self, image: torch.Tensor, proprio: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images (0-255, ``(B, 3, H, W)``) [+ proprio] -> encoded features ``(B, E[+3])``."""
        assert self.encoder is not None
        x = images_to_input(self.encoder, image, self.image_colour)
        if self.augment is not None:
            x = self.augment(x)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.mode != "frozen"):
            return encode(self.encoder, x, self.pool, self.use_position, proprio)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.cached:
            encoded = observations["features"].float()
        else:
            encoded = self.encode_images(observations["image"], observations["proprio"])
        return policy_input(
            self.trunk,
            encoded,
            observations["proprio"],
            self.pooled_dim,
            self.use_position,
            self.metre_scale,
        )


class FrozenFeatures(VecEnvWrapper):
    """Replace ``image`` by the frozen encoder's ``features`` once per transition.

    The encoder runs here, batched over the envs, on ``device`` (the GPU when there is one);
    the policy's :class:`EncoderExtractor` then sees ``Dict(features, proprio)``. Terminal
    observations in ``infos`` are converted too (SB3 bootstraps from them on truncation).

    Args:
        venv: env with ``Dict(image, proprio, ...)`` observations.
        encoder: the frozen encoder (put in eval mode, no gradient).
        pool: ``mean`` or ``flatten``.
        use_position: append the position head's prediction.
        colour: channel order of the env's images.
        device: where the encoder runs.

    Example:
        >>> venv = FrozenFeatures(venv, Encoder.load("runs/reach/encoder"))  # doctest: +SKIP
    """

    def __init__(
        self,
        venv: VecEnv,
        encoder: Encoder,
        pool: str = "mean",
        use_position: bool = False,
        colour: str = "RGB",
        device: str | torch.device = "cpu",
    ) -> None:
        self.encoder = encoder.to(device).eval().requires_grad_(False)
        self.pool, self.use_position, self.colour = pool, use_position, colour
        space = venv.observation_space
        assert isinstance(space, spaces.Dict)
        dim = encoded_dim(self.encoder, pool, use_position)
        feats = spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        rest = {k: v for k, v in space.spaces.items() if k != "image"}
        super().__init__(venv, observation_space=spaces.Dict({"features": feats, **rest}))

    @torch.no_grad()
    def transform(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Batched observation dict -> the same dict with ``features`` instead of ``image``."""
        image = torch.from_numpy(np.ascontiguousarray(obs["image"])).to(self.encoder.device)
        x = images_to_input(self.encoder, image, self.colour)
        proprio = torch.from_numpy(np.asarray(obs["proprio"], dtype=np.float32))
        encoded = encode(self.encoder, x, self.pool, self.use_position, proprio.to(x.device))
        out = {k: v for k, v in obs.items() if k != "image"}
        out["features"] = encoded.cpu().numpy().astype(np.float32)
        return out

    def reset(self) -> dict[str, np.ndarray]:
        return self.transform(self.venv.reset())

    def step_wait(self) -> Any:
        obs, rewards, dones, infos = self.venv.step_wait()
        for info in infos:
            terminal = info.get("terminal_observation")
            if terminal is not None:
                batch = {k: np.asarray(v)[None] for k, v in terminal.items()}
                info["terminal_observation"] = {k: v[0] for k, v in self.transform(batch).items()}
        return self.transform(obs), rewards, dones, infos
