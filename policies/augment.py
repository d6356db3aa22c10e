"""Image augmentation for reinforcement learning from pixels.

:class:`RandomShift` is DrQ's random shift (Kostrikov et al. 2020; Yarats et al. 2021,
``drqv2.py`` ``RandomShiftsAug``): pad each image by ``pad`` pixels (replicating the border)
and crop it back at a random integer offset. The shifts are whole pixels, so the crop is an
exact gather and commutes with per-channel normalisation; it can run on uint8, 0-255 floats or
normalised input alike. The random draws come from the module's own ``torch.Generator``.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from sim2real.errors import ConfigError, InputError

logger = logging.getLogger(__name__)


class RandomShift(nn.Module):
    """Random integer shift of up to ``pad`` pixels in x and y, per image (DrQ).

    Only active in training mode; in eval mode it returns its input unchanged.

    Args:
        pad: largest shift in pixels (DrQ uses 4 at 84x84).
        seed: seed of the module's own random generator.

    Shape:
        - x: ``(B, C, H, W)`` any dtype; returns the same shape and dtype.

    Example:
        >>> aug = RandomShift(pad=4, seed=0)
        >>> aug(torch.zeros(2, 3, 84, 84)).shape
        torch.Size([2, 3, 84, 84])
    """

    def __init__(self, pad: int = 4, seed: int = 0) -> None:
        super().__init__()
        if pad < 0:
            raise ConfigError(f"RandomShift: pad must be >= 0 pixels, got {pad}")
        self.pad = int(pad)
        self.generator = torch.Generator().manual_seed(int(seed))

    def sample_shifts(self, batch: int) -> torch.Tensor:
        """Draw ``(batch, 2)`` integer offsets (x, y) in ``[0, 2 * pad]`` from the generator."""
        return torch.randint(0, 2 * self.pad + 1, (batch, 2), generator=self.generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shift each image by its own random offset (training mode only)."""
        if x.ndim != 4:
            raise InputError(f"RandomShift: expected (B, C, H, W), got shape {tuple(x.shape)}")
        if not self.training or self.pad == 0:
            return x
        return shift_images(x, self.sample_shifts(x.shape[0]).to(x.device), self.pad)

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


def shift_images(x: torch.Tensor, offsets: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad by ``pad`` (replicate) and crop each image at its ``(dx, dy)`` offset.

    ``offsets == pad`` everywhere gives back ``x`` exactly.

    Shape:
        - x: ``(B, C, H, W)``; offsets: ``(B, 2)`` integers in ``[0, 2 * pad]``; returns
          ``(B, C, H, W)`` in ``x``'s dtype.

    Example:
        >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
        >>> bool((shift_images(x, torch.tensor([[1, 1]]), 1) == x).all())
        True
    """
    b, c, h, w = x.shape
    padded = F.pad(x.float(), (pad, pad, pad, pad), mode="replicate")
    rows = torch.arange(h, device=x.device)[None, :] + offsets[:, 1:2].long()  # (B, H)
    cols = torch.arange(w, device=x.device)[None, :] + offsets[:, 0:1].long()  # (B, W)
    batch_idx = torch.arange(b, device=x.device)[:, None, None, None]
    chan_idx = torch.arange(c, device=x.device)[None, :, None, None]
    out = padded[batch_idx, chan_idx, rows[:, None, :, None], cols[:, None, None, :]]
    return out.to(x.dtype)
