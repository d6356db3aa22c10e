"""Scoring an encoder on labelled real frames, and predicting positions for a folder.

``evaluate(model, real_dir)`` predicts the cube position of every labelled frame by each
route the encoder offers (:mod:`sim2real.perception.geometry`) and returns error statistics
in centimetres (xy, as the kuka_cube README scores, and xyz); with ``out_dir`` it also writes
a per-frame CSV and an overlay PNG, and it reports detection (visibility against a
``visible`` column of ``labels.csv``) beside the position error. ``predict_folder`` writes
``file,x_m,y_m,z_m,visible,confidence,ood`` for every image of a folder, labelled or not.
Neither prints: the CLI does.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from sim2real.data.frames import RealFrames
from sim2real.data.real import open_real
from sim2real.errors import CheckpointError, ConfigError, DataError
from sim2real.perception import geometry
from sim2real.perception.encoder import CARD_FILE, WEIGHTS_FILE, Encoder
from sim2real.perception.evaluate_common import default_route as _default_route
from sim2real.perception.evaluate_common import detection as detection  # re-exported
from sim2real.perception.evaluate_common import predict_routes as _predict_routes
from sim2real.perception.evaluate_common import score_cells as _score_cells
from sim2real.perception.evaluate_objects import (
    OBJECT_PREDICT_COLUMNS,
    evaluate_objects,
    per_object,
    predict_rows,
)
from sim2real.perception.targets import card_targets, check_targets, is_named

logger = logging.getLogger(__name__)

FRAME_COLUMNS = (
    "file", "x_m", "y_m", "z_m", "pred_x_m", "pred_y_m", "pred_z_m", "err_xy_cm", "err_xyz_cm",
    "visible", "pred_visible", "confidence", "ood",
)  # fmt: skip
PREDICT_COLUMNS = ("file", "x_m", "y_m", "z_m", "visible", "confidence", "ood")


def load_model(model: str | os.PathLike[str] | Encoder, device: str = "cpu") -> Encoder:
    """An :class:`Encoder` as given, or loaded from its folder with a clear error if absent.

    Raises:
        CheckpointError: the folder does not exist or is not an encoder checkpoint.
    """
    if isinstance(model, Encoder):
        return model
    folder = Path(model)
    if not folder.is_dir():
        raise CheckpointError(
            f"model '{folder}' does not exist: expected a folder written by `sim2real "
            f"pretrain` (holding {CARD_FILE} and {WEIGHTS_FILE})"
        )
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return Encoder.load(folder, device=device)


@contextlib.contextmanager
def keypoint_window_set(encoder: Encoder, window: int | None) -> Iterator[None]:
    """Decode the encoder's keypoint head with ``window`` inside the block (None: as it is).

    Raises:
        ConfigError: a window is given but the encoder has no keypoint head, or it is < 0.
    """
    if window is None:
        yield
        return
    if geometry.KEYPOINT_HEAD not in encoder.heads:
        raise ConfigError(
            f"keypoint_window={window!r} given, but the encoder has no {geometry.KEYPOINT_HEAD!r} "
            f"head (heads {sorted(encoder.heads)})"
        )
    if int(window) < 0:
        raise ConfigError(f"keypoint_window={window!r}: expected an integer >= 0 (0: whole map)")
    head = encoder.heads[geometry.KEYPOINT_HEAD]
    before = head.window
    head.window = int(window)
    try:
        yield
    finally:
        head.window = before


def evaluate(
    model: str | os.PathLike[str] | Encoder,
    real_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    route: str | None = None,
    device: str = "cpu",
    keypoint_window: int | None = None,
    batchnorm: str | None = None,
    objects: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Position error of an encoder on the labelled frames of a real folder.

    Only frames with a label are scored (a folder with ``labelled/`` and ``unlabelled/``
    subfolders is fine: the unlabelled ones are skipped).

    Args:
        model: encoder folder or a loaded :class:`Encoder`.
        real_dir: image folder with a ``labels.csv`` (``file,x_m,y_m,z_m``).
        out_dir: where to write ``frames.csv`` (per frame, default route) and
            ``overlay.png``; nothing is written when ``None``.
        route: position route to report as the headline; default: the card's.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        keypoint_window: decode the keypoint head with this soft-argmax window instead of
            the card's (0: whole map); the encoder is left as it was.
        batchnorm: ``"stored"`` or ``"frame"`` (each frame normalised by its own statistics,
            :func:`~sim2real.perception.encoder.frame_statistics`); default: the card's.
        objects: score these objects of a long ``labels.csv``. An encoder with per-target
            heads, labels with several objects, or ``objects`` given: the evaluation goes per
            object (:func:`~sim2real.perception.evaluate_objects.evaluate_objects`; its
            result adds ``objects`` and ``mean``, and ``xy_cm``/``xyz_cm`` are the mean over
            objects).

    Returns:
        ``{"n", "route", "xy_cm": {"mean", "median", "p90"}, "xyz_cm": {...},
        "routes": {route: {"xy_cm": ..., "xyz_cm": ...}}, "detection", "csv", "overlay"}``
        (paths or ``None``; ``detection`` as :func:`detection`: frames missed or claimed
        visible against a ``visible`` column of ``labels.csv``, and the xy error on the frames
        detected).

    Raises:
        CheckpointError: missing or invalid model.
        DataError: missing folder, no images, or no labelled frames.

    Example:
        >>> stats = evaluate("runs/kuka/encoder", "real/kuka_cube/labelled")  # doctest: +SKIP
        >>> round(stats["xy_cm"]["mean"], 1)  # doctest: +SKIP
        4.2
    """
    encoder = load_model(model, device)
    frames = open_real(real_dir)
    if objects or per_object(encoder, frames):
        with keypoint_window_set(encoder, keypoint_window):
            return evaluate_objects(
                encoder, frames, objects=objects, route=route, out_dir=out_dir,
                batchnorm=batchnorm,
            )  # fmt: skip
    frames = frames.labelled()
    if len(frames) == 0:
        raise DataError(
            f"'{real_dir}' has no labelled frames: expected images listed in a labels.csv "
            "(file,x_m,y_m,z_m)"
        )
    with keypoint_window_set(encoder, keypoint_window):
        sources, routes, scores = _predict_routes(encoder, frames, batchnorm)
    labels = np.stack([np.asarray(pos, dtype=np.float64) for _, pos, _ in sources])
    chosen = _default_route(encoder, routes, route)
    per_route = {}
    for name, pred in routes.items():
        errors = geometry.position_errors_cm(pred, labels)
        per_route[name] = {k: geometry.summarise(v) for k, v in errors.items()}
    stats: dict[str, Any] = {
        "n": len(sources),
        "route": chosen,
        "xy_cm": per_route[chosen]["xy"],
        "xyz_cm": per_route[chosen]["xyz"],
        "routes": {k: {"xy_cm": v["xy"], "xyz_cm": v["xyz"]} for k, v in per_route.items()},
        "csv": None,
        "overlay": None,
    }
    truth = [v for _, _, v in sources]
    stats["detection"] = detection(truth, scores, routes[chosen], labels)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        names = [s for s, _, _ in sources]
        stats["csv"] = str(
            _write_frames_csv(out / "frames.csv", names, labels, routes[chosen], truth, scores)
        )
        stats["overlay"] = str(
            _write_overlay(out / "overlay.png", frames, encoder.card, labels, routes)
        )
    logger.info(
        "evaluated %d frames: %s xy %.2f cm mean", len(sources), chosen, stats["xy_cm"]["mean"]
    )
    return stats


def predict_folder(
    model: str | os.PathLike[str] | Encoder,
    images_dir: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    route: str | None = None,
    device: str = "cpu",
    batchnorm: str | None = None,
    objects: Sequence[str] | None = None,
) -> Path:
    """Write ``file,x_m,y_m,z_m,visible,confidence,ood`` for every image of a folder.

    An encoder with per-target heads writes ``file,object,x_m,y_m,z_m,yaw_deg,visible,
    confidence,ood`` instead, one row per frame and target (``objects``: only these;
    :func:`~sim2real.perception.evaluate_objects.predict_rows`).

    The position (robot-base frame, metres) is written for every frame, visible or not;
    ``visible`` is 1 or 0, ``confidence`` in ``[0, 1]`` (below 0.5: do not act on the
    position), ``ood`` the distance to the simulated training features (empty when the card
    has no statistics): see :mod:`sim2real.perception.scores`.

    Args:
        model: encoder folder or a loaded :class:`Encoder`.
        images_dir: folder of ``.jpg``/``.png`` images (labels, if any, are ignored).
        out_csv: the CSV to write (its folder is created).
        route: position route; default: the card's ``position_route``.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        batchnorm: ``"stored"`` or ``"frame"``; default: the card's.

    Returns:
        ``out_csv`` as a path.

    Raises:
        CheckpointError: missing or invalid model.
        DataError: missing folder or a folder without images.

    Example:
        >>> predict_folder("runs/kuka/encoder", "real/kuka_cube/unlabelled", "preds.csv")
        ... # doctest: +SKIP
    """
    encoder = load_model(model, device)
    frames = open_real(images_dir)
    path = Path(out_csv)
    if is_named(encoder.card):
        rows = predict_rows(encoder, frames, objects, batchnorm)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            csv.writer(f).writerows([OBJECT_PREDICT_COLUMNS, *rows])
        logger.info("wrote %d predictions (%d frames) to %s", len(rows), len(frames), path)
        return path
    check_targets(list(card_targets(encoder.card)), objects)
    sources, routes, scores = _predict_routes(encoder, frames, batchnorm)
    pred = routes[_default_route(encoder, routes, route)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(PREDICT_COLUMNS)
        for i, ((name, _, _), p) in enumerate(zip(sources, pred, strict=True)):
            writer.writerow([name, *(f"{v:.4f}" for v in p), *_score_cells(scores, i)])
    logger.info("wrote %d predictions to %s", len(sources), path)
    return path


def _write_frames_csv(
    path: Path,
    names: Sequence[str],
    labels: np.ndarray,
    pred: np.ndarray,
    truth: Sequence[bool | None],
    scores: dict[str, np.ndarray],
) -> Path:
    errors = geometry.position_errors_cm(pred, labels)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FRAME_COLUMNS)
        for i, name in enumerate(names):
            writer.writerow(
                [name]
                + [f"{v:.4f}" for v in (*labels[i], *pred[i])]
                + [f"{errors['xy'][i]:.2f}", f"{errors['xyz'][i]:.2f}"]
                + ["" if truth[i] is None else str(int(bool(truth[i])))]
                + _score_cells(scores, i)
            )
    return path


ROUTE_COLOURS = {  # RGB
    "position_head": (255, 80, 0),
    "keypoint_plane": (230, 0, 230),
    "keypoint_relative": (0, 200, 255),
}


def _write_overlay(
    path: Path,
    frames: RealFrames,
    card: dict[str, Any],
    labels: np.ndarray,
    routes: dict[str, np.ndarray],
    tile_width: int = 320,
    columns: int = 4,
) -> Path:
    """Grid of frames: label (green circle) and each route's prediction (cross) projected
    with the card's camera; without a camera in the card, frames only carry the error text."""
    cam = geometry.PlaneCamera.from_card(card["camera"]) if card.get("camera") else None
    tiles = []
    for i in range(len(frames)):
        record = frames[i]
        h, w = record.image.shape[:2]
        scale = tile_width / w
        tile = cv2.resize(record.image, (tile_width, round(h * scale)), cv2.INTER_AREA)
        tile = np.ascontiguousarray(tile)
        if cam is not None:
            points = [("label", labels[i])] + [(r, p[i]) for r, p in routes.items()]
            for name, point in points:
                u, v = cam.project(point[None], w, h)[0] * scale
                if not (math.isfinite(u) and math.isfinite(v)):
                    continue
                centre = (round(u), round(v))
                if name == "label":
                    cv2.circle(tile, centre, 7, (0, 220, 0), 2, cv2.LINE_AA)
                else:
                    colour = ROUTE_COLOURS.get(name, (255, 0, 0))
                    cv2.drawMarker(tile, centre, colour, cv2.MARKER_CROSS, 12, 2, cv2.LINE_AA)
        text = "  ".join(
            f"{r[:3]} {np.linalg.norm((p[i] - labels[i])[:2]) * 100:.1f}cm"
            for r, p in routes.items()
        )
        cv2.putText(tile, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1)
        cv2.putText(tile, record.source, (4, tile.shape[0] - 6), 0, 0.4, (255, 255, 255), 1)
        tiles.append(tile)
    th, tw = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / columns)
    grid = np.zeros((rows * th, min(columns, len(tiles)) * tw, 3), np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        grid[r * th : r * th + tile.shape[0], c * tw : c * tw + tile.shape[1]] = tile[:th, :tw]
    if not cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise DataError(f"cannot write overlay image '{path}'")
    return path
