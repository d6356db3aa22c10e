"""Targets by name: per-target heads on one backbone, the card, keyed outputs, yaw modulo
symmetry, and the single-target layout left as it was."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sim2real.data.generate import generate_dataset
from sim2real.data.shards import ShardedDataset
from sim2real.envs.sources import scene_spec
from sim2real.errors import ConfigError, DataError
from sim2real.perception import Encoder
from sim2real.perception.orientation import yaw_error_deg, yaw_loss, yaw_target
from sim2real.perception.targets import by_object, card_targets, resolve_targets
from sim2real.perception.targets_data import TargetSamples, quaternion_yaw
from sim2real.perception.train import pretrain
from sim2real.perception.train_config import PretrainConfig
from sim2real.perception.yaw_head import YawHead
from tests.perception.test_pretrain import TINY, sim_data  # noqa: F401  (fixture)

TARGETS = ("mug", "clutter_0")


@pytest.fixture(scope="module")
def mug_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 xarm_mug renders at 64x48 with per-object labels (mug + clutter_0..8)."""
    spec = scene_spec("xarm_mug", "default", size=(64, 48))
    out = tmp_path_factory.mktemp("mug") / "data"
    return generate_dataset(
        "sim2real.envs.sources:make_source", spec, n=24, out=out, shard_size=12, progress=False
    )


@pytest.fixture(scope="module")
def multi(mug_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("multi") / "model"
    return pretrain(
        mug_data, out, epochs=6, targets=",".join(TARGETS), visibility_weight=1.0, **TINY
    )


def test_multi_target_encoder_trains_and_records_its_targets(multi: Path) -> None:
    card = json.loads((multi / "card.json").read_text())
    assert card["target_layout"] == "named" and sorted(card["targets"]) == sorted(TARGETS)
    mug, clutter = card["targets"]["mug"], card["targets"]["clutter_0"]
    assert mug["frame"] == clutter["frame"] == "robot_base"
    assert (mug["symmetry"], mug["order"], mug["yaw"]) == ("none", 1, True)
    assert clutter["yaw"] is False and "yaw" not in clutter["heads"]
    assert mug["heads"] == {k: f"mug/{k}" for k in ("keypoint", "position", "visibility", "yaw")}
    assert card["heads"]["mug/yaw"]["type"] == "yaw" and card["heads"]["mug/yaw"]["symmetry"] == 1
    assert card["heads"]["clutter_0/visibility"]["object"] == "clutter_0"
    assert card["training"]["targets"] == list(TARGETS)
    objects = card["metrics"]["sim_val"]["objects"]
    assert set(objects) == set(TARGETS) and "yaw_deg" in objects["mug"]
    assert 0.0 <= objects["mug"]["yaw_deg"] <= 180.0
    with (multi / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and "val_mug_position_head_xy_cm" in rows[0]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    means = [float(rows[-1][f"val_{t}_position_head_xy_cm"]) for t in TARGETS]
    assert float(rows[-1]["val_position_head_xy_cm"]) == pytest.approx(np.mean(means))


def test_multi_target_saves_loads_and_predicts_keyed_outputs(multi: Path, mug_data: Path) -> None:
    ds = ShardedDataset(mug_data, fields=["image"], verify=False)
    images = np.stack([ds[i]["image"] for i in range(4)])
    enc = Encoder.load(multi)
    out = enc.predict(images)
    assert sorted(out) == sorted(TARGETS)
    assert sorted(out["mug"]) == sorted(
        ["position", "keypoint", "keypoint_px", "visibility", "visible", "yaw", "yaw_cos_sin",
         "yaw_deg"]
    )  # fmt: skip
    assert out["mug"]["position"].shape == (4, 3) and out["clutter_0"]["keypoint_px"].shape == (
        4,
        2,
    )
    assert out["mug"]["visible"].dtype == bool and "yaw" not in out["clutter_0"]
    assert np.all(np.abs(out["mug"]["yaw"]) <= math.pi + 1e-6)
    again = Encoder.load(multi).predict(images)
    for name in TARGETS:
        for key, value in out[name].items():
            np.testing.assert_array_equal(value, again[name][key])
    assert sorted(enc.targets) == sorted(TARGETS)


def test_default_targets_keep_the_single_target_layout(sim_data: Path, mug_data: Path) -> None:  # noqa: F811
    manifest = ShardedDataset(sim_data, verify=False)
    legacy = resolve_targets(manifest.manifest, manifest.fields, None)
    assert [(t.name, t.order, t.has_yaw_labels) for t in legacy] == [("cube", 4, False)]
    mug = ShardedDataset(mug_data, verify=False)
    assert [t.name for t in resolve_targets(mug.manifest, mug.fields, None)] == ["mug"]
    card = {"heads": {"keypoint": {}, "position": {}}, "position_frame": "robot_base"}
    assert card_targets(card)["cube"]["heads"] == {"keypoint": "keypoint", "position": "position"}


def test_a_named_legacy_cube_trains_without_yaw(sim_data: Path, tmp_path: Path) -> None:  # noqa: F811
    root = pretrain(sim_data, tmp_path / "cube", epochs=1, targets="cube", **TINY)
    card = json.loads((root / "card.json").read_text())
    assert card["targets"]["cube"]["symmetry"] == "z4" and card["targets"]["cube"]["yaw"] is False
    out = Encoder.load(root).predict(np.zeros((2, 48, 64, 3), np.uint8))
    assert list(out) == ["cube"] and out["cube"]["position"].shape == (2, 3)


def test_target_errors_name_what_was_expected(mug_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'duck' is not an object.*'clutter_0'.*'mug'"):
        pretrain(mug_data, tmp_path / "a", targets="mug,duck", **TINY)
    with pytest.raises(ConfigError, match="distinct"):
        PretrainConfig(targets="mug,mug")
    with pytest.raises(ConfigError, match="position_target"):
        pretrain(mug_data, tmp_path / "b", targets="mug", position_target="ee_relative", **TINY)
    ds = ShardedDataset(mug_data, verify=False)
    fields = {k: v for k, v in ds.fields.items() if not k.startswith("objects.mug.")}
    with pytest.raises(DataError, match="no labels for 'mug'"):
        resolve_targets(ds.manifest, fields, ["mug"])


def test_samples_carry_each_targets_labels(mug_data: Path) -> None:
    ds = ShardedDataset(mug_data, verify=False)
    targets = resolve_targets(ds.manifest, ds.fields, list(TARGETS))
    samples = TargetSamples(ds, np.arange(4), (64, 48), targets, augment=False, seed=0)
    image, position, uv, visible, yaw, yaw_ok, present = samples[(0, 1)]
    raw = ds[1]
    assert image.shape == (48, 64, 3) and position.shape == (2, 3) and uv.shape == (2, 2)
    np.testing.assert_allclose(position[0], raw["objects.mug.position"], atol=1e-6)
    assert float(visible[0]) == pytest.approx(float(raw["objects.mug.visible_fraction"]))
    assert float(yaw_ok[0]) == 1.0 and float(yaw_ok[1]) == 0.0  # clutter: no symmetry declared
    assert float(present[0]) == 1.0
    expected = quaternion_yaw(raw["objects.mug.quaternion"])
    assert float(yaw_error_deg(float(yaw[0]), expected, 1)) < 1e-3


def test_yaw_respects_symmetry() -> None:
    """A cube turned 90 degrees has yaw error 0 and yaw loss 0; a mug turned 180 has 180."""
    turn = math.radians(90)
    half = turn / 2
    quat = np.array([0.0, 0.0, math.sin(half), math.cos(half)])
    assert float(yaw_error_deg(quaternion_yaw(quat), 0.0, 4)) == 0.0
    assert float(yaw_error_deg(2 * quaternion_yaw(quat), 0.0, 1)) == pytest.approx(180.0)
    pred = torch.as_tensor(yaw_target(np.array([turn, 0.3 + turn]), 4), dtype=torch.float32)
    assert float(yaw_loss(pred, torch.tensor([0.0, 0.3]), 4)) < 1e-6
    mug = torch.as_tensor(yaw_target(np.array([turn]), 1), dtype=torch.float32)
    assert float(yaw_loss(mug, torch.tensor([0.0]), 1)) == pytest.approx(1.0)  # a mug: 90 off
    card = {"targets": {"cube": {"order": 4, "heads": {"yaw": "cube/yaw"}}}}
    flat = {"cube/yaw": yaw_target(np.array([0.0, turn, 2 * turn]), 4).astype(np.float32)}
    out = by_object(card, flat)["cube"]
    assert np.abs(out["yaw_deg"]).max() < 1e-4
    head = YawHead(8, symmetry=4, object="cube")
    assert head(torch.zeros(2, 8, 3, 3)).shape == (2, 2)
    with pytest.raises(ConfigError, match="symmetry"):
        YawHead(8, symmetry=0)


def test_cli_targets_flag_reaches_the_settings() -> None:
    from sim2real.cli import build_parser
    from sim2real.cli.perception import PRETRAIN_FLAGS
    from sim2real.cli.settings import flag_settings

    args = build_parser().parse_args(
        ["pretrain", "--data", "d", "--out", "o", "--targets", "mug, duck", "--yaw-weight", "2"]
    )
    cfg = PretrainConfig.from_overrides(flag_settings(args, PRETRAIN_FLAGS))
    assert cfg.targets == ("mug", "duck") and cfg.yaw_weight == 2.0


def test_named_run_resumes_to_the_uninterrupted_weights(
    mug_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    from sim2real.perception import targets_train

    opts = {"epochs": 2, "targets": "mug,clutter_0", "ood_samples": 0, **TINY}
    straight = pretrain(mug_data, tmp_path / "straight", **opts)
    original = targets_train.NamedTrainer.checkpoint

    def crash_after_first(self: targets_train.NamedTrainer, val: dict[str, float]) -> None:
        original(self, val)
        if self.state.epoch == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(targets_train.NamedTrainer, "checkpoint", crash_after_first)
        with pytest.raises(KeyboardInterrupt):
            pretrain(mug_data, tmp_path / "resumed", **opts)
    resumed = pretrain(mug_data, tmp_path / "resumed", resume=True, **opts)
    a = load_file(str(straight / "last" / "model.safetensors"))
    b = load_file(str(resumed / "last" / "model.safetensors"))
    assert sorted(a) == sorted(b) and any(k.startswith("heads.mug/yaw") for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
