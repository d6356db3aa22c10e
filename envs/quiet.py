"""Silence what native libraries print straight to the process's stdout/stderr.

PyBullet's C++ core prints ``pybullet build time: ...`` on import and ``argv[0]=`` on every
``connect``; those lines would otherwise open every ``sim2real`` command's output. Python-level
output is flushed first and restored afterwards; only the file descriptors 1 and 2 are
redirected, only for the duration of the block.

Example:
    >>> with quiet_native_output():
    ...     import pybullet
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    """Send file descriptors 1 and 2 to ``os.devnull`` inside the block, then restore them."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no real descriptors (an embedded interpreter): nothing to silence
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)
