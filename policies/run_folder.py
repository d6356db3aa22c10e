"""The run folder of :func:`~sim2real.policies.train.train`: preparing it for a fresh or a
resumed run, and ``monitor.csv`` across the sessions of a resumed run.

A fresh run removes what an earlier one left (summary, eval curve, resume state) so that a new
run killed early is never mistaken for the old one. A resumed run checks its configuration
against ``RUN/config.json``, keeps the episodes logged up to its resume state, moves them to
``monitor.csv.prev`` while it trains, and merges them back when it stops.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path

from sim2real.atomic import write_text
from sim2real.errors import CheckpointError, ConfigError
from sim2real.policies.config import RESUME_MAY_CHANGE, TrainConfig
from sim2real.policies.resume import find_resume_state

logger = logging.getLogger(__name__)

MONITOR = "monitor.csv"
MONITOR_PREV = "monitor.csv.prev"


def prepare_run_folder(cfg: TrainConfig, run: Path, *, resume: bool) -> Path | None:
    """Create ``run``; returns the resume state to go on from (``resume``), else ``None``
    after clearing what an earlier run left.

    Raises:
        CheckpointError: (resume) no resume state, or no ``config.json`` beside it.
        ConfigError: (resume) a configuration other than the run's.
    """
    state_dir = check_resume(cfg, run) if resume else None
    run.mkdir(parents=True, exist_ok=True)
    if state_dir is None:
        clear_previous_run(run)
    return state_dir


def check_resume(cfg: TrainConfig, run: Path) -> Path:
    """The resume state to go on from; the run's config must match ``cfg``."""
    state = find_resume_state(run)
    if state is None:
        raise CheckpointError(
            f"resume: no resume state in {run} (expected {run / 'resume'}/state.json: written "
            "every resume_every env steps and when training stops)"
        )
    if not (run / "config.json").is_file():
        raise CheckpointError(f"resume: {run / 'config.json'} not found beside {state}")
    saved = json.loads((run / "config.json").read_text())
    mine = cfg.model_dump(mode="json")
    differ = {
        k: (saved.get(k), v)
        for k, v in mine.items()
        if k not in RESUME_MAY_CHANGE and saved.get(k) != v
    }
    if differ:
        raise ConfigError(
            f"resume: the configuration differs from {run / 'config.json'} in "
            + ", ".join(f"{k} (run: {a!r}, now: {b!r})" for k, (a, b) in differ.items())
        )
    return state


def clear_previous_run(run: Path) -> None:
    """Remove what an earlier run in ``run`` left that a new one would not overwrite at once,
    so a new run killed early is never mistaken for the old one (its summary, eval curve or
    resume state)."""
    for name in ("summary.json", "eval.json", MONITOR_PREV):
        (run / name).unlink(missing_ok=True)
    for name in ("resume", "resume.old", "resume.tmp"):
        shutil.rmtree(run / name, ignore_errors=True)


def set_aside_monitor(run: Path, state_dir: Path) -> None:
    """Before a resumed session: keep the episodes logged up to the resume state in
    ``monitor.csv.prev`` (the new session writes a fresh ``monitor.csv``)."""
    monitor = run / MONITOR
    merge_monitor(run)  # a session killed outright may have left one
    if monitor.is_file():
        truncate_monitor(monitor, saved_monitor_rows(state_dir))
        monitor.rename(run / MONITOR_PREV)


def _t_start(header: str) -> float | None:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return float(json.loads(header[1:])["t_start"])
    return None


def merge_monitor(run: Path) -> None:
    """Append this session's ``monitor.csv`` rows to the earlier sessions' (``.prev``), with
    ``t`` kept relative to the first session's start. A cut-off last row is dropped; a
    ``monitor.csv`` that is already the merge (killed before ``.prev`` went) is kept."""
    prev, cur = run / MONITOR_PREV, run / MONITOR
    if not prev.is_file():
        return
    lines = prev.read_text().splitlines()
    if cur.is_file():
        new = cur.read_text().splitlines()
        if new and _t_start(new[0]) == _t_start(lines[0]):  # merged already
            prev.unlink()
            return
        shift = 0.0
        if new and _t_start(new[0]) is not None and _t_start(lines[0]) is not None:
            shift = _t_start(new[0]) - _t_start(lines[0])  # type: ignore[operator]
        for row in new[2:]:
            try:
                r, length, t = row.split(",")[:3]
                lines.append(f"{float(r):.6f},{int(length)},{float(t) + shift:.6f}")
            except ValueError:
                logger.warning("%s: dropped a malformed row %r", cur, row)
    write_text(cur, "\n".join(lines) + "\n")
    prev.unlink()


def monitor_rows(run: Path) -> int:
    """Episodes logged so far: data rows of ``monitor.csv.prev`` and ``monitor.csv``."""
    rows = 0
    for path in (run / MONITOR_PREV, run / MONITOR):
        if path.is_file():
            rows += max(0, len(path.read_text().splitlines()) - 2)
    return rows


def saved_monitor_rows(state: Path) -> int | None:
    """Episodes logged when the resume state ``state`` was saved (``None``: not recorded)."""
    extra = json.loads((state / "state.json").read_text()).get("extra", {})
    return extra.get("monitor_rows")


def truncate_monitor(path: Path, rows: int | None) -> None:
    """Keep the first ``rows`` episodes: those logged after the resume state was saved are
    played again by the resumed run."""
    if rows is None:
        return
    lines = path.read_text().splitlines()
    if len(lines) - 2 > rows:
        write_text(path, "\n".join(lines[: 2 + rows]) + "\n")
