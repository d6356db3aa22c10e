"""Resumable training: the resume state round trip, and runs that stop (or die) and go on."""

from __future__ import annotations

import json
from functools import reduce
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback

import sim2real.envs  # noqa: F401  (registers the ids)
import sim2real.policies.train as train_module
from sim2real.errors import CheckpointError, ConfigError
from sim2real.policies.bundle import load_bundle
from sim2real.policies.resume import (
    find_resume_state,
    load_resume_state,
    save_resume_state,
)
from sim2real.policies.train import resume_training, train

ENV = "Sim2Real/ReachCube-v0"
FAST = {
    "image_size": 48,
    "trunk_dim": 16,
    "hidden": (32, 32),
    "eval_episodes": 1,
    "progress_bar": False,
    "tensorboard": False,
    "save_sb3": False,
}
PPO_FAST = {"n_steps": 64, "batch_size": 32, "n_epochs": 2}
SCRATCH = {"backbone": "nature_cnn", "pool": "flatten"}


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    return {
        f"{pid}/{key}": value.detach().clone()
        for pid, entry in opt.state_dict()["state"].items()
        for key, value in entry.items()
        if isinstance(value, torch.Tensor)
    }


def _assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_ppo_state_round_trip(tmp_path: Path) -> None:
    model = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, n_epochs=2, seed=0)
    model.learn(128)
    save_resume_state(model, tmp_path / "resume", {"wall_s": 12.5})
    other = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, n_epochs=2, seed=1)
    assert not torch.equal(*(next(m.policy.parameters()) for m in (model, other)))
    assert load_resume_state(other, tmp_path / "resume") == {"wall_s": 12.5}
    _assert_equal(_tensors(model.policy), _tensors(other.policy))
    _assert_equal(
        _optimizer_tensors(model.policy.optimizer), _optimizer_tensors(other.policy.optimizer)
    )
    for a, b in zip(
        model.policy.optimizer.param_groups, other.policy.optimizer.param_groups, strict=True
    ):
        assert {k: v for k, v in a.items() if k != "params"} == {
            k: (tuple(v) if isinstance(v, list) else v) for k, v in b.items() if k != "params"
        }
    assert other.num_timesteps == model.num_timesteps == 128
    assert other._n_updates == model._n_updates > 0
    other.learn(64, reset_num_timesteps=False)  # the restored optimizer steps on
    assert other.num_timesteps == 192


def test_sac_state_round_trip_with_replay_buffer(tmp_path: Path) -> None:
    kwargs = {"buffer_size": 500, "learning_starts": 32, "batch_size": 16}
    model = SAC("MlpPolicy", "Pendulum-v1", seed=0, **kwargs)
    model.learn(100)
    save_resume_state(model, tmp_path / "resume")
    other = SAC("MlpPolicy", "Pendulum-v1", seed=1, **kwargs)
    load_resume_state(other, tmp_path / "resume")
    _assert_equal(_tensors(model.policy), _tensors(other.policy))
    for name in ("actor.optimizer", "critic.optimizer", "ent_coef_optimizer"):
        a, b = (reduce(getattr, name.split("."), m) for m in (model, other))
        _assert_equal(_optimizer_tensors(a), _optimizer_tensors(b))
    assert torch.equal(model.log_ent_coef, other.log_ent_coef)
    a, b = model.replay_buffer, other.replay_buffer
    assert (b.pos, b.full) == (a.pos, a.full) == (100, False)
    np.testing.assert_array_equal(b.observations[:100], a.observations[:100])
    np.testing.assert_array_equal(b.rewards[:100], a.rewards[:100])
    names = {p.name for p in (tmp_path / "resume" / "replay").iterdir()}
    assert {"actions.npy", "dones.npy", "timeouts.npy", "next_observations.npy"} <= names


@pytest.mark.parametrize(("size", "pos", "full"), [(64, 36, True), (128, 64, False), (32, 0, True)])
def test_replay_ring_keeps_the_newest_transitions_in_any_size(
    tmp_path: Path, size: int, pos: int, full: bool
) -> None:
    """A full, wrapped buffer of 64 (100 steps: pos 36) loaded into 64, 128 and 32 slots."""
    model = SAC("MlpPolicy", "Pendulum-v1", seed=0, buffer_size=64, learning_starts=200)
    model.learn(100)
    buf = model.replay_buffer
    assert buf.full and buf.pos == 36
    newest_first = np.concatenate([buf.actions[:36][::-1], buf.actions[36:][::-1]])
    save_resume_state(model, tmp_path / "resume")
    other = SAC("MlpPolicy", "Pendulum-v1", seed=1, buffer_size=size, learning_starts=200)
    load_resume_state(other, tmp_path / "resume")
    got = other.replay_buffer
    assert (got.pos, got.full) == (pos, full)
    k = min(64, size)
    mine = (
        np.concatenate([got.actions[:pos][::-1], got.actions[pos:][::-1]])
        if full
        else (got.actions[:pos][::-1])
    )
    np.testing.assert_array_equal(mine[:k], newest_first[:k])


def test_state_of_another_model_is_refused(tmp_path: Path) -> None:
    model = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, seed=0)
    save_resume_state(model, tmp_path / "resume")
    with pytest.raises(CheckpointError, match="resume state of a PPO model, got a SAC"):
        load_resume_state(SAC("MlpPolicy", "Pendulum-v1", buffer_size=100), tmp_path / "resume")
    wider = PPO("MlpPolicy", "Pendulum-v1", policy_kwargs={"net_arch": [8]}, n_steps=64)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_resume_state(wider, tmp_path / "resume")
    with pytest.raises(CheckpointError, match=r"state\.json not found"):
        load_resume_state(model, tmp_path / "nothing")


def test_a_killed_save_keeps_the_previous_state(tmp_path: Path) -> None:
    model = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, seed=0)
    save_resume_state(model, tmp_path / "resume")
    # a kill between the two renames leaves resume.old and no resume/
    (tmp_path / "resume").rename(tmp_path / "resume.old")
    (tmp_path / "resume.tmp").mkdir()  # and a half-written new state
    assert find_resume_state(tmp_path) == tmp_path / "resume.old"
    assert find_resume_state(tmp_path / "elsewhere") is None
    model.learn(64)
    save_resume_state(model, tmp_path / "resume")  # the next save recovers
    assert find_resume_state(tmp_path) == tmp_path / "resume"
    assert not (tmp_path / "resume.old").exists() and not (tmp_path / "resume.tmp").exists()
    (tmp_path / "resume" / "state.safetensors").write_bytes(b"")  # e.g. a power cut
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_resume_state(model, tmp_path / "resume")


def test_stopped_run_resumes_to_its_budget(tmp_path: Path) -> None:
    run = train(
        ENV,
        None,
        tmp_path / "run",
        algo="ppo",
        steps=128,
        n_envs=1,
        mode="scratch",
        seed=0,
        algo_kwargs=PPO_FAST,
        eval_every=64,
        **SCRATCH,
        **FAST,
    )
    first = json.loads((run / "summary.json").read_text())
    assert first["sessions"] == 1 and first["resumed_from_step"] is None
    episodes_before = len((run / "monitor.csv").read_text().splitlines())
    resume_training(run, steps=256)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] == 256 and summary["steps_budget"] == 256
    assert summary["sessions"] == 2 and summary["resumed_from_step"] == 128
    assert summary["wall_s"] > first["wall_s"]
    history = json.loads((run / "eval.json").read_text())
    assert [h["timesteps"] for h in history] == [0, 64, 128, 192, 256]  # 128 not repeated
    walls = [h["wall_s"] for h in history]
    assert walls == sorted(walls)
    monitor = (run / "monitor.csv").read_text().splitlines()
    assert monitor[0].startswith("#{") and monitor[1] == "r,l,t"
    assert len(monitor) > episodes_before and not any(m.startswith("#") for m in monitor[1:])
    assert not (run / "monitor.csv.prev").exists()
    assert json.loads((run / "config.json").read_text())["steps"] == 256
    load_bundle(run)
    with pytest.raises(ConfigError, match="already at 256 env steps"):
        resume_training(run)


class _CrashAt(BaseCallback):
    """Raises (as a crash or an out-of-memory kill would end the process) at ``step``."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.step:
            raise RuntimeError("simulated crash")
        return True


def test_crashed_run_goes_on_from_its_last_periodic_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = train_module._callbacks
    monkeypatch.setattr(train_module, "_callbacks", lambda *a: [*original(*a), _CrashAt(300)])
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(
            ENV,
            None,
            tmp_path / "run",
            algo="ppo",
            steps=512,
            n_envs=1,
            mode="scratch",
            seed=0,
            algo_kwargs=PPO_FAST,
            eval_every=128,
            resume_every=192,
            **SCRATCH,
            **FAST,
        )
    run = tmp_path / "run"
    assert not (run / "summary.json").exists()  # the crash saved nothing at the end...
    meta = json.loads((run / "resume" / "state.json").read_text())
    assert meta["num_timesteps"] == 192  # ...but the periodic state is there
    monkeypatch.setattr(train_module, "_callbacks", original)
    resume_training(run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from_step"] == 192 and summary["env_steps"] == 512
    assert summary["stopped"] == "budget"
    # the curve drops the crashed session's evaluation past the state (256) and keeps its grid
    history = json.loads((run / "eval.json").read_text())
    assert [h["timesteps"] for h in history] == [0, 128, 256, 384, 512]
    # the episodes logged after the state (192..300) are not counted twice: 3 before it, 6 after
    lengths = [int(row.split(",")[1]) for row in (run / "monitor.csv").read_text().splitlines()[2:]]
    assert lengths == [50] * 9


def test_resume_refuses_other_configurations(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.json not found"):
        resume_training(tmp_path / "none")
    run = train(
        ENV,
        None,
        tmp_path / "run",
        algo="ppo",
        steps=64,
        n_envs=1,
        mode="scratch",
        seed=0,
        algo_kwargs=PPO_FAST,
        eval_every=0,
        **SCRATCH,
        **FAST,
    )
    with pytest.raises(ConfigError, match=r"\['seed'\] cannot change"):
        resume_training(run, steps=128, seed=3)
    with pytest.raises(ConfigError, match=r"differs from .* in hidden"):
        train(
            ENV,
            None,
            run,
            algo="ppo",
            steps=128,
            n_envs=1,
            mode="scratch",
            seed=0,
            algo_kwargs=PPO_FAST,
            eval_every=0,
            resume=True,
            **SCRATCH,
            **{**FAST, "hidden": (8,)},
        )
    (run / "resume" / "state.json").unlink()
    with pytest.raises(CheckpointError, match="no resume state"):
        resume_training(run, steps=128)


def test_a_fresh_run_clears_what_the_last_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs = {"algo_kwargs": PPO_FAST, "eval_every": 0, **SCRATCH, **FAST}
    run = train(
        ENV,
        None,
        tmp_path / "run",
        algo="ppo",
        steps=64,
        n_envs=1,
        mode="scratch",
        seed=0,
        resume_every=0,
        **kwargs,
    )
    assert (run / "resume").is_dir() and (run / "summary.json").is_file()  # saved at the stop
    original = train_module._callbacks
    monkeypatch.setattr(train_module, "_callbacks", lambda *a: [*original(*a), _CrashAt(10)])
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(ENV, None, run, algo="ppo", steps=512, n_envs=1, mode="scratch", seed=1, **kwargs)
    # the new run died before saving anything: nothing of the old one may pass for it
    assert not (run / "summary.json").exists() and find_resume_state(run) is None


def test_sac_run_resumes_with_a_larger_budget_and_buffer(tmp_path: Path) -> None:
    """SAC's default buffer follows ``steps``: raising it on resume reloads into a larger one."""
    run = train(
        ENV,
        None,
        tmp_path / "run",
        algo="sac",
        steps=96,
        n_envs=1,
        mode="scratch",
        seed=0,
        eval_every=0,
        algo_kwargs={"batch_size": 16, "learning_starts": 32},
        **SCRATCH,
        **FAST,
    )
    replay = json.loads((run / "resume" / "state.json").read_text())["replay"]
    assert replay == {"filled": 96, "pos": 0, "full": True}
    resume_training(run, steps=160)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] == 160 and summary["resumed_from_step"] == 96
    replay = json.loads((run / "resume" / "state.json").read_text())["replay"]
    assert replay == {"filled": 160, "pos": 0, "full": True}  # 96 kept + 64 new, buffer 160
    image = np.load(run / "resume" / "replay" / "observations.image.npy")
    assert image.shape == (160, 1, 3, 48, 48) and image[:96].any()
