"""What :mod:`sim2real.perception.evaluate` and :mod:`sim2real.perception.evaluate_objects`
share: the position routes of a single-target encoder on real frames, the headline route,
detection beside the position error, and the score cells of the CSVs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sim2real.data.frames import RealFrames
from sim2real.errors import CheckpointError
from sim2real.perception import geometry
from sim2real.perception.encoder import Encoder
from sim2real.perception.scores import ACT_THRESHOLD

CHUNK = 32


def predict_routes(
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


def default_route(encoder: Encoder, routes: dict[str, np.ndarray], route: str | None) -> str:
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


def score_cells(scores: dict[str, np.ndarray], i: int) -> list[str]:
    """``visible, confidence, ood`` cells of row ``i`` (``ood`` empty when NaN)."""
    ood = float(scores["ood"][i])
    return [
        str(int(bool(scores["visible"][i]))),
        f"{float(scores['confidence'][i]):.4f}",
        f"{ood:.4f}" if math.isfinite(ood) else "",
    ]
