"""A camera-only scene (``robot: null``, configs/scenes/bin_camera.yaml) end to end in a
tiny run: preview -> generate 8 frames -> pretrain 1 short epoch -> evaluate and predict on
the generated frames, with positions in the camera frame and the card saying so."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sim2real.cli import main
from sim2real.data.shards import ShardedDataset
from sim2real.envs.core import TabletopEnv
from sim2real.envs.scene_config import SceneConfig
from sim2real.errors import ConfigError
from sim2real.perception.evaluate import evaluate, predict_folder
from sim2real.perception.train import pretrain
from tests.perception.test_pretrain import TINY

TARGETS = ("box", "duck")


def _write_real(data: Path, folder: Path, n: int) -> Path:
    """``n`` generated frames as PNGs with a long labels.csv of their camera-frame positions."""
    folder.mkdir(parents=True, exist_ok=True)
    ds = ShardedDataset(data, verify=False)
    rows = ["file,object,x_m,y_m,z_m"]
    for i in range(n):
        s = ds[i]
        name = f"f{i:02d}.png"
        assert cv2.imwrite(str(folder / name), cv2.cvtColor(s["image"], cv2.COLOR_RGB2BGR))
        for obj in TARGETS:
            x, y, z = (float(v) for v in s[f"objects.{obj}.position"])
            rows.append(f"{name},{obj},{x:.5f},{y:.5f},{z:.5f}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_a_scene_without_a_robot_loads_and_has_no_policy_env() -> None:
    cfg = SceneConfig.load("bin_camera")
    assert cfg.robot is None and not cfg.has_robot and cfg.position_frame == "camera"
    assert cfg.record()["robot"] is None
    assert SceneConfig.load("xarm_mug").position_frame == "robot_base"
    with pytest.raises(ConfigError, match=r"'bin_camera' has no robot \(robot: null\).*'reach'"):
        TabletopEnv("bin_camera", task="reach")


def test_camera_scene_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # preview: the dataset source's frames (there is no env)
    png = tmp_path / "preview.png"
    assert main(["preview", "--scene", "bin_camera", "--n", "2", "--size", "48x48",
                 "--out", str(png)]) == 0  # fmt: skip
    assert cv2.imread(str(png)) is not None
    # generate 8 frames: positions in the camera frame, no end effector
    data = tmp_path / "data"
    assert main(["generate", "--scene", "bin_camera", "--n", "8", "--size", "48x48",
                 "--shard-size", "8", "--out", str(data)]) == 0  # fmt: skip
    ds = ShardedDataset(data, verify=False)
    spec = ds.manifest["spec"]
    assert spec["scene"]["robot"] is None
    assert "camera frame" in spec["label_schema"]["objects.duck.position"]
    assert "camera frame" in spec["label_schema"]["position"]
    assert "ee_position" not in ds.fields and "objects.box.position" in ds.fields
    for i in range(len(ds)):
        s = ds[i]
        for obj in TARGETS:
            p = np.asarray(s[f"objects.{obj}.position"], dtype=np.float64)
            np.testing.assert_array_equal(p, s[f"objects.{obj}.position_camera"])
            # camera frame: z is the depth in front of the camera, and K projects p to its uv
            assert 0.6 < p[2] < 1.0
            uv = (s["K"].astype(np.float64) @ p)[:2] / p[2]
            np.testing.assert_allclose(uv, s[f"objects.{obj}.uv"], atol=1e-3)
        np.testing.assert_array_equal(s["position"], s["objects.box.position"])  # the first target
    # pretrain 1 short epoch: per-target heads (two targets), the card says frame: camera
    model = pretrain(data, tmp_path / "model", epochs=1, ood_samples=0, **TINY)
    card = json.loads((model / "card.json").read_text())
    assert card["target_layout"] == "named" and card["position_frame"] == "camera"
    assert {t: card["targets"][t]["frame"] for t in TARGETS} == dict.fromkeys(TARGETS, "camera")
    assert card["heads"]["duck/position"]["frame"] == "camera"
    assert card["targets"]["box"]["order"] == 2 and "camera" not in card  # no table plane
    # evaluate and predict on the generated frames (labels in the camera frame)
    real = _write_real(data, tmp_path / "real", n=8)
    stats = evaluate(model, real, out_dir=tmp_path / "eval")
    assert set(stats["objects"]) == set(TARGETS) and stats["n"] == 16
    means = [stats["objects"][t]["xyz_cm"]["mean"] for t in TARGETS]
    assert stats["xyz_cm"]["mean"] == pytest.approx(np.mean(means)) and min(means) > 0
    rows = list(csv.DictReader(predict_folder(model, real, tmp_path / "p.csv").open()))
    assert len(rows) == 16 and {r["object"] for r in rows} == set(TARGETS)
    assert all(0.0 < float(r["z_m"]) < 5.0 for r in rows)  # depths, not table heights
    assert main(["evaluate", "--model", str(model), "--real", str(real)]) == 0
    assert "object duck" in capsys.readouterr().out


def test_a_camera_scene_refuses_reach_poses() -> None:
    from sim2real.envs.sources import make_source, scene_spec

    spec = scene_spec("bin_camera", size=(32, 32), reach_poses=0.5)
    with pytest.raises(ConfigError, match="no robot"):
        make_source({**spec, "seed": 0})


def test_one_target_without_a_robot_trains_the_single_target_heads(tmp_path: Path) -> None:
    """A camera-only scene with one target (the box; the duck made a distractor): the
    single-target heads, their frame and the card's camera; an old-style cube scene too."""
    import yaml

    from sim2real.data.generate import generate_dataset
    from sim2real.envs.sources import make_source, scene_spec
    from sim2real.paths import preset_path

    data = yaml.safe_load(preset_path("scenes", "bin_camera").read_text())
    data["objects"][1]["role"] = "distractor"
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = scene_spec(str(path), "default", size=(48, 48))
    out = generate_dataset(spec["source"], spec, n=8, out=tmp_path / "d", progress=False)
    model = pretrain(out, tmp_path / "m", epochs=1, ood_samples=0, **TINY)
    card = json.loads((model / "card.json").read_text())
    assert card.get("target_layout") != "named" and card["position_frame"] == "camera"
    assert card["heads"]["position"]["frame"] == "camera" and list(card["targets"]) == ["box"]
    assert card["targets"]["box"]["frame"] == "camera"
    legacy = {k: v for k, v in data.items() if k != "objects"}
    legacy["cube"] = {"size": 0.05, "spawn_x": [0.4, 0.6], "spawn_y": [-0.1, 0.1]}
    (tmp_path / "cube.yaml").write_text(yaml.safe_dump(legacy))
    spec = scene_spec(str(tmp_path / "cube.yaml"), "default", size=(32, 32))
    src = make_source(spec)
    sample = src(0)
    src.close()
    np.testing.assert_array_equal(sample["position"], sample["objects.cube.position_camera"])
    assert "ee_position" not in sample
