"""All objects of one scene: :class:`SceneObjects`, loaded once, shown and placed per
episode, labelled per frame (the one attribute a scene holds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.envs.objects.loading import LoadedObject, load_objects
from sim2real.envs.objects.meshes import quat_mul, yaw_quat
from sim2real.envs.objects.placement import (
    Placement,
    apply_placements,
    sample_counts,
    sample_placements,
)
from sim2real.envs.objects.specs import (
    REST_EPS,
    ObjectSpec,
    SpawnRegion,
    target_name,
    validate_objects,
)
from sim2real.errors import ConfigError


class SceneObjects:
    """Every object of a scene in one client: loaded once, shown and placed per episode,
    labelled per frame. The glue a scene holds (one attribute, a few calls).

    Example:
        >>> import pybullet as p
        >>> from pybullet_utils.bullet_client import BulletClient
        >>> c = BulletClient(p.DIRECT)
        >>> objs = SceneObjects(c, [{"name": "cube", "shape": "box", "size": 0.05,
        ...                          "spawn": {"x": [0.4, 0.6], "y": [-0.1, 0.1]}}])
        >>> objs.target, sorted(objs.reset(np.random.default_rng(0)))
        ('cube', ['cube'])
        >>> objs.close(); c.disconnect()
    """

    def __init__(
        self,
        client: Any,
        specs: Sequence[Mapping[str, Any] | ObjectSpec],
        *,
        table_top: float = 0.0,
        region: SpawnRegion | None = None,
        base_dir: str | Path | None = None,
        seed: int = 0,
        loaded: Mapping[str, LoadedObject] | None = None,
    ) -> None:
        """Load every instance (parked).

        Args:
            client: the scene's PyBullet client.
            specs: the scene's ``objects:`` entries.
            table_top: height the objects rest on.
            region: spawn region of entries without their own ``spawn``.
            base_dir: the scene YAML's folder, for relative files.
            seed: draws the members of sets (fixed for the life of the scene).
            loaded: bodies already built (by instance name), adopted instead of loading.
        """
        self.client = client
        self.specs = validate_objects(specs)
        self.table_top = float(table_top)
        self.region = region
        self.objects = (
            dict(loaded)
            if loaded is not None
            else load_objects(client, self.specs, np.random.default_rng(seed), base_dir=base_dir)
        )
        self._nominal = {n: (o.mass, o.inertia) for n, o in self.objects.items()}
        roles = [s.role for s in self.specs]
        self.target: str | None = target_name(self.specs) if "target" in roles else None
        self.shown: list[str] = []
        self._silhouettes: Any = None

    @property
    def body_ids(self) -> dict[str, int]:
        return {name: obj.body for name, obj in self.objects.items()}

    @property
    def colorable(self) -> dict[str, list[tuple[int, int]]]:
        """Instance name -> (body, link) pairs, for randomisation's recolouring."""
        c = self.client
        return {
            name: [(obj.body, link) for link in range(-1, c.getNumJoints(obj.body))]
            for name, obj in self.objects.items()
        }

    def reset(
        self,
        rng: np.random.Generator,
        *,
        keep_out: Sequence[tuple[float, float, float]] = (),
        camera_eye: Sequence[float] | None = None,
        preset: Mapping[str, Sequence[float]] | None = None,
    ) -> dict[str, Placement]:
        """Draw which instances show (counts) and where (placements); move them; park the
        rest. Instances in ``preset`` always show, at the ``(x, y[, yaw])`` given."""
        shown = sample_counts(self.specs, rng)
        shown += [n for n in preset or {} if n not in shown]
        placements = sample_placements(
            [self.objects[n] for n in shown],
            rng,
            table_top=self.table_top,
            region=self.region,
            keep_out=keep_out,
            camera_eye=camera_eye,
            preset=preset,
        )
        apply_placements(self.client, self.objects, placements)
        self.shown = list(placements)
        return placements

    def place(self, name: str, xy: Sequence[float], yaw: float = 0.0) -> None:
        """Put one instance upright on the table at ``xy`` (others unchanged)."""
        if name not in self.objects:
            raise ConfigError(f"object {name!r}: expected one of {sorted(self.objects)}")
        obj = self.objects[name]
        pos = np.array([float(xy[0]), float(xy[1]), self.table_top + obj.bottom + REST_EPS])
        orn = quat_mul(yaw_quat(float(yaw)), obj.rest_orientation)
        apply_placements(self.client, {name: obj}, {name: Placement(pos, orn, float(yaw))})
        if name not in self.shown:
            self.shown.append(name)

    def scale_mass(self, name: str, scale: float) -> None:
        """Make one instance ``scale`` times its loaded mass (inertia scaled alike): kept
        through later placements; applied now when the body is not parked."""
        obj = self.objects[name]
        mass, inertia = self._nominal[name]
        if mass <= 0:
            return  # fixed objects stay static
        self.objects[name] = replace(
            obj, mass=mass * scale, inertia=tuple(v * scale for v in inertia)
        )
        if self.client.getDynamicsInfo(obj.body, -1)[0] > 0:
            self.client.changeDynamics(
                obj.body, -1, mass=mass * scale, localInertiaDiagonal=[v * scale for v in inertia]
            )

    def pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Base position (3,) and quaternion (4,) of one instance."""
        pos, orn = self.client.getBasePositionAndOrientation(self.objects[name].body)
        return np.asarray(pos, dtype=np.float64), np.asarray(orn, dtype=np.float64)

    def labels(
        self,
        geometry: Any,
        *,
        base_position: np.ndarray,
        base_yaw: float = 0.0,
        seg: np.ndarray | None = None,
        exact_silhouettes: bool = True,
    ) -> dict[str, Any]:
        """Per-object labels of a frame (:func:`sim2real.envs.object_labels.object_labels`):
        cheap without ``seg``, exact with it (the silhouette renderer starts on first use)."""
        from sim2real.envs.object_labels import SilhouetteRenderer, object_labels

        sil = None
        if seg is not None and exact_silhouettes:
            if self._silhouettes is None:
                self._silhouettes = SilhouetteRenderer(self.objects)
            sil = self._silhouettes
        return object_labels(
            self.client,
            geometry,
            self.objects,
            base_position=base_position,
            base_yaw=base_yaw,
            seg=seg,
            silhouettes=sil,
            names=self.shown,
        )

    def info(self, geometry: Any, **kwargs: Any) -> dict[str, dict[str, Any]]:
        """``info["objects"]``: name -> label mapping (see :meth:`labels`)."""
        return {name: lab.as_info() for name, lab in self.labels(geometry, **kwargs).items()}

    def close(self) -> None:
        """Close the silhouette renderer's client (the scene's client is the caller's)."""
        if self._silhouettes is not None:
            self._silhouettes.close()
            self._silhouettes = None
