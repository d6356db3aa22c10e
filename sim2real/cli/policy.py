"""Policies and their deployment: ``train``, ``export``, ``run``."""

from __future__ import annotations

import argparse
from typing import Any, get_args

from sim2real.cli.common import (
    Subparsers,
    add_command,
    add_set_argument,
    image_size,
    parse_overrides,
)
from sim2real.errors import ConfigError
from sim2real.policies.config import RESUME_MAY_CHANGE, TrainConfig, make_config

#: ``sim2real train`` flags that set a TrainConfig field (every field is also ``--set KEY=VALUE``).
TRAIN_FLAGS = {
    "env": "env_id",
    "scene": "scene",
    "encoder": "encoder",
    "algo": "algo",
    "steps": "steps",
    "n_envs": "n_envs",
    "mode": "mode",
    "seed": "seed",
    "minutes": "minutes",
}
#: flags a resumed run takes from its config.json (``--steps`` and ``--minutes`` may change).
RESUME_FIXED = ("env", "scene", "encoder", "out", "algo", "n_envs", "mode", "seed")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The :class:`~sim2real.policies.config.TrainConfig` of ``sim2real train``: its
    defaults, then the flags given, then ``--set KEY=VALUE``.

    Raises:
        ConfigError: an unknown key or an invalid value.
    """
    flags = {field: getattr(args, flag) for flag, field in TRAIN_FLAGS.items()}
    given = {field: value for field, value in flags.items() if value is not None}
    return make_config(**{**given, **parse_overrides(args.set)})


def cmd_train(args: argparse.Namespace) -> int:
    from sim2real.policies.train import resume_training, train

    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k in RESUME_FIXED if getattr(args, k) is not None]
        if given:
            raise ConfigError(
                f"train --resume RUN takes the run's own configuration; got {', '.join(given)} "
                "(only --steps, --minutes and --set for "
                f"{'/'.join(sorted(RESUME_MAY_CHANGE))} apply)"
            )
        changes = {
            **({"steps": args.steps} if args.steps is not None else {}),
            **({"minutes": args.minutes or None} if args.minutes is not None else {}),
            **parse_overrides(args.set),
        }
        run = resume_training(args.resume, **changes)
        print(f"run folder (with bundle/): {run}")
        return 0
    if args.out is None:
        raise ConfigError("train needs --out RUN (or --resume RUN to go on with a run)")
    cfg = train_config(args)
    run = train(cfg.env_id, cfg.encoder, args.out, config=cfg)
    print(f"run folder (with bundle/): {run}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sim2real.deploy.export import cmd_export as export

    return export(args)


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from sim2real.deploy.run import RunSettings, run_bundle

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = RunSettings(
        hz=args.hz,
        steps=args.steps or None,
        duration_s=args.duration,
        max_delta=args.max_delta,
        watchdog_s=args.watchdog,
        dry_run=args.dry_run,
        device=args.device,
        seed=args.seed,
        not_visible=args.not_visible,
    )
    result = run_bundle(args.bundle, args.camera, args.robot, settings, record=args.record)
    report = result.report
    print(result.policy)
    print(
        f"{report.status}: {report.steps} steps in {report.duration_s:.1f} s at {args.hz:g} Hz "
        f"({report.overruns} overruns){' [dry run: nothing sent]' if args.dry_run else ''}"
    )
    if result.episodes:
        print(f"episodes finished: {len(result.episodes)}, success rate {result.success_rate:.0%}")
    print(report.latency.format())
    if result.recording:
        print(f"recording: {result.recording}")
    return 0


def add_parsers(sub: Subparsers) -> None:
    """Add the policy commands to ``sub``."""
    _add_train(sub)
    _add_export(sub)
    _add_run(sub)


def _add_train(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "train",
        summary="train a Stable-Baselines3 policy (PPO/SAC) on the shared encoder",
        description="""
            Train a policy whose feature extractor is the perception encoder (frozen,
            fine-tuned or from scratch). Writes RUN/bundle/ (encoder + actor + contract,
            safetensors + JSON), eval.json, monitor.csv and summary.json; RUN/resume/ is saved
            every 10k steps and at every stop (budget, --minutes, Ctrl-C, SIGTERM), and
            --resume RUN goes on from it. Every TrainConfig field is a --set KEY=VALUE.""",
        examples="""
            sim2real train --env Sim2Real/ReachCube-v0 --encoder runs/demo/pretrain/encoder --mode frozen --steps 100000 --out runs/reach
            sim2real train --env Sim2Real/ReachCube-v0 --mode scratch --out runs/reach_scratch --set trunk_dim=8 'algo_kwargs={"n_steps": 512}'
            sim2real train --env Sim2Real/Reach-v0 --scene xarm_mug --mode scratch --out runs/xarm_reach
            sim2real train --resume runs/reach --steps 200000""",
        func=cmd_train,
    )
    p.add_argument("--env", help=f"registered env id (default {_default('env_id')})")
    p.add_argument(
        "--scene",
        help="scene preset or YAML in place of the env id's own (with --env "
        "Sim2Real/Reach-v0: reach that scene's target object)",
    )
    p.add_argument("--encoder", help="encoder folder (default: a fresh encoder)")
    p.add_argument("--out", help="run folder to write")
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="go on with RUN from its last resume state (its own configuration; --steps "
        "raises the budget, --minutes limits this session)",
    )
    p.add_argument(
        "--algo", choices=_choices("algo"), help=f"RL algorithm (default {_default('algo')})"
    )
    p.add_argument("--steps", type=int, help=f"env steps (default {_default('steps')})")
    p.add_argument("--n-envs", type=int, help=f"parallel envs (default {_default('n_envs')})")
    p.add_argument(
        "--mode",
        choices=_choices("mode"),
        help="encoder: frozen, fine-tuned at a lower rate, or trained from scratch "
        f"(default {_default('mode')})",
    )
    p.add_argument("--seed", type=int, help=f"training seed (default {_default('seed')})")
    p.add_argument(
        "--minutes",
        type=float,
        help="wall-clock limit: stop there and save the run as at the end (Ctrl-C or SIGTERM "
        "also save it); with --resume, limits this session (default: the run's; 0: none)",
    )
    add_set_argument(p, "TrainConfig field, e.g. trunk_dim=8 device=cuda")


def _default(field: str) -> Any:
    return TrainConfig.model_fields[field].default


def _choices(field: str) -> list[str]:
    return list(get_args(TrainConfig.model_fields[field].annotation))


def _add_export(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "export",
        summary="a policy bundle as one ONNX or TorchScript graph",
        description="""
            Export resize, normalisation, encoder, actor and action squashing as one graph
            taking uint8 NHWC RGB frames; its contract goes to FILE.json with the measured
            parity against the eager policy.""",
        examples="""
            sim2real export --bundle runs/reach --format onnx --out runs/reach/policy.onnx
            sim2real export --bundle runs/reach --format torchscript --out runs/reach/policy.pt --input-size 640x480""",
        func=cmd_export,
    )
    p.add_argument("--bundle", required=True, help="run folder or its bundle/")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"], help="graph format")
    p.add_argument("--out", required=True, help="graph file; its contract goes to FILE.json")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--input-size", type=image_size, help="WxH of the frames the graph takes")


def _add_run(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "run",
        summary="run a policy bundle on a camera and a robot at a fixed rate",
        description="""
            The deployment loop: read a frame, act, send the action, at --hz, with a watchdog
            on frame age, action clipping and --max-delta rate limits; prints latency
            percentiles per stage. Try --dry-run first on a real robot.""",
        examples="""
            sim2real run --bundle runs/reach --camera sim --robot sim --hz 10
            sim2real run --bundle runs/reach --camera replay:../shared/real/kuka_cube/unlabelled --robot sim --hz 10 --steps 50 --dry-run""",
        func=cmd_run,
    )
    p.add_argument("--bundle", required=True, help="RUN or RUN/bundle")
    p.add_argument("--camera", default="sim", help="sim | replay:DIR | opencv:0")
    p.add_argument("--robot", default="sim", help="sim (the bundle's env) | sim:ENV_ID")
    p.add_argument("--hz", type=float, default=10.0, help="control rate (default 10)")
    p.add_argument("--steps", type=int, default=100, help="ticks to run (0: no limit)")
    p.add_argument("--duration", type=float, help="seconds to run")
    p.add_argument("--max-delta", type=float, help="largest action change per tick")
    p.add_argument("--watchdog", type=float, default=0.5, help="largest frame age, seconds")
    p.add_argument("--dry-run", action="store_true", help="compute actions, send nothing")
    p.add_argument(
        "--not-visible",
        choices=("pass", "hold", "stop"),
        default="pass",
        help="when the target is not in view (or confidence < 0.5): act as usual, send zero "
        "actions, or stop the run (default pass)",
    )
    p.add_argument("--record", help="record observations, actions and timings to this folder")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--seed", type=int, default=0, help="first simulated episode's seed")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steadiest latency; 0: default)"
    )
