"""Sharded, memory-mappable datasets: on-disk format, manifest and a map-style dataset.

A dataset folder holds ``manifest.json`` and shards ``shard-00000/``, ``shard-00001/``, ...
Shard ``k`` holds samples ``[k * shard_size, min(n, (k + 1) * shard_size))`` as one ``.npy``
file per field, the sample axis first (``image.npy`` is ``(count, H, W, 3)`` uint8). A ``str``
field (e.g. JSON-encoded randomisation params) is stored as fixed-width UTF-8 bytes (numpy
``S<w>``, ``w`` the longest value in that shard), so it memory-maps like every other field
and comes back as a Python ``str``.

Writes are atomic: a shard is written into ``.tmp-shard-XXXXX-<pid>/`` and renamed once every
file is flushed; the manifest is written through :func:`sim2real.atomic.write_json`. A killed
run therefore leaves complete shards, maybe a ``.tmp-*`` folder (removed on resume), and a
manifest that lists exactly the shards that were complete when it was last written.

The manifest records the sha256 and byte size of every shard file. Opening a dataset always
compares file sizes (one ``stat`` per file, catches truncation); ``verify=True`` also hashes
the files of the selected fields at open, in threads (sha256 runs at ~1 GB/s per core);
``verify="lazy"`` hashes a shard on its first access instead; ``verify=False`` skips hashing.

Example:
    A one-shard dataset of 4 positions, written by hand (``sim2real generate`` and
    :func:`sim2real.data.generate.generate_dataset` do this for a simulator), then read:

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> positions = np.arange(12, dtype=np.float32).reshape(4, 3)
    >>> manifest = new_manifest({"toy": True}, n=4, seed=0, shard_size=4, source="toy:make")
    >>> manifest["shards"][shard_name(0)] = write_shard(root, 0, 0, {"position": positions})
    >>> manifest["fields"] = {"position": field_info("position", positions[0])}
    >>> manifest["status"] = "complete"
    >>> write_manifest(root, manifest)
    >>> read_manifest(root)["n"], verify_shards(root, read_manifest(root)["shards"])
    (4, {})
    >>> ds = ShardedDataset(root, fields=["position"])
    >>> ds[1]["position"], len(ds)
    (array([3., 4., 5.], dtype=float32), 4)
    >>> ds.split(0.25)
    (array([0, 1, 3]), array([2]))
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import operator
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from sim2real import atomic
from sim2real.errors import ConfigError, DataError
from sim2real.version import __version__

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "sim2real-shards"
FORMAT_VERSION = 1
TMP_PREFIX = ".tmp-"
STR_DTYPE = "str"
_FIELD_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_NUMERIC_KINDS = "biufc"
_VERIFY_BAR_BYTES = 256 * 2**20
_REDO_HINT = "rerun the same `sim2real generate` command with --resume to redo that shard"


def shard_name(index: int) -> str:
    """Folder name of shard ``index`` (``shard-00003``)."""
    return f"shard-{index:05d}"


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """Sample ranges ``[start, stop)`` of the shards of an ``n``-sample dataset.

    Example:
        >>> shard_ranges(5, 2)
        [(0, 2), (2, 4), (4, 5)]
    """
    return [(start, min(n, start + shard_size)) for start in range(0, n, shard_size)]


def field_info(name: str, value: Any) -> dict[str, Any]:
    """Schema entry (``{"dtype": ..., "shape": [...]}``) of one sample's field value.

    Raises:
        DataError: if the name is not a plain file name or the value is not a numeric numpy
            array/scalar or a ``str``.
    """
    if not isinstance(name, str) or not _FIELD_NAME.match(name):
        raise DataError(f"field name {name!r}: expected letters, digits, '_', '.', '-'")
    if isinstance(value, str):
        return {"dtype": STR_DTYPE, "shape": []}
    if not isinstance(value, np.ndarray | np.generic):
        raise DataError(f"field {name!r}: expected a numpy array or str, got {type(value)}")
    if value.dtype.kind not in _NUMERIC_KINDS:
        raise DataError(f"field {name!r}: expected a bool/int/float dtype, got {value.dtype}")
    return {"dtype": value.dtype.name, "shape": list(np.shape(value))}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (hashing releases the GIL)."""
    digest = hashlib.sha256()
    buffer = bytearray(2**20)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while size := f.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


def code_version() -> dict[str, str | None]:
    """``sim2real.__version__`` and the git commit of the source tree, if there is one."""
    commit: str | None = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        here = Path(__file__).resolve().parent
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if result.returncode == 0:
            commit = result.stdout.strip() or None
    return {"sim2real": __version__, "git_commit": commit}


def new_manifest(
    spec: Mapping[str, Any], n: int, seed: int, shard_size: int, source: str
) -> dict[str, Any]:
    """An ``incomplete`` manifest with no fields and no shards yet."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "status": "incomplete",
        "n": n,
        "seed": seed,
        "shard_size": shard_size,
        "num_shards": len(shard_ranges(n, shard_size)),
        "spec": json.loads(json.dumps(spec)),
        "source": source,
        "code_version": code_version(),
        "fields": {},
        "shards": {},
    }


def write_manifest(root: Path, manifest: Mapping[str, Any]) -> None:
    """Write ``root/manifest.json`` atomically (:func:`sim2real.atomic.write_json`)."""
    data = dict(manifest)
    data["shards"] = dict(sorted(manifest["shards"].items(), key=lambda item: item[1]["start"]))
    atomic.write_json(root / MANIFEST_NAME, data, indent=1)


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a dataset folder's manifest (example in the module docstring)."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"{path}: missing; expected a dataset folder made by `sim2real generate`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable JSON ({err})") from err
    if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: expected format {FORMAT_NAME!r} version {FORMAT_VERSION}, got "
            f"{manifest.get('format')!r} version {manifest.get('format_version')!r}"
        )
    return manifest


def write_shard(root: Path, index: int, start: int, arrays: Mapping[str, np.ndarray]) -> dict:
    """Write one shard atomically and return its manifest record.

    Args:
        root: Dataset folder.
        index: Shard number; the folder is ``root / shard_name(index)``, which must not exist.
        start: Index of the shard's first sample.
        arrays: One array per field, sample axis first, all of the same length.

    Returns:
        ``{"start", "stop", "files": {"<field>.npy": {"sha256", "bytes"}}}``.
    """
    counts = {len(array) for array in arrays.values()}
    if len(counts) != 1:
        lengths = {name: len(array) for name, array in arrays.items()}
        raise DataError(f"shard {index}: expected fields of one length, got lengths {lengths}")
    tmp = root / f"{TMP_PREFIX}{shard_name(index)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    files: dict[str, dict[str, Any]] = {}
    for field, array in arrays.items():
        path = tmp / f"{field}.npy"
        with open(path, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        files[path.name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    os.replace(tmp, root / shard_name(index))
    return {"start": start, "stop": start + counts.pop(), "files": files}


def check_shard(
    root: Path,
    name: str,
    record: Mapping[str, Any],
    files: list[str] | None = None,
    hash_files: bool = True,
) -> None:
    """Check a shard's files against its manifest record: sizes, and sha256 if asked.

    Raises:
        DataError: naming the first missing, resized or corrupt file.
    """
    for file in list(record["files"]) if files is None else files:
        path, expected, label = root / name / file, record["files"][file], f"{name}/{file}"
        if not path.is_file():
            raise DataError(f"{label}: missing (the manifest lists it); {_REDO_HINT}")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise DataError(
                f"{label}: {size} bytes, the manifest says {expected['bytes']} "
                f"(truncated or replaced); {_REDO_HINT}"
            )
        if hash_files and (actual := sha256_file(path)) != expected["sha256"]:
            raise DataError(
                f"{label}: sha256 mismatch (manifest {expected['sha256'][:12]}..., file "
                f"{actual[:12]}...); the file is corrupt; {_REDO_HINT}"
            )


def verify_shards(
    root: Path, records: Mapping[str, Mapping[str, Any]], files: list[str] | None = None
) -> dict[str, DataError]:
    """Hash the shards' files in threads; return the error of each bad shard (by name).

    A progress bar appears when there is more than 256 MiB to read; example in the module
    docstring.
    """
    sizes = {name: _size(record, files) for name, record in records.items()}
    total = sum(sizes.values())
    quiet = total < _VERIFY_BAR_BYTES
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="verify", leave=False, disable=quiet)

    def check(name: str) -> DataError | None:
        try:
            check_shard(root, name, records[name], files)
        except DataError as err:
            return err
        finally:
            bar.update(sizes[name])
        return None

    with bar, ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        errors = dict(zip(records, pool.map(check, records), strict=True))
    return {name: error for name, error in errors.items() if error is not None}


def _size(record: Mapping[str, Any], files: list[str] | None) -> int:
    return sum(v["bytes"] for file, v in record["files"].items() if files is None or file in files)


def remove_tmp(root: Path) -> None:
    """Remove what interrupted writes left in ``root`` (``.tmp-*`` shard folders, manifest
    temp files)."""
    for path in [*root.glob(f"{TMP_PREFIX}*"), *root.glob(f".{MANIFEST_NAME}.*.tmp")]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


class ShardedDataset:
    """Random access to a sharded dataset through memory-mapped ``.npy`` files.

    A map-style torch dataset (``__getitem__`` + ``__len__``: ``DataLoader``, ``Subset`` and
    ``random_split`` take it). It does not subclass ``torch.utils.data.Dataset`` so that this
    module, which the generation workers import, does not pull in torch (~1.5 s and ~0.6 GB
    per worker). Files are mapped on first use in each process, so it pickles cheaply into
    DataLoader workers.

    Args:
        path: Dataset folder (holding ``manifest.json``).
        fields: Fields to read; ``None`` for all. Unselected files are never opened or hashed.
        verify: ``True`` hashes every selected file at open (threads; a progress bar above
            256 MiB); ``"lazy"`` hashes a shard on its first access in each process;
            ``False`` skips hashing. File sizes are always checked at open.
        allow_incomplete: Open an interrupted dataset; it then holds only the complete
            shards, so index ``i`` is not generator sample ``i`` (see ``sample_index``).

    Raises:
        DataError: missing/incomplete manifest, unknown field, or a missing, truncated or
            corrupt shard file (named).

    Example: in the module docstring.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fields: list[str] | None = None,
        verify: bool | Literal["lazy"] = True,
        allow_incomplete: bool = False,
    ) -> None:
        if verify not in (True, False, "lazy"):
            raise ConfigError(f"verify: expected True, False or 'lazy', got {verify!r}")
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        status = self.manifest["status"]
        records = self.manifest["shards"]
        if status != "complete" and not allow_incomplete:
            raise DataError(
                f"{self.path / MANIFEST_NAME}: status is {status!r}, expected 'complete' "
                f"(generation was interrupted: {len(records)}/{self.manifest['num_shards']} "
                f"shards done); finish it with `sim2real generate ... --resume`, or open it "
                f"with allow_incomplete=True"
            )
        available = list(self.manifest["fields"])
        unknown = sorted(set(fields or []) - set(available))
        if unknown:
            raise DataError(f"fields {unknown} not in the dataset; it has {available}")
        self.fields: dict[str, dict[str, Any]] = {
            name: self.manifest["fields"][name] for name in (fields or available)
        }
        self._names = sorted(records, key=lambda name: records[name]["start"])
        self._records = [records[name] for name in self._names]
        counts = [record["stop"] - record["start"] for record in self._records]
        self._offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self._files = [f"{field}.npy" for field in self.fields]
        self._lazy = verify == "lazy"
        self._verified: set[int] = set()
        self._maps: dict[int, dict[str, np.ndarray]] = {}
        for name, record in zip(self._names, self._records, strict=True):
            check_shard(self.path, name, record, self._files, hash_files=False)
        if verify is True:
            self._verify_all()

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, i: int) -> dict[str, np.ndarray | str]:
        """Sample ``i`` as ``{field: array}`` (a copy, writable); ``str`` fields as ``str``."""
        shard, row = self._locate(i)
        sample: dict[str, np.ndarray | str] = {}
        for field, array in self._shard_arrays(shard).items():
            if self.fields[field]["dtype"] == STR_DTYPE:
                sample[field] = bytes(array[row]).decode("utf-8")
            else:
                sample[field] = np.array(array[row])
        return sample

    def column(self, field: str) -> np.ndarray:
        """One numeric field of every item, shard after shard, as one array (a copy)."""
        if field not in self.fields:
            raise DataError(f"field {field!r} not opened; opened {sorted(self.fields)}")
        return np.concatenate(
            [np.asarray(self._shard_arrays(s)[field]) for s in range(len(self._records))]
        )

    def sample_index(self, i: int) -> int:
        """The generator's sample number of dataset item ``i`` (differs only when incomplete)."""
        shard, row = self._locate(i)
        return self._records[shard]["start"] + row

    def _locate(self, i: int) -> tuple[int, int]:
        """(shard position, row in the shard) of item ``i``; negative ``i`` counts from the end."""
        i = operator.index(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} samples")
        shard = int(np.searchsorted(self._offsets, i, side="right")) - 1
        return shard, i - int(self._offsets[shard])

    def split(self, val_fraction: float, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic train/validation split of the item indices.

        Args:
            val_fraction: Fraction in ``[0, 1)`` of the items held out (rounded).
            seed: Defaults to the manifest seed, so a dataset always splits the same way.

        Returns:
            ``(train_idx, val_idx)``, sorted int64 arrays, disjoint, covering ``range(len)``.
        """
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"val_fraction: expected a number in [0, 1), got {val_fraction!r}")
        seed = self.manifest["seed"] if seed is None else seed
        order = np.random.default_rng([seed, 0x5B17]).permutation(len(self))
        n_val = round(val_fraction * len(self))
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    def _shard_arrays(self, shard: int) -> dict[str, np.ndarray]:
        arrays = self._maps.get(shard)
        if arrays is not None:
            return arrays
        name, record = self._names[shard], self._records[shard]
        if self._lazy and shard not in self._verified:
            check_shard(self.path, name, record, self._files)
            self._verified.add(shard)
        arrays = {}
        count = record["stop"] - record["start"]
        for field, info in self.fields.items():
            label = f"{name}/{field}.npy"
            try:
                array = np.load(self.path / label, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as err:
                raise DataError(f"{label}: unreadable .npy ({err}); {_REDO_HINT}") from err
            is_str = info["dtype"] == STR_DTYPE
            dtype_ok = array.dtype.kind == "S" if is_str else array.dtype == info["dtype"]
            if not dtype_ok or array.shape != (count, *info["shape"]):
                raise DataError(
                    f"{label}: expected {info['dtype']} {(count, *info['shape'])}, got "
                    f"{array.dtype} {array.shape}"
                )
            arrays[field] = array
        self._maps[shard] = arrays
        return arrays

    def _verify_all(self) -> None:
        records = dict(zip(self._names, self._records, strict=True))
        errors = verify_shards(self.path, records, self._files)
        if errors:
            raise next(iter(errors.values()))
        self._verified = set(range(len(self._names)))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state
