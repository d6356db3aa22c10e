"""Perception: backbone registry, task heads and the :class:`Encoder` checkpoint.

Example:
    >>> from sim2real.perception import Encoder
    >>> enc = Encoder("nature_cnn", {"position": {"type": "position"}}, pretrained=False)
"""

from __future__ import annotations

from sim2real.perception.backbones import (
    BACKBONES,
    Backbone,
    available_backbones,
    build_backbone,
    load_efficientnet_lite0_imagenet,
)
from sim2real.perception.encoder import Encoder
from sim2real.perception.heads import (
    HEADS,
    BoxHead,
    KeypointHead,
    MaskHead,
    PositionHead,
    build_head,
    heatmap_kl,
    normalised_to_pixels,
    pixels_to_normalised,
    spatial_soft_argmax,
)
from sim2real.perception.preprocessing import Preprocessing, as_frames, resize_frames

__all__ = [
    "BACKBONES",
    "HEADS",
    "Backbone",
    "BoxHead",
    "Encoder",
    "KeypointHead",
    "MaskHead",
    "PositionHead",
    "Preprocessing",
    "as_frames",
    "available_backbones",
    "build_backbone",
    "build_head",
    "heatmap_kl",
    "load_efficientnet_lite0_imagenet",
    "normalised_to_pixels",
    "pixels_to_normalised",
    "resize_frames",
    "spatial_soft_argmax",
]
