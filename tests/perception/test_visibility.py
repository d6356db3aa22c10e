"""Visibility head, confidence and OOD score: training, save/load, predict, evaluate, old cards."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sim2real.data.generate import generate_dataset
from sim2real.data.shards import (
    ShardedDataset,
    field_info,
    new_manifest,
    shard_name,
    write_manifest,
    write_shard,
)
from sim2real.envs.sources import scene_spec
from sim2real.errors import DataError
from sim2real.perception import Encoder
from sim2real.perception.evaluate import PREDICT_COLUMNS, evaluate, predict_folder
from sim2real.perception.scores import frame_scores
from sim2real.perception.train import pretrain
from sim2real.perception.train_data import SimSamples
from sim2real.perception.train_scores import derived_visible_fraction, visibility_fields
from tests.perception.test_pretrain import TINY


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 samples: 16 kuka_cube renders, each followed by its scene with the cube out of view
    and the frame flattened to its mean colour (``tests.perception.paired_source``)."""
    spec = {**scene_spec("kuka_cube", "default", size=(64, 48)), "blank_hidden": True}
    return generate_dataset(
        "tests.perception.paired_source:make_source",
        spec,
        n=32,
        out=tmp_path_factory.mktemp("paired") / "data",
        shard_size=16,
        progress=False,
    )


@pytest.fixture(scope="module")
def trained(paired: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vis") / "model"
    return pretrain(paired, out, epochs=30, visibility_weight=3.0, **TINY)


def _images(data: Path) -> tuple[np.ndarray, np.ndarray]:
    ds = ShardedDataset(data, fields=["image", "visible_pixels"], verify=False)
    items = [ds[i] for i in range(len(ds))]
    return np.stack([s["image"] for s in items]), np.array([s["visible_pixels"] > 0 for s in items])


def test_visibility_head_trains_and_round_trips(
    trained: Path, paired: Path, tmp_path: Path
) -> None:
    card = json.loads((trained / "card.json").read_text())
    assert card["heads"]["visibility"] == {
        "type": "visibility",
        "in_channels": 64,
        "hidden": 64,
        "object": "cube",
    }
    assert card["training"]["visibility_weight"] == 3.0
    assert card["scores"]["visibility_head"] is True and card["scores"]["sharpness_ref"] > 0
    assert len(card["ood"]["layers"]) == 3 and card["ood"]["samples"] == 24
    with (trained / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(0.0 <= float(r["val_visible_err"]) <= 1.0 for r in rows)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    images, truth = _images(paired)
    enc = Encoder.load(trained)
    out = enc.predict(images)
    assert out["visible"].dtype == bool and out["visibility"].shape == (32,)
    assert (out["visible"] == truth).mean() >= 0.8  # the frames it trained on
    assert np.all((out["confidence"] >= 0) & (out["confidence"] <= 1))
    # no object in view: a black frame and a flat grey one
    blank = np.stack([np.zeros((48, 64, 3), np.uint8), np.full((48, 64, 3), 128, np.uint8)])
    none = enc.predict(blank)
    assert not none["visible"].any() and (none["confidence"] < 0.5).all()
    # position still given when not visible
    assert np.isfinite(none["position"]).all()
    again = Encoder.load(enc.save(tmp_path / "copy"))
    for key, value in again.predict(images).items():
        np.testing.assert_array_equal(value, out[key])


def test_ood_score_grows_away_from_the_simulated_frames(trained: Path, paired: Path) -> None:
    images, truth = _images(paired)
    enc = Encoder.load(trained)
    sim = enc.predict(images[truth])["ood"]
    red = np.tile(np.array([255, 0, 0], np.uint8), (4, 48, 64, 1))
    far = enc.predict(np.concatenate([255 - images[truth][:4], red]))
    assert np.median(sim) < 1.5 and np.median(far["ood"]) > 2 * np.median(sim)
    # the distance lowers the confidence: 1 / (1 + ood - 1) when ood > 1
    ood = far["ood"][far["ood"] > 1]
    assert (far["confidence"][far["ood"] > 1] <= 1 / ood + 1e-6).all()


def test_predict_writes_visibility_columns_and_evaluate_reports_detection(
    trained: Path, paired: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    images, truth = _images(paired)
    ds = ShardedDataset(paired, fields=["position"], verify=False)
    rows = ["file,x_m,y_m,z_m,visible"]
    for i in range(6):
        name = f"f{i}.png"
        assert cv2.imwrite(str(folder / name), cv2.cvtColor(images[i], cv2.COLOR_RGB2BGR))
        rows.append(f"{name},{','.join(f'{v:.4f}' for v in ds[i]['position'])},{int(truth[i])}")
    cv2.imwrite(str(folder / "black.png"), np.zeros((48, 64, 3), np.uint8))
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    path = predict_folder(trained, folder, tmp_path / "preds.csv")
    with path.open(newline="") as f:
        got = list(csv.reader(f))
    assert tuple(got[0]) == PREDICT_COLUMNS == (
        "file", "x_m", "y_m", "z_m", "visible", "confidence", "ood",
    )  # fmt: skip
    assert len(got) == 8
    by_name = {r[0]: r for r in got[1:]}
    assert by_name["black.png"][4] == "0" and float(by_name["black.png"][5]) < 0.5
    for row in got[1:]:
        assert all(np.isfinite(float(v)) for v in row[1:4])  # positions always written
        assert row[4] in ("0", "1") and 0.0 <= float(row[5]) <= 1.0 and float(row[6]) >= 0
    stats = evaluate(trained, folder, out_dir=tmp_path / "eval")
    det = stats["detection"]
    assert det["labelled_visibility"] == 6 and stats["n"] == 6
    assert det["missed"] + det["false_visible"] <= 2
    assert det["detected_xy_cm"] is None or det["detected_xy_cm"]["mean"] >= 0
    with open(stats["csv"], newline="") as f:
        frames = list(csv.DictReader(f))
    assert [r["visible"] for r in frames] == [str(int(t)) for t in truth[:6]]


def test_old_cards_load_and_predict_visible(tmp_path: Path) -> None:
    """A card without visibility head, ``scores`` or ``ood``: visible, ood NaN."""
    heads = {"keypoint": {"type": "keypoints", "names": ["cube"]}, "position": {"type": "position"}}
    enc = Encoder("nature_cnn", heads, input_size=(64, 48), pretrained=False)
    folder = enc.save(tmp_path / "old")
    card = json.loads((folder / "card.json").read_text())
    assert "scores" not in card and "ood" not in card
    old = Encoder.load(folder)
    out = old.predict(np.zeros((2, 48, 64, 3), np.uint8))
    assert out["visible"].all() and (out["visibility"] == 1).all() and np.isnan(out["ood"]).all()
    assert ((out["confidence"] > 0) & (out["confidence"] <= 1)).all()
    plain = Encoder("nature_cnn", {"kp": {"type": "keypoints"}}, pretrained=False)
    assert sorted(plain.predict(np.zeros((1, 60, 80, 3), np.uint8))) == ["kp", "kp_px"]


def test_visible_fraction_from_labels(tmp_path: Path) -> None:
    """The dataset's ``objects.cube.visible_fraction`` when it has one, else the estimate."""
    wh = (64.0, 48.0)
    base = {
        "uv": np.array([30.0, 20.0]),
        "visible_pixels": np.array(30),
        "box": np.array([26.0, 16, 34, 24]),
    }
    assert derived_visible_fraction(base, wh) == 1.0
    assert derived_visible_fraction({**base, "box": np.array([0.0, 16, 6, 24])}, wh) == 0.75
    assert derived_visible_fraction({**base, "uv": np.array([-2.0, 20])}, wh) == 0.25
    assert derived_visible_fraction({**base, "visible_pixels": np.array(0)}, wh) == 0.0
    assert derived_visible_fraction({"uv": np.array([70.0, 20])}, wh) == 0.0
    field = "objects.cube.visible_fraction"
    assert derived_visible_fraction({**base, field: np.float32(0.4)}, wh) == pytest.approx(0.4)
    assert visibility_fields({field: {}, "visible_pixels": {}}, "cube") == [field]
    with pytest.raises(DataError, match=r"objects\.mug\.visible_fraction"):
        visibility_fields({field: {}}, "mug")
    # a dataset with per-object labels feeds its fraction to the samples
    n = 4
    arrays = {
        "image": np.zeros((n, 48, 64, 3), np.uint8),
        "position": np.zeros((n, 3), np.float32),
        "uv": np.full((n, 2), 30.0, np.float32),
        field: np.array([1.0, 0.5, 0.0, 0.25], np.float32),
    }
    manifest = new_manifest({"toy": True}, n=n, seed=0, shard_size=n, source="toy:make")
    manifest["shards"][shard_name(0)] = write_shard(tmp_path, 0, 0, arrays)
    manifest["fields"] = {k: field_info(k, v[0]) for k, v in arrays.items()}
    manifest["status"] = "complete"
    write_manifest(tmp_path, manifest)
    ds = ShardedDataset(tmp_path, fields=["image", "position", "uv", field], verify=False)
    samples = SimSamples(ds, np.arange(n), (64, 48), augment=False, seed=0, visibility="cube")
    assert [float(samples[(0, i)][-1]) for i in range(n)] == [1.0, 0.5, 0.0, 0.25]


def test_confidence_folds_visibility_sharpness_and_ood() -> None:
    """A cube cut by the border (visible fraction ~0.5) gets a lower confidence than one in
    full view; a blurred heatmap and a far-off frame lower it too."""
    card = {"scores": {"sharpness_ref": 0.8, "visibility_threshold": 0.5}}
    pooled = [torch.zeros(4, 2)]
    logits = torch.logit(torch.tensor([0.95, 0.55, 0.95, 0.3]))
    sharp = torch.tensor([0.9, 0.9, 0.2, 0.9])
    out = frame_scores(card, logits, sharp, pooled)
    assert out["visible"].tolist() == [1.0, 1.0, 1.0, 0.0]
    conf = out["confidence"]
    assert conf[0] == pytest.approx(0.95) and conf[1] == pytest.approx(0.55)
    assert conf[2] == pytest.approx(0.95 * 0.25) and conf[3] == pytest.approx(0.3)
    assert torch.isnan(out["ood"]).all()
    stats = {"layers": [{"mean": [0.0, 0.0], "var": [1.0, 1.0], "ref": 1.0}]}
    far = frame_scores({**card, "ood": stats}, logits, sharp, [torch.full((4, 2), 2.0)])
    assert far["ood"].tolist() == [4.0] * 4
    torch.testing.assert_close(far["confidence"], conf / 4.0)


def test_visibility_with_heatmap_term_and_a_crop(paired: Path, tmp_path: Path) -> None:
    """The keypoint's KL term leaves out samples without the cube; with a crop, a cube
    outside it is a negative; a run without statistics writes none."""
    root = pretrain(
        paired, tmp_path / "hm", epochs=1, visibility_weight=1.0, heatmap_weight=0.5,
        crop=(0, 8, 64, 48), ood_samples=0, **TINY,
    )  # fmt: skip
    card = json.loads((root / "card.json").read_text())
    assert "visibility" in card["heads"] and "ood" not in card and "scores" not in card
    out = Encoder.load(root).predict(np.zeros((1, 48, 64, 3), np.uint8))
    assert np.isnan(out["ood"]).all() and out["visible"].dtype == bool
