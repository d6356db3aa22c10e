"""Yaw about the table normal modulo an object's rotational symmetry: targets, errors, loss.

An object that looks the same after a turn of ``360 / s`` degrees about the table normal has
symmetry ``s``: 4 for a cube, 2 for a box, 1 for a mug (no symmetry: every yaw differs);
``None`` for a cylinder or sphere, which have no yaw to predict. The yaw is predicted as
``(cos(s * yaw), sin(s * yaw))``: a point on the unit circle that is the same for every
yaw that looks the same, continuous where the raw angle wraps.

The names of :class:`envs.objects.specs.ObjectSpec` ``symmetry`` are accepted too:
``"none"`` (no symmetry: ``s = 1``), ``"z2"`` (2), ``"z4"`` (4), ``"z"`` (continuous about
the normal: no yaw) and ``"full"`` (any rotation: no yaw). Note that the *name* ``"none"``
means "no symmetry" (``s = 1``) while the *value* ``None`` means "no yaw".

Angles going in are radians; errors come out in degrees.

Example:
    >>> import math
    >>> float(yaw_error_deg(math.radians(90), 0.0, "z4"))  # a cube turned 90 degrees
    0.0
    >>> round(float(yaw_error_deg(math.radians(45), 0.0, 4)), 6)
    45.0
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from numpy.typing import ArrayLike

from sim2real.errors import ConfigError

#: ObjectSpec ``symmetry`` names -> the order ``s`` (``None``: no yaw).
SYMMETRY_NAMES: dict[str, int | None] = {"none": 1, "z2": 2, "z4": 4, "z": None, "full": None}

SymmetryLike = int | str | None


def symmetry_order(symmetry: SymmetryLike) -> int | None:
    """The order ``s`` of ``symmetry`` (an int >= 1, a name of :data:`SYMMETRY_NAMES`, or
    ``None``); ``None`` when the object has no yaw.

    Raises:
        ConfigError: anything else.

    Example:
        >>> symmetry_order("z4"), symmetry_order("none"), symmetry_order(2), symmetry_order("z")
        (4, 1, 2, None)
    """
    if symmetry is None:
        return None
    if isinstance(symmetry, str):
        key = symmetry.strip().lower()
        if key in SYMMETRY_NAMES:
            return SYMMETRY_NAMES[key]
        if key.isdigit() and int(key) >= 1:
            return int(key)
    elif (
        isinstance(symmetry, int | np.integer) and not isinstance(symmetry, bool) and symmetry >= 1
    ):
        return int(symmetry)
    raise ConfigError(
        f"symmetry is {symmetry!r}, expected an integer >= 1 (4: cube, 2: box, 1: mug), "
        f"None (no yaw) or one of {sorted(SYMMETRY_NAMES)}"
    )


def has_yaw(symmetry: SymmetryLike) -> bool:
    """Whether an object of this symmetry has a yaw to predict (not a cylinder or sphere)."""
    return symmetry_order(symmetry) is not None


def _order_or_raise(symmetry: SymmetryLike, what: str) -> int:
    s = symmetry_order(symmetry)
    if s is None:
        raise ConfigError(
            f"{what}: symmetry is {symmetry!r}, which has no yaw (a cylinder or sphere); "
            "expected an object with a yaw (symmetry an integer >= 1, or none/z2/z4)"
        )
    return s


def yaw_target(
    yaw_rad: ArrayLike | torch.Tensor, symmetry: SymmetryLike
) -> np.ndarray | torch.Tensor:
    """``(cos(s * yaw), sin(s * yaw))`` stacked on a last axis of size 2.

    Args:
        yaw_rad: yaw(s) in radians, any shape ``(...)``; a tensor gives a tensor.
        symmetry: see :func:`symmetry_order`; ``None`` raises (no yaw).

    Returns:
        ``(..., 2)`` float array (or tensor): cos, sin.

    Example:
        >>> import math
        >>> np.round(yaw_target(math.radians(90), 4), 6) + 0.0  # same as yaw 0 for a cube
        array([1., 0.])
    """
    s = _order_or_raise(symmetry, "yaw_target")
    if isinstance(yaw_rad, torch.Tensor):
        angle = s * yaw_rad
        return torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)
    angle = s * np.asarray(yaw_rad, dtype=np.float64)
    return np.stack([np.cos(angle), np.sin(angle)], axis=-1)


def yaw_from_target(cos: ArrayLike, sin: ArrayLike, symmetry: SymmetryLike) -> np.ndarray:
    """The yaw in radians, in ``[-pi / s, pi / s]``, from a (not necessarily unit) cos/sin.

    Example:
        >>> import math
        >>> c, s = yaw_target(math.radians(100), 4)  # 100 degrees = 10 degrees for a cube
        >>> round(math.degrees(float(yaw_from_target(c, s, "z4"))), 6)
        10.0
    """
    s = _order_or_raise(symmetry, "yaw_from_target")
    c, n = np.asarray(cos, dtype=np.float64), np.asarray(sin, dtype=np.float64)
    return np.arctan2(n, c) / s


def yaw_error_deg(pred_yaw: ArrayLike, true_yaw: ArrayLike, symmetry: SymmetryLike) -> np.ndarray:
    """The absolute yaw error in degrees, the symmetry taken into account: in ``[0, 180 / s]``.

    Args:
        pred_yaw: predicted yaw(s) in radians.
        true_yaw: true yaw(s) in radians (broadcast against ``pred_yaw``).
        symmetry: see :func:`symmetry_order`; ``None`` (no yaw) gives NaN errors.

    Example:
        >>> import math
        >>> [float(yaw_error_deg(math.radians(d), 0.0, sym)) for d, sym in
        ...  [(90, 4), (180, 2), (180, 1), (-170, 1)]]  # cube, box, mug, mug
        [0.0, 0.0, 180.0, 170.0]
    """
    pred = np.asarray(pred_yaw, dtype=np.float64)
    true = np.asarray(true_yaw, dtype=np.float64)
    s = symmetry_order(symmetry)
    if s is None:
        return np.full(np.broadcast_shapes(pred.shape, true.shape), np.nan)
    diff = np.abs(np.angle(np.exp(1j * s * (pred - true))))  # wrapped to [0, pi]
    error = np.degrees(diff) / s
    return np.where(error < 1e-9, 0.0, error)


def yaw_loss(
    pred_cos_sin: torch.Tensor,
    yaw: torch.Tensor,
    symmetry: SymmetryLike,
    *,
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """``1 - cosine similarity`` between predicted ``(cos, sin)`` and the symmetry's target.

    0 at the truth and at every yaw that looks the same (``yaw + 2 pi k / s``), 2 at the
    opposite point of the circle; the prediction need not be unit length.

    Args:
        pred_cos_sin: ``(..., 2)`` predicted cos, sin of ``s * yaw``.
        yaw: ``(...)`` true yaw in radians.
        symmetry: see :func:`symmetry_order`; ``None`` (no yaw) gives a zero loss that
            still depends on ``pred_cos_sin`` (so a shared graph stays connected).
        reduction: ``"mean"`` (a scalar) or ``"none"`` (shape ``(...)``).

    Example:
        >>> import math
        >>> yaw = torch.tensor([0.3, -1.2])
        >>> float(yaw_loss(yaw_target(yaw + math.pi / 2, 4), yaw, 4)) < 1e-6
        True
    """
    if reduction not in ("mean", "none"):
        raise ConfigError(f"reduction is {reduction!r}, expected 'mean' or 'none'")
    if pred_cos_sin.shape[-1:] != (2,) or pred_cos_sin.shape[:-1] != yaw.shape:
        raise ConfigError(
            f"pred_cos_sin is {tuple(pred_cos_sin.shape)} and yaw {tuple(yaw.shape)}, "
            "expected (..., 2) and (...)"
        )
    if symmetry_order(symmetry) is None:
        loss = pred_cos_sin.sum(dim=-1) * 0.0
    else:
        target = yaw_target(yaw.to(pred_cos_sin.dtype), symmetry)
        loss = 1.0 - torch.nn.functional.cosine_similarity(pred_cos_sin, target, dim=-1)
    return loss.mean() if reduction == "mean" else loss
