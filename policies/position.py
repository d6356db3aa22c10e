"""Which position joins a policy's features, and the torch forms of the keypoint routes.

A single-target encoder's ``position`` head, or a named target's ``NAME/position``
(:func:`position_head_name`, chosen by :func:`set_policy_target`), or, when the card's route
says so, the cube's keypoint back-projected onto its plane (:func:`keypoint_plane`) or the
cube minus the gripper from their keypoints (:func:`keypoint_offset`). Used by the SB3
extractor, the bundle's actor and its exports alike (:mod:`sim2real.policies.bundle`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from sim2real.errors import ConfigError
from sim2real.perception import geometry
from sim2real.perception.encoder import Encoder
from sim2real.perception.targets import card_targets, is_named

#: The card entry naming the object whose position joins the policy features.
POLICY_TARGET = "policy_target"


def set_policy_target(encoder: Encoder, target: str) -> None:
    """Make ``target`` (one of the encoder's targets, :mod:`sim2real.perception.targets`) the
    object whose position joins the policy features; kept in the card (``policy_target``), so
    the bundle's encoder reads the same head.

    Raises:
        ConfigError: the encoder does not locate ``target``, or has no position for it.
    """
    targets = card_targets(encoder.card)
    if target not in targets:
        raise ConfigError(
            f"target={target!r}: the encoder locates {list(targets)}, expected one of them "
            "(sim2real pretrain --targets NAME,...)"
        )
    if "position" not in targets[target]["heads"]:
        raise ConfigError(f"target={target!r}: the encoder has no position head for it")
    encoder.card[POLICY_TARGET] = target


def policy_target(encoder: Encoder) -> str | None:
    """The object whose position the policy reads: the card's ``policy_target``, else the
    encoder's one target (None when it has several and none was chosen)."""
    targets = card_targets(encoder.card)
    chosen = encoder.card.get(POLICY_TARGET)
    return chosen if chosen else (next(iter(targets)) if len(targets) == 1 else None)


def position_head_name(encoder: Encoder) -> str | None:
    """The head whose 3-D position joins the policy features: ``position`` for a
    single-target encoder, ``NAME/position`` for the :func:`policy_target` of one with
    per-target heads; None when there is none."""
    if not is_named(encoder.card):
        return geometry.POSITION_HEAD
    target = policy_target(encoder)
    return None if target is None else card_targets(encoder.card)[target]["heads"].get("position")


#: Card key naming the route a bundle's policy was trained on (set by :func:`load_bundle` from
#: the contract); it overrides the rule of :func:`position_route`.
POLICY_ROUTE_KEY = "policy_position_route"


def position_route(encoder: Encoder) -> str | None:
    """Which position joins the policy features: the card's ``position_route`` when it is
    ``"keypoint_relative"`` (cube and gripper keypoints, a camera in the card) or
    ``"keypoint_plane"`` (the cube keypoint, a camera in the card), else ``"position_head"``
    for a 3-D position head (:func:`position_head_name`), else None. A card's
    :data:`POLICY_ROUTE_KEY` wins (a bundle keeps the route its policy was trained on)."""
    card = encoder.card
    heads = dict(encoder.heads.items())
    if card.get(POLICY_ROUTE_KEY):
        return str(card[POLICY_ROUTE_KEY])
    names = getattr(heads.get(geometry.KEYPOINT_HEAD), "names", [])
    route = card.get("position_route")
    if route == "keypoint_relative" and geometry.GRIPPER_KEYPOINT in names and card.get("camera"):
        return "keypoint_relative"
    if route == "keypoint_plane" and names and card.get("camera"):
        return "keypoint_plane"
    head = heads.get(position_head_name(encoder) or "")
    if getattr(head, "kind", None) == "position" and getattr(head, "out_dim", 0) == 3:
        return "position_head"
    return None


def _backprojection(encoder: Encoder, fmap: torch.Tensor) -> tuple[torch.Tensor, Any, Any]:
    """The keypoints ``(B, K, 2)`` (whole frame), ``backproject(points, z)`` through the
    card's nominal camera (torch form of ``PlaneCamera.backproject_normalised``) and the
    camera."""
    head = encoder.heads[geometry.KEYPOINT_HEAD]
    xy = encoder.preprocessing.to_frame(head(fmap).float())  # (B, K, 2), whole frame
    cam = geometry.PlaneCamera.from_card(encoder.card["camera"])

    def const(a: Any) -> torch.Tensor:  # the camera is meant to be a constant of a traced graph
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            return torch.from_numpy(np.asarray(a, dtype=np.float32)).to(fmap.device)

    k_inv, rot = const(np.linalg.inv(cam.K)), const(cam.R)
    size, eye = const([cam.width, cam.height]), const(cam.eye)

    def backproject(points: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        uv = (points + 1.0) * 0.5 * size
        rays = torch.cat([uv, torch.ones_like(uv[:, :1])], dim=1) @ k_inv.T @ rot
        return eye + ((z - eye[2]) / rays[:, 2])[:, None] * rays

    return xy, backproject, cam


def keypoint_offset(encoder: Encoder, fmap: torch.Tensor, ee: torch.Tensor) -> torch.Tensor:
    """The cube minus the gripper (robot-base axes, metres) from the two keypoints.

    Torch form of :func:`sim2real.perception.geometry.relative_position` minus ``ee``: the
    cube's keypoint back-projected onto the cube's plane, the gripper's onto the plane at the
    gripper's height ``ee[:, 2]``, through the card's nominal camera.

    Shape:
        - fmap ``(B, C, h, w)``, ee ``(B, 3)``; returns ``(B, 3)``.
    """
    xy, backproject, cam = _backprojection(encoder, fmap)
    ee = ee.float()
    plane = torch.full_like(ee[:, 2], cam.plane_z)
    gripper = encoder.heads[geometry.KEYPOINT_HEAD].names.index(geometry.GRIPPER_KEYPOINT)
    return backproject(xy[:, 0], plane) - backproject(xy[:, gripper], ee[:, 2])


def keypoint_plane(encoder: Encoder, fmap: torch.Tensor) -> torch.Tensor:
    """The cube's position (robot-base frame, metres): its keypoint back-projected onto the
    cube's plane through the card's camera (torch form of the ``keypoint_plane`` route of
    :func:`sim2real.perception.geometry.route_positions`).

    Shape:
        - fmap ``(B, C, h, w)``; returns ``(B, 3)``.
    """
    xy, backproject, cam = _backprojection(encoder, fmap)
    return backproject(xy[:, 0], torch.full_like(xy[:, 0, 0], cam.plane_z))
