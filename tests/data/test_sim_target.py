"""Simulated frames as a long-format labelled folder (sim2real.data.sim_target): rows per
present object, yaw in the base frame, and the folder reads back through open_real."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sim2real.data.real import open_real
from sim2real.data.sim_target import label_rows, write_sim_frames, yaw_deg
from sim2real.envs.sources import scene_spec
from sim2real.errors import ConfigError


def test_yaw_wraps_and_subtracts_the_base() -> None:
    half = math.radians(170) / 2
    quat = [0, 0, math.sin(half), math.cos(half)]
    assert yaw_deg(quat, base_yaw_deg=-20.0) == pytest.approx(-170.0)
    assert yaw_deg([0, 0, 0, 1]) == 0.0


def test_rows_skip_absent_objects_and_name_unknown_ones() -> None:
    s = {"objects.a.position": [1, 2, 3], "objects.a.present": 0.0,
         "objects.b.position": [0.1, 0.2, 0.3]}  # fmt: skip
    assert label_rows(s, "f.png", ["a", "b"]) == [["f.png", "b", "0.10000", "0.20000",
                                                   "0.30000", ""]]  # fmt: skip
    with pytest.raises(ConfigError, match=r"object 'c': not in the scene; expected one of"):
        label_rows(s, "f.png", ["c"])


def test_written_folder_reads_back_per_object(tmp_path: Path) -> None:
    spec = scene_spec("bin_camera", "none", (32, 32))
    folder = write_sim_frames(spec, tmp_path / "t", 2, seed=3, objects=["box", "duck"], start=5)
    assert sorted(p.name for p in folder.glob("*.png")) == ["t00005.png", "t00006.png"]
    lines = (folder / "labels.csv").read_text().splitlines()
    assert lines[0] == "file,object,x_m,y_m,z_m,yaw_deg" and len(lines) == 5
    frames = open_real(folder)
    assert len(frames) == 2 and frames.object_names == ["box", "duck"]
    assert len(frames.for_object("duck").labelled()) == 2
    with pytest.raises(ConfigError, match="expected at least 1 frame"):
        write_sim_frames(spec, tmp_path / "u", 0, seed=0, objects=["box"])
