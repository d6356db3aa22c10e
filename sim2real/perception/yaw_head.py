"""The yaw head: an object's yaw about the table normal modulo its rotational symmetry.

It predicts ``(cos(s * yaw), sin(s * yaw))`` (:mod:`sim2real.perception.orientation`), the
same point for every yaw that looks the same, trained with
:func:`~sim2real.perception.orientation.yaw_loss`; the prediction need not be unit length
(:func:`~sim2real.perception.orientation.yaw_from_target` normalises).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sim2real.errors import ConfigError


class YawHead(nn.Module):
    """Mean- and max-pooled features + MLP -> ``(cos, sin)`` of ``symmetry * yaw``.

    Args:
        in_channels: channels of the backbone feature map.
        symmetry: the object's order of rotational symmetry about the table normal
            (4: cube, 2: box, 1: mug).
        hidden: MLP width.
        object: the object whose yaw it is.

    Shape:
        - features: ``(B, C, h, w)``; returns ``(B, 2)``.

    Example:
        >>> YawHead(16, symmetry=4, object="cube")(torch.zeros(3, 16, 2, 2)).shape
        torch.Size([3, 2])
    """

    kind = "yaw"

    def __init__(
        self, in_channels: int, symmetry: int = 1, hidden: int = 128, object: str = "target"
    ) -> None:
        super().__init__()
        if isinstance(symmetry, bool) or not isinstance(symmetry, int) or symmetry < 1:
            raise ConfigError(f"YawHead: symmetry={symmetry!r}, expected an integer >= 1")
        if int(hidden) < 1:
            raise ConfigError(f"YawHead: hidden={hidden!r}, expected an integer >= 1")
        self.in_channels, self.symmetry, self.hidden = in_channels, symmetry, int(hidden)
        self.object = str(object)
        self.mlp = nn.Sequential(
            nn.Linear(2 * in_channels, self.hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(cos, sin)`` of ``symmetry * yaw``. Shape: ``(B, C, h, w)`` -> ``(B, 2)``."""
        pooled = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)
        return self.mlp(pooled).float()

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable)."""
        return {
            "in_channels": self.in_channels,
            "symmetry": self.symmetry,
            "hidden": self.hidden,
            "object": self.object,
        }

    def schema(self) -> dict[str, Any]:
        """Label schema for the card."""
        return {
            "kind": self.kind,
            "object": self.object,
            "symmetry": self.symmetry,
            "output": "cos, sin of symmetry * yaw (yaw about the table normal, robot-base frame)",
        }
