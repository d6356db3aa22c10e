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
from sim2real.perception.scores import ACT_THRESHOLD

logger = logging.getLogger(__name__)

FRAME_COLUMNS = (
    "file", "x_m", "y_m", "z_m", "pred_x_m", "pred_y_m", "pred_z_m", "err_xy_cm", "err_xyz_cm",
    "visible", "pred_visible", "confidence", "ood",
)  # fmt: skip
PREDICT_COLUMNS = ("file", "x_m", "y_m", "z_m", "visible", "confidence", "ood")
CHUNK = 32


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


def _predict_routes(
    encoder: Encoder, frames: RealFrames, batchnorm: str | None = None
) -> tuple[list, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """All frames' records (without pixels kept), ``{route: (N, 3)}`` predictions and the
    scores ``{"visible", "confidence", "ood": (N,)}`` (1, 1, NaN when the encoder gives none)."""
    sources, chunks, scored = [], [], []
    for start in range(0, len(frames), CHUNK):
        records = [frames[i] for i in range(start, min(start + CHUNK, len(frames)))]
        images = np.stack([r.image for r in records])
        out = encoder.predict(images, batchnorm=batchnorm)
        chunks.append(geometry.route_positions(out, encoder.card))
        n = len(records)
        defaults = {
            "visible": np.ones(n, bool),
            "confidence": np.ones(n),
            "ood": np.full(n, np.nan),
        }
        scored.append({k: np.asarray(out.get(k, v)) for k, v in defaults.items()})
        sources += [(r.source, r.position, r.visible) for r in records]
    routes = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}
    scores = {k: np.concatenate([c[k] for c in scored]) for k in scored[0]}
    if not routes:
        relative = geometry.position_frame(encoder.card) == "end_effector"
        raise CheckpointError(
            f"encoder has no route to a 3-D position (heads {sorted(encoder.heads)}): "
            "expected a 'position' head, or a 'keypoint' head with a camera in the card"
            + (
                "; its position head predicts the cube relative to the end effector, which "
                "labelled frames without the gripper's position cannot score"
                if relative
                else ""
            )
        )
    return sources, routes, scores


def _default_route(encoder: Encoder, routes: dict[str, np.ndarray], route: str | None) -> str:
    chosen = route or encoder.card.get("position_route") or next(iter(routes))
    if chosen not in routes and chosen in geometry.EE_ROUTES:
        raise CheckpointError(
            f"route {chosen!r} needs the gripper's position for every frame, which labelled "
            f"frames do not carry: expected route= one of {sorted(routes)} (e.g. --route "
            "keypoint_plane)"
        )
    if chosen not in routes:
        raise CheckpointError(f"route {chosen!r} not available: this encoder has {sorted(routes)}")
    return chosen


def evaluate(
    model: str | os.PathLike[str] | Encoder,
    real_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    route: str | None = None,
    device: str = "cpu",
    keypoint_window: int | None = None,
    batchnorm: str | None = None,
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
    frames = open_real(real_dir).labelled()
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
) -> Path:
    """Write ``file,x_m,y_m,z_m,visible,confidence,ood`` for every image of a folder.

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
    sources, routes, scores = _predict_routes(encoder, frames, batchnorm)
    pred = routes[_default_route(encoder, routes, route)]
    path = Path(out_csv)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(PREDICT_COLUMNS)
        for i, ((name, _, _), p) in enumerate(zip(sources, pred, strict=True)):
            writer.writerow([name, *(f"{v:.4f}" for v in p), *_score_cells(scores, i)])
    logger.info("wrote %d predictions to %s", len(sources), path)
    return path


def detection(
    truth: Sequence[bool | None],
    scores: dict[str, np.ndarray],
    pred: np.ndarray,
    labels: np.ndarray,
) -> dict[str, Any]:
    """Detection beside the position error: ``{"n_claimed_visible", "n_low_confidence",
    "labelled_visibility", "missed", "false_visible", "detected_xy_cm"}``.

    ``missed`` (frames labelled visible, predicted not visible) and ``false_visible`` (labelled
    not visible, predicted visible) count only frames whose labels say (a ``visible`` column;
    ``labelled_visibility`` is how many); None when none do. ``detected_xy_cm`` summarises the
    xy error over frames predicted visible and not labelled invisible (None when there are
    none).
    """
    visible = np.asarray(scores["visible"], dtype=bool)
    known = np.array([t is not None for t in truth])
    said = np.array([bool(t) for t in truth])
    detected = visible & ~(known & ~said)
    errors = geometry.position_errors_cm(pred, labels)["xy"]
    return {
        "n_claimed_visible": int(visible.sum()),
        "n_low_confidence": int((np.asarray(scores["confidence"]) < ACT_THRESHOLD).sum()),
        "labelled_visibility": int(known.sum()),
        "missed": int((known & said & ~visible).sum()) if known.any() else None,
        "false_visible": int((known & ~said & visible).sum()) if known.any() else None,
        "detected_xy_cm": geometry.summarise(errors[detected]) if detected.any() else None,
    }


def _score_cells(scores: dict[str, np.ndarray], i: int) -> list[str]:
    ood = float(scores["ood"][i])
    return [
        str(int(bool(scores["visible"][i]))),
        f"{float(scores['confidence'][i]):.4f}",
        f"{ood:.4f}" if math.isfinite(ood) else "",
    ]


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
