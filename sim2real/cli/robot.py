"""Robots: ``inspect`` (a URDF's joints and links, to write a scene's ``robot:`` section)."""

from __future__ import annotations

import argparse

from sim2real.cli.common import Subparsers, add_command


def cmd_inspect(args: argparse.Namespace) -> int:
    from sim2real.envs.urdf import find_file, format_urdf, read_urdf

    path = find_file(args.urdf, what="inspect URDF")
    print(format_urdf(read_urdf(path), shown=args.urdf))
    return 0


def add_parsers(sub: Subparsers) -> None:
    """Add the robot commands to ``sub``."""
    p = add_command(
        sub,
        "inspect",
        summary="print a URDF's joints (name, type, limits) and links, for a scene's robot:",
        description="""
            Print the joints (name, type, limits, parent -> child link) and the links of a
            URDF file, then a starting point for a scene's robot: section (the rotational
            joints on the longest chain and its last link). The file may be absolute,
            relative to the working folder, or relative to pybullet_data.""",
        examples="""
            sim2real inspect xarm/xarm6_with_gripper.urdf
            sim2real inspect path/to/my_arm.urdf""",
        func=cmd_inspect,
    )
    p.add_argument("urdf", metavar="URDF", help="URDF file (absolute, relative, or pybullet_data)")
