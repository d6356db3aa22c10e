"""Evaluation and prediction on real-style folders; the nominal camera's geometry."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from sim2real.cli import main
from sim2real.data.generate import generate_dataset
from sim2real.data.shards import ShardedDataset
from sim2real.envs.sources import scene_spec
from sim2real.errors import CheckpointError, ConfigError, DataError
from sim2real.perception import Encoder
from sim2real.perception.evaluate import FRAME_COLUMNS, PREDICT_COLUMNS, evaluate, predict_folder
from sim2real.perception.geometry import PlaneCamera, nominal_camera, predict_positions
from sim2real.perception.train import pretrain


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rendered without randomisation, so every frame has the nominal camera."""
    out = tmp_path_factory.mktemp("sim") / "kuka"
    spec = scene_spec("kuka_cube", "none", size=(64, 48))
    return generate_dataset(
        "sim2real.envs.sources:make_source", spec, n=24, out=out, shard_size=12, progress=False
    )


@pytest.fixture(scope="module")
def model(sim_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pretrain(
        sim_data,
        tmp_path_factory.mktemp("run") / "model",
        backbone="nature_cnn",
        pretrained=False,
        epochs=1,
        batch_size=8,
        val_fraction=0.25,
        workers=0,
        device="cpu",
        progress=False,
    )


@pytest.fixture(scope="module")
def real_dir(sim_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake real folder: 6 rendered frames (PNG and JPG), 4 of them labelled, at 128x96."""
    folder = tmp_path_factory.mktemp("real")
    ds = ShardedDataset(sim_data, fields=["image", "position"])
    rows = []
    for i in range(6):
        name = f"frame{i}.{'png' if i % 2 else 'jpg'}"
        image = cv2.resize(ds[i]["image"], (128, 96), interpolation=cv2.INTER_LINEAR)
        assert cv2.imwrite(str(folder / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if i < 4:
            rows.append([name, *(f"{v:.4f}" for v in ds[i]["position"])])
    with (folder / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["file", "x_m", "y_m", "z_m"], *rows])
    return folder


def test_nominal_camera_reprojects_labels(sim_data: Path) -> None:
    ds = ShardedDataset(sim_data, fields=["uv", "position"])
    cam = nominal_camera(ds.manifest, 64, 48)
    uv = np.stack([ds[i]["uv"] for i in range(len(ds))])
    pos = np.stack([ds[i]["position"] for i in range(len(ds))])
    np.testing.assert_allclose(cam.project(pos), uv, atol=1e-3)
    np.testing.assert_allclose(cam.project(pos, 128, 96), 2 * uv, atol=2e-3)
    back = cam.backproject_normalised(2 * uv / [64, 48] - 1)
    np.testing.assert_allclose(back, pos, atol=1e-4)
    assert PlaneCamera.from_card(cam.to_card()).to_card() == cam.to_card()


def test_evaluate_stats_csv_and_overlay(model: Path, real_dir: Path, tmp_path: Path) -> None:
    stats = evaluate(model, real_dir, out_dir=tmp_path / "eval")
    assert stats["n"] == 4
    route = Encoder.load(model).card["position_route"]
    assert stats["route"] == route and set(stats["routes"]) == {"position_head", "keypoint_plane"}
    for key in ("xy_cm", "xyz_cm"):
        s = stats[key]
        assert set(s) == {"mean", "median", "p90"} and all(v >= 0 for v in s.values())
    assert stats["xyz_cm"]["mean"] >= stats["xy_cm"]["mean"] - 1e-9
    with open(stats["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == FRAME_COLUMNS and len(rows) == 4
    errors = [float(r["err_xy_cm"]) for r in rows]
    assert np.mean(errors) == pytest.approx(stats["xy_cm"]["mean"], abs=0.01)
    overlay = cv2.imread(stats["overlay"])
    assert overlay is not None and overlay.shape[2] == 3 and overlay.shape[1] == 4 * 320


def test_evaluate_writes_nothing_without_out_dir(model: Path, real_dir: Path) -> None:
    before = sorted(p.name for p in real_dir.iterdir())
    stats = evaluate(Encoder.load(model), real_dir)
    assert stats["csv"] is None and stats["overlay"] is None
    assert sorted(p.name for p in real_dir.iterdir()) == before


def test_evaluate_keypoint_window_override(model: Path, real_dir: Path) -> None:
    enc = Encoder.load(model)
    head = enc.heads["keypoint"]
    assert head.window == 3 == enc.card["training"]["keypoint_window"]  # pretrain's default
    got = evaluate(enc, real_dir, keypoint_window=1)["routes"]["keypoint_plane"]
    assert head.window == 3  # left as it was
    head.window = 1
    assert evaluate(enc, real_dir)["routes"]["keypoint_plane"] == got
    position_only = Encoder("nature_cnn", {"position": {"type": "position"}}, pretrained=False)
    with pytest.raises(ConfigError, match="no 'keypoint' head"):
        evaluate(position_only, real_dir, keypoint_window=2)
    with pytest.raises(ConfigError, match="keypoint_window=-1"):
        evaluate(enc, real_dir, keypoint_window=-1)


def test_predict_folder_rows_match_predict_positions(
    model: Path, real_dir: Path, tmp_path: Path
) -> None:
    out = predict_folder(model, real_dir, tmp_path / "out" / "preds.csv")
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == PREDICT_COLUMNS
    assert [r["file"] for r in rows] == sorted(p.name for p in real_dir.glob("frame*"))
    image = cv2.cvtColor(cv2.imread(str(real_dir / rows[1]["file"])), cv2.COLOR_BGR2RGB)
    expected = predict_positions(Encoder.load(model), image)[0]
    got = [float(rows[1][k]) for k in ("x_m", "y_m", "z_m")]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_clear_errors(model: Path, real_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        evaluate(tmp_path / "no-model", real_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        predict_folder(model, tmp_path / "empty", tmp_path / "p.csv")
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    cv2.imwrite(str(unlabelled / "a.png"), np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(DataError, match="no labelled frames"):
        evaluate(model, unlabelled)
    assert predict_folder(model, unlabelled, tmp_path / "p.csv").is_file()


def test_evaluate_and_predict_pass_the_batchnorm_mode(
    model: Path, real_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str | None] = []
    real_predict = Encoder.predict

    def spy(self, frames, colour="RGB", batch_size=64, batchnorm=None):  # type: ignore[no-untyped-def]
        seen.append(batchnorm)
        return real_predict(self, frames, colour, batch_size, batchnorm)

    monkeypatch.setattr(Encoder, "predict", spy)
    stored = evaluate(model, real_dir)
    framed = evaluate(model, real_dir, batchnorm="frame")
    predict_folder(model, real_dir, tmp_path / "p.csv", batchnorm="frame")
    assert seen == [None, "frame", "frame"]
    # nature_cnn has no BatchNorm to renormalise: the same up to the float rounding of one
    # frame per pass against batches (it differed at 1e-9 relative on this machine)
    for key, value in stored["xy_cm"].items():
        assert framed["xy_cm"][key] == pytest.approx(value, rel=1e-6)
    argv = ["evaluate", "--model", str(model), "--real", str(real_dir), "--batchnorm", "frame"]
    assert main(argv) == 0
    assert seen[-1] == "frame"
