"""The transfer curve's journal: every finished run, one JSON line, so a killed curve
resumes where it was (see :mod:`sim2real.transfer.curve`)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


class Journal:
    """Finished curve runs, one JSON line each, so that a killed curve resumes where it was.

    The first line is ``{"fingerprint": ...}``; each further line is one run
    ``{"entry", "k", "repeat", "train", "errors", "epochs"}`` (and ``"selection"`` for
    ``auto``). A torn last line (killed while writing) is cut off when the journal is opened.
    """

    def __init__(self, path: Path, fingerprint: dict[str, Any]) -> None:
        self.path = path
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back
        self.runs: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.reused = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size:
            self._load()
        else:
            self._append({"fingerprint": self.fingerprint})

    def _load(self) -> None:
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]
        if len(complete) < len(raw):
            logger.warning("%s: cut off a torn last line (the run was killed mid-write)", self.path)
            with self.path.open("r+b") as f:
                f.truncate(len(complete))
        lines = complete.decode("utf-8").splitlines()
        try:
            head = json.loads(lines[0])["fingerprint"] if lines else None
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(
                f"{self.path}: not a curve journal ({exc}); delete it or use another --out"
            ) from exc
        if head is None:
            self._append({"fingerprint": self.fingerprint})
            return
        if head != self.fingerprint:
            keys = sorted(
                k for k in {*head, *self.fingerprint} if head.get(k) != self.fingerprint.get(k)
            )
            raise ConfigError(
                f"{self.path} holds runs of a different curve (differs in: {', '.join(keys)}); "
                "expected the same model, frames and settings to resume; "
                "delete it or use another --out"
            )
        for line in lines[1:]:
            run = json.loads(line)
            self.runs[(run["entry"], run["k"], run["repeat"])] = run
        if self.runs:
            logger.info("%s: resuming, %d finished runs read back", self.path, len(self.runs))

    def _append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def get(
        self, entry: str, k: int | str, repeat: int, train: np.ndarray
    ) -> tuple[Any, ...] | None:
        """The finished run, or ``None`` if it is not in the journal (or used other frames)."""
        run = self.runs.get((entry, str(k), repeat))
        if run is None or run["train"] != [int(i) for i in train]:
            return None
        self.reused += 1
        objects = run.get("objects")  # per-object errors of a named encoder (None: NaN)
        if objects is not None:
            objects = {k: np.array(v, dtype=np.float64) for k, v in objects.items()}
        return (
            train,
            np.asarray(run["errors"], dtype=np.float64),
            run["epochs"],
            run.get("selection"),
            objects,
        )

    def add(
        self,
        entry: str,
        k: int | str,
        repeat: int,
        run: tuple[Any, ...],
    ) -> None:
        train, errors, epochs, selection = run[:4]
        objects = run[4] if len(run) > 4 else None
        record = {
            "entry": entry,
            "k": str(k),
            "repeat": repeat,
            "train": [int(i) for i in train],
            "errors": [float(e) for e in errors],
            "epochs": None if epochs is None else int(epochs),
            **({"selection": selection} if selection is not None else {}),
        }
        if objects is not None:
            record["objects"] = {
                k: [float(e) if np.isfinite(e) else None for e in v] for k, v in objects.items()
            }
        self.runs[(entry, str(k), repeat)] = record
        self._append(record)
