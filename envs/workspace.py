"""Default workspace of an arm described by its own URDF: the box actions may move the end
effector in, scaled from the arm's reach and clipped to the table.

The presets keep the box every old scene was made with (:data:`PANDA_BOX`); an arm given by
``urdf:`` without ``workspace_low``/``workspace_high`` gets the Panda box scaled by its reach:
the sum of the distances between consecutive link frames from the base to ``ee_link`` (all
joints at zero) plus the end-effector offset. That is an upper bound of how far the arm can
stretch, and for the Panda (1.37 m by this measure) the fractions below give back its box; the
xArm6 (1.18 m) gets x 0.21..0.65, y +-0.30, z up to 0.39 m, close to the box chosen by hand in
``configs/scenes/xarm_mug.yaml``. The box's x/y is then clipped to the table (when it overlaps
it) and its floor put 2 cm above the table top.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np

#: The workspace (base frame, m) of every preset scene: the old default.
PANDA_BOX = ((0.25, -0.35, 0.02), (0.75, 0.35, 0.45))
#: The Panda box over the Panda's reach (1.374 m), rounded: x, y, z of the low and high corner.
LOW_PER_REACH = (0.18, -0.25)
HIGH_PER_REACH = (0.55, 0.25, 0.33)
ABOVE_TABLE = 0.02


def arm_reach(client: Any, body: int, ee_link: int, ee_offset: np.ndarray) -> float:
    """Sum of the distances between consecutive link frames from the base to ``ee_link``, plus
    ``|ee_offset|`` (m), for an arm just loaded (every joint at zero)."""
    chain, j = [], ee_link
    while j >= 0:
        chain.append(j)
        j = client.getJointInfo(body, j)[16]  # parent link index
    points = [np.asarray(client.getBasePositionAndOrientation(body)[0])]
    points += [
        np.asarray(client.getLinkState(body, k, computeForwardKinematics=True)[4])
        for k in reversed(chain)
    ]
    steps = sum(float(np.linalg.norm(b - a)) for a, b in pairwise(points))
    return steps + float(np.linalg.norm(ee_offset))


def reach_workspace(
    reach: float,
    *,
    base_position: np.ndarray,
    base_yaw_deg: float = 0.0,
    table: Any = None,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The default box (low, high corners, base frame) for an arm of ``reach`` metres.

    ``table`` (a scene's ``TableConfig``: ``center``, ``size``, ``top_height``, world frame)
    clips x/y to the table's extent seen from the base and sets the floor 2 cm above its top.

    Example:
        >>> low, high = reach_workspace(1.0, base_position=np.zeros(3))
        >>> low, high
        ((0.18, -0.25, 0.02), (0.55, 0.25, 0.33))
    """
    low = np.array([LOW_PER_REACH[0] * reach, LOW_PER_REACH[1] * reach, ABOVE_TABLE])
    high = np.array([r * reach for r in HIGH_PER_REACH])
    if table is not None:
        cx, cy = table.center
        sx, sy = table.size[0] / 2, table.size[1] / 2
        yaw = np.radians(base_yaw_deg)
        rot = np.array([[np.cos(yaw), np.sin(yaw)], [-np.sin(yaw), np.cos(yaw)]])  # world->base
        corners = np.array([[cx + dx, cy + dy] for dx in (-sx, sx) for dy in (-sy, sy)])
        local = (corners - np.asarray(base_position[:2])) @ rot.T
        lo, hi = np.maximum(low[:2], local.min(axis=0)), np.minimum(high[:2], local.max(axis=0))
        if np.all(hi > lo):  # an arm beside the table keeps its unclipped box
            low[:2], high[:2] = lo, hi
        low[2] = float(table.top_height) - float(base_position[2]) + ABOVE_TABLE
        high[2] = max(high[2], low[2] + ABOVE_TABLE)
    return (
        tuple(round(float(v), 4) for v in low),  # type: ignore[return-value]
        tuple(round(float(v), 4) for v in high),
    )


def default_box(arm: Any, table: Any = None) -> dict[str, tuple[float, float, float]]:
    """``workspace_low``/``workspace_high`` for a just-loaded :class:`RobotArm` whose config
    leaves them out (either one given is kept)."""
    reach = arm_reach(arm.client, arm.body, arm.ee_link, arm.ee_offset)
    low, high = reach_workspace(
        reach, base_position=arm.base_position, base_yaw_deg=arm.cfg.base_yaw_deg, table=table
    )
    return {
        "workspace_low": arm.cfg.workspace_low or low,
        "workspace_high": arm.cfg.workspace_high or high,
    }
