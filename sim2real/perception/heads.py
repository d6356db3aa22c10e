"""Task heads that read a backbone feature map: 3-D position, keypoints, box, mask.

Several heads share one encoder (``Encoder.heads`` is an ``nn.ModuleDict``). Each head is
rebuilt from ``build_head(type, in_channels, **config())``; tensors that belong to it (e.g. the
target statistics of :class:`PositionHead`) are buffers, so they travel in the safetensors.

Image coordinates follow ``align_corners=False``: normalised ``-1`` / ``+1`` are the outer
edges of the image and pixel ``i``'s centre is at ``(2 i + 1) / W - 1``; in pixel units the
centre of the top-left pixel is ``(0, 0)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sim2real.errors import ConfigError, InputError
from sim2real.perception.scores import VisibilityHead
from sim2real.perception.yaw_head import YawHead

logger = logging.getLogger(__name__)


def _cell_centres(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised x (``(w,)``) and y (``(h,)``) of the cell centres, ``align_corners=False``."""
    xs = (2.0 * torch.arange(w, device=device, dtype=torch.float32) + 1.0) / w - 1.0
    ys = (2.0 * torch.arange(h, device=device, dtype=torch.float32) + 1.0) / h - 1.0
    return xs, ys


def spatial_soft_argmax(
    heatmaps: torch.Tensor, temperature: float | torch.Tensor = 1.0, window: int = 0
) -> torch.Tensor:
    """Expected (x, y) location under a softmax over each heatmap, sub-pixel.

    With ``window > 0`` the softmax is taken only over the ``(2 window + 1)^2`` cells around
    each map's argmax (a local soft-argmax): when the mass is split between the object and
    something else, the plain expectation lands between them, on neither; the local one stays
    on the strongest peak and is still sub-pixel. Training uses the whole map (``window=0``)
    so every cell gets a gradient.

    Args:
        heatmaps: logits, one map per keypoint.
        temperature: softmax temperature (scalar or 0-d tensor, may be learnable).
        window: half-width in cells of the window around the argmax; 0: the whole map.

    Returns:
        Normalised coordinates in ``[-1, 1]`` (``align_corners=False``), x then y.

    Shape:
        - heatmaps: ``(B, K, h, w)``; returns ``(B, K, 2)``.

    Example:
        >>> spatial_soft_argmax(torch.zeros(1, 1, 4, 4)).tolist()
        [[[0.0, 0.0]]]
    """
    if int(window) < 0:
        raise ConfigError(f"window={window!r}: expected an integer >= 0 (0: the whole map)")
    b, k, h, w = heatmaps.shape
    logits = heatmaps.float().reshape(b, k, h * w) / temperature
    if window > 0:
        peak = logits.argmax(dim=-1)
        py, px = (peak // w)[..., None, None], (peak % w)[..., None, None]
        rows = torch.arange(h, device=heatmaps.device).view(1, 1, h, 1)
        cols = torch.arange(w, device=heatmaps.device).view(1, 1, 1, w)
        near = ((rows - py).abs() <= window) & ((cols - px).abs() <= window)
        logits = logits.masked_fill(~near.reshape(b, k, h * w), float("-inf"))
    probs = torch.softmax(logits, dim=-1).reshape(b, k, h, w)
    xs, ys = _cell_centres(h, w, heatmaps.device)
    x = (probs.sum(dim=2) * xs).sum(dim=-1)
    y = (probs.sum(dim=3) * ys).sum(dim=-1)
    return torch.stack([x, y], dim=-1)


def heatmap_kl(
    heatmaps: torch.Tensor,
    target_xy: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    sigma_cells: float = 1.0,
) -> torch.Tensor:
    """KL divergence from a Gaussian at the target to the soft-argmax distribution.

    The heatmap term of DSNT-style keypoint training (Nibali et al. 2018): an L1 loss on the
    soft-argmax alone is satisfied by any distribution whose mean is right, including two
    blobs on either side of the cube; this term asks for one peak at the target, about
    ``sigma_cells`` feature-map cells wide. The Gaussian is evaluated at the cell centres
    (``align_corners=False``, as :func:`spatial_soft_argmax`) and renormalised, so a target
    near the image border still gives a proper distribution. Zero when the softmax equals it.

    Args:
        heatmaps: logits, one map per keypoint.
        target_xy: target positions, normalised ``[-1, 1]`` (x, y).
        temperature: the softmax temperature the soft-argmax uses.
        sigma_cells: Gaussian standard deviation in feature-map cells (> 0).

    Returns:
        The mean KL over batch and keypoints (a 0-d tensor, nats).

    Shape:
        - heatmaps: ``(B, K, h, w)``; target_xy: ``(B, K, 2)``.

    Example:
        >>> maps = torch.zeros(1, 1, 6, 8)
        >>> maps[0, 0, 2, 5] = 8.0
        >>> near = torch.tensor([[[(2 * 5 + 1) / 8 - 1, (2 * 2 + 1) / 6 - 1]]])
        >>> bool(heatmap_kl(maps, near) < heatmap_kl(maps, -near))
        True
    """
    if not sigma_cells > 0:
        raise ConfigError(f"sigma_cells={sigma_cells!r}: expected a positive number")
    b, k, h, w = heatmaps.shape
    if target_xy.shape != (b, k, 2):
        raise InputError(f"target_xy: expected shape {(b, k, 2)}, got {tuple(target_xy.shape)}")
    log_p = torch.log_softmax(heatmaps.float().reshape(b, k, h * w) / temperature, dim=-1)
    xs, ys = _cell_centres(h, w, heatmaps.device)
    target = target_xy.float()
    dx = (xs.view(1, 1, 1, w) - target[..., 0, None, None]) * (w / 2.0)  # in cells
    dy = (ys.view(1, 1, h, 1) - target[..., 1, None, None]) * (h / 2.0)
    log_t = (-(dx**2 + dy**2) / (2.0 * sigma_cells**2)).reshape(b, k, h * w)
    log_t = torch.log_softmax(log_t, dim=-1)
    return (log_t.exp() * (log_t - log_p)).sum(dim=-1).mean()


def normalised_to_pixels(xy: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Map normalised ``[-1, 1]`` coordinates to pixel coordinates of a ``width x height`` image.

    Shape:
        - xy: ``(..., 2)``; returns ``(..., 2)`` as ``(u, v)``.

    Example:
        >>> normalised_to_pixels(torch.tensor([-1.0, 1.0]), 4, 2).tolist()
        [-0.5, 1.5]
    """
    scale = xy.new_tensor([width, height])
    return ((xy + 1.0) * scale - 1.0) / 2.0


def pixels_to_normalised(uv: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Inverse of :func:`normalised_to_pixels`.

    Shape:
        - uv: ``(..., 2)``; returns ``(..., 2)``.
    """
    scale = uv.new_tensor([width, height])
    return (2.0 * uv + 1.0) / scale - 1.0


def _mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    if hidden <= 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, out_dim),
    )


POSITION_POOLS = ("mean", "mean+points")


class PositionHead(nn.Module):
    """Pooled features + MLP -> a position in a declared frame, in target units (metres).

    ``pool="mean"`` reads the global average of the feature map: it keeps *what* is in the
    image but not *where*, so the position must be encoded in the channels.
    ``pool="mean+points"`` also gives the MLP ``points`` learnt feature points: a 1x1 conv
    makes ``points`` maps and :func:`spatial_soft_argmax` turns each into its expected
    ``(x, y)`` (the "spatial softmax" of Levine et al. 2016, deep visuomotor policies), so
    image positions reach the MLP directly, sub-pixel, with no camera model.

    The MLP predicts standardised values; ``forward`` de-normalises them with the stored target
    ``mean/std`` (buffers). Train with a loss on ``normalise(target)`` vs ``forward_normalised``.

    Shape:
        - features: ``(B, C, h, w)``; returns ``(B, out_dim)``.

    Example:
        >>> head = PositionHead(64, frame="world")
        >>> head(torch.zeros(2, 64, 3, 4)).shape
        torch.Size([2, 3])
    """

    kind = "position"

    def __init__(
        self,
        in_channels: int,
        out_dim: int = 3,
        hidden: int = 256,
        dropout: float = 0.0,
        frame: str = "world",
        names: Sequence[str] | None = None,
        units: str = "m",
        pool: str = "mean",
        points: int = 32,
    ) -> None:
        super().__init__()
        names = list(names) if names is not None else ["x", "y", "z"][:out_dim]
        if len(names) != out_dim:
            raise ConfigError(f"PositionHead: names has {len(names)} entries, out_dim={out_dim}")
        if pool not in POSITION_POOLS:
            raise ConfigError(f"PositionHead: pool={pool!r}, expected one of {POSITION_POOLS}")
        if pool != "mean" and int(points) < 1:
            raise ConfigError(f"PositionHead: points={points!r}, expected an integer >= 1")
        self.in_channels, self.out_dim, self.hidden, self.dropout = (
            in_channels,
            out_dim,
            hidden,
            dropout,
        )
        self.frame, self.names, self.units = frame, names, units
        self.pool, self.points = pool, int(points)
        self.point_maps = nn.Conv2d(in_channels, self.points, 1) if pool != "mean" else None
        pooled_dim = in_channels + (2 * self.points if self.point_maps is not None else 0)
        self.mlp = _mlp(pooled_dim, hidden, out_dim, dropout)
        self.register_buffer("target_mean", torch.zeros(out_dim))
        self.register_buffer("target_std", torch.ones(out_dim))

    def set_target_stats(
        self, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
    ) -> None:
        """Store the training targets' mean and std (std clamped away from zero)."""
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(self.out_dim)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(self.out_dim).clamp_min(1e-6)
        self.target_mean.copy_(mean_t)
        self.target_std.copy_(std_t)

    def normalise(self, target: torch.Tensor) -> torch.Tensor:
        """Standardise targets. Shape: ``(B, out_dim)`` -> ``(B, out_dim)``."""
        return (target - self.target_mean) / self.target_std

    def pooled(self, features: torch.Tensor) -> torch.Tensor:
        """The MLP's input. Shape: ``(B, C, h, w)`` -> ``(B, C)`` or ``(B, C + 2 * points)``."""
        mean = features.mean(dim=(2, 3))
        if self.point_maps is None:
            return mean
        xy = spatial_soft_argmax(self.point_maps(features)).flatten(1)
        return torch.cat([mean, xy.to(mean.dtype)], dim=1)

    def forward_normalised(self, features: torch.Tensor) -> torch.Tensor:
        """Standardised prediction. Shape: ``(B, C, h, w)`` -> ``(B, out_dim)``."""
        return self.mlp(self.pooled(features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Position in ``frame`` and ``units``. Shape: ``(B, C, h, w)`` -> ``(B, out_dim)``."""
        return self.forward_normalised(features).float() * self.target_std + self.target_mean

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable)."""
        return {
            "in_channels": self.in_channels,
            "out_dim": self.out_dim,
            "hidden": self.hidden,
            "dropout": self.dropout,
            "frame": self.frame,
            "names": self.names,
            "units": self.units,
            "pool": self.pool,
            "points": self.points,
        }

    def schema(self) -> dict[str, Any]:
        """Label schema for the card."""
        return {"kind": self.kind, "frame": self.frame, "names": self.names, "units": self.units}


class KeypointHead(nn.Module):
    """Per-keypoint heatmaps (optional 3x3 conv, then 1x1 conv) + spatial soft-argmax.

    Returns normalised image coordinates in ``[-1, 1]`` (see module docstring); convert with
    :func:`normalised_to_pixels` for any image size (the resize is a stretch, so the same
    normalised coordinates hold for the original frame). The softmax temperature is learnt.
    In eval mode the soft-argmax is local to ``window`` cells around the peak (see
    :func:`spatial_soft_argmax`; 0, the default and what cards written before it mean: the
    whole map); in train mode it is always the whole map.

    Shape:
        - features: ``(B, C, h, w)``; returns ``(B, K, 2)``.

    Example:
        >>> head = KeypointHead(40, names=["cube"])
        >>> head(torch.zeros(1, 40, 12, 16)).shape
        torch.Size([1, 1, 2])
    """

    kind = "keypoints"

    def __init__(
        self,
        in_channels: int,
        names: Sequence[str] = ("keypoint",),
        hidden: int = 0,
        temperature: float = 1.0,
        window: int = 0,
    ) -> None:
        super().__init__()
        if not names:
            raise ConfigError("KeypointHead: names must list at least one keypoint")
        if int(window) < 0:
            raise ConfigError(f"KeypointHead: window={window!r}, expected an integer >= 0")
        self.in_channels, self.names, self.hidden = in_channels, list(names), hidden
        self.window = int(window)
        self.initial_temperature = float(temperature)
        layers: list[nn.Module] = []
        channels = in_channels
        if hidden > 0:
            layers += [nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(inplace=True)]
            channels = hidden
        layers.append(nn.Conv2d(channels, len(self.names), 1))
        self.net = nn.Sequential(*layers)
        self.log_temperature = nn.Parameter(torch.tensor(float(temperature)).log())

    def heatmaps(self, features: torch.Tensor) -> torch.Tensor:
        """Heatmap logits. Shape: ``(B, C, h, w)`` -> ``(B, K, h, w)``."""
        return self.net(features)

    @property
    def temperature(self) -> torch.Tensor:
        """The learnt softmax temperature (0-d tensor) of :func:`spatial_soft_argmax`."""
        return self.log_temperature.exp()

    def decode(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """Heatmap logits -> normalised coordinates (local soft-argmax in eval mode).

        Shape: ``(B, K, h, w)`` -> ``(B, K, 2)``.
        """
        window = 0 if self.training else self.window
        return spatial_soft_argmax(heatmaps, self.temperature, window)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Normalised keypoint coordinates. Shape: ``(B, C, h, w)`` -> ``(B, K, 2)``."""
        return self.decode(self.heatmaps(features))

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable)."""
        return {
            "in_channels": self.in_channels,
            "names": self.names,
            "hidden": self.hidden,
            "temperature": self.initial_temperature,
            "window": self.window,
        }

    def schema(self) -> dict[str, Any]:
        """Label schema for the card."""
        return {
            "kind": self.kind,
            "names": self.names,
            "coords": "normalised [-1, 1], x right, y down",
        }


class BoxHead(nn.Module):
    """Global pool + MLP -> one box ``(cx, cy, w, h)`` as fractions of the image, in ``[0, 1]``.

    Shape:
        - features: ``(B, C, h, w)``; returns ``(B, 4)``.
    """

    kind = "box"

    def __init__(self, in_channels: int, hidden: int = 256) -> None:
        super().__init__()
        self.in_channels, self.hidden = in_channels, hidden
        self.mlp = _mlp(in_channels, hidden, 4, 0.0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Box ``(cx, cy, w, h)``. Shape: ``(B, C, h, w)`` -> ``(B, 4)``."""
        return torch.sigmoid(self.mlp(features.mean(dim=(2, 3))).float())

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable)."""
        return {"in_channels": self.in_channels, "hidden": self.hidden}

    def schema(self) -> dict[str, Any]:
        """Label schema for the card."""
        return {"kind": self.kind, "format": "cxcywh, fractions of the image"}


class MaskHead(nn.Module):
    """1x1 conv -> per-class mask logits at feature-map resolution (upsample to compare).

    Shape:
        - features: ``(B, C, h, w)``; returns ``(B, num_classes, h, w)``.
    """

    kind = "mask"

    def __init__(self, in_channels: int, num_classes: int = 1) -> None:
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.conv = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Mask logits. Shape: ``(B, C, h, w)`` -> ``(B, num_classes, h, w)``."""
        return self.conv(features)

    def upsample(self, logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Bilinear upsampling of logits to ``(B, num_classes, height, width)``."""
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable)."""
        return {"in_channels": self.in_channels, "num_classes": self.num_classes}

    def schema(self) -> dict[str, Any]:
        """Label schema for the card."""
        return {"kind": self.kind, "num_classes": self.num_classes, "output": "logits"}


HEADS: dict[str, type[nn.Module]] = {
    "position": PositionHead,
    "keypoints": KeypointHead,
    "box": BoxHead,
    "mask": MaskHead,
    "visibility": VisibilityHead,
    "yaw": YawHead,
}


def build_head(kind: str, in_channels: int, /, **config: Any) -> nn.Module:
    """Build a head by type name.

    Args:
        kind: one of ``HEADS`` (``position``, ``keypoints``, ``box``, ``mask``,
            ``visibility``, ``yaw``).
        in_channels: channels of the backbone feature map.
        **config: the head's constructor options; ``in_channels`` in it must agree.

    Raises:
        ConfigError: unknown kind, bad option, or an ``in_channels`` that disagrees.

    Example:
        >>> build_head("position", 64, frame="world").config()["frame"]
        'world'
    """
    if kind not in HEADS:
        raise ConfigError(f"unknown head type {kind!r}: expected one of {sorted(HEADS)}")
    declared = config.pop("in_channels", in_channels)
    if declared != in_channels:
        raise ConfigError(
            f"head {kind!r}: in_channels={declared} but the backbone gives {in_channels}"
        )
    try:
        return HEADS[kind](in_channels, **config)
    except TypeError as exc:
        raise ConfigError(f"head {kind!r}: bad options {sorted(config)}: {exc}") from exc
