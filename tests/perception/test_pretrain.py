"""Pretraining: loss goes down, outputs and card, save/load, deterministic resume, input errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sim2real.data.generate import generate_dataset
from sim2real.data.shards import ShardedDataset
from sim2real.envs.sources import scene_spec
from sim2real.errors import CheckpointError, ConfigError, InputError
from sim2real.perception import Encoder, train_model, trainer
from sim2real.perception.geometry import ROUTES, PlaneCamera, predict_positions
from sim2real.perception.train import pretrain
from sim2real.perception.train_data import SimSamples

TINY = {
    "backbone": "nature_cnn",
    "pretrained": False,
    "batch_size": 8,
    "lr": 3e-3,
    "val_fraction": 0.25,
    "workers": 0,
    "device": "cpu",
    "progress": False,
}


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "kuka"
    spec = scene_spec("kuka_cube", "default", size=(64, 48))
    return generate_dataset(
        "sim2real.envs.sources:make_source", spec, n=32, out=out, shard_size=16, progress=False
    )


@pytest.fixture(scope="module")
def trained(sim_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pretrain(sim_data, tmp_path_factory.mktemp("run") / "model", epochs=4, **TINY)


def _metrics(root: Path) -> list[dict[str, str]]:
    with (root / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_pretrain_lowers_loss_and_writes_outputs(trained: Path) -> None:
    rows = _metrics(trained)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert all(float(r["images_per_s"]) > 0 for r in rows)
    assert any((trained / "tb").glob("events.out.tfevents.*"))
    assert {p.name for p in (trained / "last").iterdir()} == {
        "card.json",
        "model.safetensors",
        "train_state.json",
        "train_state.safetensors",
    }
    assert not list(trained.rglob("*.pt")) and not list(trained.rglob("*.pkl"))
    card = json.loads((trained / "card.json").read_text())
    assert card["position_route"] in ROUTES
    assert card["position_frame"] == "robot_base"
    assert set(card["heads"]) == {"keypoint", "position"}
    assert card["training"]["backbone"] == "nature_cnn" and card["training"]["seed"] == 0
    assert card["preprocessing"]["width"] == 64 and card["preprocessing"]["colour"] == "RGB"
    sim_val = card["metrics"]["sim_val"]
    for route in ("position_head", "keypoint_plane"):  # keypoint_relative needs a gripper
        assert sim_val[route]["xy_cm_mean"] >= 0 and sim_val[route]["xyz_cm_mean"] >= 0
    camera = card["camera"]
    assert (camera["width"], camera["height"]) == (64, 48)
    assert camera["plane_z"] == pytest.approx(0.29 + 0.04)


def test_save_load_gives_identical_outputs(trained: Path, tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (3, 96, 128, 3), dtype=np.uint8)
    enc = Encoder.load(trained)
    enc.save(tmp_path / "copy")
    again = Encoder.load(tmp_path / "copy")
    a, b = enc.predict(frames), again.predict(frames)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    pos = predict_positions(again, frames)
    assert pos.shape == (3, 3) and np.isfinite(pos).all()
    np.testing.assert_array_equal(pos, predict_positions(enc, frames))


def test_resume_continues_and_matches_uninterrupted(
    sim_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = pretrain(sim_data, tmp_path / "straight", epochs=2, **TINY)
    original = trainer.Trainer.checkpoint

    def crash_after_first(self: trainer.Trainer, val: dict[str, float]) -> None:
        original(self, val)
        if self.state.epoch == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(trainer.Trainer, "checkpoint", crash_after_first)
        with pytest.raises(KeyboardInterrupt):
            pretrain(sim_data, tmp_path / "resumed", epochs=2, **TINY)
    assert [r["epoch"] for r in _metrics(tmp_path / "resumed")] == ["1"]
    resumed = pretrain(sim_data, tmp_path / "resumed", epochs=2, resume=True, **TINY)
    assert [r["epoch"] for r in _metrics(resumed)] == ["1", "2"]
    state = json.loads((resumed / "last" / "train_state.json").read_text())["state"]
    assert state["epoch"] == 2
    a = load_file(str(straight / "last" / "model.safetensors"))
    b = load_file(str(resumed / "last" / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_init_starts_from_a_saved_encoder(sim_data: Path, trained: Path, tmp_path: Path) -> None:
    """--init: the saved weights, a fresh schedule; another architecture is refused."""
    tuned = pretrain(sim_data, tmp_path / "tuned", epochs=1, init=trained, **{**TINY, "lr": 1e-9})
    card = json.loads((tuned / "card.json").read_text())
    assert card["training"]["init"] == str(trained.resolve())
    a = load_file(str(trained / "model.safetensors"))
    b = load_file(str(tuned / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        if "running" in key or "num_batches" in key:  # BatchNorm statistics keep moving
            continue
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    tuned_loss = float(_metrics(tuned)[0]["val_loss"])
    best = json.loads((trained / "last" / "train_state.json").read_text())["state"]["best_epoch"]
    # the saved (best) weights score on validation what they scored in their own run
    assert tuned_loss == pytest.approx(float(_metrics(trained)[best - 1]["val_loss"]), rel=1e-3)
    # the card says where the weights came from, not what the new run's settings asked for
    encoder = Encoder.load(trained)
    encoder.backbone.pretrained = True
    train_model.load_init(encoder, trained)
    assert encoder.structure()["backbone"]["imagenet_init"] is False
    with pytest.raises(ConfigError, match=r"init=.*\['heads'\] differ"):
        pretrain(sim_data, tmp_path / "other", head="position", init=trained, **TINY)
    with pytest.raises(CheckpointError, match="not found"):
        pretrain(sim_data, tmp_path / "missing", init=tmp_path / "nowhere", **TINY)


def test_output_and_resume_checks(sim_data: Path, trained: Path) -> None:
    with pytest.raises(ConfigError, match="not empty"):
        pretrain(sim_data, trained, epochs=1, **TINY)
    with pytest.raises(ConfigError, match="differ"):
        pretrain(sim_data, trained, epochs=5, resume=True, **{**TINY, "lr": 1e-2})
    with pytest.raises(ConfigError, match="head="):
        pretrain(sim_data, trained.parent / "x", head="pose", **TINY)
    with pytest.raises(ConfigError, match=r"heatmap_weight=-1\.0"):
        pretrain(sim_data, trained.parent / "x", heatmap_weight=-1.0, **TINY)
    with pytest.raises(ConfigError, match="keypoint_window=-1"):
        pretrain(sim_data, trained.parent / "x", keypoint_window=-1, **TINY)
    with pytest.raises(ConfigError, match="acts on the keypoint head, but head='position'"):
        pretrain(sim_data, trained.parent / "x", head="position", heatmap_weight=0.1, **TINY)
    with pytest.raises(ConfigError, match="shift_px=4 acts on the keypoint head"):
        pretrain(sim_data, trained.parent / "x", head="position", shift_px=4, **TINY)


def test_shift_moves_image_and_keypoint_together(sim_data: Path) -> None:
    ds = ShardedDataset(sim_data, fields=["image", "position", "uv"], verify=False)
    idx = np.arange(len(ds))
    plain = SimSamples(ds, idx, (64, 48), augment=False, seed=0)
    shifted = SimSamples(ds, idx, (64, 48), augment=False, seed=0, shift_px=6)
    moved = 0
    for i in range(len(ds)):
        img0, pos0, uv0 = plain[(0, i)]
        img1, pos1, uv1 = shifted[(0, i)]
        step = ((uv1 - uv0) / 2 * torch.tensor([64.0, 48.0])).numpy()
        dx, dy = np.round(step).astype(int)
        np.testing.assert_allclose(step, [dx, dy], atol=1e-4)  # whole pixels
        assert abs(dx) <= 6 and abs(dy) <= 6
        assert torch.equal(pos0, pos1)  # the 3-D label does not move
        # Content moved by (dx, dy): compare the part that stayed inside the image.
        a = img0.numpy()[max(0, -dy) : 48 - max(0, dy), max(0, -dx) : 64 - max(0, dx)]
        b = img1.numpy()[max(0, dy) : 48 + min(0, dy), max(0, dx) : 64 + min(0, dx)]
        np.testing.assert_array_equal(a, b)
        u0, v0 = ((uv0 + 1) / 2 * torch.tensor([64.0, 48.0])).tolist()
        u, v = ((uv1 + 1) / 2 * torch.tensor([64.0, 48.0])).tolist()
        if 2 <= u0 <= 62 and 2 <= v0 <= 46:  # a label inside stays >= 2 px from the border
            assert 2 - 1e-4 <= u <= 62 + 1e-4 and 2 - 1e-4 <= v <= 46 + 1e-4
        moved += bool(dx or dy)
        assert torch.equal(shifted[(0, i)][0], img1)  # seeded by (seed, epoch, index)
    assert moved >= len(ds) // 2
    assert not all(torch.equal(shifted[(0, i)][2], shifted[(1, i)][2]) for i in range(len(ds)))
    with pytest.raises(ConfigError, match="shift_px=-1"):
        pretrain(sim_data, sim_data.parent / "neg", shift_px=-1, **TINY)


def test_heatmap_term_trains_and_is_recorded(sim_data: Path, tmp_path: Path) -> None:
    root = pretrain(
        sim_data, tmp_path / "hm", epochs=3, head="keypoint", heatmap_weight=1.0, **TINY
    )
    rows = _metrics(root)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    training = json.loads((root / "card.json").read_text())["training"]
    assert (training["heatmap_weight"], training["heatmap_sigma"]) == (1.0, 1.0)
    # The L1-only run from the same seed sees a smaller loss: the KL term is in the sum.
    plain = pretrain(sim_data, tmp_path / "plain", epochs=1, head="keypoint", **TINY)
    assert float(_metrics(plain)[0]["train_loss"]) < float(rows[0]["train_loss"])


@pytest.mark.parametrize(
    ("frames", "colour", "match"),
    [
        (np.zeros((2, 48, 64, 3), np.uint8), "RGBA", "colour"),
        (np.zeros((2, 3, 48, 64), np.uint8), "RGB", "channels"),
        (np.zeros((2, 48, 64, 3), np.float32), "RGB", "uint8"),
    ],
)
def test_bad_frames_raise_input_error(
    trained: Path, frames: np.ndarray, colour: str, match: str
) -> None:
    with pytest.raises(InputError, match=match):
        predict_positions(Encoder.load(trained), frames, colour=colour)


def test_bgr_frames_match_rgb(trained: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    enc = Encoder.load(trained)
    np.testing.assert_allclose(
        predict_positions(enc, rgb), predict_positions(enc, rgb[..., ::-1].copy(), colour="BGR")
    )


def test_table_crop_trains_and_holds_every_cube(sim_data: Path, tmp_path: Path) -> None:
    from sim2real.perception.geometry import nominal_camera, table_crop

    ds = ShardedDataset(sim_data, fields=["position"])
    crop = table_crop(ds.manifest, 64, 48, multiple=8)
    x0, y0, x1, y1 = crop
    assert (x1 - x0) % 8 == 0 and (y1 - y0) % 8 == 0
    assert (x1 - x0) * (y1 - y0) < 64 * 48  # the kuka_cube table does not fill the frame
    # Every cube centre, seen by the nominal camera (this preset jitters the camera), is inside.
    positions = np.stack([ds[i]["position"] for i in range(len(ds))])
    uv = nominal_camera(ds.manifest, 64, 48).project(positions)
    assert ((uv >= [x0, y0]) & (uv <= [x1, y1])).all()
    root = pretrain(sim_data, tmp_path / "crop", epochs=3, head="keypoint", crop="table", **TINY)
    rows = _metrics(root)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    card = json.loads((root / "card.json").read_text())
    assert card["preprocessing"]["crop"] == list(crop) == card["training"]["crop"]
    enc = Encoder.load(root)
    frames = np.stack([ShardedDataset(sim_data, fields=["image"])[i]["image"] for i in range(4)])
    kp = enc.predict(frames)["keypoint"][:, 0]
    assert np.isfinite(kp).all() and np.abs(kp).max() <= 1.0
    assert predict_positions(enc, frames).shape == (4, 3)
    with pytest.raises(ConfigError, match="0 <= y0 < y1 <= 48"):
        pretrain(sim_data, tmp_path / "bad", crop=(0, 40, 64, 60), **TINY)
    with pytest.raises(ConfigError, match="'table' or None"):
        pretrain(sim_data, tmp_path / "bad", crop="tabel", **TINY)


def test_mixstyle_changes_training_not_inference(sim_data: Path, tmp_path: Path) -> None:
    mixed = [
        pretrain(sim_data, tmp_path / f"m{i}", epochs=1, mixstyle=1.0, mixstyle_blocks=1, **TINY)
        for i in range(2)
    ]
    plain = pretrain(sim_data, tmp_path / "plain", epochs=1, **TINY)
    w0, w1, wp = (load_file(str(r / "model.safetensors")) for r in (*mixed, plain))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # seeded
    assert any(not torch.equal(w0[k], wp[k]) for k in w0)  # it acted on the training
    training = json.loads((mixed[0] / "card.json").read_text())["training"]
    assert (training["mixstyle"], training["mixstyle_blocks"]) == (1.0, 1)
    assert set(w0) == set(wp)  # no module or buffer added: the saved encoder is a plain one
    frames = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    out = Encoder.load(mixed[0]).predict(frames)
    assert all(np.isfinite(v).all() for v in out.values())
    with pytest.raises(ConfigError, match="mixstyle="):
        pretrain(sim_data, tmp_path / "bad", mixstyle=1.5, **TINY)
    with pytest.raises(ConfigError, match="mixstyle_blocks=99"):
        pretrain(sim_data, tmp_path / "bad", mixstyle=0.5, mixstyle_blocks=99, **TINY)


def test_randconv_changes_training_and_is_recorded(sim_data: Path, tmp_path: Path) -> None:
    root = pretrain(sim_data, tmp_path / "rc", epochs=1, randconv=1.0, **TINY)
    plain = pretrain(sim_data, tmp_path / "plain", epochs=1, **TINY)
    wr, wp = (load_file(str(r / "model.safetensors")) for r in (root, plain))
    assert set(wr) == set(wp) and any(not torch.equal(wr[k], wp[k]) for k in wr)
    assert json.loads((root / "card.json").read_text())["training"]["randconv"] == 1.0
    with pytest.raises(ConfigError, match="randconv="):
        pretrain(sim_data, tmp_path / "bad", randconv=-0.1, **TINY)


def test_exposure_saturates_bright_pixels_and_keeps_labels(sim_data: Path) -> None:
    ds = ShardedDataset(sim_data, fields=["image", "position", "uv"], verify=False)
    idx = np.arange(len(ds))
    plain = SimSamples(ds, idx, (64, 48), augment=True, seed=0)
    exposed = SimSamples(ds, idx, (64, 48), augment=True, seed=0, exposure=1.5)
    saturated = [0, 0]
    for i in range(len(ds)):
        img0, pos0, uv0 = plain[(0, i)]
        img1, pos1, uv1 = exposed[(0, i)]
        assert torch.equal(pos0, pos1) and torch.equal(uv0, uv1)  # photometric only
        assert torch.equal(exposed[(0, i)][0], img1)  # seeded
        saturated[0] += int((img0 == 255).sum())
        saturated[1] += int((img1 == 255).sum())
    assert saturated[1] > 2 * saturated[0] + 100  # gains up to 2.5 on half the images
    with pytest.raises(ConfigError, match="exposure=-1"):
        pretrain(sim_data, sim_data.parent / "neg", exposure=-1.0, **TINY)


def test_ee_relative_head_learns_the_offset_and_needs_the_gripper(
    sim_data: Path, tmp_path: Path
) -> None:
    import shutil

    from sim2real.errors import DataError

    root = pretrain(
        sim_data,
        tmp_path / "rel",
        epochs=3,
        head="position",
        position_target="ee_relative",
        **TINY,
    )
    rows = _metrics(root)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    card = json.loads((root / "card.json").read_text())
    assert card["position_frame"] == "end_effector"
    assert card["heads"]["position"]["frame"] == "end_effector"
    assert card["training"]["position_target"] == "ee_relative"
    # the samples' targets are the cube minus the gripper
    ds = ShardedDataset(sim_data)
    rel = SimSamples(ds, np.arange(3), (64, 48), augment=False, seed=0, relative=True)
    for i in range(3):
        expected = ds[i]["position"] - ds[i]["ee_position"]
        np.testing.assert_allclose(rel[(0, i)][1].numpy(), expected, atol=1e-6)
    # a position is the gripper's position plus the predicted offset; without it: an error
    enc = Encoder.load(root)
    frames = np.stack([ds[i]["image"] for i in range(2)])
    ee = np.stack([ds[i]["ee_position"] for i in range(2)])
    offset = enc.predict(frames)["position"]
    np.testing.assert_allclose(predict_positions(enc, frames, ee=ee), offset + ee, atol=1e-6)
    with pytest.raises(ConfigError, match=r"relative to the end effector.*expected ee="):
        predict_positions(enc, frames)
    # an unknown target, or a dataset without gripper labels, is refused
    with pytest.raises(ConfigError, match="position_target='gripper'"):
        pretrain(sim_data, tmp_path / "y", epochs=1, head="position", position_target="gripper")
    old = tmp_path / "old_data"
    shutil.copytree(sim_data, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["fields"]["ee_position"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"needs 'ee_position' labels.*--reach-poses"):
        pretrain(old, tmp_path / "z", epochs=1, head="position", position_target="ee_relative")


def test_gripper_keypoint_labels_project_the_end_effector(sim_data: Path) -> None:
    ds = ShardedDataset(sim_data)
    samples = SimSamples(
        ds, np.arange(4), (64, 48), augment=False, seed=0, relative=True, gripper_keypoint=True
    )
    for i in range(4):
        _, offset, uv, ee = samples[(0, i)]
        assert uv.shape == (2, 2)
        row = ds[i]
        np.testing.assert_allclose(ee.numpy(), row["ee_position"], atol=1e-6)
        np.testing.assert_allclose(offset.numpy(), row["position"] - row["ee_position"], atol=1e-6)
        # the same base -> world -> pixel chain applied to the cube reproduces its uv label
        cube = samples.gripper_uv({**row, "ee_position": row["position"]})
        np.testing.assert_allclose(cube, row["uv"], atol=1e-3)
        expected = 2.0 * samples.gripper_uv(row) / np.array([64.0, 48.0]) - 1.0
        np.testing.assert_allclose(uv[1].numpy(), expected, atol=1e-5)
        np.testing.assert_allclose(uv[0].numpy(), 2.0 * row["uv"] / [64.0, 48.0] - 1.0, atol=1e-5)


def test_keypoint_relative_route_trains_and_needs_the_gripper(tmp_path: Path) -> None:
    spec = scene_spec("tabletop_panda", "default", size=(48, 48), reach_poses=1.0)
    sim_data = generate_dataset(
        "sim2real.envs.sources:make_source", spec, n=32, out=tmp_path / "reach", progress=False
    )
    root = pretrain(
        sim_data,
        tmp_path / "kprel",
        epochs=3,
        head="keypoint",
        position_target="ee_relative",
        heatmap_weight=0.1,
        **TINY,
    )
    rows = _metrics(root)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(rows[-1]["val_kp_gripper_px"]) >= 0
    assert float(rows[-1]["val_keypoint_relative_xy_cm"]) >= 0
    card = json.loads((root / "card.json").read_text())
    assert card["heads"]["keypoint"]["names"] == ["cube", "gripper"]
    sim_val = card["metrics"]["sim_val"]
    assert set(sim_val) >= {"keypoint_plane", "keypoint_relative"}
    # routes are chosen on the validation samples with the gripper within 10 cm of the point
    # the reach poses centre on (and ReachCube's target is): 5 cm above the cube's top
    from sim2real.envs.sources import REACH_HOVER
    from sim2real.envs.tasks.reach import ReachTask
    from sim2real.perception.trainer import NEAR_HOVER_M

    assert NEAR_HOVER_M == REACH_HOVER == ReachTask.hover
    assert float(rows[-1]["val_keypoint_relative_near_xy_cm"]) >= 0
    near = {r: sim_val[r]["near_xy_cm_mean"] for r in ("keypoint_plane", "keypoint_relative")}
    assert card["position_route"] == min(near, key=near.get)
    ds = ShardedDataset(sim_data)
    enc = Encoder.load(root)
    frames = np.stack([ds[i]["image"] for i in range(3)])
    ee = np.stack([ds[i]["ee_position"] for i in range(3)])
    got = predict_positions(enc, frames, route="keypoint_relative", ee=ee)
    # the gripper's reported position plus the difference of the two back-projections
    keypoints = enc.predict(frames)["keypoint"]
    cam = PlaneCamera.from_card(card["camera"])
    cube = cam.backproject_normalised(keypoints[:, 0])
    grip = cam.backproject_normalised(keypoints[:, 1], plane_z=ee[:, 2])
    np.testing.assert_allclose(got, ee + cube - grip, atol=1e-9)
    np.testing.assert_allclose(got[:, 2], cam.plane_z, atol=1e-9)  # on the cube's plane
    with pytest.raises(ConfigError, match=r"keypoint_relative.*expected ee=\(N, 3\)"):
        predict_positions(enc, frames, route="keypoint_relative")
    # the absolute route on the cube keypoint stays available without the gripper
    assert predict_positions(enc, frames, route="keypoint_plane").shape == (3, 3)
