"""What a frame is wherever one crosses an interface: ``uint8`` ``(H, W, 3)`` in a colour order.

:data:`COLOUR_ORDERS` and :func:`check_frame`, the one frame validator, live here, below the
runtime (:mod:`sim2real.deploy`) and the encoder's preprocessing
(:mod:`sim2real.perception.preprocessing`), which both use them. Only numpy is imported, so
the robot runtime stays light; torch tensors are recognised without importing torch.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from sim2real.errors import InputError

#: The channel orders a camera, an encoder or a policy may work in.
COLOUR_ORDERS = ("RGB", "BGR")


def check_frame(
    frame: Any, where: str = "frame", *, batch: bool = False, tensors: bool = False
) -> Any:
    """Return ``frame`` if it is ``uint8`` ``(H, W, 3)``, else raise :class:`InputError`.

    The message says what came and, for the usual mistakes (floats in [0, 1], channels
    first, grayscale, an alpha channel, a batch where one frame is expected), what to do.

    Args:
        frame: the pixels.
        where: what the frame is, for the message (``"frame from <camera>"``).
        batch: also accept a batch ``(N, H, W, 3)``.
        tensors: also accept a ``torch.Tensor`` (else numpy arrays only).

    Example:
        >>> check_frame(np.zeros((4, 6, 3), np.uint8)).shape
        (4, 6, 3)
        >>> check_frame(np.zeros((3, 4, 6), np.uint8))
        Traceback (most recent call last):
        ...
        sim2real.errors.InputError: frame: expected 3 colour channels last (H, W, 3), got shape (3, 4, 6); channels-first? (3, H, W) has the channels first: use frame.transpose(1, 2, 0)
    """  # noqa: E501
    shapes = "(H, W, 3) or (N, H, W, 3)" if batch else "(H, W, 3)"
    is_tensor = tensors and _is_tensor(frame)
    if not (is_tensor or isinstance(frame, np.ndarray)):
        kinds = "numpy array or torch tensor" if tensors else "numpy uint8 array"
        raise InputError(
            f"{where}: expected {shapes} uint8 pixels as a {kinds}, got {type(frame).__name__}"
        )
    dtype = str(frame.dtype).removeprefix("torch.")
    if dtype != "uint8":
        hint = ""
        if dtype.startswith(("float", "bfloat")):
            hint = "; floats in [0, 1]? convert with (x * 255).round().astype(np.uint8)"
        raise InputError(f"{where}: expected dtype uint8 (0-255 pixels), got {dtype}{hint}")
    shape = tuple(int(n) for n in frame.shape)
    if len(shape) not in ((3, 4) if batch else (3,)):
        raise InputError(f"{where}: expected {shapes}, got shape {shape}{_hint(shape, batch)}")
    if shape[-1] != 3:
        raise InputError(
            f"{where}: expected 3 colour channels last {shapes}, got shape {shape}"
            + _hint(shape, batch)
        )
    if 0 in shape[-3:-1]:
        raise InputError(f"{where}: expected a non-empty image {shapes}, got shape {shape}")
    return frame


def _hint(shape: tuple[int, ...], batch: bool) -> str:
    """What the usual wrong shapes mean (one set of hints for every caller)."""
    if len(shape) == 2 or (len(shape) in (3, 4) and shape[-1] == 1):
        return "; a grayscale frame: colour images are expected"
    if len(shape) in (3, 4) and shape[-1] == 4:
        return "; RGBA/BGRA? drop the alpha channel: frame[..., :3]"
    if len(shape) == 3 and shape[0] == 3:
        return "; channels-first? (3, H, W) has the channels first: use frame.transpose(1, 2, 0)"
    if len(shape) == 4 and batch and shape[1] == 3:
        return (
            "; channels-first? (N, 3, H, W) has the channels first: use "
            "frames.transpose(0, 2, 3, 1)"
        )
    if len(shape) == 4 and not batch:
        return "; one frame is expected, not a batch"
    return ""


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported
    return torch is not None and isinstance(value, torch.Tensor)
