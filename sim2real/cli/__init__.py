"""The ``sim2real`` command line: one module per command group, each subcommand parsing its
flags and calling one library function. Only this package configures logging.

Example:
    >>> main(["--version"])  # doctest: +SKIP
    sim2real 0.1.0
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from sim2real.cli import data, perception, policy, refine, robot, transfer
from sim2real.cli.common import one_line, parse_overrides
from sim2real.errors import Sim2RealError
from sim2real.version import __version__

logger = logging.getLogger("sim2real")

DESCRIPTION = """\
Robot vision from simulation to a real robot.

The usual order: generate randomised, labelled frames of a scene; pretrain a perception
encoder on them; finetune it on a few real frames (curve tells which strategy helps at your
number of labels); train a policy on the shared encoder; export it and run it on a robot.
`sim2real demo` does all of it on an embedded default in a few minutes on a CPU.
"""

EPILOG = """\
examples:
  sim2real demo
  sim2real generate --scene kuka_cube --n 20000 --out runs/kuka_data --workers 2
  sim2real pretrain --data runs/kuka_data --out runs/kuka_encoder --minutes 25
  sim2real <command> --help      the command's options and examples

Documentation: docs/ (`make docs`, then open site/index.html).
"""

__all__ = ["build_parser", "main", "parse_overrides"]


def build_parser() -> argparse.ArgumentParser:
    """The whole ``sim2real`` parser: every subcommand, in the order a user meets them."""
    from sim2real.demo import add_demo_parser
    from sim2real.pipeline.cli import add_pipeline_parser

    parser = argparse.ArgumentParser(
        prog="sim2real",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging; errors show their traceback"
    )
    parser.add_argument("--version", action="version", version=f"sim2real {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="`sim2real COMMAND --help` for more"
    )
    add_demo_parser(sub)
    add_pipeline_parser(sub)
    data.add_parsers(sub)
    robot.add_parsers(sub)
    perception.add_parsers(sub)
    refine.add_parsers(sub)
    transfer.add_parsers(sub)
    policy.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 unexpected error, 2 bad input,
    130 interrupted). Errors are one line; ``-v`` adds the traceback."""
    args = build_parser().parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        logger.warning("interrupted")
        return 130
    except Exception as exc:
        if verbose:
            logger.exception("%s failed", args.command)
        bad_input = isinstance(exc, Sim2RealError) or type(exc).__name__ == "ValidationError"
        if bad_input:
            logger.error("%s", one_line(exc))
            return 2
        if not verbose:
            logger.error(
                "%s: %s (run with -v for the traceback)", type(exc).__name__, one_line(exc)
            )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
