"""Evaluating and predicting per object: encoders with several targets, labels with several
objects (the long ``labels.csv``, ``file,object,x_m,y_m,z_m[,yaw_deg]...``).

:func:`evaluate_objects` scores each object the encoder locates (:mod:`sim2real.perception.
targets`) that the labels name, exactly as :func:`~sim2real.perception.evaluate.evaluate`
scores the one target, and reports per object and the mean over objects (the mean of the
objects' statistics: every object counts once, whatever its number of frames). Yaw errors
are in degrees modulo each target's symmetry. :func:`predict_rows` gives the
``file,object,...`` rows of ``sim2real predict`` for an encoder with per-target heads.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.data.frames import RealFrames
from sim2real.data.labels import ObjectLabel
from sim2real.errors import CheckpointError, DataError
from sim2real.perception import geometry
from sim2real.perception.encoder import Encoder
from sim2real.perception.evaluate_common import CHUNK, default_route, detection, predict_routes
from sim2real.perception.evaluate_common import score_cells as score_cells  # re-exported
from sim2real.perception.orientation import yaw_error_deg
from sim2real.perception.targets import card_targets, check_targets, is_named

logger = logging.getLogger(__name__)

OBJECT_FRAME_COLUMNS = (
    "file", "object", "x_m", "y_m", "z_m", "pred_x_m", "pred_y_m", "pred_z_m", "err_xy_cm",
    "err_xyz_cm", "yaw_deg", "pred_yaw_deg", "err_yaw_deg", "visible", "pred_visible",
    "confidence", "ood",
)  # fmt: skip
OBJECT_PREDICT_COLUMNS = ("file", "object", "x_m", "y_m", "z_m", "yaw_deg", "visible",
                          "confidence", "ood")  # fmt: skip


def per_object(encoder: Encoder, frames: RealFrames) -> bool:
    """Whether evaluation goes per object: an encoder with per-target heads, or labels that
    name several objects."""
    return is_named(encoder.card) or len(frames.object_names) > 1


def object_labels(frames: RealFrames, name: str) -> list[ObjectLabel | None]:
    """Each frame's label of object ``name`` (a wide file's label is its one target's)."""
    if not frames.object_names:
        return [
            ObjectLabel(position=r.position, uv=r.uv, box=r.box, visible=r.visible)
            if r.position is not None
            else None
            for r in frames.refs
        ]
    return [(r.objects or {}).get(name) for r in frames.refs]


def predict_objects(
    encoder: Encoder, frames: RealFrames, batchnorm: str | None = None
) -> dict[str, dict[str, Any]]:
    """``{object: {"routes": {route: (N, 3)}, "scores": {"visible", "confidence", "ood"},
    "yaw": (N,) radians or None}}`` for every frame of ``frames`` and every target of the
    encoder (a single-target encoder: its one target, by every route it has)."""
    targets = card_targets(encoder.card)
    if not is_named(encoder.card):
        _, routes, scores = predict_routes(encoder, frames, batchnorm)
        return {next(iter(targets)): {"routes": routes, "scores": scores, "yaw": None}}
    chunks: list[dict[str, Any]] = []
    for start in range(0, len(frames), CHUNK):
        images = np.stack([frames[i].image for i in range(start, min(start + CHUNK, len(frames)))])
        chunks.append(encoder.predict(images, batchnorm=batchnorm))
    out = {}
    for name in targets:
        got = {k: np.concatenate([c[name][k] for c in chunks]) for k in chunks[0][name]}
        if "position" not in got:
            raise CheckpointError(
                f"target {name!r} has no position head (outputs {sorted(got)}): expected an "
                "encoder trained with head='position' or 'keypoint+position'"
            )
        n = len(got["position"])
        scores = {
            "visible": got.get("visible", np.ones(n, bool)),
            "confidence": got.get("visibility", np.ones(n)),
            "ood": np.full(n, np.nan),
        }
        out[name] = {"routes": {"position_head": got["position"]}, "scores": scores,
                     "yaw": got.get("yaw")}  # fmt: skip
    return out


def evaluate_objects(
    encoder: Encoder,
    frames: RealFrames,
    *,
    objects: Sequence[str] | None = None,
    route: str | None = None,
    out_dir: str | Path | None = None,
    batchnorm: str | None = None,
) -> dict[str, Any]:
    """Per-object position (and yaw) errors on the labelled frames of ``frames``.

    Args:
        encoder: the encoder.
        frames: real frames with a (long or wide) ``labels.csv``.
        objects: the objects to score; default: those the encoder locates that the labels
            name.
        route: the headline route (default: the card's; per-target heads: ``position_head``).
        out_dir: where to write ``frames.csv`` (``file,object,...``, one row per object and
            labelled frame).
        batchnorm: ``"stored"`` or ``"frame"``; default: the card's.

    Returns:
        ``{"objects": {name: {"n", "route", "xy_cm", "xyz_cm", "routes", "detection",
        "yaw_deg"}}, "mean": {"xy_cm", "xyz_cm", "yaw_deg"}, "n", "route", "xy_cm",
        "xyz_cm", "csv", "overlay"}``: the top-level ``xy_cm``/``xyz_cm`` are the mean over
        objects (each statistic averaged); ``yaw_deg`` is None without yaw labels or output.

    Raises:
        DataError: the labels name none of the encoder's targets, or an object has no label.
        ConfigError: ``objects`` names an object the encoder does not locate.
    """
    located = list(card_targets(encoder.card))
    labelled = frames.object_names or located[:1]
    wanted = check_targets(located, objects) if objects else [n for n in located if n in labelled]
    missing = [n for n in wanted if n not in labelled]
    if not wanted or missing:
        raise DataError(
            f"{frames.name!r}: labels.csv has rows for objects {labelled}, the encoder locates "
            f"{located}: expected labels for {missing or located} (a long labels.csv, "
            "file,object,x_m,y_m,z_m)"
        )
    keep = [
        i for i, r in enumerate(frames.refs) if any(object_labels(frames, n)[i] for n in wanted)
    ]
    frames = frames.select(keep)
    predictions = predict_objects(encoder, frames, batchnorm)
    results: dict[str, Any] = {}
    rows: list[list[str]] = []
    for name in wanted:
        labels = object_labels(frames, name)
        idx = [i for i, lab in enumerate(labels) if lab is not None]
        if not idx:
            raise DataError(f"{frames.name!r}: no labelled frame has object {name!r}")
        pred = predictions[name]
        truth = np.stack([np.asarray(labels[i].position, dtype=np.float64) for i in idx])
        routes = {r: p[idx] for r, p in pred["routes"].items()}
        scores = {k: np.asarray(v)[idx] for k, v in pred["scores"].items()}
        chosen = default_route(encoder, routes, route)
        per_route = {
            r: {k: geometry.summarise(v) for k, v in geometry.position_errors_cm(p, truth).items()}
            for r, p in routes.items()
        }
        yaw_true = np.array([_yaw(labels[i]) for i in idx])
        yaw_pred = pred["yaw"][idx] if pred["yaw"] is not None else np.full(len(idx), np.nan)
        order = card_targets(encoder.card)[name].get("order")
        yaw_err = yaw_error_deg(yaw_pred, yaw_true, order)
        known = np.isfinite(yaw_err)
        results[name] = {
            "n": len(idx),
            "route": chosen,
            "xy_cm": per_route[chosen]["xy"],
            "xyz_cm": per_route[chosen]["xyz"],
            "routes": {r: {"xy_cm": v["xy"], "xyz_cm": v["xyz"]} for r, v in per_route.items()},
            "detection": detection([labels[i].visible for i in idx], scores, routes[chosen], truth),
            "yaw_deg": geometry.summarise(yaw_err[known]) if known.any() else None,
        }
        rows += _frame_rows(frames, idx, name, truth, routes[chosen], labels, scores,
                            (yaw_true, yaw_pred, yaw_err))  # fmt: skip
    stats = _with_mean(results)
    stats["csv"], stats["overlay"] = None, None
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with (out / "frames.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(OBJECT_FRAME_COLUMNS)
            writer.writerows(rows)
        stats["csv"] = str(out / "frames.csv")
    logger.info("evaluated %s: mean xy %.2f cm", wanted, stats["xy_cm"]["mean"])
    return stats


def _yaw(label: ObjectLabel) -> float:
    return math.radians(label.yaw_deg) if label.yaw_deg is not None else float("nan")


def _with_mean(results: dict[str, Any]) -> dict[str, Any]:
    """The per-object results and their mean (each statistic averaged over objects)."""

    def mean_of(key: str) -> dict[str, float] | None:
        parts = [r[key] for r in results.values() if r.get(key)]
        return {s: float(np.mean([p[s] for p in parts])) for s in parts[0]} if parts else None

    mean = {k: mean_of(k) for k in ("xy_cm", "xyz_cm", "yaw_deg")}
    first = next(iter(results.values()))
    return {
        "objects": results,
        "mean": mean,
        "n": sum(r["n"] for r in results.values()),
        "route": first["route"],
        "xy_cm": mean["xy_cm"],
        "xyz_cm": mean["xyz_cm"],
    }


def _frame_rows(
    frames: RealFrames,
    idx: list[int],
    name: str,
    truth: np.ndarray,
    pred: np.ndarray,
    labels: list[ObjectLabel | None],
    scores: dict[str, np.ndarray],
    yaw: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> list[list[str]]:
    errors = geometry.position_errors_cm(pred, truth)
    rows = []
    for j, i in enumerate(idx):
        visible = labels[i].visible  # type: ignore[union-attr]
        yaw_cells = [_cell(math.degrees(yaw[0][j])), _cell(math.degrees(yaw[1][j])),
                     _cell(yaw[2][j], 2)]  # fmt: skip
        rows.append(
            [frames.refs[i].source, name]
            + [f"{v:.4f}" for v in (*truth[j], *pred[j])]
            + [f"{errors['xy'][j]:.2f}", f"{errors['xyz'][j]:.2f}", *yaw_cells]
            + ["" if visible is None else str(int(bool(visible)))]
            + score_cells(scores, j)
        )
    return rows


def _cell(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else ""


def predict_rows(
    encoder: Encoder,
    frames: RealFrames,
    objects: Sequence[str] | None = None,
    batchnorm: str | None = None,
) -> list[list[str]]:
    """``file,object,x_m,y_m,z_m,yaw_deg,visible,confidence,ood`` rows, one per frame and
    target (:data:`OBJECT_PREDICT_COLUMNS`); ``yaw_deg`` empty for targets without yaw."""
    names = check_targets(list(card_targets(encoder.card)), objects)
    predictions = predict_objects(encoder, frames, batchnorm)
    rows = []
    for i, ref in enumerate(frames.refs):
        for name in names:
            pred = predictions[name]
            position = pred["routes"]["position_head"][i]
            yaw = pred["yaw"][i] if pred["yaw"] is not None else float("nan")
            cells = [*(f"{v:.4f}" for v in position), _cell(math.degrees(yaw))]
            rows.append([ref.source, name, *cells, *score_cells(pred["scores"], i)])
    return rows
