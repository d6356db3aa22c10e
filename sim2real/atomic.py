"""Crash-safe folder replacement, shared by the resumable jobs (pretraining's last state,
policy training's ``resume/``).

Example:
    >>> run = Path("runs/ppo")
    >>> swap_folder(run / "resume.tmp", run / "resume", run / "resume.old")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def swap_folder(tmp: Path, folder: Path, old: Path) -> None:
    """Put the complete folder ``tmp`` in place of ``folder``, through ``old``.

    ``tmp``'s files are fsynced first. A kill at any point leaves a complete state in
    ``folder`` or ``old`` (a reader should look in both): ``old`` is removed only once the new
    folder is in place, and never while it may be the only complete copy.
    """
    fsync_tree(tmp)
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    fsync_dir(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` and the folders themselves to disk (a power cut after
    a rename must not leave the renamed folder with empty files)."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        else:
            fsync_dir(path)
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (its renames) to disk; a no-op where folders have no handle."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
