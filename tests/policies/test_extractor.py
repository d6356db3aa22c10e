"""EncoderExtractor, the SB3 policies around it, DrQ shift and bundle (fast, no PyBullet)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv

from sim2real.errors import CheckpointError, ConfigError
from sim2real.perception.encoder import Encoder
from sim2real.perception.geometry import PlaneCamera, relative_position
from sim2real.policies.augment import RandomShift, shift_images
from sim2real.policies.bundle import (
    POLICY_ROUTE_KEY,
    BundleActor,
    load_bundle,
    position_route,
    save_bundle,
)
from sim2real.policies.config import METRE_SCALE, TrainConfig
from sim2real.policies.contract import _feature_layout
from sim2real.policies.extractor import (
    LR_SCALE_ATTR,
    EncoderExtractor,
    ExtractorSettings,
    FrozenFeatures,
    images_to_input,
    position_available,
)
from sim2real.policies.models import (
    ScaledAdam,
    actor_head_from_model,
    build_model,
    policy_extractor,
)

SIZE = 48
POSITION = {"position": {"type": "position", "frame": "robot_base", "hidden": 16}}


class FakeReach(gym.Env):
    """Dict(image, proprio) observations like the Sim2Real envs, random pixels, no physics."""

    def __init__(self) -> None:
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (3, SIZE, SIZE), np.uint8),
                "proprio": spaces.Box(-np.inf, np.inf, (10,), np.float32),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
        self._t = 0

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "image": self.np_random.integers(0, 256, (3, SIZE, SIZE), dtype=np.uint8),
            "proprio": self.np_random.normal(size=10).astype(np.float32),
        }

    def reset(self, *, seed: int | None = None, options: Any = None) -> Any:
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {"is_success": False}

    def step(self, action: np.ndarray) -> Any:
        self._t += 1
        return (
            self._obs(),
            -float(np.abs(action).sum()),
            False,
            self._t >= 20,
            {"is_success": False},
        )


def _encoder(tmp_path: Path, backbone: str = "nature_cnn", **kwargs: Any) -> str:
    enc = Encoder(backbone, POSITION, input_size=(40, 40), pretrained=False, **kwargs)
    enc.train()  # give BatchNorm running stats non-default values
    with torch.no_grad():
        enc(torch.randn(4, 3, 40, 40) * 3 + 1)
    return str(enc.save(tmp_path / "encoder"))


def _lite0(tmp_path: Path) -> str:
    return _encoder(tmp_path, "efficientnet_lite0", backbone_kwargs={"feature_stride": 8})


def _venv(n: int = 1) -> DummyVecEnv:
    return DummyVecEnv([FakeReach for _ in range(n)])


def _obs_batch(n: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    env = FakeReach()
    env.reset(seed=seed)
    obs = [env._obs() for _ in range(n)]
    return {k: np.stack([o[k] for o in obs]) for k in obs[0]}


def test_extractor_output_and_preprocessing_parity(tmp_path: Path) -> None:
    path = _encoder(tmp_path)
    ex = EncoderExtractor(
        _venv().observation_space,
        path,
        ExtractorSettings(mode="frozen", use_position=True, trunk_dim=8),
    )
    assert ex.features_dim == 8 + 3 + 10
    obs = _obs_batch()
    image = torch.from_numpy(obs["image"]).float()  # what SB3 hands over (normalize_images=False)
    ref = ex.encoder.preprocess(obs["image"].transpose(0, 2, 3, 1))  # the deploy path, NHWC
    torch.testing.assert_close(images_to_input(ex.encoder, image), ref, rtol=0, atol=0)
    out = ex({"image": image, "proprio": torch.from_numpy(obs["proprio"])})
    assert out.shape == (4, ex.features_dim)
    proprio = torch.from_numpy(obs["proprio"])
    torch.testing.assert_close(out[:, -10:-3], proprio[:, :-3])  # joints as they come
    torch.testing.assert_close(out[:, -3:], proprio[:, -3:] * METRE_SCALE)  # ee in decimetres
    position = ex.encode_images(image)[:, -3:]
    torch.testing.assert_close(out[:, 8:11], position * METRE_SCALE)


def test_metre_scale_makes_the_policy_input_sensitive_to_position(tmp_path: Path) -> None:
    """The predicted position and the end effector enter in decimetres by default."""
    path, space = _encoder(tmp_path), _venv().observation_space
    ex = EncoderExtractor(
        space, path, ExtractorSettings(mode="frozen", use_position=True, trunk_dim=8)
    )
    metres = EncoderExtractor(
        space, path, ExtractorSettings(mode="frozen", use_position=True, trunk_dim=8, metre_scale=1)
    )
    metres.trunk.load_state_dict(ex.trunk.state_dict())
    obs = _obs_batch()
    batch = {"image": torch.from_numpy(obs["image"]).float()}
    batch["proprio"] = torch.from_numpy(obs["proprio"])
    scale = torch.tensor([1.0] * 8 + [METRE_SCALE] * 3 + [1.0] * 7 + [METRE_SCALE] * 3)
    torch.testing.assert_close(ex(batch), metres(batch) * scale)
    with pytest.raises(ConfigError, match="metre_scale"):
        EncoderExtractor(space, path, ExtractorSettings(metre_scale=0.0))


def test_frozen_mode_no_grad_and_eval_batchnorm(tmp_path: Path) -> None:
    ex = EncoderExtractor(
        _venv().observation_space, _lite0(tmp_path), ExtractorSettings(mode="frozen", trunk_dim=8)
    )
    ex.train(True)
    assert ex.trunk.training and not ex.encoder.training
    assert not any(p.requires_grad for p in ex.encoder.parameters())
    obs = _obs_batch()
    out = ex({"image": torch.from_numpy(obs["image"]).float(), "proprio": torch.zeros(4, 10)})
    out.sum().backward()
    assert all(p.grad is None for p in ex.encoder.parameters())
    assert ex.trunk[0].weight.grad is not None


def test_finetune_lr_scale_and_batchnorm(tmp_path: Path) -> None:
    ex = EncoderExtractor(
        _venv().observation_space,
        _lite0(tmp_path),
        ExtractorSettings(mode="finetune", encoder_lr_scale=0.1),
    )
    ex.train(True)
    bns = [m for m in ex.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and ex.encoder.backbone.blocks[0].training
    scales = {getattr(p, LR_SCALE_ATTR, 1.0) for p in ex.encoder.parameters()}
    assert scales == {0.1}
    assert not hasattr(ex.trunk[0].weight, LR_SCALE_ATTR)
    opt = ScaledAdam(ex.parameters(), lr=1.0)
    assert sorted(g["lr_scale"] for g in opt.param_groups) == [0.1, 1.0]


def test_scaled_adam_steps_at_scaled_rate() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    setattr(b, LR_SCALE_ATTR, 0.1)
    opt = ScaledAdam([a, b], lr=0.5)
    (a + b).sum().backward()
    opt.step()
    assert a.item() == pytest.approx(-0.5, rel=1e-4) and b.item() == pytest.approx(-0.05, rel=1e-4)
    assert all(g["lr"] == 0.5 for g in opt.param_groups)  # SB3's schedule keeps owning "lr"


def test_random_shift_seeded_and_exact() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    a, b = RandomShift(2, seed=3), RandomShift(2, seed=3)
    torch.testing.assert_close(a(x), b(x))
    assert torch.equal(shift_images(x, torch.full((2, 2), 2), 2), x)
    shifted = shift_images(x, torch.tensor([[3, 2], [2, 2]]), 2)  # first image: one pixel left
    assert torch.equal(shifted[0, :, :, :-1], x[0, :, :, 1:]) and torch.equal(shifted[1], x[1])
    assert torch.equal(RandomShift(2).eval()(x), x)
    with pytest.raises(ConfigError):
        RandomShift(-1)


def test_frozen_features_wrapper_matches_extractor(tmp_path: Path) -> None:
    path = _encoder(tmp_path)
    ex = EncoderExtractor(
        _venv().observation_space, path, ExtractorSettings(mode="frozen", use_position=True)
    )
    cached = FrozenFeatures(_venv(2), Encoder.load(path), use_position=True)
    assert set(cached.observation_space.spaces) == {"features", "proprio"}
    obs = _obs_batch(2)
    feats = cached.transform(obs)["features"]
    ref = ex.encode_images(torch.from_numpy(obs["image"]).float())
    torch.testing.assert_close(torch.from_numpy(feats), ref, rtol=1e-5, atol=1e-5)
    cached.seed(0)
    first = cached.reset()
    assert first["features"].shape == (2, 67) and first["features"].dtype == np.float32
    cached.close()


def test_ppo_keeps_pretrained_encoder_through_ortho_init(tmp_path: Path) -> None:
    path = _encoder(tmp_path)
    model = build_model(_venv(), path, TrainConfig(mode="finetune", trunk_dim=8, hidden=(16,)))
    loaded = Encoder.load(path).state_dict()
    for key, value in policy_extractor(model).encoder.state_dict().items():
        torch.testing.assert_close(value, loaded[key], rtol=0, atol=0)


def test_sac_encoder_learns_from_td_loss_only(tmp_path: Path) -> None:
    model = build_model(
        _venv(),
        _encoder(tmp_path),
        TrainConfig(algo="sac", mode="finetune", trunk_dim=8, hidden=(16,)),
    )
    policy = model.policy
    encoder = policy_extractor(model).encoder
    assert policy.critic.features_extractor is policy.actor.features_extractor
    enc_ids = {id(p) for p in encoder.parameters()}
    actor_ids = {id(p) for g in policy.actor.optimizer.param_groups for p in g["params"]}
    critic_ids = {id(p) for g in policy.critic.optimizer.param_groups for p in g["params"]}
    assert not enc_ids & actor_ids and enc_ids <= critic_ids
    obs, _ = policy.obs_to_tensor(_obs_batch())
    actions_pi, _ = policy.actor.action_log_prob(obs)  # actor loss path
    torch.cat(policy.critic(obs, actions_pi), dim=1).sum().backward()
    assert all(p.grad is None for p in encoder.parameters())
    assert policy.actor.mu.weight.grad is not None
    torch.cat(policy.critic(obs, torch.zeros(4, 3)), dim=1).sum().backward()  # TD loss path
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_bundle_actor_matches_sb3(tmp_path: Path, algo: str) -> None:
    path = _encoder(tmp_path)
    model = build_model(
        _venv(), path, TrainConfig(algo=algo, mode="finetune", use_position=True, trunk_dim=8)
    )
    encoder = policy_extractor(model).encoder
    contract = {"features": {"pool": "mean"}, "algo": algo}
    save_bundle(tmp_path / "bundle", encoder, actor_head_from_model(model), contract)
    enc2, actor, loaded = load_bundle(tmp_path / "bundle")
    assert isinstance(actor, BundleActor) and actor.encoder is enc2
    assert loaded["actor"]["squash"] == ("tanh" if algo == "sac" else "clip")
    obs = _obs_batch(6, seed=1)
    expected, _ = model.predict(obs, deterministic=True)
    got = actor.act(obs["image"].transpose(0, 2, 3, 1), obs["proprio"])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    bgr = obs["image"].transpose(0, 2, 3, 1)[..., ::-1]
    np.testing.assert_allclose(actor.act(bgr, obs["proprio"], colour="BGR"), got, atol=1e-6)
    assert loaded["actor"]["metre_scale"] == METRE_SCALE
    # A bundle from before metre_scale existed was trained on metres: it loads with 1.0.
    contract_file = tmp_path / "bundle" / "contract.json"
    old = json.loads(contract_file.read_text())
    del old["actor"]["metre_scale"]
    contract_file.write_text(json.dumps(old))
    assert load_bundle(tmp_path / "bundle")[1].head.metre_scale == 1.0


def test_load_bundle_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_bundle(tmp_path)
    (tmp_path / "policy.safetensors").write_bytes(b"")
    (tmp_path / "contract.json").write_text(json.dumps({"format": "something/0"}))
    with pytest.raises(CheckpointError, match="format"):
        load_bundle(tmp_path)


def test_bundle_loads_without_stable_baselines3() -> None:
    code = (
        "import sys; from sim2real.policies import load_bundle; "
        "from sim2real.policies.bundle import BundleActor; "
        "assert 'stable_baselines3' not in sys.modules, 'bundle imported SB3'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_extractor_on_cuda_matches_cpu(tmp_path: Path) -> None:
    path = _encoder(tmp_path)
    space = _venv().observation_space
    cpu = EncoderExtractor(space, path, ExtractorSettings(mode="frozen", use_position=True)).eval()
    gpu = EncoderExtractor(space, path, ExtractorSettings(mode="frozen", use_position=True)).eval()
    gpu.trunk.load_state_dict(cpu.trunk.state_dict())
    gpu = gpu.cuda()
    obs = _obs_batch()
    image, proprio = torch.from_numpy(obs["image"]).float(), torch.from_numpy(obs["proprio"])
    want = cpu({"image": image, "proprio": proprio})
    got = gpu({"image": image.cuda(), "proprio": proprio.cuda()}).cpu()
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)


def test_randomization_curriculum_ramps_strength() -> None:
    from types import SimpleNamespace

    from stable_baselines3.common.logger import configure

    from sim2real.envs.randomization import RandomizationConfig
    from sim2real.policies.callbacks import RandomizationCurriculum

    def make() -> gym.Env:
        env = FakeReach()
        env.rand_cfg = RandomizationConfig.load("default").with_strength(0.8)
        return env

    venv = DummyVecEnv([make, make])
    model = SimpleNamespace(get_env=lambda: venv, logger=configure(None, []), num_timesteps=0)
    cb = RandomizationCurriculum(start=0.2, ramp_steps=100, update_every=10)
    cb.init_callback(model)  # type: ignore[arg-type]
    cb.on_training_start({}, {})
    assert [c.strength for c in venv.get_attr("rand_cfg")] == [0.2, 0.2]
    for t, want in ((50, 0.5), (200, 0.8)):
        model.num_timesteps = t
        cb.on_step()
        assert venv.get_attr("rand_cfg")[1].strength == pytest.approx(want)


def _keypoint_relative_encoder(tmp_path: Path, route: str = "keypoint_relative") -> str:
    """Cube and gripper keypoints, a camera 1 m above the table, the ``route`` route."""
    heads = {"keypoint": {"type": "keypoints", "names": ["cube", "gripper"], "hidden": 8}}
    enc = Encoder("nature_cnn", heads, input_size=(40, 40), pretrained=False)
    cam = PlaneCamera(
        np.array([[40.0, 0, 20], [0, 40.0, 20], [0, 0, 1]]),
        np.diag([1.0, -1, -1]),
        np.array([-0.5, 0.0, 1.0]),
        40,
        40,
        0.025,
    )
    enc.card["camera"] = cam.to_card()
    enc.card["position_route"] = route
    return str(enc.save(tmp_path / f"kp_encoder_{route}"))


def test_keypoint_plane_position_joins_the_features(tmp_path: Path) -> None:
    """The card's keypoint_plane route: the policy sees the cube keypoint back-projected onto
    the cube's plane (the route the evaluation scores), the bundle records and keeps it, and
    a bundle whose contract names no route keeps reading the position head."""
    path = _keypoint_relative_encoder(tmp_path, "keypoint_plane")
    encoder = Encoder.load(path).eval()
    assert position_route(encoder) == "keypoint_plane" and position_available(encoder)
    obs = _obs_batch()
    ex = EncoderExtractor(
        _venv().observation_space,
        path,
        ExtractorSettings(mode="frozen", use_position=True, trunk_dim=0),
    )
    image, proprio = torch.from_numpy(obs["image"]).float(), torch.from_numpy(obs["proprio"])
    with torch.no_grad():
        out = ex({"image": image, "proprio": proprio})
    keypoints = encoder.predict(obs["image"].transpose(0, 2, 3, 1))["keypoint"]
    expected = PlaneCamera.from_card(encoder.card["camera"]).backproject_normalised(keypoints[:, 0])
    np.testing.assert_allclose(out[:, :3].numpy() / METRE_SCALE, expected, atol=2e-5)
    model = build_model(_venv(), path, TrainConfig(mode="frozen", use_position=True, trunk_dim=0))
    cfg = TrainConfig(mode="frozen", use_position=True, trunk_dim=0)
    encoded, _ = _feature_layout(cfg, encoder, encoder.feature_dim, True)
    assert encoded[-1]["route"] == "keypoint_plane"
    contract = {"features": {"pool": "mean", "encoded": encoded}, "algo": "ppo"}
    save_bundle(tmp_path / "b", encoder, actor_head_from_model(model), contract)
    assert load_bundle(tmp_path / "b")[0].card[POLICY_ROUTE_KEY] == "keypoint_plane"
    contract["features"]["encoded"][-1].pop("route")  # a bundle from before the route
    save_bundle(tmp_path / "old", encoder, actor_head_from_model(model), contract)
    assert position_route(load_bundle(tmp_path / "old")[0]) == "position_head"


def test_keypoint_relative_position_joins_the_features(tmp_path: Path) -> None:
    """The policy sees cube minus gripper from the two keypoints and the proprio's height."""
    path = _keypoint_relative_encoder(tmp_path)
    encoder = Encoder.load(path).eval()
    assert position_route(encoder) == "keypoint_relative" and position_available(encoder)
    obs = _obs_batch()
    obs["proprio"][:, -3:] = [[0.4, 0.1, 0.2], [0.6, -0.1, 0.1], [0.5, 0.0, 0.3], [0.45, 0.2, 0.08]]
    ex = EncoderExtractor(
        _venv().observation_space,
        path,
        ExtractorSettings(mode="frozen", use_position=True, trunk_dim=8),
    )
    image, proprio = torch.from_numpy(obs["image"]).float(), torch.from_numpy(obs["proprio"])
    with torch.no_grad():
        out = ex({"image": image, "proprio": proprio})
    ee = obs["proprio"][:, -3:].astype(np.float64)
    keypoints = encoder.predict(obs["image"].transpose(0, 2, 3, 1))["keypoint"]
    cam = PlaneCamera.from_card(encoder.card["camera"])
    expected = relative_position(cam, keypoints[:, 0], keypoints[:, 1], ee) - ee
    np.testing.assert_allclose(out[:, 8:11].numpy() / METRE_SCALE, expected, atol=2e-5)
    np.testing.assert_allclose(expected[:, 2], 0.025 - ee[:, 2], atol=1e-9)
    cached = FrozenFeatures(_venv(4), encoder, use_position=True)
    feats = cached.transform(obs)["features"]
    torch.testing.assert_close(
        torch.from_numpy(feats), ex.encode_images(image, proprio), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ConfigError, match="keypoint_relative position needs the gripper"):
        ex.encode_images(image)
    _assert_bundle_acts_like_sb3(tmp_path, path, 8, obs)


def _assert_bundle_acts_like_sb3(
    tmp_path: Path, encoder: str, trunk_dim: int, obs: dict[str, np.ndarray]
) -> dict[str, Any]:
    """A frozen PPO model saved as a bundle, loaded back: same actions. Returns the contract."""
    model = build_model(
        _venv(), encoder, TrainConfig(mode="frozen", use_position=True, trunk_dim=trunk_dim)
    )
    save_bundle(
        tmp_path / "bundle",
        policy_extractor(model).encoder,
        actor_head_from_model(model),
        {"features": {"pool": "mean"}, "algo": "ppo"},
    )
    _, actor, contract = load_bundle(tmp_path / "bundle")
    expected, _ = model.predict(obs, deterministic=True)
    got = actor.act(obs["image"].transpose(0, 2, 3, 1), obs["proprio"])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    return contract


def test_trunk_zero_reads_position_and_proprio_only(tmp_path: Path) -> None:
    """``trunk_dim=0``: the policy input is the scaled predicted position and the proprio,
    whatever the pooled features; SB3's actions survive the bundle; a blind policy is refused."""
    path = _encoder(tmp_path)
    space = _venv().observation_space
    ex = EncoderExtractor(
        space, path, ExtractorSettings(mode="frozen", use_position=True, trunk_dim=0)
    )
    assert ex.features_dim == 3 + 10 and not list(ex.trunk.parameters())
    obs = _obs_batch()
    image, proprio = torch.from_numpy(obs["image"]).float(), torch.from_numpy(obs["proprio"])
    with torch.no_grad():
        out = ex({"image": image, "proprio": proprio})
        position = ex.encoder.heads["position"](
            ex.encoder.backbone(images_to_input(ex.encoder, image))
        )
    torch.testing.assert_close(out[:, :3], position * METRE_SCALE, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[:, 3:10], proprio[:, :-3])
    torch.testing.assert_close(out[:, 10:], proprio[:, -3:] * METRE_SCALE)
    assert _assert_bundle_acts_like_sb3(tmp_path, path, 0, obs)["actor"]["trunk_dim"] == 0
    with pytest.raises(ConfigError, match="trunk_dim 0: expected > 0, or 0 with use_position"):
        EncoderExtractor(
            space, path, ExtractorSettings(mode="frozen", use_position=False, trunk_dim=0)
        )
    with pytest.raises(ConfigError, match="trunk_dim -1"):
        EncoderExtractor(
            space, path, ExtractorSettings(mode="frozen", use_position=True, trunk_dim=-1)
        )
