"""Fine-tuning with several objects: the labels, loss and errors of a named-target encoder.

An encoder with per-target heads (``target_layout: named``, :mod:`sim2real.perception.
targets`) fine-tunes on a long ``labels.csv`` (``file,object,x_m,y_m,z_m``): a
:class:`~sim2real.transfer.training.FrameSet` then holds ``positions`` ``(N, T, 3)`` for its
``objects`` (the encoder's targets), NaN where a frame has no row for an object. The loss
is the pretraining's summed over targets on the labelled (frame, object) pairs; errors are
per object (:func:`object_errors`, NaN where unlabelled) and a frame's error is the mean
over its labelled objects (:func:`frame_errors`), so cross-validation and the curve rank
strategies by the mean over objects. A single-target encoder on a long file uses its one
target's rows (:meth:`RealFrames.for_object <sim2real.data.frames.RealFrames.for_object>`).

Example:
    >>> errors = {"mug": np.array([1.0, np.nan]), "duck": np.array([3.0, 2.0])}
    >>> frame_errors(errors).tolist()
    [2.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sim2real.data.frames import RealFrames
from sim2real.errors import DataError
from sim2real.perception import geometry
from sim2real.perception.encoder import Encoder
from sim2real.perception.targets import card_targets, head_name, is_named


def encoder_objects(encoder: Encoder) -> tuple[str, ...]:
    """The objects a named encoder locates (its targets); ``()`` for a single-target one."""
    return tuple(card_targets(encoder.card)) if is_named(encoder.card) else ()


def frames_for(frames: RealFrames, encoder: Encoder) -> RealFrames:
    """The frames a fine-tuning of ``encoder`` reads: a single-target encoder on a long file
    naming several objects gets its one target's rows (other frames become unlabelled).

    Raises:
        DataError: the labels name objects but not the encoder's target.
    """
    if is_named(encoder.card) or len(frames.object_names) <= 1:
        return frames
    target = next(iter(card_targets(encoder.card)))
    if target not in frames.object_names:
        raise DataError(
            f"{frames.name!r}: labels.csv has rows for objects {frames.object_names}, the "
            f"encoder locates {[target]}: expected rows for {target!r}"
        )
    return frames.for_object(target)


def labelled_frames(frames: RealFrames, encoder: Encoder) -> RealFrames:
    """The labelled frames a fine-tuning of ``encoder`` trains on: those with a row for one
    of a named encoder's targets, else (:func:`frames_for`) those with its one target's."""
    objects = encoder_objects(encoder)
    if objects:
        return labelled_objects(frames, objects)
    return frames_for(frames, encoder).labelled()


def unlabelled_frames(frames: RealFrames) -> RealFrames:
    """The frames without any label (no position, no row of a long ``labels.csv``)."""
    return frames.select([i for i, r in enumerate(frames.refs) if not r.labelled and not r.objects])


def labelled_objects(frames: RealFrames, objects: Sequence[str]) -> RealFrames:
    """The frames with a label for at least one of ``objects``.

    Raises:
        DataError: the labels name none of ``objects``.
    """
    keep = [i for i, r in enumerate(frames.refs) if _labels_of(r, objects)]
    if frames.refs and frames.object_names and not set(frames.object_names) & set(objects):
        raise DataError(
            f"{frames.name!r}: labels.csv has rows for objects {frames.object_names}, the "
            f"encoder locates {list(objects)}: expected rows for some of them (a long "
            "labels.csv, file,object,x_m,y_m,z_m)"
        )
    return frames.select(keep)


def object_positions(frames: RealFrames, objects: Sequence[str]) -> np.ndarray:
    """``(N, T, 3)`` float64 positions of ``objects`` in every frame, NaN where unlabelled
    (a wide file's labels are the first object's)."""
    out = np.full((len(frames.refs), len(objects), 3), np.nan)
    for i, ref in enumerate(frames.refs):
        for t, pos in enumerate(_labels_of(ref, objects, keep_none=True)):
            if pos is not None:
                out[i, t] = np.asarray(pos, dtype=np.float64)
    return out


def _labels_of(ref: Any, objects: Sequence[str], keep_none: bool = False) -> list[Any]:
    """The positions of ``objects`` in one frame ref (``None`` where unlabelled)."""
    if ref.objects:
        found = [ref.objects[o].position if o in ref.objects else None for o in objects]
    else:  # a wide file: the encoder's first target
        found = [ref.position if t == 0 else None for t in range(len(objects))]
    return found if keep_none else [p for p in found if p is not None]


def trainable_object_heads(encoder: Encoder) -> list[str]:
    """A named encoder's heads the loss reaches: ``NAME/position``, ``NAME/keypoint`` with a
    camera in the card."""
    names = []
    for name in encoder_objects(encoder):
        if head_name(name, "position") in encoder.heads:
            names.append(head_name(name, "position"))
        if head_name(name, "keypoint") in encoder.heads and encoder.card.get("camera"):
            names.append(head_name(name, "keypoint"))
    return names


def object_loss(
    encoder: Encoder, fmap: torch.Tensor, position: torch.Tensor, uv: torch.Tensor | None
) -> torch.Tensor:
    """The named layout's fine-tuning loss: per target, smooth L1 on the standardised
    position and L1 on the keypoint, over the batch rows that label it; summed over targets.

    Shape:
        - fmap: ``(B, C, h, w)``; position: ``(B, T, 3)`` metres, NaN where unlabelled;
          uv: ``(B, T, 2)`` normalised whole-frame coordinates or ``None``.
    """
    losses = []
    for t, name in enumerate(encoder_objects(encoder)):
        known = torch.isfinite(position[:, t]).all(dim=-1)
        if not bool(known.any()):
            continue
        pos = head_name(name, "position")
        if pos in encoder.heads:
            pos_head = encoder.heads[pos]
            pred = pos_head.forward_normalised(fmap[known]).float()
            losses.append(F.smooth_l1_loss(pred, pos_head.normalise(position[known, t])))
        kp = head_name(name, "keypoint")
        if kp in encoder.heads and uv is not None and encoder.card.get("camera"):
            ok = known & torch.isfinite(uv[:, t]).all(dim=-1)
            if bool(ok.any()):
                pred = encoder.heads[kp](fmap[ok])[:, 0].float()
                losses.append(F.l1_loss(pred, encoder.preprocessing.to_input(uv[ok, t])))
    if not losses:  # no labelled pair in this batch: a zero that keeps the graph
        return fmap.sum() * 0.0
    return torch.stack(losses).sum()


def object_errors(
    encoder: Encoder, images: np.ndarray, positions: np.ndarray, objects: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per object, the Euclidean xy error in cm of each frame (NaN where unlabelled), by the
    position heads.

    Shape:
        - images: uint8 ``(N, H, W, 3)``; positions: ``(N, T, 3)``; returns ``{name: (N,)}``.
    """
    out = encoder.predict(images)
    errors = {}
    for t, name in enumerate(objects):
        truth = positions[:, t]
        pred = np.asarray(out[name]["position"], dtype=np.float64)
        err = np.full(len(truth), np.nan)
        known = np.isfinite(truth).all(axis=1)
        if known.any():
            err[known] = geometry.position_errors_cm(pred[known], truth[known])["xy"]
        errors[name] = err
    return errors


def frame_errors(errors: Mapping[str, np.ndarray]) -> np.ndarray:
    """Each frame's mean error over the objects it labels, ``(N,)``."""
    stacked = np.stack(list(errors.values()), axis=1)
    counts = np.isfinite(stacked).sum(axis=1)
    sums = np.where(np.isfinite(stacked), stacked, 0.0).sum(axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def summarise_objects(errors: Mapping[str, np.ndarray]) -> dict[str, dict[str, float] | None]:
    """Per object, :func:`~sim2real.perception.geometry.summarise` of its labelled frames'
    errors (``None`` for an object no frame labels)."""
    out: dict[str, dict[str, float] | None] = {}
    for name, err in errors.items():
        known = err[np.isfinite(err)]
        out[name] = geometry.summarise(known) if len(known) else None
    return out


def object_point(runs: Sequence[Sequence[Any]]) -> dict[str, Any] | None:
    """Per object over the runs: ``mean`` (of each run's mean over its frames labelling the
    object), ``median``, ``p90`` (pooled), ``n`` (errors pooled); and ``mean_over_objects``.
    None when the runs have no per-object errors.

    Example:
        >>> errors = {"a": np.array([1.0, 3.0]), "b": np.array([np.nan, 4.0])}
        >>> p = object_point([(None, None, None, None, errors)])
        >>> p["objects"]["a"]["mean"], p["objects"]["b"]["n"], p["mean_over_objects"]
        (2.0, 1, 3.0)
    """
    if not runs or any(len(r) < 5 or r[4] is None for r in runs):
        return None
    out: dict[str, Any] = {}
    for name in runs[0][4]:
        per_run = [np.asarray(r[4][name], dtype=np.float64) for r in runs]
        per_run = [e[np.isfinite(e)] for e in per_run]
        means = [float(e.mean()) for e in per_run if len(e)]
        pooled = np.concatenate(per_run)
        out[name] = (
            {
                "mean": float(np.mean(means)),
                "median": float(np.median(pooled)),
                "p90": float(np.percentile(pooled, 90)),
                "n": len(pooled),
            }
            if len(pooled)
            else None
        )
    means = [v["mean"] for v in out.values() if v is not None]
    return {"objects": out, "mean_over_objects": float(np.mean(means)) if means else None}
