"""Perception: backbone registry, task heads and the :class:`Encoder` checkpoint.

Example:
    >>> from sim2real.perception import Encoder
    >>> enc = Encoder("nature_cnn", {"position": {"type": "position"}}, pretrained=False)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim2real.lazy import lazy_getattr

if TYPE_CHECKING:
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
    from sim2real.perception.scores import VisibilityHead, frame_scores

#: Where each public name is defined; imported on first use, so that importing a
#: submodule (e.g. the settings, for the command line) does not load torch.
_SOURCES = {
    "BACKBONES": "sim2real.perception.backbones",
    "Backbone": "sim2real.perception.backbones",
    "available_backbones": "sim2real.perception.backbones",
    "build_backbone": "sim2real.perception.backbones",
    "load_efficientnet_lite0_imagenet": "sim2real.perception.backbones",
    "Encoder": "sim2real.perception.encoder",
    "HEADS": "sim2real.perception.heads",
    "BoxHead": "sim2real.perception.heads",
    "KeypointHead": "sim2real.perception.heads",
    "MaskHead": "sim2real.perception.heads",
    "PositionHead": "sim2real.perception.heads",
    "build_head": "sim2real.perception.heads",
    "heatmap_kl": "sim2real.perception.heads",
    "normalised_to_pixels": "sim2real.perception.heads",
    "pixels_to_normalised": "sim2real.perception.heads",
    "spatial_soft_argmax": "sim2real.perception.heads",
    "Preprocessing": "sim2real.perception.preprocessing",
    "as_frames": "sim2real.perception.preprocessing",
    "resize_frames": "sim2real.perception.preprocessing",
    "VisibilityHead": "sim2real.perception.scores",
    "frame_scores": "sim2real.perception.scores",
}


__getattr__ = lazy_getattr(globals(), _SOURCES)


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
    "VisibilityHead",
    "as_frames",
    "available_backbones",
    "build_backbone",
    "build_head",
    "frame_scores",
    "heatmap_kl",
    "load_efficientnet_lite0_imagenet",
    "normalised_to_pixels",
    "pixels_to_normalised",
    "resize_frames",
    "spatial_soft_argmax",
]
