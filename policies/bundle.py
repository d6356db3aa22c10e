"""The policy bundle: encoder + actor weights in safetensors + the observation/action contract.

A bundle is a folder::

    bundle/
      encoder/             Encoder.save (model.safetensors + card.json)
      policy.safetensors   the actor head: trunk, policy MLP, action mean (+ action bounds)
      contract.json        observations, preprocessing, features layout, actor layout, actions

Nothing is pickled and nothing here imports Stable-Baselines3: :func:`load_bundle` rebuilds the
deterministic actor in plain torch. The computation, for a uint8 frame and proprioception::

    x        = encoder.preprocess(frame)                     # resize + normalise, (B, 3, H, W)
    encoded  = [pool(backbone(x)) (E), position (3)?]        # "features" layout, (B, E[+3])
    policy_in = [tanh(LayerNorm(Linear(pooled))) (T), position (3)?, proprio (P)]
    action   = squash(mu(pi(policy_in)))                     # "tanh" (SAC) or "clip" (PPO)

The position is the encoder's ``position`` head, or, when the encoder card's route is
``keypoint_plane``, the cube's keypoint back-projected onto its plane through the card's camera
(:func:`keypoint_plane`), or, for ``keypoint_relative``, the cube minus the gripper from the
cube and gripper keypoints and the gripper's height in the proprio (:func:`keypoint_offset`;
see :mod:`sim2real.perception.geometry`). The contract records the route; a bundle from
before the ``keypoint_plane`` route (no route recorded) keeps its ``position_head``.

Example:
    >>> encoder, actor, contract = load_bundle("runs/reach/bundle")  # doctest: +SKIP
    >>> actor.act(frame_rgb, proprio)  # (3,) float32 in the action bounds  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sim2real.atomic import write_json
from sim2real.errors import CheckpointError, ConfigError, InputError
from sim2real.perception.encoder import Encoder
from sim2real.policies.config import METRE_SCALE
from sim2real.policies.position import POLICY_ROUTE_KEY as POLICY_ROUTE_KEY
from sim2real.policies.position import POLICY_TARGET as POLICY_TARGET
from sim2real.policies.position import keypoint_offset as keypoint_offset
from sim2real.policies.position import keypoint_plane as keypoint_plane
from sim2real.policies.position import policy_target as policy_target
from sim2real.policies.position import position_head_name as position_head_name
from sim2real.policies.position import position_route as position_route
from sim2real.policies.position import set_policy_target as set_policy_target

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = "sim2real.policy_bundle/1"
POLICY_FILE = "policy.safetensors"
CONTRACT_FILE = "contract.json"
ENCODER_DIR = "encoder"
POOLS = ("mean", "flatten")
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}
SQUASHES = ("tanh", "clip")


def encode(
    encoder: Encoder,
    x: torch.Tensor,
    pool: str,
    use_position: bool,
    proprio: torch.Tensor | None = None,
) -> torch.Tensor:
    """The encoder part of the features: pooled backbone map, then the predicted position.

    One backbone pass serves both. ``pool="mean"`` is :meth:`Encoder.features` (global
    average); ``"flatten"`` keeps the whole map (as SB3's NatureCNN). The position is the one
    :func:`position_route` names; ``keypoint_relative`` reads the gripper's position from the
    last three proprio values, so it needs ``proprio``.

    Raises:
        ConfigError: ``use_position`` with no route to a position, or the keypoint route
            without ``proprio``.

    Shape:
        - x: ``(B, 3, H, W)`` normalised, proprio ``(B, P)``; returns ``(B, E)`` or
          ``(B, E + 3)`` with ``E = C`` (mean) or ``C * h * w`` (flatten).

    Example:
        >>> enc = Encoder("nature_cnn", {"position": {"type": "position"}}, input_size=(84, 84))
        >>> encode(enc, torch.zeros(2, 3, 84, 84), "mean", True).shape
        torch.Size([2, 67])
    """
    fmap = encoder.backbone(x)
    pooled = fmap.mean(dim=(2, 3)) if pool == "mean" else fmap.flatten(1)
    if not use_position:
        return pooled.float()
    route = position_route(encoder)
    if route == "keypoint_plane":
        position = keypoint_plane(encoder, fmap)
    elif route == "keypoint_relative":
        if proprio is None:
            raise ConfigError(
                "the encoder's keypoint_relative position needs the gripper's position: "
                "expected proprio (B, P) with the end effector last, got None"
            )
        position = keypoint_offset(encoder, fmap, proprio.flatten(1)[:, -3:])
    elif route == "position_head":
        position = encoder.heads[str(position_head_name(encoder))](fmap).float()
    else:
        raise ConfigError(
            "use_position=True but the encoder has no 3-D 'position' head and no keypoint "
            f"route with a camera in its card (heads {sorted(encoder.heads)}; an encoder with "
            "several targets needs target=NAME)"
        )
    return torch.cat([pooled.float(), position.float()], dim=1)


def policy_input(
    trunk: nn.Module,
    encoded: torch.Tensor,
    proprio: torch.Tensor,
    pooled_dim: int,
    use_position: bool,
    metre_scale: float,
) -> torch.Tensor:
    """What the policy MLP reads: ``[trunk(pooled), s * position, joints, s * ee_xyz]``.

    The one definition shared by the SB3 extractor and the bundle's :class:`ActorHead`.
    The proprio layout is the envs' (joint positions, then the 3 end-effector coordinates).

    Shape:
        - encoded ``(B, E[+3])``, proprio ``(B, P)``; returns ``(B, T[+3] + P)``.
    """
    proprio = proprio.float().flatten(1)
    parts = [trunk(encoded[:, :pooled_dim])]
    if use_position:
        parts.append(encoded[:, pooled_dim:] * metre_scale)
    parts += [proprio[:, :-3], proprio[:, -3:] * metre_scale]
    return torch.cat(parts, dim=1)


def check_trunk_dim(trunk_dim: int, use_position: bool) -> None:
    """Refuse a negative trunk, and a trunk of 0 without a position (a blind policy).

    Raises:
        ConfigError: either case.
    """
    if trunk_dim < 0 or (trunk_dim == 0 and not use_position):
        raise ConfigError(
            f"trunk_dim {trunk_dim}: expected > 0, or 0 with use_position=True (the policy "
            "then reads the predicted position and proprio only; with neither it is blind)"
        )


class NoFeatures(nn.Module):
    """The trunk of width 0: drops the pooled features (``(B, E) -> (B, 0)``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :0]


def make_trunk(in_dim: int, out_dim: int) -> nn.Sequential:
    """``Linear -> LayerNorm -> Tanh`` (DrQ-v2's trunk): bounded, scale-free features.

    ``out_dim=0`` leaves the pooled features out of the policy input (the policy then reads
    the encoder's predicted position and the proprioception only; no parameters). Callers
    validate the size with :func:`check_trunk_dim`.
    """
    if out_dim == 0:
        return nn.Sequential(NoFeatures())
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), nn.Tanh())


def make_mlp(in_dim: int, hidden: Sequence[int], activation: str) -> nn.Sequential:
    """``[Linear, act] * len(hidden)``, the layout of SB3's ``create_mlp`` / ``MlpExtractor``."""
    act = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(in_dim, int(size)), act()]
        in_dim = int(size)
    return nn.Sequential(*layers)


class ActorHead(nn.Module):
    """Encoded features + proprioception -> deterministic action (the policy part of a bundle).

    Args:
        pooled_dim: ``E``, size of the pooled encoder features.
        use_position: the encoded features end with the 3 predicted position values.
        proprio_dim: ``P``.
        trunk_dim: ``T``, output of the trunk on the pooled features.
        hidden: policy MLP sizes.
        activation: ``tanh``, ``relu`` or ``elu``.
        action_low: lower action bounds.
        action_high: upper action bounds.
        squash: ``tanh`` (SAC: tanh then rescale to the bounds) or ``clip`` (PPO: clip).
        metre_scale: factor on the metre-valued inputs (bundles saved before it existed
            load with 1.0).

    Shape:
        - encoded: ``(B, E[+3])``; proprio: ``(B, P)``; returns ``(B, A)``.

    Example:
        >>> head = ActorHead(64, True, 10, 32, [64, 64], "tanh", [-1.0] * 3, [1.0] * 3, "clip")
        >>> head(torch.zeros(2, 67), torch.zeros(2, 10)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        pooled_dim: int,
        use_position: bool,
        proprio_dim: int,
        trunk_dim: int,
        hidden: Sequence[int],
        activation: str,
        action_low: Sequence[float],
        action_high: Sequence[float],
        squash: str,
        metre_scale: float = METRE_SCALE,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation {activation!r}: expected one of {list(ACTIVATIONS)}")
        if squash not in SQUASHES:
            raise ConfigError(f"squash {squash!r}: expected one of {list(SQUASHES)}")
        if len(action_low) != len(action_high):
            raise ConfigError(f"action bounds differ in length: {action_low} vs {action_high}")
        check_trunk_dim(trunk_dim, use_position)
        self.pooled_dim, self.use_position = int(pooled_dim), bool(use_position)
        self.proprio_dim, self.trunk_dim = int(proprio_dim), int(trunk_dim)
        self.hidden, self.activation, self.squash = [int(h) for h in hidden], activation, squash
        self.metre_scale = float(metre_scale)
        self.trunk = make_trunk(self.pooled_dim, self.trunk_dim)
        self.pi = make_mlp(self.policy_input_dim, self.hidden, activation)
        last = self.hidden[-1] if self.hidden else self.policy_input_dim
        self.mu = nn.Linear(last, len(action_low))
        self.register_buffer("action_low", torch.tensor(action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(action_high, dtype=torch.float32))

    @property
    def encoded_dim(self) -> int:
        """Size of the encoded features this head reads: ``E`` (+3 with the position)."""
        return self.pooled_dim + 3 * self.use_position

    @property
    def policy_input_dim(self) -> int:
        """Size of the policy MLP input: ``T`` (+3) + ``P``."""
        return self.trunk_dim + 3 * self.use_position + self.proprio_dim

    def policy_input(self, encoded: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """The features SB3's policy sees. Shape: ``(B, E[+3]), (B, P) -> (B, T[+3] + P)``."""
        return policy_input(
            self.trunk, encoded, proprio, self.pooled_dim, self.use_position, self.metre_scale
        )

    def forward(self, encoded: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """Deterministic action within ``[action_low, action_high]``."""
        mean = self.mu(self.pi(self.policy_input(encoded, proprio)))
        if self.squash == "tanh":
            unit = torch.tanh(mean)
            return self.action_low + 0.5 * (unit + 1.0) * (self.action_high - self.action_low)
        return torch.maximum(torch.minimum(mean, self.action_high), self.action_low)

    def spec(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable): the contract's ``actor``."""
        return {
            "pooled_dim": self.pooled_dim,
            "use_position": self.use_position,
            "proprio_dim": self.proprio_dim,
            "trunk_dim": self.trunk_dim,
            "hidden": self.hidden,
            "activation": self.activation,
            "action_low": self.action_low.tolist(),
            "action_high": self.action_high.tolist(),
            "squash": self.squash,
            "metre_scale": self.metre_scale,
        }


class BundleActor(nn.Module):
    """Encoder + :class:`ActorHead`: preprocessed image and proprio -> deterministic action.

    Args:
        encoder: the perception encoder (its heads included).
        head: the actor head.
        pool: ``mean`` or ``flatten`` (the contract's ``features.pool``).

    Shape:
        - x: ``(B, 3, H, W)`` from ``encoder.preprocess``; proprio: ``(B, P)``; returns ``(B, A)``.

    Example:
        >>> encoder, actor, contract = load_bundle("runs/reach/bundle")  # doctest: +SKIP
        >>> actor(encoder.preprocess(frames), torch.as_tensor(proprio))  # doctest: +SKIP
    """

    def __init__(self, encoder: Encoder, head: ActorHead, pool: str = "mean") -> None:
        super().__init__()
        if pool not in POOLS:
            raise ConfigError(f"pool {pool!r}: expected one of {list(POOLS)}")
        self.encoder, self.head, self.pool = encoder, head, pool

    def forward(self, x: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        encoded = encode(self.encoder, x, self.pool, self.head.use_position, proprio)
        return self.head(encoded, proprio)

    @torch.no_grad()
    def act(self, frames: np.ndarray, proprio: np.ndarray, colour: str = "RGB") -> np.ndarray:
        """uint8 frames ``(H, W, 3)`` / ``(N, H, W, 3)`` + proprio -> actions (numpy).

        Returns ``(A,)`` for one frame, ``(N, A)`` for a batch. Runs in eval mode.
        """
        single = np.ndim(frames) == 3
        p = np.asarray(proprio, dtype=np.float32).reshape(-1, self.head.proprio_dim)
        x = self.encoder.preprocess(frames, colour=colour)
        if len(p) != len(x):
            raise InputError(f"act: {len(x)} frames but {len(p)} proprio rows")
        was_training = self.training
        self.eval()
        try:
            out = self(x, torch.from_numpy(p).to(x.device)).cpu().numpy()
        finally:
            self.train(was_training)
        return out[0] if single else out


def save_bundle(
    path: str | Path, encoder: Encoder, head: ActorHead, contract: Mapping[str, Any]
) -> Path:
    """Write a bundle folder; ``contract`` gets ``format`` and ``actor`` filled in.

    Example:
        >>> save_bundle("runs/reach/bundle", encoder, head, contract)  # doctest: +SKIP
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    encoder.save(folder / ENCODER_DIR)
    state = {k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}
    save_file(state, str(folder / POLICY_FILE), metadata={"format": BUNDLE_FORMAT})
    full = {**contract, "format": BUNDLE_FORMAT, "actor": head.spec()}
    write_json(folder / CONTRACT_FILE, full, sort_keys=True)
    logger.info("saved policy bundle to %s", folder)
    return folder


def load_bundle(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[Encoder, BundleActor, dict[str, Any]]:
    """Load a bundle written by :func:`save_bundle` (plain torch, no unpickling, no SB3).

    Args:
        path: the bundle folder (``RUN/bundle``) or a run folder containing ``bundle/``.
        device: ``cpu``, ``cuda``, ``auto`` or a torch device.

    Returns:
        ``(encoder, actor, contract)``; ``actor.encoder is encoder``; both in eval mode.

    Raises:
        CheckpointError: missing files, another format, or weights that do not match.

    Example:
        >>> encoder, actor, contract = load_bundle("runs/reach")  # doctest: +SKIP
        >>> contract["observation"]["image"]["shape"]  # doctest: +SKIP
        [3, 84, 84]
    """
    folder = Path(path)
    if not (folder / CONTRACT_FILE).is_file() and (folder / "bundle" / CONTRACT_FILE).is_file():
        folder = folder / "bundle"
    for f in (folder / CONTRACT_FILE, folder / POLICY_FILE):
        if not f.is_file():
            raise CheckpointError(f"policy bundle incomplete: {f} not found")
    try:
        contract = json.loads((folder / CONTRACT_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{folder / CONTRACT_FILE}: not valid JSON ({exc})") from exc
    if not isinstance(contract, dict) or contract.get("format") != BUNDLE_FORMAT:
        got = contract.get("format") if isinstance(contract, dict) else type(contract).__name__
        raise CheckpointError(f"{folder}: expected bundle format {BUNDLE_FORMAT!r}, got {got!r}")
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = Encoder.load(folder / ENCODER_DIR, device=device)
    _pin_route(encoder, contract)
    try:
        head = ActorHead(**{"metre_scale": 1.0, **contract["actor"]})
        pool = contract["features"]["pool"]
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(
            f"{folder / CONTRACT_FILE}: bad 'actor'/'features' ({exc!r})"
        ) from exc
    try:
        state = load_file(str(folder / POLICY_FILE))
        head.load_state_dict(state, strict=True)
    except Exception as exc:  # safetensors / load_state_dict raise their own error types
        raise CheckpointError(
            f"{folder / POLICY_FILE}: does not match the contract ({exc})"
        ) from exc
    actor = BundleActor(encoder, head.to(device), pool=pool).eval()
    return encoder, actor, contract


def _pin_route(encoder: Encoder, contract: dict[str, Any]) -> None:
    """Set the card's :data:`POLICY_ROUTE_KEY` to the route the contract's features name
    (``position_head`` when the position entry names none: bundles from before the
    ``keypoint_plane`` route read the position head whatever the card's route)."""
    entries = contract.get("features", {}).get("encoded", [])
    position = next((e for e in entries if e.get("name") == "position"), None)
    if isinstance(position, dict):
        encoder.card[POLICY_ROUTE_KEY] = position.get("route", "position_head")
