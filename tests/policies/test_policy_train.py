"""Smoke trainings on the real ReachCube env: every algo and mode, with the bundle round trip."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback

import sim2real.envs  # noqa: F401  (registers the ids)
import sim2real.policies.train as train_module
from sim2real.errors import ConfigError
from sim2real.perception.encoder import Encoder
from sim2real.policies.bundle import encode, load_bundle
from sim2real.policies.train import train

ENV = "Sim2Real/ReachCube-v0"
SIZE = 48
POSITION = {"position": {"type": "position", "frame": "robot_base", "hidden": 16}}
FAST = {
    "image_size": SIZE,
    "trunk_dim": 16,
    "hidden": (32, 32),
    "eval_every": 0,
    "eval_episodes": 1,
    "progress_bar": False,
    "tensorboard": False,
}
PPO_FAST = {"n_steps": 64, "batch_size": 32, "n_epochs": 2}
SAC_FAST = {"batch_size": 16, "learning_starts": 64}


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Tiny checkpoints: nature_cnn and a stride-8 EfficientNet-Lite0 (BatchNorm inside)."""
    root = tmp_path_factory.mktemp("encoders")
    out = {}
    for name, kwargs in (
        ("nature_cnn", {}),
        ("efficientnet_lite0", {"backbone_kwargs": {"feature_stride": 8}}),
    ):
        enc = Encoder(name, POSITION, input_size=(40, 40), pretrained=False, **kwargs)
        enc.heads["position"].set_target_stats([0.5, 0.0, 0.03], [0.1, 0.1, 0.01])
        out[name] = str(enc.save(root / name))
    return out


def _assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"encoder tensor {key!r} changed"


def _env_observations(n: int = 4) -> dict[str, np.ndarray]:
    env = gym.make(ENV, image_size=SIZE, randomization="default", labels="none")
    obs, _ = env.reset(seed=123)
    frames = [obs]
    for _ in range(n - 1):
        obs, *_ = env.step(env.action_space.sample())
        frames.append(obs)
    env.close()
    return {k: np.stack([o[k] for o in frames]) for k in frames[0]}


CASES = [
    ("ppo", "frozen", "efficientnet_lite0", {}),
    ("ppo", "frozen", "nature_cnn", {"augment_pad": 2}),  # not cached: encoder inside policy
    ("ppo", "finetune", "efficientnet_lite0", {}),
    ("ppo", "scratch", None, {"backbone": "nature_cnn", "pool": "flatten"}),
    ("sac", "frozen", "efficientnet_lite0", {}),
    ("sac", "finetune", "nature_cnn", {"augment_pad": 2}),
    ("sac", "scratch", "nature_cnn", {}),  # the checkpoint's architecture, random init
]


@pytest.mark.parametrize(("algo", "mode", "backbone", "extra"), CASES)
def test_smoke_train_save_load(
    tmp_path: Path,
    encoders: dict[str, str],
    algo: str,
    mode: str,
    backbone: str | None,
    extra: dict[str, Any],
) -> None:
    encoder = encoders[backbone] if backbone else None
    kwargs = PPO_FAST if algo == "ppo" else SAC_FAST
    run = train(
        ENV,
        encoder,
        tmp_path / "run",
        algo=algo,
        steps=192,
        n_envs=1,
        mode=mode,
        seed=0,
        algo_kwargs=kwargs,
        **FAST,
        **extra,
    )
    for name in ("bundle/contract.json", "bundle/policy.safetensors", "eval.json", "summary.json"):
        assert (run / name).is_file(), name
    enc, actor, contract = load_bundle(run)
    assert contract["algo"] == algo and contract["mode"] == mode
    assert contract["observation"]["image"]["shape"] == [3, SIZE, SIZE]
    assert json.loads((run / "summary.json").read_text())["env_steps"] >= 192
    bundle_state = load_file(str(run / "bundle/encoder/model.safetensors"))
    if mode == "frozen":  # weights and BatchNorm statistics untouched by training
        assert encoder is not None
        _assert_same_tensors(bundle_state, load_file(f"{encoder}/model.safetensors"))
    # the plain-torch actor acts like the SB3 policy on env observations
    obs = _env_observations()
    model = (PPO if algo == "ppo" else SAC).load(run / "sb3_model.zip", device="cpu")
    sb3_obs: dict[str, Any] = dict(obs)
    if contract["features"]["cached_during_training"]:
        x = enc.preprocess(obs["image"].transpose(0, 2, 3, 1))
        with torch.no_grad():
            feats = encode(enc, x, contract["features"]["pool"], actor.head.use_position)
        sb3_obs = {"features": feats.numpy(), "proprio": obs["proprio"]}
    expected, _ = model.predict(sb3_obs, deterministic=True)
    got = actor.act(obs["image"].transpose(0, 2, 3, 1), obs["proprio"])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_subproc_curriculum_checkpoints_aux(tmp_path: Path, encoders: dict[str, str]) -> None:
    run = train(
        ENV,
        encoders["nature_cnn"],
        tmp_path / "run",
        algo="ppo",
        steps=256,
        n_envs=2,
        mode="finetune",
        seed=1,
        algo_kwargs=PPO_FAST,
        curriculum_start=0.0,
        curriculum_steps=512,
        checkpoint_every=128,
        aux_loss=True,
        **{**FAST, "eval_every": 128, "tensorboard": True},
    )
    config = json.loads((run / "config.json").read_text())
    assert config["resolved"]["use_position"] and not config["resolved"]["cache_features"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_00000128",
        "step_00000256",
    ]
    load_bundle(run / "checkpoints" / "step_00000128")
    history = json.loads((run / "eval.json").read_text())
    assert [h["timesteps"] for h in history] == [0, 128, 256]
    assert any((run / "tb").rglob("events.out.tfevents.*"))
    before = load_file(f"{encoders['nature_cnn']}/model.safetensors")
    after = load_file(str(run / "bundle/encoder/model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before), "finetune did not train"


def test_time_limit_stops_early_and_saves_the_run(tmp_path: Path) -> None:
    run = train(
        ENV,
        None,
        tmp_path / "run",
        algo="ppo",
        steps=10_000,
        n_envs=1,
        mode="scratch",
        seed=0,
        backbone="nature_cnn",
        pool="flatten",
        minutes=1e-9,
        algo_kwargs=PPO_FAST,
        **FAST,
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] == "time limit"
    assert summary["steps_budget"] == 10_000 and 0 < summary["env_steps"] < 10_000
    history = json.loads((run / "eval.json").read_text())
    assert history[-1]["timesteps"] == summary["env_steps"] == summary["final_eval_step"]
    load_bundle(run)


class _SigtermAt(BaseCallback):
    """Sends this process SIGTERM once ``step`` env steps are reached (as ``kill PID`` would)."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.step:
            os.kill(os.getpid(), signal.SIGTERM)
        return True


def test_sigterm_saves_the_run_then_interrupts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = train_module._callbacks
    monkeypatch.setattr(train_module, "_callbacks", lambda *a: [*original(*a), _SigtermAt(100)])
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        train(
            ENV,
            None,
            tmp_path / "run",
            algo="ppo",
            steps=10_000,
            n_envs=1,
            mode="scratch",
            seed=0,
            backbone="nature_cnn",
            pool="flatten",
            algo_kwargs=PPO_FAST,
            **FAST,
        )
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is train's alone
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] == "interrupted" and 100 <= summary["env_steps"] < 10_000
    _, actor, _ = load_bundle(run)
    obs = _env_observations(1)
    assert actor.act(obs["image"].transpose(0, 2, 3, 1), obs["proprio"]).shape == (1, 3)


def test_bad_config_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs an encoder"):
        train(ENV, None, tmp_path / "a", mode="frozen", steps=10)
    with pytest.raises(ConfigError, match="steps"):
        train(ENV, None, tmp_path / "b", mode="scratch", steps=0)
    with pytest.raises(ConfigError, match="no_such_option"):
        train(ENV, None, tmp_path / "c", mode="scratch", no_such_option=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_on_cuda(tmp_path: Path, encoders: dict[str, str]) -> None:
    run = train(
        ENV,
        encoders["efficientnet_lite0"],
        tmp_path / "run",
        algo="sac",
        steps=128,
        n_envs=1,
        mode="finetune",
        seed=0,
        device="cuda",
        algo_kwargs=SAC_FAST,
        **FAST,
    )
    assert json.loads((run / "config.json").read_text())["resolved"]["device"].startswith("cuda")
    _, actor, _ = load_bundle(run, device="cuda")
    assert next(actor.parameters()).is_cuda


def test_same_seed_trains_the_same_weights(tmp_path: Path) -> None:
    """Two runs with one seed: the same actor and encoder, tensor for tensor."""
    settings = {**FAST, "save_sb3": False, "resume_every": 0, "backbone": "nature_cnn"}
    settings |= {"pool": "flatten", "algo_kwargs": {"n_steps": 32, "batch_size": 16, "n_epochs": 1}}

    def weights(name: str, seed: int) -> dict[str, dict[str, torch.Tensor]]:
        run = train(
            ENV, None, tmp_path / name, algo="ppo", steps=64, n_envs=1, mode="scratch", seed=seed,
            **settings,
        )  # fmt: skip
        files = ("policy.safetensors", "encoder/model.safetensors")
        return {f: load_file(str(run / "bundle" / f)) for f in files}

    first, second, other = weights("a", 3), weights("b", 3), weights("c", 4)
    for name in first:
        _assert_same_tensors(first[name], second[name])
    actor, changed = first["policy.safetensors"], other["policy.safetensors"]
    assert any(not torch.equal(actor[k], changed[k]) for k in actor), "the seed changed nothing"
