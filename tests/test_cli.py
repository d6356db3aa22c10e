"""The ``sim2real`` command: subcommands call their library functions; bad input exits 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim2real.cli import build_parser, main
from sim2real.data.shards import ShardedDataset

COMMANDS = [
    "demo",
    "pipeline",
    "export",
    "run",
    "generate",
    "preview",
    "calibrate",
    "label-pixels",
    "pretrain",
    "evaluate",
    "predict",
    "finetune",
    "curve",
    "train",
    "bench",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--help"])
    assert exc.value.code == 0
    assert "usage: sim2real" in capsys.readouterr().out


def test_generate_then_preview(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    args = ["generate", "--scene", "tabletop_panda", "--n", "6", "--out", str(out)]
    assert main([*args, "--size", "48x36", "--shard-size", "4"]) == 0
    assert len(ShardedDataset(out)) == 6
    assert main(["preview", str(out), "--out", str(tmp_path / "grid.png"), "--n", "4"]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 0
    # the same output folder again without --resume is refused with a clear message
    assert main([*args, "--size", "48x36", "--shard-size", "4"]) == 2
    assert main([*args, "--size", "48x36", "--shard-size", "4", "--resume"]) == 0


def test_bench_render_prints_frames_per_second(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "render", "--size", "32", "--seconds", "0.2", "--repeats", "1"]) == 0
    assert "frames/s" in capsys.readouterr().out


def test_bad_scene_exits_with_code_2() -> None:
    assert main(["preview", "--scene", "no_such_scene", "--out", "x.png"]) == 2


def test_bad_crop_exits_with_code_2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    args = ["pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "--crop"]
    assert main([*args, "0,8,64"]) == 2
    assert "expected X0,Y0,X1,Y1" in caplog.text


def test_set_values_starting_with_a_bracket_are_json() -> None:
    from sim2real.cli import _overrides
    from sim2real.errors import Sim2RealError

    got = _overrides(['algo_kwargs={"n_steps": 32}', "hidden=[64, 64]", "trunk_dim=0", "a=b=c"])
    assert got == {"algo_kwargs": {"n_steps": 32}, "hidden": [64, 64], "trunk_dim": "0", "a": "b=c"}
    with pytest.raises(Sim2RealError, match="expected JSON after '='"):
        _overrides(["algo_kwargs={n_steps: 32}"])
    with pytest.raises(Sim2RealError, match="expected key=value"):
        _overrides(["trunk_dim"])


def test_train_minutes_stops_early_and_saves(tmp_path: Path) -> None:
    import json

    out = tmp_path / "run"
    sets = ["backbone=nature_cnn", "pool=flatten", "image_size=40", "eval_every=0"]
    sets += ["eval_episodes=1", "progress_bar=false", "tensorboard=false", "save_sb3=false"]
    sets += ['algo_kwargs={"n_steps": 32, "batch_size": 16, "n_epochs": 1}']
    args = ["train", "--mode", "scratch", "--n-envs", "1", "--steps", "5000", "--out", str(out)]
    assert main([*args, "--minutes", "1e-9", *[x for s in sets for x in ("--set", s)]]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "time limit" and summary["env_steps"] < 5000
    assert (out / "bundle" / "policy.safetensors").is_file()
    # --resume goes on with the run's own configuration; only the budget and limits change
    steps = summary["env_steps"]
    assert main(["train", "--resume", str(out), "--steps", str(steps + 64), "--minutes", "0"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "budget" and summary["resumed_from_step"] == steps
    assert summary["env_steps"] == steps + 64 and summary["sessions"] == 2
    assert main(["train", "--resume", str(out), "--mode", "frozen"]) == 2  # not its own config
    assert main(["train", "--steps", "10"]) == 2  # neither --out nor --resume
