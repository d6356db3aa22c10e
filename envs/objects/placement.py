"""Where objects go each episode: counts drawn per entry, non-interpenetrating upright
placements on the table (rejection sampling on footprints), and moving/parking the bodies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim2real.envs.objects.loading import LoadedObject, load_object  # noqa: F401  (doctest)
from sim2real.envs.objects.meshes import quat_mul, yaw_quat
from sim2real.envs.objects.specs import PARKED, REST_EPS, ObjectSpec, SpawnRegion
from sim2real.errors import ConfigError


@dataclass(frozen=True)
class Placement:
    """Where one object goes: base ``position`` (3,), ``orientation`` (4,) and the yaw drawn."""

    position: np.ndarray
    orientation: np.ndarray
    yaw: float


def sample_counts(specs: Sequence[ObjectSpec], rng: np.random.Generator) -> list[str]:
    """The instance names shown this episode: for each entry a count drawn in its range
    (its first instances; for a set with a ``pool``, that many pool members at random)."""
    shown: list[str] = []
    for spec in specs:
        lo, hi = spec.count_range
        n = lo if lo == hi else int(rng.integers(lo, hi + 1))
        names = spec.instance_names
        if spec.pool is not None and spec.pool > n:
            picked = np.sort(rng.choice(len(names), size=n, replace=False))
            shown.extend(names[int(i)] for i in picked)
        else:
            shown.extend(names[:n])
    return shown


def sample_placements(
    objects: Sequence[LoadedObject],
    rng: np.random.Generator,
    *,
    table_top: float,
    region: SpawnRegion | None = None,
    keep_out: Sequence[tuple[float, float, float]] = (),
    margin: float = 0.005,
    max_tries: int = 500,
    camera_eye: Sequence[float] | None = None,
    preset: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Placement]:
    """Non-interpenetrating upright poses resting on the table, by rejection sampling.

    Each object's footprint is a disc of :attr:`LoadedObject.radius` about its base
    position (covers every yaw); a draw is rejected while its disc (plus ``margin``) meets
    an already placed one or a ``keep_out`` disc ``(x, y, radius)`` (e.g. the robot base).
    Positions are drawn in the object's own ``spawn`` region, else ``region``; the base goes
    at ``table_top + bottom`` (+0.1 mm), so the lowest point touches the table top. Objects
    are placed in the order given; the result depends only on ``rng``'s state. ``preset``
    fixes some objects' ``(x, y)`` or ``(x, y, yaw)`` (a task placing its target itself):
    they are placed first, as given, and the others avoid them.

    Raises:
        ConfigError: an object has no region, or found no free spot in ``max_tries`` draws.

    Example:
        >>> import pybullet as p
        >>> from pybullet_utils.bullet_client import BulletClient
        >>> c = BulletClient(p.DIRECT)
        >>> obj = load_object(c, ObjectSpec(name="cube", shape="box", size=0.04))
        >>> pl = sample_placements([obj], np.random.default_rng(0), table_top=0.0,
        ...                        region=SpawnRegion(x=(0.4, 0.6), y=(-0.1, 0.1)))
        >>> round(float(pl["cube"].position[2]), 4)
        0.0201
        >>> c.disconnect()
    """
    placed: list[tuple[float, float, float]] = [tuple(map(float, k)) for k in keep_out]  # type: ignore[misc]
    out: dict[str, Placement] = {}
    preset = dict(preset or {})
    unknown = sorted(set(preset) - {o.name for o in objects})
    if unknown:
        raise ConfigError(f"preset placements {unknown}: not among {[o.name for o in objects]}")
    for obj in objects:
        if obj.name in preset:
            xy = [float(v) for v in preset[obj.name]]
            yaw = xy[2] if len(xy) > 2 else 0.0
            orn = quat_mul(yaw_quat(yaw), obj.rest_orientation)
            pos = np.array([xy[0], xy[1], table_top + obj.bottom + REST_EPS])
            out[obj.name] = Placement(pos, orn, yaw)
            placed.append((xy[0], xy[1], obj.radius))
    for obj in objects:
        if obj.name in out:
            continue
        reg = obj.spec.spawn or region
        if reg is None:
            raise ConfigError(f"object {obj.name!r}: no spawn region (spawn: {{x, y}}) given")
        r = obj.radius
        for _ in range(max_tries):
            xy = draw_xy(reg, rng, camera_eye, table_top)
            if all(math.hypot(xy[0] - x, xy[1] - y) >= r + rr + margin for x, y, rr in placed):
                break
        else:
            raise ConfigError(
                f"object {obj.name!r}: no free spot of radius {r:.3f} m in spawn x={reg.x} "
                f"y={reg.y} after {max_tries} draws; widen the region or show fewer objects"
            )
        yaw = float(rng.uniform(*reg.yaw))
        orn = quat_mul(yaw_quat(yaw), obj.rest_orientation)
        z = table_top + obj.bottom + REST_EPS
        out[obj.name] = Placement(np.array([xy[0], xy[1], z]), orn, yaw)
        placed.append((float(xy[0]), float(xy[1]), r))
    return out


def draw_xy(
    reg: SpawnRegion, rng: np.random.Generator, eye: Sequence[float] | None, z: float
) -> np.ndarray:
    """One ``(x, y)`` in ``reg``: on its grid, per image pixel for a ``near`` share of draws
    (camera ``eye``, plane height ``z``), else uniform."""
    lo, hi = np.array([reg.x[0], reg.y[0]]), np.array([reg.x[1], reg.y[1]])
    if reg.grid_step:
        xs = np.arange(lo[0], hi[0] + 1e-9, reg.grid_step)
        ys = np.arange(lo[1], hi[1] + 1e-9, reg.grid_step)
        return np.array([rng.choice(xs), rng.choice(ys)])
    if reg.near > 0.0 and eye is not None and rng.uniform() < reg.near:
        # uniform per image pixel: accept with (d_min / d)^3 (see envs/scene.py _sample_near)
        e = np.asarray(eye, dtype=np.float64)
        dz = e[2] - z
        d_min = float(np.hypot(np.linalg.norm(np.clip(e[:2], lo, hi) - e[:2]), dz))
        while True:
            xy = rng.uniform(lo, hi)
            d = float(np.hypot(np.linalg.norm(xy - e[:2]), dz))
            if rng.uniform() < (d_min / d) ** 3:
                return xy
    return rng.uniform(lo, hi)


def apply_placements(
    client: Any, objects: Mapping[str, LoadedObject], placements: Mapping[str, Placement]
) -> None:
    """Move the placed objects (velocities zeroed, mass restored) and park every other one
    out of view (static, so it does not fall)."""
    for name, obj in objects.items():
        pl = placements.get(name)
        if pl is None:
            client.resetBasePositionAndOrientation(obj.body, PARKED, obj.rest_orientation.tolist())
            if obj.mass > 0:
                client.changeDynamics(obj.body, -1, mass=0.0)
        else:
            client.resetBasePositionAndOrientation(
                obj.body, pl.position.tolist(), pl.orientation.tolist()
            )
            if obj.mass > 0:
                client.changeDynamics(
                    obj.body, -1, mass=obj.mass, localInertiaDiagonal=list(obj.inertia)
                )
        client.resetBaseVelocity(obj.body, [0, 0, 0], [0, 0, 0])
