"""Simulated frames as a labelled "real" folder in the long format: a held-out target domain
for ``sim2real evaluate``, ``finetune`` and ``curve`` with several objects.

:func:`write_sim_frames` renders ``count`` frames of a dataset spec
(:func:`sim2real.envs.sources.scene_spec`: a scene, usually with a randomisation or objects
the training data never had) and writes ``tNNNNN.png`` plus a long ``labels.csv``
(``file,object,x_m,y_m,z_m,yaw_deg``): one row per frame and named object present in the
scene, the position in the scene's frame (robot base, or camera when there is no robot) and
the yaw about the table normal in the robot-base frame (degrees, as the per-target yaw heads
are trained). Frames where a named object is absent (a pool member parked) get no row for it.

Example:
    >>> from sim2real.envs.sources import scene_spec  # doctest: +SKIP
    >>> spec = scene_spec("xarm_mug", "strong", (64, 64))  # doctest: +SKIP
    >>> write_sim_frames(spec, "runs/t", 100, seed=7, objects=["mug"])  # doctest: +SKIP
    PosixPath('runs/t')
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.atomic import write_bytes, write_text
from sim2real.errors import ConfigError

LONG_COLUMNS = ("file", "object", "x_m", "y_m", "z_m", "yaw_deg")
FACTORY = "sim2real.envs.sources:make_source"


def yaw_deg(quaternion: Sequence[float], base_yaw_deg: float = 0.0) -> float:
    """Yaw about world z of an ``x, y, z, w`` quaternion less the robot base's yaw, in degrees
    wrapped to ``[-180, 180)``.

    Example:
        >>> half = math.radians(30) / 2
        >>> round(yaw_deg([0, 0, math.sin(half), math.cos(half)], base_yaw_deg=10.0), 6)
        20.0
    """
    x, y, z, w = (float(v) for v in quaternion)
    yaw = math.degrees(math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))) - base_yaw_deg
    return (yaw + 180.0) % 360.0 - 180.0


def label_rows(
    sample: Mapping[str, Any], name: str, objects: Sequence[str], base_yaw_deg: float = 0.0
) -> list[list[str]]:
    """The long ``labels.csv`` rows of one sample for ``objects`` (those present).

    Example:
        >>> s = {"objects.mug.position": [0.4, 0.0, 0.05], "objects.mug.present": 1.0,
        ...      "objects.mug.quaternion": [0, 0, 0, 1]}
        >>> label_rows(s, "t0.png", ["mug"])
        [['t0.png', 'mug', '0.40000', '0.00000', '0.05000', '0.000']]
    """
    rows = []
    for obj in objects:
        key = f"objects.{obj}.position"
        if key not in sample:
            known = sorted({k.split(".")[1] for k in sample if k.startswith("objects.")})
            raise ConfigError(f"object {obj!r}: not in the scene; expected one of {known}")
        if float(np.asarray(sample.get(f"objects.{obj}.present", 1.0))) < 0.5:
            continue
        position = [f"{float(v):.5f}" for v in np.asarray(sample[key]).reshape(3)]
        quat = sample.get(f"objects.{obj}.quaternion")
        yaw = "" if quat is None else f"{yaw_deg(np.asarray(quat), base_yaw_deg):.3f}"
        rows.append([name, obj, *position, yaw])
    return rows


def write_sim_frames(
    spec: Mapping[str, Any],
    folder: str | os.PathLike[str],
    count: int,
    *,
    seed: int,
    objects: Sequence[str],
    start: int = 0,
) -> Path:
    """Render ``count`` frames of ``spec`` (seeded by ``seed``; frame indices from ``start``)
    into ``folder`` with a long ``labels.csv`` for ``objects``; returns ``folder``.

    Raises:
        ConfigError: ``count`` < 1 or an object the scene does not have.
    """
    import cv2

    from sim2real.envs.sources import make_source

    if count < 1:
        raise ConfigError(f"count {count!r}: expected at least 1 frame")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    robot = (spec.get("scene") or {}).get("robot") or {}
    base_yaw = float(robot.get("base_yaw_deg", 0.0))
    source = make_source({**spec, "seed": seed})
    rows: list[list[str]] = []
    try:
        for index in range(start, start + count):
            sample = source(index)
            name = f"t{index:05d}.png"
            image = cv2.cvtColor(np.asarray(sample["image"]), cv2.COLOR_RGB2BGR)
            ok, png = cv2.imencode(".png", image)
            if not ok:
                raise RuntimeError(f"could not encode frame {index} as PNG")
            write_bytes(out / name, png.tobytes())
            rows.extend(label_rows(sample, name, objects, base_yaw))
    finally:
        source.close()
    lines = [",".join(LONG_COLUMNS), *(",".join(r) for r in rows)]
    write_text(out / "labels.csv", "\n".join(lines) + "\n")
    return out
