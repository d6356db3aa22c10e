"""Record a control run to disk in our sharded dataset format, without stalling the loop.

A recording is an ordinary dataset folder (``manifest.json`` + ``shard-XXXXX/<field>.npy``,
see :mod:`sim2real.data.shards`), so :class:`~sim2real.data.shards.ShardedDataset` reads it
back. Samples are copied into preallocated shard arrays; full shards are written, hashed and
added to the manifest by one background thread, so a control tick pays for one copy of its
frame, not for disk I/O. The manifest says ``incomplete`` until :meth:`Recorder.close`, and
always lists exactly the shards already on disk, so a crashed run leaves a readable prefix
(``ShardedDataset(path, allow_incomplete=True)``).
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from sim2real.data import shards
from sim2real.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SOURCE = "sim2real.deploy.recording"
DEFAULT_SHARD_SIZE = 256
DEFAULT_MAX_SHARD_BYTES = 64 * 2**20

Value = np.ndarray | np.generic | float | int | bool


class Recorder:
    """Append per-step samples (dicts of numeric arrays/scalars) to a dataset folder.

    Every sample must have the same fields, dtypes and shapes as the first one. Python
    ``float`` / ``int`` / ``bool`` are stored as ``float64`` / ``int64`` / ``bool``.

    Args:
        root: folder to create (it must not exist, or be empty).
        shard_size: samples per shard; lowered so a shard stays under ``max_shard_bytes``.
        max_shard_bytes: memory held per shard being filled (and per shard being written).
        overwrite: replace an existing recording (a folder with a sharded-dataset manifest).
        metadata: JSON-able settings stored as the manifest's ``spec`` (hz, limits, devices).
        seed: stored in the manifest; ``ShardedDataset.split`` uses it.

    Raises:
        ConfigError: bad sizes, or ``root`` holds something else.
        DataError: a sample whose fields differ from the first one's.

    Example:
        >>> with Recorder("runs/reach/rec-001", metadata={"hz": 10}) as rec:  # doctest: +SKIP
        ...     rec.add({"image": frame, "action": action, "time_s": 0.1})
        >>> ShardedDataset("runs/reach/rec-001")[0]["action"]  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | Path,
        *,
        shard_size: int = DEFAULT_SHARD_SIZE,
        max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
        overwrite: bool = False,
        metadata: Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        for name, value in (("shard_size", shard_size), ("max_shard_bytes", max_shard_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: expected an integer >= 1, got {value!r}")
        self.root = Path(root)
        self._prepare(overwrite)
        self.shard_size = shard_size
        self.max_shard_bytes = max_shard_bytes
        try:
            self.manifest = shards.new_manifest(dict(metadata or {}), 0, seed, shard_size, SOURCE)
        except TypeError as err:
            raise ConfigError(f"metadata: expected JSON-able values ({err})") from err
        self.manifest["num_shards"] = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder")
        self._pending: list[Future[None]] = []
        self._fields: dict[str, dict[str, Any]] = {}
        self._arrays: dict[str, np.ndarray] = {}
        self._count = 0  # samples in the shard being filled
        self._total = 0
        self._shards = 0
        self._closed = False
        shards.write_manifest(self.root, self.manifest)

    def __len__(self) -> int:
        return self._total

    def __repr__(self) -> str:
        return f"Recorder({str(self.root)!r}, {self._total} samples)"

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def add(self, sample: Mapping[str, Value]) -> None:
        """Append one sample; a full shard is handed to the writer thread.

        Raises:
            ConfigError: the recorder is closed.
            DataError: fields differ from the first sample's, or a previous write failed.
        """
        if self._closed:
            raise ConfigError(f"{self.root}: the recorder is closed; start a new Recorder")
        self._raise_write_errors()
        values = {name: _as_numpy(name, value) for name, value in sample.items()}
        infos = {name: shards.field_info(name, value) for name, value in values.items()}
        if not self._fields:
            self._start(infos, values)
        elif infos != self._fields:
            raise DataError(f"sample {self._total}: fields {infos}, expected {self._fields}")
        if not self._arrays:
            self._arrays = {
                name: np.empty((self.shard_size, *info["shape"]), dtype=info["dtype"])
                for name, info in self._fields.items()
            }
        for name, value in values.items():
            self._arrays[name][self._count] = value
        self._count += 1
        self._total += 1
        if self._count == self.shard_size:
            self._submit()

    def set_info(self, key: str, value: Any) -> None:
        """Store a JSON-able ``value`` under ``manifest["recording"][key]`` (at close)."""
        with self._lock:
            self.manifest.setdefault("recording", {})[key] = value

    def close(self) -> Path:
        """Write the last partial shard, wait for the writer, mark the manifest complete.

        Returns:
            The recording folder. Idempotent.
        """
        if self._closed:
            return self.root
        self._closed = True
        try:
            if self._count:
                self._submit()
            for future in self._pending:
                future.result()
            with self._lock:
                self.manifest["status"] = "complete"
                shards.write_manifest(self.root, self.manifest)
        finally:
            self._pool.shutdown(wait=True)
        logger.info("recorded %d samples in %d shards to %s", self._total, self._shards, self.root)
        return self.root

    # -- internals --------------------------------------------------------------------------
    def _prepare(self, overwrite: bool) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"{self.root}: expected a folder for the recording, got a file")
        if self.root.is_dir() and any(self.root.iterdir()):
            is_dataset = (self.root / shards.MANIFEST_NAME).is_file()
            if not (overwrite and is_dataset):
                hint = "pass overwrite=True" if is_dataset else "choose a new folder"
                raise ConfigError(f"{self.root}: expected a new or empty folder ({hint})")
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _start(self, infos: dict[str, dict[str, Any]], values: dict[str, np.ndarray]) -> None:
        sample_bytes = max(1, sum(value.nbytes for value in values.values()))
        self.shard_size = max(1, min(self.shard_size, self.max_shard_bytes // sample_bytes))
        self._fields = infos
        with self._lock:
            self.manifest["fields"] = infos
            self.manifest["shard_size"] = self.shard_size

    def _submit(self) -> None:
        arrays = {name: array[: self._count] for name, array in self._arrays.items()}
        index, start = self._shards, self._total - self._count
        self._pending.append(self._pool.submit(self._write, index, start, arrays))
        self._shards += 1
        self._arrays, self._count = {}, 0

    def _write(self, index: int, start: int, arrays: dict[str, np.ndarray]) -> None:
        record = shards.write_shard(self.root, index, start, arrays)
        with self._lock:
            self.manifest["shards"][shards.shard_name(index)] = record
            self.manifest["n"] = record["stop"]
            self.manifest["num_shards"] = index + 1
            shards.write_manifest(self.root, self.manifest)
        logger.debug("wrote %s (%d samples)", shards.shard_name(index), record["stop"] - start)

    def _raise_write_errors(self) -> None:
        done = [future for future in self._pending if future.done()]
        for future in done:
            self._pending.remove(future)
            error = future.exception()
            if error is not None:
                raise DataError(f"{self.root}: writing a shard failed: {error}") from error


def _as_numpy(name: str, value: Value) -> np.ndarray:
    """``value`` as a numeric numpy array (Python scalars as float64 / int64 / bool)."""
    if isinstance(value, bool):
        return np.asarray(value, dtype=np.bool_)
    if isinstance(value, int):
        return np.asarray(value, dtype=np.int64)
    if isinstance(value, float):
        return np.asarray(value, dtype=np.float64)
    if isinstance(value, np.ndarray | np.generic) and value.dtype.kind in "biuf":
        return np.asarray(value)
    raise DataError(
        f"field {name!r}: expected a numeric numpy array or a Python float/int/bool, got "
        f"{type(value).__name__}"
        + (f" of dtype {value.dtype}" if isinstance(value, np.ndarray | np.generic) else "")
    )
