"""Policy bundle -> ONNX / TorchScript graph: parity with the eager policy, contract, errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sim2real.cli import main
from sim2real.deploy.export import (
    eager_actions,
    export_bundle,
    load_exported,
    resize_matrix,
)
from sim2real.errors import CheckpointError, ConfigError, InputError
from sim2real.perception.encoder import Encoder
from sim2real.perception.geometry import PlaneCamera
from sim2real.perception.preprocessing import resize_frames
from sim2real.policies.bundle import ActorHead, load_bundle, save_bundle

REAL = Path(__file__).resolve().parents[3] / "shared" / "real" / "kuka_cube" / "labelled"
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
FORMATS = [
    "torchscript",
    pytest.param(
        "onnx", marks=pytest.mark.skipif(not HAS_ORT, reason="needs pip install 'sim2real[onnx]'")
    ),
]
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}
TOL = 1e-4


def _bundle(
    path: Path,
    backbone: str = "nature_cnn",
    obs: int = 48,
    enc_size: tuple[int, int] = (40, 40),
    squash: str = "clip",
    pretrained: bool = False,
    keypoint_relative: bool = False,
    trunk_dim: int = 16,
    route: str = "keypoint_relative",
    **kwargs: object,
) -> Path:
    """A bundle with random weights: encoder (+position head, or cube and gripper keypoints
    with the ``route`` route when ``keypoint_relative``), actor head, contract."""
    torch.manual_seed(0)
    position = {"position": {"type": "position", "frame": "robot_base", "hidden": 16}}
    if keypoint_relative:
        position = {"keypoint": {"type": "keypoints", "names": ["cube", "gripper"], "window": 3}}
    enc = Encoder(backbone, position, input_size=enc_size, pretrained=pretrained, **kwargs)
    if keypoint_relative:
        eye, target = np.array([1.3, 0.0, 0.7]), np.array([0.5, 0.0, 0.0])
        forward = (target - eye) / np.linalg.norm(target - eye)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        rot = np.stack([right, np.cross(forward, right), forward])
        k = [[40.0, 0.0, enc_size[0] / 2], [0.0, 40.0, enc_size[1] / 2], [0.0, 0.0, 1.0]]
        enc.card["camera"] = PlaneCamera(
            np.array(k), rot, -rot @ eye, enc_size[0], enc_size[1], 0.025
        ).to_card()
        enc.card["position_route"] = route
    enc.train()  # BatchNorm running statistics away from their defaults
    with torch.no_grad():
        enc(torch.randn(4, 3, enc_size[1], enc_size[0]) * 2 + 0.5)
    enc.eval()
    head = ActorHead(
        enc.feature_dim, True, 10, trunk_dim, [32, 32], "tanh", [-1.0] * 3, [1.0] * 3, squash
    )
    with torch.no_grad():
        head.mu.weight.mul_(20.0)  # some actions clip / saturate, most do not
    contract = {
        "observation": {
            "image": {"shape": [3, obs, obs], "dtype": "uint8", "colour": "RGB"},
            "proprio": {"shape": [10], "names": [f"p{i}" for i in range(10)]},
        },
        "features": {"pool": "mean"},
    }
    return save_bundle(path, enc, head, contract)


@pytest.fixture(scope="module")
def rendered() -> tuple[np.ndarray, np.ndarray]:
    """6 rendered 48x48 observations (NHWC) and their proprio from the reach env."""
    import gymnasium as gym

    import sim2real.envs  # noqa: F401  (registers the ids)

    env = gym.make("Sim2Real/ReachCube-v0", image_size=48)
    obs, _ = env.reset(seed=0)
    frames, proprio = [], []
    for _ in range(6):
        frames.append(obs["image"].transpose(1, 2, 0))
        proprio.append(obs["proprio"])
        obs, *_ = env.step(env.action_space.sample())
    env.close()
    return np.stack(frames), np.stack(proprio).astype(np.float32)


def test_resize_matrix_matches_resize_frames() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (2, 30, 50, 3), dtype=np.uint8)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    rows, cols = resize_matrix(30, 24), resize_matrix(50, 40).T  # columns first, like torch
    got = (rows @ (x @ cols)).round().clamp(0, 255)
    want = resize_frames(frames, 40, 24).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("squash", ["clip", "tanh"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_parity_on_rendered_frames(
    tmp_path: Path, rendered: tuple[np.ndarray, np.ndarray], fmt: str, squash: str
) -> None:
    bundle = _bundle(tmp_path / "bundle", squash=squash)  # obs 48x48, encoder 40x40: in-graph
    out = export_bundle(bundle, fmt, tmp_path / f"policy{SUFFIX[fmt]}")
    _, actor, _ = load_bundle(bundle)
    frames, proprio = rendered
    want = eager_actions(actor, frames, proprio, (48, 48))
    policy = load_exported(out)
    got = policy.act(frames, proprio)
    assert got.shape == want.shape == (6, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    np.testing.assert_allclose(policy.act(frames[0], proprio[0]), want[0], rtol=0, atol=TOL)
    bgr = frames[..., ::-1]
    np.testing.assert_allclose(policy.act(bgr, proprio, colour="BGR"), got, rtol=0, atol=1e-6)
    assert np.all(got >= -1.0) and np.all(got <= 1.0)


@pytest.mark.parametrize("trunk_dim", [16, 0])
@pytest.mark.parametrize("fmt", FORMATS)
def test_parity_keypoint_relative_route(
    tmp_path: Path, rendered: tuple[np.ndarray, np.ndarray], fmt: str, trunk_dim: int
) -> None:
    """The gripper-relative position (two keypoints, local soft-argmax, back-projection onto
    the proprio's gripper height) is part of the exported graph, with or without the pooled
    features (``trunk_dim=0``: position and proprio only)."""
    bundle = _bundle(tmp_path / "bundle", keypoint_relative=True, trunk_dim=trunk_dim)
    out = export_bundle(bundle, fmt, tmp_path / f"policy{SUFFIX[fmt]}")
    _, actor, _ = load_bundle(bundle)
    assert actor.encoder.card["position_route"] == "keypoint_relative"
    frames, proprio = rendered
    want = eager_actions(actor, frames, proprio, (48, 48))
    got = load_exported(out).act(frames, proprio)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    moved = proprio.copy()
    moved[:, -1] += 0.05  # another gripper height: another offset, other actions
    assert not np.allclose(eager_actions(actor, frames, moved, (48, 48)), want, atol=1e-4)


@pytest.mark.parametrize("fmt", FORMATS)
def test_parity_keypoint_plane_route(
    tmp_path: Path, rendered: tuple[np.ndarray, np.ndarray], fmt: str
) -> None:
    """The cube keypoint back-projected onto the cube's plane is part of the exported graph;
    it does not read the proprio's gripper height."""
    bundle = _bundle(
        tmp_path / "bundle", keypoint_relative=True, trunk_dim=0, route="keypoint_plane"
    )
    out = export_bundle(bundle, fmt, tmp_path / f"policy{SUFFIX[fmt]}")
    _, actor, _ = load_bundle(bundle)
    frames, proprio = rendered
    want = eager_actions(actor, frames, proprio, (48, 48))
    np.testing.assert_allclose(load_exported(out).act(frames, proprio), want, rtol=0, atol=TOL)
    features = actor.encoder.card
    assert features["position_route"] == "keypoint_plane"


@pytest.mark.parametrize("fmt", FORMATS)
def test_parity_on_real_frames_efficientnet(tmp_path: Path, fmt: str) -> None:
    if not REAL.is_dir():
        pytest.skip(f"real frames not found at {REAL} (shared/real/kuka_cube is not checked out)")
    from sim2real.data.decode import read_image

    files = sorted(REAL.glob("*.jpg"))[:6]
    frames = np.stack([read_image(f)[..., ::-1] for f in files])  # 640x480 RGB
    bundle = _bundle(
        tmp_path / "bundle", "efficientnet_lite0", obs=84, enc_size=(84, 84), squash="tanh"
    )
    out = export_bundle(bundle, fmt, tmp_path / f"policy{SUFFIX[fmt]}")
    _, actor, _ = load_bundle(bundle)
    proprio = np.random.default_rng(1).normal(size=(len(frames), 10)).astype(np.float32)
    small = resize_frames(frames, 84, 84).numpy()  # the caller resizes, both sides alike
    want = eager_actions(actor, small, proprio, (84, 84))
    np.testing.assert_allclose(load_exported(out).act(small, proprio), want, rtol=0, atol=TOL)
    # full 640x480 frames in, resized inside the graph: same actions as the eager chain
    full = export_bundle(bundle, fmt, tmp_path / f"full{SUFFIX[fmt]}", input_size=(640, 480))
    got = load_exported(full).act(frames, proprio)
    np.testing.assert_allclose(got, eager_actions(actor, frames, proprio, (84, 84)), atol=TOL)


def test_contract_beside_the_file(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "bundle")
    out = export_bundle(bundle, "torchscript", tmp_path / "out" / "policy.pt")
    assert not list((tmp_path / "out").glob(".*tmp*")), "temporary files left behind"
    contract = json.loads((tmp_path / "out" / "policy.pt.json").read_text())
    assert contract["format"] == "sim2real.exported_policy/1"
    assert contract["graph_format"] == "torchscript" and contract["file"] == out.name
    image, proprio = contract["inputs"]
    assert image == {
        "name": "image",
        "shape": ["N", 48, 48, 3],
        "dtype": "uint8",
        "layout": "NHWC",
        "colour": "RGB",
        "range": [0, 255],
    }
    assert proprio["shape"] == ["N", 10] and proprio["dtype"] == "float32"
    assert proprio["names"][0] == "p0"
    assert contract["outputs"] == [{"name": "action", "shape": ["N", 3], "dtype": "float32"}]
    assert contract["action"]["low"] == [-1.0] * 3 and contract["action"]["squash"] == "clip"
    assert contract["resize"]["encoder_input_size"] == [40, 40]
    assert contract["resize"]["in_graph"] == [[[48, 48], [40, 40]]]
    assert "resize_frames" in contract["resize"]["caller"]
    assert contract["torch_version"] == torch.__version__
    assert contract["source_bundle"]["contract"]["actor"]["proprio_dim"] == 10
    assert contract["parity"]["max_abs_diff"] <= TOL


@pytest.mark.skipif(not HAS_ORT, reason="needs pip install 'sim2real[onnx]'")
def test_onnx_contract_has_opset(tmp_path: Path) -> None:
    out = export_bundle(_bundle(tmp_path / "bundle"), "onnx", tmp_path / "p.onnx", opset=18)
    contract = json.loads((tmp_path / "p.onnx.json").read_text())
    assert contract["opset"] == 18 and contract["graph_format"] == "onnx"
    assert load_exported(out, threads=1).input_size == (48, 48)


def test_export_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"expected one of \['onnx', 'torchscript'\]"):
        export_bundle(tmp_path, "tflite", tmp_path / "p.tflite")
    with pytest.raises(CheckpointError, match="not found"):
        export_bundle(tmp_path / "missing", "torchscript", tmp_path / "p.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_exported(tmp_path / "nothing.onnx")


def test_missing_onnx_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name.startswith("onnx") else real_find(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigError, match=r"pip install 'sim2real\[onnx\]'"):
        export_bundle(tmp_path, "onnx", tmp_path / "p.onnx")


def test_exported_policy_rejects_bad_inputs(tmp_path: Path) -> None:
    policy = load_exported(export_bundle(_bundle(tmp_path / "b"), "torchscript", tmp_path / "p.pt"))
    frame, proprio = np.zeros((48, 48, 3), np.uint8), np.zeros(10, np.float32)
    assert policy.act(frame, proprio).shape == (3,)
    with pytest.raises(InputError, match="uint8"):
        policy.act(frame.astype(np.float32), proprio)
    with pytest.raises(InputError, match="3 colour channels"):
        policy.act(np.zeros((3, 48, 48), np.uint8), proprio)
    with pytest.raises(InputError, match="resize_frames"):
        policy.act(np.zeros((480, 640, 3), np.uint8), proprio)
    with pytest.raises(InputError, match=r"\(10,\)"):
        policy.act(frame, np.zeros(7, np.float32))
    with pytest.raises(InputError, match="finite"):
        policy.act(frame, np.full(10, np.nan, np.float32))
    with pytest.raises(InputError, match="proprio rows"):
        policy.act(np.zeros((2, 48, 48, 3), np.uint8), np.zeros((3, 10), np.float32))
    with pytest.raises(InputError, match="colour"):
        policy.act(frame, proprio, colour="RGBA")


def test_cli_parser_and_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = _bundle(tmp_path / "bundle")
    out = str(tmp_path / "p.pt")
    assert main(["export", "--bundle", str(bundle), "--format", "torchscript", "--out", out]) == 0
    assert "p.pt.json" in capsys.readouterr().out
    assert (tmp_path / "p.pt").is_file()
