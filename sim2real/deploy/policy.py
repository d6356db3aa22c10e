"""``Policy``: a trained policy bundle, run on camera frames exactly as in training.

A bundle (``RUN/bundle``: encoder weights + actor weights in safetensors, ``contract.json``)
is loaded without unpickling anything and without Stable-Baselines3, gymnasium or PyBullet;
this module needs torch, numpy and the sim2real perception code (timm builds the backbone).

The preprocessing is the training one, step by step:

1. the frame's colour order is the one declared at load time (``colour="BGR"`` for OpenCV
   cameras); it is flipped to the encoder's order when they differ;
2. the frame is resized to the observation size of the training env (the contract's
   ``observation.image.shape``) with :func:`~sim2real.perception.preprocessing.resize_frames`,
   the one resize used when rendering datasets and in the SB3 extractor;
3. the encoder's own preprocessing (its input size, mean/std) and the actor follow, as
   :class:`~sim2real.policies.bundle.BundleActor` computes them for SB3's deterministic action.

Example:
    >>> from sim2real import Policy  # doctest: +SKIP
    >>> policy = Policy.load("runs/reach/bundle", device="auto", colour="BGR")  # doctest: +SKIP
    >>> policy.act(frame_bgr, proprio=joint_positions)  # doctest: +SKIP
    array([ 0.12, -0.80,  0.05], dtype=float32)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sim2real.deploy.interfaces import check_colour_order
from sim2real.errors import CheckpointError, InputError
from sim2real.images import check_frame
from sim2real.perception.encoder import Encoder
from sim2real.perception.preprocessing import resize_frames
from sim2real.perception.refine import perceived_keypoints
from sim2real.policies.bundle import BundleActor, load_bundle

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PolicyInputs:
    """What :meth:`Policy.preprocess` hands to :meth:`Policy.infer`.

    Attributes:
        image: normalised network input, ``(1, 3, H, W)`` float32 on the policy's device.
        proprio: ``(1, P)`` float32 on the policy's device.
    """

    image: torch.Tensor
    proprio: torch.Tensor


class Policy:
    """A loaded policy bundle: ``act(frame, proprio) -> action``.

    Use :meth:`load`; the constructor takes already-built parts.

    Args:
        encoder: the perception encoder (``actor.encoder``).
        actor: encoder + actor head.
        contract: the bundle's ``contract.json``.
        colour: channel order of the frames that will be passed (``RGB`` or ``BGR``).

    Attributes:
        contract: the observation/action contract.
        colour_order: declared colour order of incoming frames (the Runner checks it
            against the camera's).
        observation_size: ``(width, height)`` of the training env's images.
        proprio_dim: ``P``; ``act`` requires exactly that many values.
        action_low: lower action bounds ``(A,)``.
        action_high: upper action bounds ``(A,)``.
    """

    def __init__(
        self, encoder: Encoder, actor: BundleActor, contract: dict[str, Any], colour: str = "RGB"
    ) -> None:
        self.encoder, self.actor, self.contract = encoder, actor.eval(), contract
        self.colour_order = check_colour_order(colour)
        try:
            channels, height, width = (int(v) for v in contract["observation"]["image"]["shape"])
            self.image_colour = str(contract["observation"]["image"].get("colour", "RGB"))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"contract: expected observation.image.shape [3, H, W], got {exc!r}"
            ) from exc
        if channels != 3:
            raise CheckpointError(f"contract: expected a 3-channel image, got {channels}")
        self.observation_size = (width, height)
        self.proprio_dim = actor.head.proprio_dim
        self.action_low = actor.head.action_low.cpu().numpy()
        self.action_high = actor.head.action_high.cpu().numpy()

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", colour: str = "RGB") -> Policy:
        """Load a bundle folder (or a run folder holding ``bundle/``).

        Args:
            path: ``RUN/bundle`` or ``RUN``.
            device: ``auto`` (CUDA when available), ``cpu``, ``cuda``...
            colour: channel order of the frames you will pass (``BGR`` for raw OpenCV).

        Raises:
            CheckpointError: missing or mismatched files.
            ConfigError: a colour order other than ``RGB``/``BGR``.

        Example:
            >>> policy = Policy.load("runs/reach", colour="BGR")  # doctest: +SKIP
        """
        check_colour_order(colour)
        encoder, actor, contract = load_bundle(path, device=device)
        policy = cls(encoder, actor, contract, colour=colour)
        logger.info("loaded %r", policy)
        return policy

    def __repr__(self) -> str:
        width, height = self.observation_size
        return (
            f"Policy(algo={self.contract.get('algo')!r}, env={self.contract.get('env_id')!r}, "
            f"image={width}x{height} {self.colour_order}, proprio={self.proprio_dim}, "
            f"actions={len(self.action_low)}, device={self.device})"
        )

    @property
    def device(self) -> torch.device:
        """Where the networks run."""
        return self.encoder.device

    # ------------------------------------------------------------------ the two stages
    def preprocess(self, frame: np.ndarray, proprio: Any = None) -> PolicyInputs:
        """Validate one frame and its proprioception and build the network inputs.

        Args:
            frame: uint8 ``(H, W, 3)`` in the declared colour order, any resolution.
            proprio: ``P`` finite numbers (the contract's ``observation.proprio.names``).

        Raises:
            InputError: wrong type, dtype, shape or channel count; missing, wrongly sized or
                non-finite proprioception.
        """
        image = check_frame(frame)
        state = check_policy_proprio(proprio, self.proprio_dim, self.contract)
        x = self._network_input(image)
        p = torch.from_numpy(state).reshape(1, -1).to(self.device)
        return PolicyInputs(x, p)

    @torch.no_grad()
    def _network_input(self, image: np.ndarray) -> torch.Tensor:
        width, height = self.observation_size
        observed = resize_frames(image, width, height)  # the env's observation
        if self.colour_order != self.image_colour:
            observed = observed.flip(-1)
        return self.encoder.preprocess(observed, colour=self.image_colour)

    @torch.no_grad()
    def perceive(self, frame: np.ndarray) -> dict[str, float]:
        """Whether the target is in view in one frame, as the bundle's encoder sees it.

        Returns:
            ``{"visible": bool, "visibility", "confidence", "ood"}`` (see
            :mod:`sim2real.perception.scores`; an encoder without a visibility head says
            visibility 1, and ``ood`` is NaN without feature statistics in its card); with a
            refiner in the encoder folder also ``keypoint`` (refined on the full-resolution
            ``frame``) and ``keypoint_coarse``, normalised (:mod:`sim2real.perception.refine`). The
            :class:`~sim2real.deploy.runner.Runner` reads it for its ``not_visible``
            behaviour; it costs one more encoder pass.

        Raises:
            InputError: not a uint8 ``(H, W, 3)`` frame.

        Example:
            >>> policy.perceive(frame)["visible"]  # doctest: +SKIP
            True
        """
        x = self._network_input(check_frame(frame))
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            out = self.encoder.scored_forward(x)
        finally:
            self.encoder.train(was_training)
        if "visible" not in out:  # an encoder that gives no target position
            return {"visible": True, "visibility": 1.0, "confidence": 1.0, "ood": float("nan")}
        return {
            "visible": bool(out["visible"][0] > 0.5),
            "visibility": float(out["visibility"][0]),
            "confidence": float(out["confidence"][0]),
            "ood": float(out["ood"][0]),
            # with a refiner: "keypoint" (refined on the full frame) and "keypoint_coarse"
            **perceived_keypoints(self.encoder, frame, out, self.colour_order),
        }

    @torch.no_grad()
    def infer(self, inputs: PolicyInputs) -> np.ndarray:
        """Deterministic action ``(A,)`` float32 within ``[action_low, action_high]``."""
        return self.actor(inputs.image, inputs.proprio)[0].float().cpu().numpy()

    def act(self, frame: np.ndarray, proprio: Any = None) -> np.ndarray:
        """One frame (+ proprioception) -> action ``(A,)`` float32.

        Example:
            >>> policy.act(frame, proprio=np.zeros(policy.proprio_dim))  # doctest: +SKIP
        """
        return self.infer(self.preprocess(frame, proprio))


def check_policy_proprio(proprio: Any, size: int, contract: dict[str, Any]) -> np.ndarray:
    """Return proprioception as a finite ``(size,)`` float32 array, else raise ``InputError``."""
    names = contract.get("observation", {}).get("proprio", {}).get("names")
    layout = f" ({', '.join(names)})" if names else ""
    if proprio is None:
        if size == 0:
            return np.zeros(0, np.float32)
        raise InputError(f"proprio: this policy needs {size} values{layout}, got None")
    try:
        state = np.asarray(proprio, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"proprio: expected {size} numbers, got {proprio!r}") from exc
    if state.ndim != 1 or state.shape[0] != size:
        raise InputError(f"proprio: expected shape ({size},){layout}, got {state.shape}")
    if not np.all(np.isfinite(state)):
        bad = [int(i) for i in np.flatnonzero(~np.isfinite(state))]
        raise InputError(f"proprio: expected finite values, got NaN/inf at {bad}: {state}")
    return state
