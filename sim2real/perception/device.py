"""Where training runs: device resolution and mixed precision."""

from __future__ import annotations

import contextlib

import torch

from sim2real.errors import ConfigError


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"device={device!r}: expected 'auto', 'cpu', 'cuda[:N]' ({exc})") from exc


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA devices that support it; a no-op elsewhere (CPU: float32)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
