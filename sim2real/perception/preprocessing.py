"""Preprocessing shared by training and inference: validate, resize, crop, normalise frames.

One path for both: :func:`resize_frames` (torch bilinear with antialiasing on float values,
rounded back to uint8) to the *frame size* ``width x height``, then
:meth:`Preprocessing.normalise`, which cuts the optional region of interest ``crop`` out of it
(whole pixels of the frame size, so a dataset stored at the frame size is cropped exactly as
a camera frame) and normalises. Keypoint heads see the crop; their outputs are mapped to and
from normalised coordinates of the whole frame by :meth:`Preprocessing.to_frame` and
:meth:`Preprocessing.to_input`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sim2real.errors import ConfigError, InputError
from sim2real.images import COLOUR_ORDERS, check_frame

RESIZE_POLICIES = ("stretch",)
#: What :func:`resize_frames` does, recorded in the card for other runtimes.
RESIZE_METHOD = "torch bilinear, antialias, align_corners=False, float then round to uint8"
Frames = np.ndarray | torch.Tensor


def as_frames(frames: Frames) -> torch.Tensor:
    """Validate uint8 frames and return them as a ``(N, H, W, 3)`` uint8 tensor (no copy).

    Raises:
        InputError: wrong type, dtype, number of dimensions or channels
            (:func:`sim2real.images.check_frame`).

    Shape:
        - frames: ``(H, W, 3)`` or ``(N, H, W, 3)``; returns ``(N, H, W, 3)``.
    """
    check_frame(frames, "frames", batch=True, tensors=True)
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    return frames if frames.ndim == 4 else frames.unsqueeze(0)


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
        crop: region of interest ``(x0, y0, x1, y1)`` in pixels of the ``W x H`` frame (x1,
            y1 exclusive), cut out after the resize; the network sees ``(x1 - x0) x (y1 - y0)``.
            ``None``: the whole frame.

    Example:
        >>> pre = Preprocessing(160, 120, crop=(0, 40, 160, 120))
        >>> pre(np.zeros((480, 640, 3), np.uint8)).shape
        torch.Size([1, 3, 80, 160])
        >>> pre.to_frame(pre.to_input(np.array([0.5, 0.0]))).tolist()
        [0.5, 0.0]
    """

    width: int = 128
    height: int = 96
    colour: str = "RGB"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resize: str = "stretch"
    crop: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8:
            raise ConfigError(f"input size must be at least 8x8, got {self.width}x{self.height}")
        if self.crop is not None:
            expected = f"crop={self.crop!r}: expected 4 integers x0, y0, x1, y1"
            try:
                crop = tuple(int(c) for c in self.crop)
            except (TypeError, ValueError) as exc:
                raise ConfigError(expected) from exc
            if len(crop) != 4:
                raise ConfigError(expected)
            x0, y0, x1, y1 = crop
            if not (0 <= x0 < x1 <= self.width and 0 <= y0 < y1 <= self.height):
                raise ConfigError(
                    f"crop={crop}: expected 0 <= x0 < x1 <= {self.width} and "
                    f"0 <= y0 < y1 <= {self.height} (pixels of the {self.width}x{self.height} "
                    "frame, x1 and y1 exclusive)"
                )
            if x1 - x0 < 8 or y1 - y0 < 8:
                raise ConfigError(f"crop={crop}: expected at least 8x8 pixels")
            object.__setattr__(self, "crop", crop)
        if self.colour not in COLOUR_ORDERS:
            raise ConfigError(f"colour={self.colour!r}: expected one of {list(COLOUR_ORDERS)}")
        if self.resize not in RESIZE_POLICIES:
            raise ConfigError(f"resize={self.resize!r}: expected one of {list(RESIZE_POLICIES)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"mean/std must be 3 numbers, std > 0; got {self.mean}, {self.std}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @property
    def input_size(self) -> tuple[int, int]:
        """``(W, H)`` the network sees: the crop's size, or the frame size without one."""
        if self.crop is None:
            return self.width, self.height
        x0, y0, x1, y1 = self.crop
        return x1 - x0, y1 - y0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the card's ``preprocessing``)."""
        out = {**asdict(self), "mean": list(self.mean), "std": list(self.std)}
        out["crop"] = None if self.crop is None else list(self.crop)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict` (cards written before ``crop`` mean no crop)."""
        crop = data.get("crop")
        return cls(
            **{
                **data,
                "mean": tuple(data["mean"]),
                "std": tuple(data["std"]),
                "crop": None if crop is None else tuple(crop),
            }
        )

    def _affine(self, xy: Any) -> tuple[Any, Any]:
        """``(scale, offset)`` with ``frame = input * scale + offset`` (normalised coords)."""
        x0, y0, x1, y1 = self.crop or (0, 0, self.width, self.height)
        size = np.array([self.width, self.height], dtype=np.float64)
        scale = np.array([x1 - x0, y1 - y0], dtype=np.float64) / size
        offset = (np.array([x0 + x1, y0 + y1], dtype=np.float64) - size) / size
        if isinstance(xy, torch.Tensor):
            as_t = {"dtype": xy.dtype, "device": xy.device}
            return torch.as_tensor(scale, **as_t), torch.as_tensor(offset, **as_t)
        return scale, offset

    def to_frame(self, xy: Any) -> Any:
        """Normalised coordinates in the network input (the crop) -> in the whole frame.

        ``[-1, 1]``, ``align_corners=False``; numpy or torch, last axis ``(x, y)``. The
        identity without a crop.
        """
        if self.crop is None:
            return xy
        scale, offset = self._affine(xy)
        return xy * scale + offset

    def to_input(self, xy: Any) -> Any:
        """Inverse of :meth:`to_frame`: whole-frame normalised coordinates -> the crop's."""
        if self.crop is None:
            return xy
        scale, offset = self._affine(xy)
        return (xy - offset) / scale

    def normalise(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC frames (already resized) -> cropped, normalised float NCHW.

        Raises:
            InputError: the frames are not at the frame size ``width x height``.

        Shape:
            - frames: ``(N, height, width, 3)``; returns ``(N, 3, h, w)``, ``(w, h)`` the
              :attr:`input_size`.
        """
        if tuple(frames.shape[1:3]) != (self.height, self.width):
            raise InputError(
                f"frames: expected {self.width}x{self.height} (resized) frames, got shape "
                f"{tuple(frames.shape)}"
            )
        if self.crop is not None:
            x0, y0, x1, y1 = self.crop
            frames = frames[:, y0:y1, x0:x1]
        mean = torch.tensor(self.mean, device=frames.device).mul_(255.0)
        std = torch.tensor(self.std, device=frames.device).mul_(255.0)
        x = (frames.float() - mean) / std
        return x.permute(0, 3, 1, 2)

    def __call__(
        self, frames: Frames, colour: str | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Validate, convert colour order, resize, crop and normalise.

        Args:
            frames: uint8 ``(H, W, 3)`` or ``(N, H, W, 3)`` at any resolution.
            colour: channel order of ``frames``; default: the encoder's own.
            device: where to do the work and return the tensor.

        Shape:
            - returns ``(N, 3, h, w)`` float32, ``(w, h)`` the :attr:`input_size`.
        """
        order = self.colour if colour is None else colour
        if order not in COLOUR_ORDERS:
            raise InputError(f"colour={order!r}: expected one of {list(COLOUR_ORDERS)}")
        x = as_frames(frames).to(device)
        if order != self.colour:
            x = x.flip(-1)
        return self.normalise(resize_frames(x, self.width, self.height))
