"""What every ``sim2real`` subcommand shares: one ``--set`` convention, value parsers, a
subparser factory that puts an example under each command's help, and one-line errors."""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sim2real.errors import ConfigError

if TYPE_CHECKING:
    from sim2real.sweep import SweepBackend

Handler = Callable[[argparse.Namespace], int]
Subparsers = argparse._SubParsersAction


def add_command(
    sub: Subparsers,
    name: str,
    *,
    summary: str,
    description: str,
    examples: str,
    func: Handler,
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` shows ``description`` and, below the options,
    ``examples`` (shell lines, written as a user types them)."""
    parser = sub.add_parser(
        name,
        help=summary,
        description=textwrap.dedent(description).strip(),
        epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="debug logging; errors show their traceback",
    )
    parser.set_defaults(func=func)
    return parser


def add_set_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--set KEY=VALUE [KEY=VALUE ...]``, repeatable, the same in every command."""
    parser.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=None,
        metavar="KEY=VALUE",
        help=f"{what}; several pairs after one --set, or --set repeated. A VALUE starting with "
        "{ or [ is JSON",
    )


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs to a dict.

    A VALUE starting with ``{`` or ``[`` is read as JSON (e.g. ``algo_kwargs={"n_steps": 512}``,
    ``hidden=[64,64]``); any other stays a string for the config's own validation to convert.

    Example:
        >>> parse_overrides(["steps=100", "hidden=[64, 64]"])
        {'steps': '100', 'hidden': [64, 64]}
    """
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        if value.lstrip()[:1] in ("{", "["):
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"--set {pair!r}: expected JSON after '=', {exc}") from None
        else:
            out[key] = value
    return out


def image_size(text: str) -> tuple[int, int]:
    """``"84"`` -> (84, 84); ``"160x120"`` -> (160, 120)."""
    from sim2real.envs.core import image_size_tuple

    return image_size_tuple(int(text) if text.isdigit() else text)


def crop_box(text: str) -> tuple[int, int, int, int]:
    """``"X0,Y0,X1,Y1"`` -> four ints; :class:`ConfigError` naming the expected form."""
    parts = text.replace(" ", "").split(",")
    if len(parts) != 4 or not all(p.lstrip("-").isdigit() for p in parts):
        raise ConfigError(f"--crop {text!r}: expected X0,Y0,X1,Y1 (four integers, pixels)")
    x0, y0, x1, y1 = (int(p) for p in parts)
    return x0, y0, x1, y1


def one_line(exc: BaseException) -> str:
    """An exception as one line: pydantic's multi-line validation report is folded into
    ``field: problem (got value)`` items."""
    errors = getattr(exc, "errors", None)
    if callable(errors) and type(exc).__name__ == "ValidationError":
        items = []
        for e in errors():
            field = ".".join(str(p) for p in e.get("loc", ())) or "value"
            items.append(f"{field}: {e.get('msg', '')} (got {e.get('input')!r})")
        return f"{getattr(exc, 'title', 'config')}: " + "; ".join(items)
    return " ".join(str(exc).split()) or type(exc).__name__


def add_sweep_arguments(parser: argparse.ArgumentParser, unit: str) -> None:
    """``--backend local|ray``, ``--address``, ``--cpus-per-run``, ``--gpus-per-run``."""
    parser.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help=f"local: each {unit} in this process; ray: each {unit} a Ray task (default local)",
    )
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (auto or HOST:PORT; default: start a local one)",
    )
    parser.add_argument(
        "--cpus-per-run",
        type=float,
        default=1.0,
        help=f"CPUs each {unit} declares to Ray (default 1)",
    )
    parser.add_argument(
        "--gpus-per-run",
        type=float,
        default=0.0,
        help=f"GPUs each {unit} declares to Ray, fractions allowed (default 0)",
    )


def sweep_backend(args: argparse.Namespace) -> SweepBackend:
    """The :class:`~sim2real.sweep.SweepBackend` named by :func:`add_sweep_arguments`' flags."""
    from sim2real.sweep import SweepBackend

    if args.backend == "local" and args.address is not None:
        raise ConfigError(f"--address {args.address}: only with --backend ray")
    return SweepBackend(args.backend, args.address, args.cpus_per_run, args.gpus_per_run)
