"""Encoder, heads and preprocessing: soft-argmax, input checks, save/load, fine-tuning helpers."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sim2real.errors import CheckpointError, ConfigError, InputError
from sim2real.perception import (
    Encoder,
    build_head,
    heatmap_kl,
    normalised_to_pixels,
    pixels_to_normalised,
    resize_frames,
    spatial_soft_argmax,
)

HEADS = {
    "position": {"type": "position", "frame": "robot_base", "hidden": 32},
    "kp": {"type": "keypoints", "names": ["cube", "gripper"]},
    "box": {"type": "box", "hidden": 16},
    "mask": {"type": "mask", "num_classes": 2},
}


@pytest.fixture()
def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(3, 60, 80, 3), dtype=np.uint8)


@pytest.fixture()
def encoder() -> Encoder:
    torch.manual_seed(0)
    enc = Encoder(
        "efficientnet_lite0", HEADS, pretrained=False, backbone_kwargs={"feature_stride": 16}
    )
    enc.heads["position"].set_target_stats([0.5, 0.0, 0.1], [0.1, 0.2, 0.05])
    return enc


# ---------------------------------------------------------------------------- heads
@pytest.mark.parametrize(("u", "v"), [(13.37, 7.81), (4.52, 18.06), (27.9, 11.5)])
def test_soft_argmax_finds_subpixel_peak(u: float, v: float) -> None:
    h, w = 24, 32
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    heatmap = -((xs - u) ** 2 + (ys - v) ** 2) / (2 * 1.5**2)
    xy = spatial_soft_argmax(heatmap[None, None])
    assert xy.shape == (1, 1, 2)
    uv = normalised_to_pixels(xy, w, h)[0, 0]
    assert abs(float(uv[0]) - u) < 0.1 and abs(float(uv[1]) - v) < 0.1


def _blob(h: int, w: int, x: float, y: float, sigma: float = 0.6) -> torch.Tensor:
    """Log of a Gaussian blob centred at normalised (x, y), ``sigma`` in cells."""
    cols = (2.0 * torch.arange(w) + 1.0) / w - 1.0
    rows = (2.0 * torch.arange(h) + 1.0) / h - 1.0
    dx, dy = (cols[None, :] - x) * w / 2, (rows[:, None] - y) * h / 2
    return -(dx**2 + dy**2) / (2 * sigma**2)


def test_heatmap_kl_wants_one_peak_at_the_target() -> None:
    h, w, target = 12, 16, torch.tensor([[[0.25, -0.25]]])
    # Its own target distribution: zero.
    own = _blob(h, w, 0.25, -0.25, 1.0)[None, None]
    assert heatmap_kl(own, target) == pytest.approx(0, abs=1e-5)
    # Two blobs either side of the target: the soft-argmax is exactly right, so an L1 on it
    # is ~0 and cannot tell this from one peak; the heatmap term can.
    left, right = _blob(h, w, -0.25, -0.25), _blob(h, w, 0.75, -0.25)
    two = torch.logsumexp(torch.stack([left, right]), dim=0)[None, None]
    one = _blob(h, w, 0.25, -0.25)[None, None]
    for maps in (one, two):
        assert torch.allclose(spatial_soft_argmax(maps), target, atol=1e-3)
    assert heatmap_kl(two, target) > 10 * heatmap_kl(one, target) > 0
    # Gradient descent on the logits alone moves the mass to the target.
    logits = two.clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(300):
        loss = heatmap_kl(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert heatmap_kl(logits.detach(), target) < 0.01


def test_local_soft_argmax_stays_on_the_strongest_peak() -> None:
    h, w = 12, 16
    strong, weak = _blob(h, w, 0.3, 0.2), _blob(h, w, -0.6, -0.5) - 0.5
    maps = torch.logsumexp(torch.stack([strong, weak]), dim=0)[None, None]
    plain = spatial_soft_argmax(maps)[0, 0]
    local = spatial_soft_argmax(maps, window=2)[0, 0]
    # the whole-map expectation lands between the blobs, on neither; the local one on the
    # stronger blob, still sub-cell (0.3, 0.2 is not a cell centre)
    assert float(torch.linalg.norm(plain - torch.tensor([0.3, 0.2]))) > 0.3
    assert torch.allclose(local, torch.tensor([0.3, 0.2]), atol=0.02)
    # a window covering the map is the plain soft-argmax; one peak: any window finds it
    assert torch.allclose(spatial_soft_argmax(maps, window=max(h, w)), plain.view(1, 1, 2))
    one = _blob(h, w, 0.3, 0.2)[None, None]
    assert torch.allclose(spatial_soft_argmax(one, window=1), spatial_soft_argmax(one), atol=0.02)
    with pytest.raises(ConfigError, match="window=-1"):
        spatial_soft_argmax(maps, window=-1)


def test_keypoint_head_window_only_in_eval() -> None:
    torch.manual_seed(0)
    head = build_head("keypoints", 8, names=["cube"], window=1)
    assert head.config()["window"] == 1
    assert build_head("keypoints", 8, **{**head.config(), "window": 0}).window == 0
    heat = torch.randn(2, 1, 6, 8) * 3
    head.train()
    assert torch.equal(head.decode(heat), spatial_soft_argmax(heat, head.temperature))
    head.eval()
    assert torch.equal(head.decode(heat), spatial_soft_argmax(heat, head.temperature, 1))
    assert not torch.equal(head.decode(heat), spatial_soft_argmax(heat, head.temperature))
    config = head.config()
    del config["window"]  # a card written before the option: the whole map, as then
    assert build_head("keypoints", 8, **config).window == 0
    with pytest.raises(ConfigError, match="window"):
        build_head("keypoints", 8, names=["cube"], window=-2)


def test_heatmap_kl_bad_inputs() -> None:
    maps = torch.zeros(2, 1, 6, 8)
    with pytest.raises(ConfigError, match="sigma_cells"):
        heatmap_kl(maps, torch.zeros(2, 1, 2), sigma_cells=0.0)
    with pytest.raises(InputError, match=r"expected shape \(2, 1, 2\), got \(2, 2\)"):
        heatmap_kl(maps, torch.zeros(2, 2))


def test_pixel_normalised_round_trip() -> None:
    uv = torch.tensor([[0.0, 0.0], [127.0, 95.0], [63.25, 40.5]])
    back = normalised_to_pixels(pixels_to_normalised(uv, 128, 96), 128, 96)
    assert torch.allclose(back, uv, atol=1e-5)
    corners = pixels_to_normalised(torch.tensor([[-0.5, -0.5], [127.5, 95.5]]), 128, 96)
    assert torch.allclose(corners, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))


def test_head_outputs_and_denormalisation(encoder: Encoder) -> None:
    x = torch.zeros(2, 3, 96, 128)
    out = encoder(x)
    assert out["position"].shape == (2, 3)
    assert out["kp"].shape == (2, 2, 2) and out["kp"].abs().max() <= 1
    assert out["box"].shape == (2, 4)
    assert out["mask"].shape == (2, 2, 6, 8)
    head = encoder.heads["position"]
    target = torch.tensor([[0.6, -0.2, 0.15]])
    assert torch.allclose(head.normalise(target), torch.tensor([[1.0, -1.0, 1.0]]))


def test_bad_head_config() -> None:
    with pytest.raises(ConfigError, match="unknown head type"):
        build_head("pose", 64)
    with pytest.raises(ConfigError, match="bad options"):
        build_head("box", 64, frame="world")
    with pytest.raises(ConfigError, match="in_channels"):
        build_head("mask", 64, in_channels=32)


def _hot_spot_batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature maps whose only content is where a spot is; the target is that place."""
    g = torch.Generator().manual_seed(seed)
    rows, cols = torch.randint(0, 8, (n,), generator=g), torch.randint(0, 8, (n,), generator=g)
    fmap = torch.zeros(n, 4, 8, 8)
    fmap[torch.arange(n), 0, rows, cols] = 5.0
    target = torch.stack([cols, rows, torch.zeros(n, dtype=torch.long)], dim=1).float() / 7.0
    return fmap, target


@pytest.mark.parametrize("pool", ["mean", "mean+points"])
def test_position_head_feature_points_learn_where(pool: str) -> None:
    # Mean pooling sees the same vector wherever the spot is, so it cannot regress the
    # position; learnt feature points (spatial soft-argmax) can.
    torch.manual_seed(0)
    head = build_head("position", 4, hidden=32, pool=pool, points=4)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for step in range(300):
        fmap, target = _hot_spot_batch(64, seed=step)
        loss = torch.nn.functional.mse_loss(head.forward_normalised(fmap), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    fmap, target = _hot_spot_batch(256, seed=10_000)
    with torch.no_grad():
        err = (head(fmap)[:, :2] - target[:, :2]).abs().mean().item()
    if pool == "mean":
        assert err > 0.2  # ~ the spread of the targets: it learnt their mean
    else:
        assert err < 0.05
    assert head.pooled(fmap).shape == (256, 4 if pool == "mean" else 4 + 2 * 4)


def test_position_head_pool_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pool='max'"):
        build_head("position", 8, pool="max")
    with pytest.raises(ConfigError, match="points=0"):
        build_head("position", 8, pool="mean+points", points=0)
    enc = Encoder(
        "impala_cnn",
        {"position": {"type": "position", "pool": "mean+points", "points": 6}},
        pretrained=False,
    ).eval()
    x = torch.rand(2, 3, 96, 128)
    loaded = Encoder.load(enc.save(tmp_path / "enc"))
    assert loaded.heads["position"].config()["pool"] == "mean+points"
    with torch.no_grad():
        assert torch.equal(enc(x)["position"], loaded(x)["position"])


# ---------------------------------------------------------------------------- preprocessing
def test_resize_frames_any_resolution(frames: np.ndarray) -> None:
    out = resize_frames(frames, 128, 96)
    assert out.shape == (3, 96, 128, 3) and out.dtype == torch.uint8
    assert torch.equal(out, resize_frames(torch.from_numpy(frames), 128, 96))
    assert torch.equal(resize_frames(frames[0], 80, 60)[0], torch.from_numpy(frames[0]))
    flat = np.full((480, 640, 3), 77, np.uint8)
    assert (resize_frames(flat, 128, 96) == 77).all()


def test_preprocess_shape_and_colour_conversion(encoder: Encoder, frames: np.ndarray) -> None:
    x = encoder.preprocess(frames)
    assert x.shape == (3, 3, 96, 128) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    bgr = np.ascontiguousarray(frames[..., ::-1])
    assert torch.equal(encoder.preprocess(bgr, colour="BGR"), x)
    rgb_pred = encoder.predict(frames, colour="RGB")
    bgr_pred = encoder.predict(bgr, colour="BGR")
    for key, value in rgb_pred.items():
        np.testing.assert_array_equal(value, bgr_pred[key])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((60, 80, 3), np.float32), "expected dtype uint8.*got float32"),
        (
            np.zeros((60, 80), np.uint8),
            r"expected \(H, W, 3\) or \(N, H, W, 3\), got shape \(60, 80\)",
        ),
        (np.zeros((60, 80, 4), np.uint8), r"3 colour channels.*got shape \(60, 80, 4\)"),
        (np.zeros((3, 60, 80), np.uint8), "channels-first"),
        ([[0, 1, 2]], "numpy array or torch tensor, got list"),
    ],
)
def test_preprocess_rejects_bad_frames(encoder: Encoder, bad: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        encoder.predict(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("colour", ["rgb", "RGBA", "GRAY"])
def test_unknown_colour_order(encoder: Encoder, frames: np.ndarray, colour: str) -> None:
    with pytest.raises(InputError, match=r"expected one of \['RGB', 'BGR'\]"):
        encoder.predict(frames, colour=colour)


def test_bad_preprocessing_config() -> None:
    with pytest.raises(ConfigError, match="colour"):
        Encoder("nature_cnn", colour="YUV", pretrained=False)
    with pytest.raises(ConfigError, match="resize"):
        Encoder("nature_cnn", resize="crop", pretrained=False)


# ---------------------------------------------------------------------------- predict, features
def test_predict_batches_and_restores_mode(encoder: Encoder, frames: np.ndarray) -> None:
    encoder.train()
    out = encoder.predict(frames, batch_size=2)
    assert encoder.training
    assert out["position"].shape == (3, 3) and out["position"].dtype == np.float32
    assert out["kp_px"].shape == (3, 2, 2)
    np.testing.assert_allclose(
        out["kp_px"], normalised_to_pixels(torch.from_numpy(out["kp"]), 80, 60)
    )
    single = encoder.predict(frames[1])
    np.testing.assert_allclose(single["position"][0], out["position"][1], atol=1e-5)


def test_features_vector(encoder: Encoder) -> None:
    assert encoder.features(torch.zeros(2, 3, 96, 128)).shape == (2, encoder.feature_dim)
    assert encoder.feature_dim == 112


# ---------------------------------------------------------------------------- checkpoint
def test_save_load_round_trip_is_bit_identical(
    encoder: Encoder, frames: np.ndarray, tmp_path: Path
) -> None:
    encoder.card["metrics"] = {"val_mae_m": 0.012}
    encoder.card["training"] = {"epochs": 3}
    before = encoder.predict(frames)
    folder = encoder.save(tmp_path / "enc")
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "card.json"}
    card = json.loads((folder / "card.json").read_text())
    assert card["backbone"]["name"] == "efficientnet_lite0"
    assert card["backbone"]["kwargs"] == {"feature_stride": 16}
    assert card["preprocessing"]["width"] == 128 and card["preprocessing"]["colour"] == "RGB"
    assert card["position_frame"] == "robot_base" and card["metrics"] == {"val_mae_m": 0.012}
    assert card["label_schema"]["kp"]["names"] == ["cube", "gripper"]
    loaded = Encoder.load(folder, device="auto").to("cpu")
    after = loaded.predict(frames)
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])
    assert loaded.card["training"] == {"epochs": 3}
    assert not loaded.backbone.pretrained


def test_dilated_backbone_round_trip(frames: np.ndarray, tmp_path: Path) -> None:
    enc = Encoder(
        "efficientnet_lite0",
        {"kp": {"type": "keypoints", "names": ["cube"]}},
        backbone_kwargs={"feature_stride": 8, "dilated": True},
        pretrained=False,
    ).eval()
    before = enc.predict(frames)
    loaded = Encoder.load(enc.save(tmp_path / "enc"))
    assert loaded.backbone.kwargs == {"feature_stride": 8, "dilated": True}
    with torch.no_grad():
        assert loaded.backbone(torch.zeros(1, 3, 96, 128)).shape[-2:] == (12, 16)
    for key in before:
        np.testing.assert_array_equal(before[key], loaded.predict(frames)[key])


def test_load_rejects_bad_checkpoints(tmp_path: Path) -> None:
    enc = Encoder("nature_cnn", {"p": {"type": "position"}}, input_size=(84, 84), pretrained=False)
    folder = enc.save(tmp_path / "enc")
    weights = folder / "model.safetensors"
    state = load_file(str(weights))

    save_file({**state, "heads.extra": torch.zeros(1)}, str(weights))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*1 extra"):
        Encoder.load(folder)
    save_file({k: v for k, v in state.items() if k != "heads.p.target_std"}, str(weights))
    with pytest.raises(CheckpointError, match=r"1 missing.*target_std"):
        Encoder.load(folder)

    card = json.loads((folder / "card.json").read_text())
    (folder / "card.json").write_text(json.dumps({**card, "format": "something/9"}))
    with pytest.raises(CheckpointError, match=r"card\.json.*expected format"):
        Encoder.load(folder)
    (folder / "card.json").write_text(json.dumps({**card, "backbone": {"name": "vgg"}}))
    with pytest.raises(CheckpointError, match=r"card\.json.*unknown backbone"):
        Encoder.load(folder)
    (folder / "card.json").unlink()
    with pytest.raises(CheckpointError, match=r"card\.json not found"):
        Encoder.load(folder)


# ---------------------------------------------------------------------------- fine-tuning helpers
def test_freeze_and_param_groups(encoder: Encoder) -> None:
    n = len(encoder.backbone.blocks)
    encoder.freeze_blocks(2)
    encoder.train()
    frozen, live = encoder.backbone.blocks[1], encoder.backbone.blocks[2]
    assert not any(p.requires_grad for p in frozen.parameters())
    assert not frozen.training and live.training
    groups = encoder.param_groups(1e-3, decay=0.5)
    assert [g["name"] for g in groups] == [f"block{i}" for i in range(2, n)] + ["heads"]
    lrs = [g["lr"] for g in groups]
    assert lrs == sorted(lrs) and lrs[-1] == 1e-3 and lrs[-2] == 5e-4
    encoder.trainable_blocks(1)
    assert [g["name"] for g in encoder.param_groups(1e-3)] == [f"block{n - 1}", "heads"]
    encoder.freeze_blocks(0)
    assert all(p.requires_grad for p in encoder.parameters())
    with pytest.raises(ConfigError, match="outside"):
        encoder.freeze_blocks(n + 1)


# ---------------------------------------------------------------------------- crop
def test_crop_cuts_the_frame_and_maps_keypoints_both_ways() -> None:
    from sim2real.perception.preprocessing import Preprocessing

    pre = Preprocessing(160, 120, crop=(8, 40, 152, 120))
    assert pre.input_size == (144, 80)
    big = np.random.default_rng(3).integers(0, 256, (2, 480, 640, 3), dtype=np.uint8)
    x = pre(big)
    assert x.shape == (2, 3, 80, 144)
    resized = resize_frames(big, 160, 120)
    whole = Preprocessing(160, 120).normalise(resized)
    torch.testing.assert_close(x, whole[:, :, 40:120, 8:152])
    # The crop's corners are the frame's pixels (8, 40) and (152, 120), normalised.
    corners = pre.to_frame(np.array([[-1.0, -1.0], [1.0, 1.0]]))
    np.testing.assert_allclose(corners, [[8 / 80 - 1, 40 / 60 - 1], [152 / 80 - 1, 1.0]])
    xy = torch.tensor([[0.3, -0.2], [-0.9, 0.95]], dtype=torch.float64)
    torch.testing.assert_close(pre.to_input(pre.to_frame(xy)), xy)
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    old_card = {k: v for k, v in Preprocessing(64, 48).to_dict().items() if k != "crop"}
    assert Preprocessing.from_dict(old_card).crop is None  # cards written before crop
    assert Preprocessing(64, 48).to_frame(xy) is xy


@pytest.mark.parametrize(
    ("crop", "match"),
    [
        ((0, 40, 170, 120), r"0 <= x0 < x1 <= 160"),
        ((10, 40, 10, 120), r"0 <= x0 < x1"),
        ((0, 0, 4, 120), "at least 8x8"),
        ((0, 0, 16), "4 integers"),
        (("a", 0, 1, 2), "4 integers"),
    ],
)
def test_bad_crop(crop: tuple, match: str) -> None:
    from sim2real.perception.preprocessing import Preprocessing

    with pytest.raises(ConfigError, match=match):
        Preprocessing(160, 120, crop=crop)


def test_encoder_crop_sees_only_the_crop_and_predicts_whole_frame_keypoints(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    enc = Encoder(
        "nature_cnn",
        {"kp": {"type": "keypoints", "names": ["cube"]}},
        input_size=(96, 80),
        crop=(0, 24, 96, 80),
        pretrained=False,
    ).eval()
    frames = np.random.default_rng(4).integers(0, 256, (2, 80, 96, 3), dtype=np.uint8)
    out = enc.predict(frames)
    with torch.no_grad():
        raw = enc(enc.preprocess(frames))["kp"]
    np.testing.assert_allclose(out["kp"], enc.preprocessing.to_frame(raw).numpy(), atol=1e-6)
    assert (out["kp"][..., 1] >= 24 / 40 - 1 - 1e-6).all()  # below the crop's top edge
    above, inside = frames.copy(), frames.copy()
    above[:, :24] = 0  # outside the crop: no effect
    inside[:, 40:] = 0  # inside the crop: an effect
    np.testing.assert_array_equal(enc.predict(above)["kp"], out["kp"])
    assert not np.array_equal(enc.predict(inside)["kp"], out["kp"])
    loaded = Encoder.load(enc.save(tmp_path / "enc"))
    assert loaded.preprocessing.crop == (0, 24, 96, 80)
    assert json.loads((tmp_path / "enc" / "card.json").read_text())["preprocessing"]["crop"] == [
        0, 24, 96, 80,
    ]  # fmt: skip
    np.testing.assert_array_equal(loaded.predict(frames)["kp"], out["kp"])


def test_frame_batchnorm_normalises_each_frame_by_itself(
    encoder: Encoder, frames: np.ndarray, tmp_path: Path
) -> None:
    from sim2real.transfer.adabn import adapt_batchnorm

    with torch.no_grad():  # running statistics unlike any frame's, so the two modes differ
        for m in encoder.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.fill_(0.3)
                m.running_var.fill_(4.0)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    assert encoder.batchnorm == "stored"
    stored = encoder.predict(frames)
    framed = encoder.predict(frames, batchnorm="frame")
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # no update
    assert not np.allclose(stored["position"], framed["position"], atol=1e-3)
    # each frame alone: the others in the batch change nothing
    for i in range(len(frames)):
        alone = encoder.predict(frames[i], batchnorm="frame")
        np.testing.assert_allclose(alone["position"][0], framed["position"][i], atol=1e-5)
    # ~ AdaBN on that one frame (it keeps unbiased variances, the forward uses biased ones;
    # on this untrained net's 8x6 maps that differs a little, far less than the stored mode)
    adapted = copy.deepcopy(encoder)
    adapt_batchnorm(adapted, np.stack([frames[0], frames[0]]))
    gap = np.abs(adapted.predict(frames[0])["kp"] - framed["kp"][:1]).max()
    assert gap < 0.3 * np.abs(stored["kp"][:1] - framed["kp"][:1]).max()
    # the mode is a card setting: saved, loaded, used by default
    encoder.set_batchnorm("frame")
    loaded = Encoder.load(encoder.save(tmp_path / "enc"))
    assert loaded.batchnorm == "frame"
    np.testing.assert_allclose(loaded.predict(frames)["position"], framed["position"], atol=1e-5)
    with pytest.raises(ConfigError, match="batchnorm='batch'"):
        encoder.set_batchnorm("batch")
    with pytest.raises(ConfigError, match="expected one of"):
        encoder.predict(frames, batchnorm="running")
