"""Preprocessing shared by training and inference: validate, resize, normalise frames.

One path for both: :func:`resize_frames` (torch bilinear with antialiasing on float values,
rounded back to uint8) then :meth:`Preprocessing.normalise`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sim2real.errors import ConfigError, InputError

COLOUR_ORDERS = ("RGB", "BGR")
RESIZE_POLICIES = ("stretch",)
#: What :func:`resize_frames` does, recorded in the card for other runtimes.
RESIZE_METHOD = "torch bilinear, antialias, align_corners=False, float then round to uint8"
Frames = np.ndarray | torch.Tensor


def as_frames(frames: Frames) -> torch.Tensor:
    """Validate uint8 frames and return them as a ``(N, H, W, 3)`` uint8 tensor (no copy).

    Raises:
        InputError: wrong type, dtype, number of dimensions or channels.

    Shape:
        - frames: ``(H, W, 3)`` or ``(N, H, W, 3)``; returns ``(N, H, W, 3)``.
    """
    if isinstance(frames, np.ndarray):
        dtype_ok = frames.dtype == np.uint8
        tensor = torch.from_numpy(np.ascontiguousarray(frames)) if dtype_ok else None
    elif isinstance(frames, torch.Tensor):
        dtype_ok = frames.dtype == torch.uint8
        tensor = frames
    else:
        raise InputError(
            f"frames: expected a uint8 numpy array or torch tensor, got {type(frames).__name__}"
        )
    if not dtype_ok:
        raise InputError(
            f"frames: expected dtype uint8 (0-255 pixels), got {frames.dtype}; "
            "convert with (x * 255).round().astype(np.uint8) if they are floats in [0, 1]"
        )
    assert tensor is not None
    if tensor.ndim not in (3, 4):
        raise InputError(
            f"frames: expected (H, W, 3) or (N, H, W, 3), got shape {tuple(tensor.shape)}"
        )
    if tensor.shape[-1] != 3:
        raise InputError(
            f"frames: expected 3 colour channels last (H, W, 3), got shape {tuple(tensor.shape)}"
            + ("; channels-first? use frames.transpose(1, 2, 0)" if tensor.shape[-3] == 3 else "")
        )
    if tensor.shape[-2] < 1 or tensor.shape[-3] < 1:
        raise InputError(f"frames: empty image, shape {tuple(tensor.shape)}")
    return tensor if tensor.ndim == 4 else tensor.unsqueeze(0)


def resize_frames(frames: Frames, width: int, height: int) -> torch.Tensor:
    """Resize uint8 frames to ``width x height`` (stretch), the one resize used everywhere.

    Bilinear interpolation with antialiasing (``align_corners=False``) on float values, rounded
    back to uint8, so resizing when writing a dataset or at inference gives the same pixels.

    Shape:
        - frames: ``(N, H, W, 3)`` or ``(H, W, 3)`` uint8; returns ``(N, height, width, 3)``.

    Example:
        >>> resize_frames(np.zeros((480, 640, 3), np.uint8), 128, 96).shape
        torch.Size([1, 96, 128, 3])
    """
    x = as_frames(frames)
    if x.shape[1] == height and x.shape[2] == width:
        return x
    chw = x.permute(0, 3, 1, 2).float()
    out = F.interpolate(
        chw, size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


@dataclass(frozen=True)
class Preprocessing:
    """How raw uint8 frames become the network input.

    Attributes:
        width: network input width ``W``.
        height: network input height ``H``.
        colour: channel order of the frames the encoder was trained on (``RGB`` or ``BGR``).
        mean: per-channel mean in 0-1 units, in the encoder's colour order.
        std: per-channel std in 0-1 units.
        resize: resize policy; ``stretch`` (whole frame to ``W x H``, aspect not kept).
    """

    width: int = 128
    height: int = 96
    colour: str = "RGB"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resize: str = "stretch"

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8:
            raise ConfigError(f"input size must be at least 8x8, got {self.width}x{self.height}")
        if self.colour not in COLOUR_ORDERS:
            raise ConfigError(f"colour={self.colour!r}: expected one of {list(COLOUR_ORDERS)}")
        if self.resize not in RESIZE_POLICIES:
            raise ConfigError(f"resize={self.resize!r}: expected one of {list(RESIZE_POLICIES)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"mean/std must be 3 numbers, std > 0; got {self.mean}, {self.std}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the card's ``preprocessing``)."""
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "mean": tuple(data["mean"]), "std": tuple(data["std"])})

    def normalise(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC frames (already resized) -> normalised float NCHW (channels_last memory).

        Shape:
            - frames: ``(N, H, W, 3)``; returns ``(N, 3, H, W)``.
        """
        mean = torch.tensor(self.mean, device=frames.device).mul_(255.0)
        std = torch.tensor(self.std, device=frames.device).mul_(255.0)
        x = (frames.float() - mean) / std
        return x.permute(0, 3, 1, 2)

    def __call__(
        self, frames: Frames, colour: str | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Validate, convert colour order, resize and normalise.

        Args:
            frames: uint8 ``(H, W, 3)`` or ``(N, H, W, 3)`` at any resolution.
            colour: channel order of ``frames``; default: the encoder's own.
            device: where to do the work and return the tensor.

        Shape:
            - returns ``(N, 3, height, width)`` float32.
        """
        order = self.colour if colour is None else colour
        if order not in COLOUR_ORDERS:
            raise InputError(f"colour={order!r}: expected one of {list(COLOUR_ORDERS)}")
        x = as_frames(frames).to(device)
        if order != self.colour:
            x = x.flip(-1)
        return self.normalise(resize_frames(x, self.width, self.height))
