"""What pretraining needs for visibility and confidence: the visibility target of a simulated
sample, and the statistics (:mod:`sim2real.perception.scores`) written into the card at the
end of a run.

The visibility target is the dataset's ``objects.<NAME>.visible_fraction`` when it has one
(datasets with per-object labels, :func:`sim2real.envs.object_labels.dataset_fields`).
Datasets written before those labels get a coarse estimate from what they carry
(:func:`derived_visible_fraction`): 0 when no pixel of the cube is in the frame
(``visible_pixels``), 0.25 when some are but its centre ``uv`` lies outside the image, 0.75
when the centre is inside but its ``box`` touches the image border (cut by it), else 1;
without ``visible_pixels``: 1 when ``uv`` is inside the image, else 0.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sim2real.atomic import write_text
from sim2real.errors import DataError
from sim2real.perception.encoder import CARD_FILE, Encoder
from sim2real.perception.scores import (
    ACT_THRESHOLD,
    VISIBILITY_HEAD,
    VISIBILITY_THRESHOLD,
    feature_statistics,
    keypoint_sharpness,
)

logger = logging.getLogger(__name__)

#: Fields the estimate of :func:`derived_visible_fraction` reads, when the dataset has them.
DERIVED_FIELDS = ("visible_pixels", "box")


def fraction_field(object_name: str) -> str:
    """The per-object visible-fraction field of a dataset (``objects.NAME.visible_fraction``)."""
    return f"objects.{object_name}.visible_fraction"


def visibility_fields(available: Mapping[str, Any], object_name: str) -> list[str]:
    """The dataset fields the visibility target of ``object_name`` is read from.

    Raises:
        DataError: the dataset has per-object fractions, but none for ``object_name``.

    Example:
        >>> visibility_fields({"uv": {}, "visible_pixels": {}, "box": {}}, "cube")
        ['visible_pixels', 'box']
    """
    field = fraction_field(object_name)
    if field in available:
        return [field]
    others = sorted(f for f in available if f.startswith("objects.") and "visible_fraction" in f)
    if others:
        raise DataError(
            f"visibility_object={object_name!r}: the dataset has no {field!r}; it has {others}"
        )
    return [f for f in DERIVED_FIELDS if f in available]


def derived_visible_fraction(
    sample: Mapping[str, Any], image_wh: tuple[float, float], object_name: str = "cube"
) -> float:
    """The visible fraction of the target in ``sample`` (see the module docstring).

    Example:
        >>> s = {"uv": np.array([10.0, 5.0]), "visible_pixels": np.array(40),
        ...      "box": np.array([6.0, 1.0, 14.0, 9.0])}
        >>> derived_visible_fraction(s, (64, 48)), derived_visible_fraction(
        ...     {**s, "uv": np.array([-3.0, 5.0])}, (64, 48))
        (1.0, 0.25)
    """
    field = fraction_field(object_name)
    if field in sample:
        value = float(np.asarray(sample[field]))
        return value if np.isfinite(value) else 0.0
    w, h = image_wh
    uv = np.asarray(sample["uv"], dtype=np.float64).reshape(-1)[:2]
    inside = bool(np.isfinite(uv).all() and 0 <= uv[0] < w and 0 <= uv[1] < h)
    if "visible_pixels" not in sample:
        return 1.0 if inside else 0.0
    if int(np.asarray(sample["visible_pixels"])) <= 0:
        return 0.0
    if not inside:
        return 0.25
    box = np.asarray(sample.get("box", np.full(4, np.nan)), dtype=np.float64)
    if np.isfinite(box).all() and (box[0] <= 0 or box[1] <= 0 or box[2] >= w or box[3] >= h):
        return 0.75
    return 1.0


@torch.no_grad()
def _features(
    encoder: Encoder, samples: Any, batch_size: int
) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
    """Pooled block features ``[(N, C_l)]``, keypoint sharpness ``(N,)`` and the visibility
    target ``(N,)`` (None without those heads) of ``samples`` (a ``SimSamples``)."""
    pooled: list[list[torch.Tensor]] = []
    sharp, vis = [], []
    head = encoder.heads["keypoint"] if "keypoint" in encoder.heads else None  # noqa: SIM401
    for start in range(0, len(samples), batch_size):
        items = [samples[(0, i)] for i in range(start, min(start + batch_size, len(samples)))]
        images = torch.stack([it[0] for it in items]).to(encoder.device)
        per_block, fmap = encoder.block_features(encoder.preprocessing.normalise(images))
        pooled.append([p.cpu() for p in per_block])
        if head is not None and getattr(head, "kind", None) == "keypoints":
            sharp.append(keypoint_sharpness(head.heatmaps(fmap), head.temperature)[:, 0].cpu())
        if samples.visibility is not None:
            vis.append(torch.stack([it[-1] for it in items]).float())
    blocks = [torch.cat([chunk[b] for chunk in pooled]) for b in range(len(pooled[0]))]
    return blocks, torch.cat(sharp) if sharp else None, torch.cat(vis) if vis else None


def write_scores(
    root: Path, train_samples: Any, val_samples: Any, max_samples: int, batch_size: int = 64
) -> dict[str, Any]:
    """Add ``ood`` (feature statistics) and ``scores`` (thresholds, sharpness reference) to
    the card of the best model in ``root``; returns the card.

    Args:
        root: the pretraining output (``root/card.json`` is rewritten atomically).
        train_samples: non-augmented ``SimSamples`` of the training split.
        val_samples: non-augmented ``SimSamples`` of the validation split.
        max_samples: at most this many evenly spaced samples of each split.
        batch_size: samples per forward pass.
    """
    encoder = Encoder.load(root)
    train = _subset(train_samples, max_samples)
    val = _subset(val_samples, max_samples)
    train_feats, _, _ = _features(encoder, train, batch_size)
    val_feats, sharp, vis = _features(encoder, val, batch_size)
    card = json.loads((root / CARD_FILE).read_text())
    card["ood"] = feature_statistics(train_feats, val_feats)
    scores: dict[str, Any] = {
        "visibility_threshold": VISIBILITY_THRESHOLD,
        "act_threshold": ACT_THRESHOLD,
        "visibility_head": VISIBILITY_HEAD in encoder.heads,
    }
    if sharp is not None:
        seen = sharp if vis is None or not (vis >= 0.5).any() else sharp[vis >= 0.5]
        scores["sharpness_ref"] = float(seen.median())
    card["scores"] = scores
    write_text(root / CARD_FILE, json.dumps(card, indent=2, sort_keys=True) + "\n")
    logger.info(
        "feature statistics of %d training frames (reference: %d held-out) written to %s",
        len(train), len(val), root / CARD_FILE,
    )  # fmt: skip
    return card


class _Subset:
    """``samples`` restricted to evenly spaced positions (same ``(epoch, i)`` keys)."""

    def __init__(self, samples: Any, positions: np.ndarray) -> None:
        self.samples, self.positions = samples, positions
        self.visibility = getattr(samples, "visibility", None)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        return self.samples[(key[0], int(self.positions[key[1]]))]


def _subset(samples: Any, max_samples: int) -> _Subset:
    n = len(samples)
    positions = np.unique(np.linspace(0, n - 1, min(n, max_samples)).round().astype(int))
    return _Subset(samples, positions)
