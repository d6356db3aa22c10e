"""The README and the docs: every `sim2real ...` line in a bash block parses with the real
parser (so examples cannot drift from the command line), and the README stays short."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sim2real.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
PREFIX = re.compile(r"^(?:\.venv/bin/sim2real|sim2real|\$S)\s+")


def commands(page: Path) -> list[str]:
    """The sim2real command lines of a page's bash blocks, continuations joined."""
    found = []
    for block in BLOCK.findall(page.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if PREFIX.match(line):
                found.append(PREFIX.sub("", line))
    return found


CASES = [(p.relative_to(ROOT).as_posix(), c) for p in PAGES for c in commands(p)]


def test_pages_have_commands() -> None:
    assert len(CASES) >= 30
    assert {p for p, _ in CASES} >= {"README.md", "docs/getting-started.md"}


@pytest.mark.parametrize(("page", "command"), CASES)
def test_documented_commands_parse(page: str, command: str) -> None:
    parser = build_parser()
    try:
        args = parser.parse_args(shlex.split(command))
    except SystemExit as exc:  # argparse's way of saying no
        pytest.fail(f"{page}: `sim2real {command}` does not parse (exit {exc.code})")
    assert callable(args.func)


def test_readme_is_short() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150 and len(text.encode()) <= 12 * 1024
    assert text.index("make demo") < text.index("make test") < 400  # set-up comes first
