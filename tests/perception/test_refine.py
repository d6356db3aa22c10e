"""The coarse-to-fine refiner: crops, training improves keypoints, save/load, predict, export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sim2real.data.generate import generate_dataset
from sim2real.data.shards import ShardedDataset
from sim2real.envs.sources import scene_spec
from sim2real.errors import CheckpointError
from sim2real.perception import Encoder
from sim2real.perception.geometry import nominal_camera
from sim2real.perception.refine import (
    REFINER_FILE,
    Refiner,
    attach_refiner,
    crop_pixels,
    set_refine,
)
from sim2real.perception.refine_train import RefineConfig, train_refiner, window_batch

FULL = (128, 96)  # the tiny run's "full resolution"; the encoder sees 64x48


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = scene_spec("kuka_cube", "default", size=FULL)
    out = tmp_path_factory.mktemp("refine") / "kuka"
    return generate_dataset(
        "sim2real.envs.sources:make_source", spec, n=64, out=out, shard_size=32, progress=False
    )


@pytest.fixture(scope="module")
def refined(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("enc")
    heads = {"keypoint": {"type": "keypoints", "names": ["cube"]}}
    coarse = Encoder("nature_cnn", heads, input_size=(64, 48), pretrained=False)
    coarse.card["camera"] = nominal_camera(ShardedDataset(data).manifest, 64, 48).to_card()
    coarse.card["position_route"] = "keypoint_plane"
    coarse.save(root / "coarse")
    cfg = RefineConfig(
        crop=32, width=8, jitter_px=8.0, coarse_fraction=0.0, epochs=25, batch_size=16,
        lr=4e-3, val_fraction=0.25, seed=0,
    )  # fmt: skip
    result = train_refiner(data, root / "coarse", cfg, out=root / "refined")
    return root, result


def test_window_batch_samples_like_the_whole_frame() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    centres = np.array([[25.3, 20.7], [1.2, 38.9], [49.5, 0.0]])  # inside, at edges
    got = window_batch([image] * 3, centres, 16)
    frame = torch.from_numpy(image).permute(2, 0, 1)[None].float().expand(3, -1, -1, -1)
    norm = torch.from_numpy(2 * centres / np.array([50, 40]) - 1).float()
    torch.testing.assert_close(got, crop_pixels(frame, norm, 16), atol=1e-3, rtol=0)


def test_refiner_training_improves_keypoints_on_held_out_frames(
    data: Path, refined: tuple[Path, dict]
) -> None:
    root, result = refined
    assert result["val_px_after"] < 0.7 * result["val_px_before"], result
    encoder = Encoder.load(root / "refined")
    assert encoder.refiner is not None and (root / "refined" / REFINER_FILE).is_file()
    # frames of the validation split, windows centred on truth + a fixed jitter: refined
    # keypoints are closer to the truth than the centres they were given
    ds = ShardedDataset(data, fields=["image", "uv"])
    frames = np.stack([ds[i]["image"] for i in range(len(ds))])
    uv = np.stack([ds[i]["uv"] for i in range(len(ds))]).astype(np.float64)
    jitter = np.random.default_rng(7).uniform(-6, 6, uv.shape)
    wh = np.array(FULL, dtype=np.float64)
    start = 2 * (uv + jitter) / wh - 1
    out = encoder.refiner.refine_frames(frames, start)
    before = np.linalg.norm(jitter, axis=1)
    after = np.linalg.norm((out + 1) / 2 * wh - uv, axis=1)
    assert after.mean() < 0.7 * before.mean(), (before.mean(), after.mean())


def test_predict_refines_only_with_a_refiner_and_can_be_turned_off(
    data: Path, refined: tuple[Path, dict]
) -> None:
    root, _ = refined
    frames = np.stack([ShardedDataset(data, fields=["image"])[i]["image"] for i in range(4)])
    plain = Encoder.load(root / "coarse").predict(frames)
    encoder = Encoder.load(root / "refined")
    out = encoder.predict(frames)
    assert "keypoint_coarse" not in plain
    np.testing.assert_array_equal(out["keypoint_coarse"], plain["keypoint"])
    assert not np.allclose(out["keypoint"], plain["keypoint"])
    centres = (out["keypoint"] + 1) / 2 * FULL - 0.5  # pixel-centre convention of _px
    np.testing.assert_allclose(out["keypoint_px"], centres, rtol=1e-5)
    off = encoder.predict(frames, refine=False)
    assert set(off) == set(plain)
    np.testing.assert_array_equal(off["keypoint"], plain["keypoint"])
    set_refine(encoder, False)
    np.testing.assert_array_equal(encoder.predict(frames)["keypoint"], plain["keypoint"])


def test_refiner_survives_save_and_load_and_detaches(
    refined: tuple[Path, dict], tmp_path: Path
) -> None:
    root, _ = refined
    encoder = Encoder.load(root / "refined")
    card = json.loads((root / "refined" / "card.json").read_text())
    assert card["refiner"]["crop"] == 32 and "refiner_training" in card
    assert not any(k.startswith("refiner") for k in encoder.state_dict())
    frames = np.random.default_rng(1).integers(0, 256, (2, 96, 128, 3), dtype=np.uint8)
    again = Encoder.load(encoder.save(tmp_path / "copy"))
    np.testing.assert_array_equal(
        again.predict(frames)["keypoint"], encoder.predict(frames)["keypoint"]
    )
    attach_refiner(again, None)
    again.save(tmp_path / "plain")
    assert "refiner" not in json.loads((tmp_path / "plain" / "card.json").read_text())
    (tmp_path / "copy" / REFINER_FILE).unlink()
    with pytest.raises(CheckpointError, match="refiner"):
        Encoder.load(tmp_path / "copy")


def test_refiner_resizes_frames_of_another_size() -> None:
    refiner = Refiner(crop=16, width=4, frame_size=(64, 48)).eval()
    small = np.random.default_rng(2).integers(0, 256, (1, 24, 32, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(small, 2, axis=1), 2, axis=2)
    a = refiner.refine_frames(small, np.zeros((1, 2)))
    assert a.shape == (1, 2) and np.isfinite(a).all()
    assert refiner.pixels(big).shape == refiner.pixels(small).shape == (1, 3, 48, 64)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_keeps_the_refined_keypoints_within_1e4(
    data: Path, refined: tuple[Path, dict], tmp_path: Path, fmt: str
) -> None:
    from sim2real.deploy.export_refine import ExportedKeypoints, export_keypoints

    root, _ = refined
    out = export_keypoints(root / "refined", tmp_path / f"kp.{fmt}", fmt=fmt)
    contract = json.loads((tmp_path / f"kp.{fmt}.json").read_text())
    assert contract["parity"]["max_abs_diff"] <= 1e-4
    assert contract["parity"]["refiner_max_abs_diff"] <= 1e-4
    frames = np.stack([ShardedDataset(data, fields=["image"])[i]["image"] for i in range(6)])
    eager = Encoder.load(root / "refined").predict(frames)
    got = ExportedKeypoints(out, threads=1).predict(frames)
    for name in ("keypoint", "keypoint_coarse"):
        assert np.abs(got[name] - eager[name][:, 0]).max() <= 1e-4, name
    assert np.abs(got["keypoint_px"] - eager["keypoint_px"][:, 0]).max() <= 1e-2


def test_cli_train_eval_export_and_predict_without_refinement(
    data: Path, refined: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import cv2

    from sim2real.cli import main

    root, _ = refined
    train = ["refine", "train", "--data", str(data), "--encoder", str(root / "coarse")]
    small = ["--crop", "16", "--width", "4", "--jitter-px", "4", "--epochs", "1"]
    assert main([*train, *small, "--batch-size", "8", "--out", str(tmp_path / "enc")]) == 0
    assert "validation windows" in capsys.readouterr().out
    assert main(["refine", "eval", "--data", str(data), "--encoder", str(tmp_path / "enc")]) == 0
    printed = capsys.readouterr().out
    assert "coarse" in printed and "refined" in printed
    onnx = tmp_path / "kp.onnx"
    assert main(["refine", "export", "--encoder", str(tmp_path / "enc"), "--out", str(onnx)]) == 0
    assert onnx.is_file()
    images = tmp_path / "images"
    images.mkdir()
    ds = ShardedDataset(data, fields=["image"])
    for i in range(2):
        cv2.imwrite(str(images / f"{i}.png"), ds[i]["image"][..., ::-1])
    common = ["predict", "--model", str(tmp_path / "enc"), "--images", str(images), "--out"]
    assert main([*common, str(tmp_path / "on.csv")]) == 0
    assert main([*common, str(tmp_path / "off.csv"), "--no-refine"]) == 0
    on, off = ((tmp_path / f"{n}.csv").read_text().splitlines() for n in ("on", "off"))
    assert on[0] == off[0] and len(on) == len(off) == 3
    # each file holds the positions of its own keypoints (refined or coarse)
    from sim2real.perception.geometry import predict_positions

    encoder = Encoder.load(tmp_path / "enc")
    frames = np.stack([ds[i]["image"] for i in range(2)])
    for rows, enabled in ((on, True), (off, False)):
        set_refine(encoder, enabled)
        want = predict_positions(encoder, frames)
        got = np.array([[float(v) for v in row.split(",")[1:4]] for row in rows[1:]])
        np.testing.assert_allclose(got, want, atol=1.5e-4)
    assert "xy_cm" in printed


def test_policy_perceive_gives_the_refined_keypoint_of_the_full_frame(
    data: Path, refined: tuple[Path, dict], tmp_path: Path
) -> None:
    from sim2real.deploy.policy import Policy
    from sim2real.policies.bundle import ActorHead, save_bundle

    root, _ = refined
    encoder = Encoder.load(root / "refined")
    head = ActorHead(encoder.feature_dim, False, 4, 8, (8,), "tanh", [-1.0] * 3, [1.0] * 3, "clip")
    contract = {
        "observation": {
            "image": {"shape": [3, 48, 64], "dtype": "uint8", "colour": "RGB"},
            "proprio": {"shape": [4], "dtype": "float32"},
        },
        "features": {"pool": "mean"},
    }
    policy = Policy.load(save_bundle(tmp_path / "bundle", encoder, head, contract), device="cpu")
    frame = ShardedDataset(data, fields=["image"])[0]["image"]  # full resolution, 128x96
    seen = policy.perceive(frame)
    want = encoder.predict(frame)
    np.testing.assert_allclose(seen["keypoint_coarse"], want["keypoint_coarse"][0, 0], atol=1e-5)
    np.testing.assert_allclose(seen["keypoint"], want["keypoint"][0, 0], atol=1e-5)
    set_refine(policy.encoder, False)
    assert "keypoint" not in policy.perceive(frame)


def test_train_refuses_an_encoder_without_a_keypoint_head(data: Path, tmp_path: Path) -> None:
    from sim2real.errors import ConfigError

    heads = {"position": {"type": "position"}}
    Encoder("nature_cnn", heads, input_size=(64, 48), pretrained=False).save(tmp_path / "enc")
    with pytest.raises(ConfigError, match="'keypoint' head"):
        train_refiner(data, tmp_path / "enc", RefineConfig(crop=32, jitter_px=4, epochs=1))
