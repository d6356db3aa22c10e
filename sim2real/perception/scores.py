"""Visibility, confidence and the out-of-distribution score of an encoder's answer.

A position estimate is only worth acting on when the target is in view, the network found it
clearly, and the frame looks like the frames it was trained on. Three numbers say that:

* ``visibility`` in ``[0, 1]``: the :class:`VisibilityHead`'s sigmoid, trained with binary
  cross-entropy on the simulator's visible fraction of the target (so it estimates that
  fraction; an object cut by the image border gets a value between 0 and 1). ``visible`` is
  ``visibility >= threshold`` (the card's ``scores.visibility_threshold``, 0.5).
  Without a visibility head (cards written before it) ``visibility`` is 1.
* ``ood`` >= 0: how far the frame's features lie from the simulated training frames'. At
  the end of pretraining the mean and variance of every backbone block's pooled features
  over training frames go into the card (``ood``), with, per block, the 99th percentile of
  the distance of held-out simulated frames. A frame's distance to block ``l`` is the
  diagonal Mahalanobis distance ``d_l = mean_c (f_c - mu_c)^2 / var_c`` and its score
  ``ood = mean_l d_l / q_l``: about 1 or less on simulated frames like the training ones,
  larger the further away. NaN without statistics in the card.
* ``confidence`` in ``[0, 1]`` = ``visibility * sharpness * trust``: ``sharpness`` is the
  keypoint heatmap's probability mass in the 3x3 cells around its peak over the median of
  that mass on held-out simulated frames (capped at 1; cards without the reference use 0.5:
  half the mass near the peak counts as sharp; 1 without a keypoint head), and ``trust`` =
  ``1 / (1 + max(0, ood - 1))`` (1 without statistics). Below :data:`ACT_THRESHOLD` (0.5):
  do not act on the position.

Example:
    >>> round(confidence(torch.tensor([0.9]), torch.tensor([1.0]), torch.tensor([3.0])).item(), 4)
    0.3
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from sim2real.errors import ConfigError

VISIBILITY_HEAD = "visibility"
#: Below this confidence the position should not be acted on.
ACT_THRESHOLD = 0.5
#: ``visible`` is ``visibility >= VISIBILITY_THRESHOLD`` unless the card says otherwise.
VISIBILITY_THRESHOLD = 0.5
#: Keypoint mass near the peak that counts as fully sharp when the card has no reference.
DEFAULT_SHARPNESS_REF = 0.5
#: The held-out quantile of the feature distance that ``ood = 1`` stands for.
OOD_QUANTILE = 0.99
SCORE_KEYS = ("visibility", "visible", "confidence", "ood")


class VisibilityHead(nn.Module):
    """Mean- and max-pooled features + MLP -> one logit: is the target (``object``) visible?

    Max pooling keeps a small object's response wherever it is in the map. Train with
    ``binary_cross_entropy_with_logits`` on the visible fraction; ``torch.sigmoid`` of the
    output estimates it.

    Shape:
        - features: ``(B, C, h, w)``; returns ``(B,)`` logits.

    Example:
        >>> VisibilityHead(16)(torch.zeros(2, 16, 3, 4)).shape
        torch.Size([2])
    """

    kind = "visibility"

    def __init__(self, in_channels: int, hidden: int = 64, object: str = "cube") -> None:
        super().__init__()
        if int(hidden) < 1:
            raise ConfigError(f"VisibilityHead: hidden={hidden!r}, expected an integer >= 1")
        self.in_channels, self.hidden, self.object = in_channels, int(hidden), str(object)
        self.mlp = nn.Sequential(
            nn.Linear(2 * in_channels, self.hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Visibility logits. Shape: ``(B, C, h, w)`` -> ``(B,)``."""
        pooled = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)
        return self.mlp(pooled)[:, 0].float()

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable)."""
        return {"in_channels": self.in_channels, "hidden": self.hidden, "object": self.object}

    def schema(self) -> dict[str, Any]:
        """Label schema for the card."""
        return {
            "kind": self.kind,
            "object": self.object,
            "output": "logit; sigmoid estimates the visible fraction of the object",
        }


def keypoint_sharpness(heatmaps: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    """Probability mass of the soft-argmax distribution in the 3x3 cells around its peak.

    Shape:
        - heatmaps: ``(B, K, h, w)``; returns ``(B, K)`` in ``[0, 1]``.

    Example:
        >>> maps = torch.zeros(1, 1, 5, 5)
        >>> maps[0, 0, 2, 2] = 50.0
        >>> keypoint_sharpness(maps, 1.0).tolist()
        [[1.0]]
    """
    b, k, h, w = heatmaps.shape
    probs = torch.softmax(heatmaps.float().reshape(b, k, h * w) / temperature, dim=-1)
    peak = probs.argmax(dim=-1)
    py, px = (peak // w)[..., None, None], (peak % w)[..., None, None]
    rows = torch.arange(h, device=heatmaps.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=heatmaps.device).view(1, 1, 1, w)
    near = ((rows - py).abs() <= 1) & ((cols - px).abs() <= 1)
    return (probs.reshape(b, k, h, w) * near).sum(dim=(2, 3))


def layer_distances(pooled: Sequence[torch.Tensor], stats: Mapping[str, Any]) -> torch.Tensor:
    """Diagonal Mahalanobis distance of pooled block features to the card's statistics.

    Args:
        pooled: one ``(B, C_l)`` tensor per backbone block.
        stats: the card's ``ood`` entry (``layers``: ``[{"mean", "var", "ref"}, ...]``).

    Shape:
        - returns ``(B, L)``: ``mean_c (f - mu)^2 / var`` per block (not divided by ``ref``).
    """
    layers = stats["layers"]
    if len(layers) != len(pooled):
        raise ConfigError(
            f"ood statistics for {len(layers)} blocks, the backbone has {len(pooled)}"
        )
    out = []
    for feats, layer in zip(pooled, layers, strict=True):
        mean = feats.new_tensor(layer["mean"])
        var = feats.new_tensor(layer["var"])
        out.append(((feats.float() - mean) ** 2 / var).mean(dim=1))
    return torch.stack(out, dim=1)


def ood_score(pooled: Sequence[torch.Tensor], stats: Mapping[str, Any] | None) -> torch.Tensor:
    """``mean_l d_l / ref_l`` (see the module docstring); NaN without ``stats``.

    Shape:
        - pooled: ``L`` tensors ``(B, C_l)``; returns ``(B,)``.
    """
    if not stats:
        return torch.full((len(pooled[0]),), float("nan"))
    refs = pooled[0].new_tensor([float(layer["ref"]) for layer in stats["layers"]])
    return (layer_distances(pooled, stats) / refs).mean(dim=1)


def confidence(
    visibility: torch.Tensor, sharpness: torch.Tensor, ood: torch.Tensor
) -> torch.Tensor:
    """``visibility * sharpness * 1 / (1 + max(0, ood - 1))`` (NaN ``ood``: trust 1).

    Shape:
        - all ``(B,)``; returns ``(B,)`` in ``[0, 1]``.
    """
    excess = torch.nan_to_num(ood.float(), nan=0.0).sub(1.0).clamp(min=0.0)
    return (visibility.float() * sharpness.float() / (1.0 + excess)).clamp(0.0, 1.0)


def frame_scores(
    card: Mapping[str, Any],
    logits: torch.Tensor | None,
    sharpness: torch.Tensor | None,
    pooled: Sequence[torch.Tensor],
) -> dict[str, torch.Tensor]:
    """``{"visibility", "visible", "confidence", "ood"}`` (each ``(B,)``) from the raw parts.

    Args:
        card: the encoder card (``scores`` and ``ood`` entries, when present).
        logits: the visibility head's logits, or None (no head: visibility 1).
        sharpness: :func:`keypoint_sharpness` of the target keypoint ``(B,)``, or None.
        pooled: pooled features of every backbone block, ``(B, C_l)`` each.
    """
    n = len(pooled[0])
    scores = card.get("scores", {})
    vis = torch.sigmoid(logits.float()) if logits is not None else torch.ones(n)
    sharp = torch.ones(n)
    if sharpness is not None:
        ref = float(scores.get("sharpness_ref") or DEFAULT_SHARPNESS_REF)
        sharp = (sharpness.float() / max(ref, 1e-6)).clamp(max=1.0)
    ood = ood_score(pooled, card.get("ood")).to(vis.device)
    threshold = float(scores.get("visibility_threshold", VISIBILITY_THRESHOLD))
    return {
        "visibility": vis,
        "visible": (vis >= threshold).float(),
        "confidence": confidence(vis, sharp.to(vis.device), ood),
        "ood": ood,
    }


def feature_statistics(
    train: Sequence[torch.Tensor], held_out: Sequence[torch.Tensor]
) -> dict[str, Any]:
    """The card's ``ood`` entry: per block mean/var of ``train`` and the held-out reference.

    Args:
        train: per block ``(N, C_l)`` pooled features of simulated training frames.
        held_out: per block ``(M, C_l)`` of held-out simulated frames (``ref``: the
            :data:`OOD_QUANTILE` of their distance; ``train`` itself when ``M == 0``).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> a, b = torch.randn(200, 4, generator=g), torch.randn(50, 4, generator=g)
        >>> stats = feature_statistics([a], [b])
        >>> bool(ood_score([b], stats).median() < 1.0), bool(ood_score([b + 5], stats)[0] > 3)
        (True, True)
    """
    layers = []
    for feats in train:
        f = feats.double()
        var = f.var(dim=0, unbiased=False) if len(f) > 1 else torch.ones(f.shape[1])
        floor = max(float(var.mean()) * 1e-3, 1e-8)  # a dead channel must not dominate
        layers.append({"mean": f.mean(dim=0).tolist(), "var": var.clamp(min=floor).tolist()})
    stats: dict[str, Any] = {"layers": layers}
    reference = held_out if len(held_out[0]) else train
    dist = layer_distances([f.float() for f in reference], stats)
    for layer, d in zip(layers, dist.T, strict=True):
        q = float(np.quantile(d.double().numpy(), OOD_QUANTILE))
        layer["ref"] = max(q, 1e-6)
    stats.update(
        samples=len(train[0]),
        reference_samples=len(reference[0]),
        quantile=OOD_QUANTILE,
        distance="diagonal Mahalanobis of mean-pooled block features, per block over ref",
    )
    return stats


def visibility_contract(encoder: Any) -> dict[str, Any]:
    """The ``visibility`` entry of a policy bundle's contract: what the bundle's encoder says
    about the target's visibility (``sim2real.deploy.Policy.perceive``, the ``Runner``'s
    ``not_visible`` behaviour).

    Example:
        >>> from sim2real.perception.encoder import Encoder
        >>> enc = Encoder("nature_cnn", {"position": {"type": "position"}}, pretrained=False)
        >>> visibility_contract(enc)["head"]
        False
    """
    card = encoder.card
    scores = card.get("scores", {})
    head = encoder.heads[VISIBILITY_HEAD] if VISIBILITY_HEAD in encoder.heads else None  # noqa: SIM401
    return {
        "head": head is not None,
        "object": getattr(head, "object", None),
        "visibility_threshold": float(scores.get("visibility_threshold", VISIBILITY_THRESHOLD)),
        "act_threshold": float(scores.get("act_threshold", ACT_THRESHOLD)),
        "ood_statistics": bool(card.get("ood")),
        "outputs": list(SCORE_KEYS),
        "meaning": "visible: visibility >= visibility_threshold (1 without a head); do not act "
        "on the position when confidence < act_threshold",
    }
