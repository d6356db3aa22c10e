"""Reinforcement learning with the perception encoder (Stable-Baselines3 PPO/SAC).

``load_bundle`` and the bundle modules need only torch; everything else imports SB3, lazily,
so a robot computer can load a bundle without Stable-Baselines3 installed.

Example:
    >>> from sim2real.policies.train import train  # the submodule shadows a package export
    >>> from sim2real.policies import load_bundle
    >>> run = train("Sim2Real/ReachCube-v0", "runs/reach/encoder", "runs/ppo")  # doctest: +SKIP
    >>> encoder, actor, contract = load_bundle(run / "bundle")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ActorHead": "bundle",
    "BundleActor": "bundle",
    "load_bundle": "bundle",
    "save_bundle": "bundle",
    "RandomShift": "augment",
    "EncoderExtractor": "extractor",
    "FrozenFeatures": "extractor",
    "build_model": "models",
    "actor_head_from_model": "models",
    "AuxPositionLoss": "callbacks",
    "BundleCheckpoint": "callbacks",
    "RandomizationCurriculum": "callbacks",
    "ResumeCheckpoint": "callbacks",
    "load_resume_state": "resume",
    "save_resume_state": "resume",
    "SuccessRateEval": "callbacks",
    "TrainConfig": "config",
    "resume_training": "train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
