"""MkDocs hooks.

- The command-line reference is generated from the ``sim2real`` parser at build time
  (``<!-- cli-reference -->`` in a page is replaced), so the page cannot drift from the code.
- The API pages read the source statically (griffe), which looks for ``sim2real.envs`` in
  ``sim2real/envs/``; the repository keeps it in ``envs/`` (``package-dir`` in pyproject.toml).
  So, when this file is loaded, ``build/apisrc/sim2real/`` is laid out as the installed package
  is, with symbolic links to the real files, and mkdocs.yml points mkdocstrings there.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any

MARKER = "<!-- cli-reference -->"
ROOT = Path(__file__).resolve().parents[1]
API_SRC = ROOT / "build" / "apisrc"
#: sub-packages that live outside sim2real/ in the repository (pyproject.toml's package-dir)
MAPPED = {"envs": "envs", "policies": "policies", "configs": "configs"}


def lay_out_api_source() -> Path:
    """``build/apisrc/sim2real/`` with links to ``sim2real/*`` and the mapped sub-packages."""
    package = API_SRC / "sim2real"
    shutil.rmtree(API_SRC, ignore_errors=True)
    package.mkdir(parents=True)
    for entry in (ROOT / "sim2real").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in MAPPED.items():
        (package / name).symlink_to(ROOT / folder)
    return API_SRC


lay_out_api_source()


def _commands(
    parser: argparse.ArgumentParser, prefix: str
) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(prefix, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _commands(child, f"{prefix} {name}")
    return found


def cli_reference() -> str:
    """Markdown: one section per command, its ``--help`` text verbatim."""
    from sim2real.cli import build_parser

    os.environ.setdefault("COLUMNS", "100")  # a stable wrap width for argparse
    parts = []
    for name, parser in _commands(build_parser(), "sim2real"):
        level = "##" if name.count(" ") <= 1 else "###"
        parts.append(f"{level} `{name}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown
