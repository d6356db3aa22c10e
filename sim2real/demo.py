"""``sim2real demo``: the main job on the embedded default, ``configs/pipelines/demo.yaml``.

Randomised simulated data -> pretrained encoder -> adaptation to a held-out target domain (a
randomisation setting never used in training stands in for reality; ``--real DIR`` uses a
user's frames instead) -> a ReachCube policy on the shared encoder, beside a from-scratch
baseline of the same budget -> evaluation -> export -> the bundle through ``Runner`` on a
``SimRobot`` -> ``runs/demo/report.md`` with pictures.
About 10 minutes on 2 CPU cores; ``--tiny`` shrinks every stage to seconds. Finished stages
are skipped on a second run, so an interrupted demo resumes.

Example:
    >>> from sim2real.demo import run_demo
    >>> run_demo(Path("runs/demo_tiny"), tiny=True)  # doctest: +SKIP
    PosixPath('runs/demo_tiny/report.md')
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from sim2real.errors import ConfigError
from sim2real.paths import CONFIGS

logger = logging.getLogger(__name__)

DEMO_CONFIG = CONFIGS / "pipelines" / "demo.yaml"

#: The budget ``demo.yaml``'s stages are sized for, and the settings ``--minutes`` scales.
DEMO_MINUTES = 10.0
SCALED = {"data.n": 3000, "pretrain.max_minutes": 3.0, "pretrain.epochs": 5, "policy.steps": 4096}


def budget_overrides(minutes: float) -> list[str]:
    """The ``--set`` pairs that size the demo's stages for ``minutes`` of 2-core CPU time.

    Data, pretraining time and epochs and the policy's steps grow in proportion to the budget
    (never below the default's); an explicit ``--set`` given with it still wins.

    >>> budget_overrides(30)
    ['data.n=9000', 'pretrain.max_minutes=9', 'pretrain.epochs=15', 'policy.steps=12288', 'report.budget_minutes=30']
    """  # noqa: E501
    if not minutes > 0:
        raise ConfigError(f"--minutes {minutes}: expected a positive number of minutes")
    f = max(1.0, minutes / DEMO_MINUTES)
    steps = 1024 * round(SCALED["policy.steps"] * f / 1024)  # whole PPO rollouts of 2 x 512
    return [
        f"data.n={round(SCALED['data.n'] * f)}",
        f"pretrain.max_minutes={SCALED['pretrain.max_minutes'] * f:g}",
        f"pretrain.epochs={round(SCALED['pretrain.epochs'] * f)}",
        f"policy.steps={steps}",
        f"report.budget_minutes={minutes:g}",
    ]


def run_demo(
    out: Path = Path("runs/demo"),
    tiny: bool = False,
    real: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    force_from: str | None = None,
    progress: bool = True,
    command: str | None = None,
) -> Path:
    """Run (or resume) the demo pipeline into ``out``; returns ``out/report.md``.

    Args:
        out: output folder.
        tiny: shrink every stage (CI smoke run).
        real: real frames (``labelled/`` + ``unlabelled/``) as the target domain.
        overrides: dotted config overrides (``["policy.steps=5000"]``).
        force_from: re-run this stage and the later ones.
        progress: progress bars.
        command: the command line, quoted in the report.

    Raises:
        ConfigError: a bad override (the key is named).
    """
    from sim2real.pipeline.run import run_pipeline

    result = run_pipeline(
        DEMO_CONFIG,
        out,
        overrides=overrides,
        tiny=tiny,
        real=real,
        force_from=force_from,
        progress=progress,
        command=command or ("sim2real demo" + (" --tiny" if tiny else "")),
    )
    return result.out / "report.md"


def add_demo_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``sim2real demo`` to a subparsers object; returns the new parser."""
    from sim2real.cli.common import add_command
    from sim2real.pipeline.cli import add_common_arguments

    parser = add_command(
        subparsers,
        "demo",
        summary="the main job on the embedded default, a few minutes on a CPU",
        description="""
            Randomised data -> pretrained encoder -> adaptation to a held-out target domain
            (a randomisation never used in training stands in for reality; --real DIR uses
            your frames) -> a reach policy on the shared encoder, beside a from-scratch
            baseline of the same budget -> evaluation -> export ->
            the Runner on a simulated robot -> OUT/report.md. Needs no data or network; a
            second run skips the stages already done.""",
        examples="""
            sim2real demo
            sim2real demo --tiny
            sim2real demo --minutes 30
            sim2real demo --from policy --set policy.steps=50000""",
        func=cmd_demo,
    )
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help=f"time budget: scales data, pretraining and policy steps (default {DEMO_MINUTES:g})",
    )
    add_common_arguments(parser)
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo; print the stage table and the report path."""
    from sim2real.pipeline.cli import command_line, print_result
    from sim2real.pipeline.run import run_pipeline

    overrides = list(getattr(args, "set", None) or [])
    if getattr(args, "minutes", None) is not None:
        overrides = budget_overrides(args.minutes) + overrides  # an explicit --set wins
    result = run_pipeline(
        DEMO_CONFIG,
        Path(args.out),
        overrides=overrides or None,
        tiny=args.tiny,
        real=getattr(args, "real", None),
        force_from=getattr(args, "force_from", None),
        stop_after=getattr(args, "stop_after", None),
        progress=not getattr(args, "no_progress", False),
        command=command_line("demo"),
    )
    print_result(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m sim2real.demo``: the demo without the rest of the command line."""
    parser = argparse.ArgumentParser(prog="sim2real")
    add_demo_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["demo", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
