"""``Policy`` (the bundle runtime) and ``sim2real run``: SB3 parity, validation, the CLI loop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO

import sim2real.envs  # noqa: F401  (registers the ids)
from sim2real import Policy
from sim2real.cli import main
from sim2real.deploy.run import RunSettings, run_bundle
from sim2real.errors import ConfigError, InputError
from sim2real.perception.encoder import Encoder
from sim2real.perception.preprocessing import resize_frames
from sim2real.policies.train import train

ENV = "Sim2Real/ReachCube-v0"
SIZE = 48  # the env's observation; the encoder reads 40x40, so act() resizes twice


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PPO run whose nature_cnn encoder (with a position head) trains inside the policy."""
    root = tmp_path_factory.mktemp("policy_runtime")
    heads = {"position": {"type": "position", "frame": "robot_base", "hidden": 16}}
    enc = Encoder("nature_cnn", heads, input_size=(40, 40), pretrained=False)
    enc.heads["position"].set_target_stats([0.5, 0.0, 0.03], [0.1, 0.1, 0.01])
    enc.save(root / "encoder")
    return train(
        ENV,
        str(root / "encoder"),
        root / "run",
        algo="ppo",
        steps=128,
        n_envs=1,
        mode="finetune",
        seed=0,
        algo_kwargs={"n_steps": 64, "batch_size": 32, "n_epochs": 2},
        image_size=SIZE,
        trunk_dim=16,
        hidden=(32, 32),
        eval_every=0,
        eval_episodes=1,
        progress_bar=False,
        tensorboard=False,
    )


def _rendered(n: int = 5, seed: int = 7) -> dict[str, np.ndarray]:
    env = gym.make(ENV, image_size=SIZE, randomization="default", labels="none")
    obs, _ = env.reset(seed=seed)
    steps = [obs]
    for _ in range(n - 1):
        obs, *_ = env.step(env.action_space.sample())
        steps.append(obs)
    env.close()
    return {k: np.stack([o[k] for o in steps]) for k in steps[0]}


def test_act_matches_the_sb3_policy_on_rendered_frames(run: Path) -> None:
    obs = _rendered()
    expected, _ = PPO.load(run / "sb3_model.zip", device="cpu").predict(obs, deterministic=True)
    policy = Policy.load(run, device="cpu")
    frames = obs["image"].transpose(0, 2, 3, 1)
    got = np.stack([policy.act(f, p) for f, p in zip(frames, obs["proprio"], strict=True)])
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert np.all(got >= policy.action_low) and np.all(got <= policy.action_high)
    # a BGR camera declared at load time gives the same actions on BGR frames
    bgr = Policy.load(run / "bundle", device="cpu", colour="BGR")
    flipped = np.ascontiguousarray(frames[..., ::-1])
    got_bgr = [bgr.act(f, p) for f, p in zip(flipped, obs["proprio"], strict=True)]
    np.testing.assert_allclose(np.stack(got_bgr), got, atol=1e-6)


def test_frames_of_any_size_are_resized_like_the_env_observation(run: Path) -> None:
    policy = Policy.load(run, device="cpu")
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    proprio = np.zeros(policy.proprio_dim, np.float32)
    small = resize_frames(big, SIZE, SIZE)[0].numpy()
    np.testing.assert_array_equal(policy.act(big, proprio), policy.act(small, proprio))
    inputs = policy.preprocess(big, proprio)
    assert tuple(inputs.image.shape) == (1, 3, 40, 40)
    np.testing.assert_array_equal(policy.infer(inputs), policy.act(big, proprio))


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (np.zeros((48, 48, 3), np.float32), "uint8.*floats in \\[0, 1\\]"),
        (np.zeros((3, 48, 48), np.uint8), "channels first"),
        (np.zeros((48, 48), np.uint8), "grayscale"),
        (np.zeros((48, 48, 4), np.uint8), "alpha"),
        (np.zeros((2, 48, 48, 3), np.uint8), "not a batch"),
        ([[0, 0, 0]], "numpy uint8"),
    ],
)
def test_bad_frames_are_named(run: Path, frame: Any, match: str) -> None:
    policy = Policy.load(run, device="cpu")
    with pytest.raises(InputError, match=match):
        policy.act(frame, np.zeros(policy.proprio_dim))


def test_bad_proprio_and_colour_are_named(run: Path) -> None:
    policy = Policy.load(run, device="cpu")
    frame = np.zeros((48, 48, 3), np.uint8)
    n = policy.proprio_dim
    with pytest.raises(InputError, match=f"needs {n} values.*joint_0"):
        policy.act(frame, None)
    with pytest.raises(InputError, match=f"expected shape \\({n},\\).*got \\({n + 1},\\)"):
        policy.act(frame, np.zeros(n + 1))
    bad = np.zeros(n)
    bad[2] = np.nan
    with pytest.raises(InputError, match="NaN/inf at \\[2\\]"):
        policy.act(frame, bad)
    bad[2] = np.inf
    with pytest.raises(InputError, match="finite"):
        policy.act(frame, bad)
    with pytest.raises(InputError, match="numbers"):
        policy.act(frame, ["a"] * n)
    with pytest.raises(ConfigError, match="RGBA"):
        Policy.load(run, colour="RGBA")


def test_runtime_imports_no_sb3_gymnasium_or_pybullet(run: Path) -> None:
    code = (
        "import sys, numpy as np\n"
        "from sim2real import Policy\n"
        f"p = Policy.load({str(run)!r}, device='cpu')\n"
        "a = p.act(np.zeros((48, 48, 3), np.uint8), np.zeros(p.proprio_dim))\n"
        "assert a.shape == (3,)\n"
        "heavy = {'stable_baselines3', 'gymnasium', 'pybullet', 'albumentations'}\n"
        "bad = heavy & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_run_bundle_closes_the_loop_in_simulation(run: Path, tmp_path: Path) -> None:
    result = run_bundle(run, "sim", "sim", RunSettings(hz=200, steps=6), record=tmp_path / "rec")
    assert result.report.status == "completed" and result.report.steps == 6
    manifest = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    assert manifest["spec"]["camera"] == "sim"
    assert result.report.latency.seconds("inference").size == 6


def test_cli_run_replays_a_folder_dry(run: Path, tmp_path: Path, capsys: Any) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:03d}.png"), np.full((60, 80, 3), 40 * i, np.uint8))
    argv = ["run", "--bundle", str(run), "--camera", f"replay:{frames}", "--hz", "100"]
    assert main([*argv, "--steps", "4", "--dry-run", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "completed: 4 steps" in out and "dry run" in out and "inference" in out
    with pytest.raises(ConfigError, match="robot spec"):
        run_bundle(run, f"replay:{frames}", "ur5", RunSettings(steps=1))


def test_contract_carries_visibility_and_perceive_answers(run: Path) -> None:
    """The bundle's encoder has no visibility head: visible, and a confidence in [0, 1]."""
    policy = Policy.load(run, device="cpu")
    visibility = policy.contract["visibility"]
    assert visibility["head"] is False and visibility["act_threshold"] == 0.5
    assert visibility["outputs"] == ["visibility", "visible", "confidence", "ood"]
    seen = policy.perceive(_rendered(n=1)["image"][0].transpose(1, 2, 0))
    assert seen["visible"] is True and seen["visibility"] == 1.0
    assert 0.0 <= seen["confidence"] <= 1.0 and np.isnan(seen["ood"])
    with pytest.raises(InputError):
        policy.perceive(np.zeros((4, 4), np.uint8))
