"""Per-object evaluate and predict: long labels.csv, per-target encoders, the mean over
objects, ``file,object,...`` rows, and errors that name what was expected."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from sim2real.cli import main
from sim2real.data.shards import ShardedDataset
from sim2real.errors import ConfigError, DataError
from sim2real.perception.evaluate import PREDICT_COLUMNS, evaluate, predict_folder
from sim2real.perception.evaluate_objects import OBJECT_FRAME_COLUMNS, OBJECT_PREDICT_COLUMNS
from sim2real.perception.targets_data import quaternion_yaw
from sim2real.perception.train import pretrain
from tests.perception.test_pretrain import TINY
from tests.perception.test_targets import TARGETS, mug_data, multi  # noqa: F401  (fixtures)

COUNTS: dict[Path, dict[str, int]] = {}


def _write_real(data: Path, folder: Path, objects: tuple[str, ...], n: int = 6) -> Path:
    """``n`` dataset frames as PNGs with a long labels.csv (position, yaw_deg, visible) of
    the ``objects`` present in each; ``COUNTS[folder]`` holds the rows per object."""
    folder.mkdir(parents=True, exist_ok=True)
    ds = ShardedDataset(data, verify=False)
    rows = ["file,object,x_m,y_m,z_m,yaw_deg,visible"]
    for i in range(n):
        s = ds[i]
        name = f"f{i:02d}.png"
        assert cv2.imwrite(str(folder / name), cv2.cvtColor(s["image"], cv2.COLOR_RGB2BGR))
        for obj in objects:
            if not bool(s[f"objects.{obj}.present"]):
                continue
            COUNTS.setdefault(folder, {}).setdefault(obj, 0)
            COUNTS[folder][obj] += 1
            x, y, z = (float(v) for v in s[f"objects.{obj}.position"])
            yaw = math.degrees(float(quaternion_yaw(s[f"objects.{obj}.quaternion"])))
            visible = int(float(s[f"objects.{obj}.visible_fraction"]) >= 0.5)
            rows.append(f"{name},{obj},{x:.5f},{y:.5f},{z:.5f},{yaw:.3f},{visible}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_evaluate_reports_per_object_and_the_mean(
    multi: Path,  # noqa: F811
    mug_data: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    real = _write_real(mug_data, tmp_path / "real", TARGETS, n=12)
    stats = evaluate(multi, real, out_dir=tmp_path / "eval")
    counts = COUNTS[real]
    assert set(stats["objects"]) == set(TARGETS) and stats["n"] == sum(counts.values())
    for name in TARGETS:
        r = stats["objects"][name]
        assert r["n"] == counts[name] and r["route"] == "position_head"
        assert r["detection"]["labelled_visibility"] == counts[name] and r["xy_cm"]["mean"] >= 0
    mean = np.mean([stats["objects"][t]["xy_cm"]["mean"] for t in TARGETS])
    assert stats["xy_cm"]["mean"] == pytest.approx(mean)
    mug_yaw = stats["objects"]["mug"]["yaw_deg"]
    assert mug_yaw is not None and 0.0 <= mug_yaw["mean"] <= 180.0
    assert stats["objects"]["clutter_0"]["yaw_deg"] is None  # no symmetry declared: no yaw head
    with open(stats["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == OBJECT_FRAME_COLUMNS and len(rows) == sum(counts.values())
    assert {r["object"] for r in rows} == set(TARGETS)
    assert all(r["err_yaw_deg"] for r in rows if r["object"] == "mug")
    only = evaluate(multi, real, objects=["mug"])
    assert list(only["objects"]) == ["mug"]
    assert only["xy_cm"]["mean"] == pytest.approx(stats["objects"]["mug"]["xy_cm"]["mean"])


def test_predict_writes_a_row_per_frame_and_object(
    multi: Path,  # noqa: F811
    mug_data: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real = _write_real(mug_data, tmp_path / "real", ("mug",), n=3)
    path = predict_folder(multi, real, tmp_path / "p.csv")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == OBJECT_PREDICT_COLUMNS and len(rows) == 3 * len(TARGETS)
    assert [(r["file"], r["object"]) for r in rows[:2]] == [("f00.png", t) for t in TARGETS]
    assert rows[0]["yaw_deg"] != "" and rows[1]["yaw_deg"] == ""
    one = predict_folder(multi, real, tmp_path / "m.csv", objects=["clutter_0"])
    assert {r.split(",")[1] for r in one.read_text().splitlines()[1:]} == {"clutter_0"}
    with pytest.raises(ConfigError, match=r"\['duck'\].*locates"):
        predict_folder(multi, real, tmp_path / "x.csv", objects=["duck"])
    # the CLI: per object, then the mean
    assert main(["evaluate", "--model", str(multi), "--real", str(real)]) == 0
    out = capsys.readouterr().out
    assert "object mug" in out and "mean over 1 objects" in out


def test_single_target_encoder_on_long_labels(
    mug_data: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A single-target encoder (default targets: the mug) on labels naming two objects
    evaluates its one target, and `predict` keeps today's columns."""
    model = pretrain(mug_data, tmp_path / "single", epochs=1, ood_samples=0, **TINY)
    real = _write_real(mug_data, tmp_path / "real", TARGETS, n=4)
    stats = evaluate(model, real)
    assert list(stats["objects"]) == ["mug"] and stats["objects"]["mug"]["n"] == COUNTS[real]["mug"]
    assert set(stats["objects"]["mug"]["routes"]) >= {"position_head"}
    path = predict_folder(model, real, tmp_path / "p.csv")
    assert tuple(path.read_text().splitlines()[0].split(",")) == PREDICT_COLUMNS
    with pytest.raises(ConfigError, match="locates"):
        evaluate(model, real, objects=["clutter_0"])


def test_labels_without_the_encoders_targets_name_both(
    multi: Path,  # noqa: F811
    mug_data: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    real = _write_real(mug_data, tmp_path / "real", ("clutter_1", "clutter_2"), n=2)
    with pytest.raises(
        DataError, match=r"rows for objects \[.*\], the encoder locates \['mug', 'clutter_0'\]"
    ):
        evaluate(multi, real)
    bad = tmp_path / "bad"
    _write_real(mug_data, bad, ("mug",), n=2)
    text = (bad / "labels.csv").read_text().splitlines()
    (bad / "labels.csv").write_text("\n".join([*text, text[1]]) + "\n")  # a duplicate row
    with pytest.raises(DataError, match=r"labels\.csv.*row"):
        evaluate(multi, bad)
