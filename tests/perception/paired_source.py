"""A test source of pairs of renders: the same randomised scene, once with the cube in view
(even samples) and once with it moved far off the table, out of view (odd samples).

With ``spec["blank_hidden"]`` the odd samples' images are also flattened to their mean
colour (a camera looking at a blank wall): what a tiny CPU training can learn to call "not
visible" in a few epochs (telling a 4-pixel cube from none takes far more data)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from sim2real.envs.sources import make_source as make_cube_source

#: Where the hidden cube is spawned (robot-base y, metres): far beside the table.
HIDDEN_Y = (4.0, 5.0)


class PairedSource:
    """Sample ``2k`` is sample ``k`` of the spec, sample ``2k + 1`` the same scene (the same
    randomisation draws) with the cube spawned at :data:`HIDDEN_Y`, out of the camera's view."""

    def __init__(self, spec: dict[str, Any]) -> None:
        spec = dict(spec)
        self.blank = bool(spec.pop("blank_hidden", False))
        hidden = copy.deepcopy(spec)
        hidden["scene"]["cube"]["spawn_y"] = list(HIDDEN_Y)
        self.shown, self.hidden = make_cube_source(spec), make_cube_source(hidden)

    def __call__(self, index: int) -> dict[str, np.ndarray | str]:
        if not index % 2:
            return self.shown(index // 2)
        sample = self.hidden(index // 2)
        if self.blank:
            image = np.asarray(sample["image"])
            sample["image"] = np.broadcast_to(image.mean(axis=(0, 1)), image.shape).astype(np.uint8)
        return sample

    def close(self) -> None:
        self.shown.close()
        self.hidden.close()


def make_source(spec: dict[str, Any]) -> PairedSource:
    """``"tests.perception.paired_source:make_source"`` for ``generate_dataset``."""
    return PairedSource(spec)
