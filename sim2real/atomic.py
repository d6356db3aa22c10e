"""Crash-safe writes: one file (bytes, text, JSON) or a whole folder.

Every file the project writes for a user goes through :func:`write_bytes`, :func:`write_text`
or :func:`write_json` (a temp file with a name unique to the process and thread, fsync, then
``os.replace``), so a killed process leaves the old file or the new one, never half of one, and
two processes writing the same path cannot collide on one temp name. Folders are swapped in by
:func:`swap_folder` (pretraining's last state, policy training's ``resume/``).

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> write_json(root / "summary.json", {"steps": 10}).name
    'summary.json'
    >>> json.loads((root / "summary.json").read_text())
    {'steps': 10}
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def temp_path(path: Path) -> Path:
    """A temp name beside ``path`` unique to this process and thread (``.NAME.PID.TID.tmp``)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def write_with(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a binary temp file beside ``path``, fsync it, move it in place.

    For writers that need a file object (``np.save``, ``safetensors``-style writers, image
    encoders). The temp file is removed if ``write`` raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    return write_with(path, lambda f: f.write(data))


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, *, indent: int | None = 2, **dumps: Any) -> Path:
    """Write ``obj`` as JSON (with a trailing newline) to ``path`` atomically."""
    return write_text(path, json.dumps(obj, indent=indent, **dumps) + "\n")


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
