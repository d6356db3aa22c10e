"""The ``sim2real`` command: subcommands call their library functions; bad input exits 2."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest

import sim2real
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
    "inspect",
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
    from sim2real.cli import parse_overrides as _overrides
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


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found[name] = child
                found.update({f"{name} {k}": v for k, v in _subparsers(child).items()})
    return found


def test_every_option_has_help_and_every_command_an_example() -> None:
    commands = _subparsers(build_parser())
    assert set(COMMANDS) <= set(commands)
    for name, parser in commands.items():
        for action in parser._actions:
            assert action.help, f"sim2real {name} {action.option_strings or action.dest}: no help"
        if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            assert f"sim2real {name.split()[0]}" in (parser.epilog or ""), name


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"sim2real {sim2real.__version__}"


@pytest.mark.parametrize("command", ["finetune", "curve", "train", "pretrain", "pipeline"])
def test_set_takes_several_pairs_and_repeats(command: str) -> None:
    required = {
        "finetune": ["--model", "m", "--real", "r", "--out", "o", "--strategy", "probe"],
        "curve": ["--model", "m", "--real", "r", "--out", "o"],
        "train": [],
        "pretrain": ["--data", "d", "--out", "o"],
        "pipeline": ["cfg.yaml"],
    }[command]
    args = build_parser().parse_args([command, *required, "--set", "a=1", "b=2", "--set", "c=3"])
    assert args.set == ["a=1", "b=2", "c=3"]


def test_errors_are_one_line_without_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # an unexpected error: exit 1, one line naming the type, the traceback only with -v
    missing = tmp_path / "nothing-here"
    assert main(["preview", str(missing), "--out", str(tmp_path / "g.png")]) in (1, 2)
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(messages) == 1 and "\n" not in messages[0] and str(missing) in messages[0]
    assert "Traceback" not in capsys.readouterr().err


def test_pybullet_banner_is_not_printed(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "render", "--size", "16", "--seconds", "0.05", "--repeats", "1"]) == 0
    captured = capfd.readouterr()
    assert "argv[0]=" not in captured.out + captured.err
    assert "pybullet build time" not in captured.out + captured.err


def test_sweep_flags_build_the_backend(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from sim2real.cli.common import sweep_backend
    from sim2real.sweep import SweepBackend

    base = ["curve", "--model", "m", "--real", "r", "--out", str(tmp_path)]
    args = build_parser().parse_args([*base, "--backend", "ray", "--cpus-per-run", "2"])
    assert sweep_backend(args) == SweepBackend("ray", None, 2.0, 0.0)
    args = build_parser().parse_args([*base, "--gpus-per-run", "0.5", "--address", "auto"])
    with pytest.raises(sim2real.errors.ConfigError, match="--address auto: only with --backend"):
        sweep_backend(args)
    # through main: one line, exit 2, before any model is read
    assert main([*base, "--address", "auto"]) == 2
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("--address auto" in m for m in messages)
