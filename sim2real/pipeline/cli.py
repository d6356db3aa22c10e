"""``sim2real pipeline CONFIG [--set key=value ...]``: the subcommand's parser and handler
(wired into :mod:`sim2real.cli` with ``add_pipeline_parser(sub)``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from sim2real.pipeline.engine import PipelineResult

STAGE_NAMES = (
    "data",
    "target",
    "pretrain",
    "adapt",
    "evaluate",
    "policy",
    "export",
    "run",
    "report",
)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``pipeline`` and ``demo``."""
    from sim2real.cli.common import add_set_argument

    parser.add_argument("--tiny", action="store_true", help="shrink every stage (CI smoke run)")
    parser.add_argument("--real", default=None, help="folder of real frames: the target domain")
    add_set_argument(parser, "dotted config key, e.g. pretrain.epochs=3 policy.steps=50000")
    parser.add_argument("--from", dest="force_from", choices=STAGE_NAMES, help="re-run from here")
    parser.add_argument(
        "--to", dest="stop_after", choices=STAGE_NAMES, help="stop after this stage"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_pipeline_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``sim2real pipeline`` to a subparsers object; returns the new parser."""
    from sim2real.cli.common import add_command

    parser = add_command(
        subparsers,
        "pipeline",
        summary="run or resume a pipeline config (data -> ... -> report)",
        description="""
            Run every stage of a pipeline YAML (data, target, pretrain, adapt, evaluate,
            policy, export, run, report) into OUT. Each finished stage writes a fingerprint of
            its config and inputs; a rerun skips stages that still match, so a killed
            pipeline resumes where it stopped.""",
        examples="""
            sim2real pipeline configs/pipelines/demo.yaml --set policy.steps=50000 pretrain.epochs=10
            sim2real pipeline configs/pipelines/kuka_cube.yaml --real ../shared/real/kuka_cube
            sim2real pipeline configs/pipelines/demo.yaml --from policy""",
        func=cmd_pipeline,
    )
    parser.add_argument("config", help="configs/pipelines/NAME.yaml or a preset name")
    parser.add_argument("--out", default=None, help="output folder (default: runs/<name>)")
    add_common_arguments(parser)
    return parser


def cmd_pipeline(args: argparse.Namespace) -> int:
    """Run the pipeline and print the stage table and the report path."""
    from sim2real.pipeline.config import load_config
    from sim2real.pipeline.run import run_pipeline

    out = args.out
    if out is None:
        out = Path("runs") / load_config(args.config, args.set, tiny=args.tiny).name
    result = run_pipeline(
        args.config,
        out,
        overrides=args.set,
        tiny=args.tiny,
        real=args.real,
        force_from=args.force_from,
        stop_after=args.stop_after,
        progress=not args.no_progress,
        command=command_line("pipeline"),
    )
    print_result(result)
    return 0


def print_result(result: PipelineResult) -> None:
    """The stage table, then where the report is."""
    print(result.table())
    report = result.out / "report.md"
    if "report" in result.results:
        print(f"report: {report}")


def command_line(subcommand: str) -> str:
    """The command as typed, as a ``sim2real SUBCOMMAND ...`` line, for the report."""
    args = sys.argv[1:]
    if subcommand in args:
        args = args[args.index(subcommand) + 1 :]
    return shlex.join(["sim2real", subcommand, *args])
