"""Parallel generation of sharded synthetic datasets from any sample source.

The driver knows nothing about the simulator. A *source factory* (a module-level function,
or a ``"package.module:function"`` string) is called once per worker process with the spec
plus ``"seed"``; the source it returns renders sample ``index`` deterministically from
``(seed, index)``. Shards are contiguous index ranges, so the dataset is byte-identical
whatever the number of workers. Workers write their shards themselves (atomically, see
:mod:`sim2real.data.shards`) and send back only checksums and progress counts.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import pickle
import queue
import shutil
import signal
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from sim2real.data import shards
from sim2real.data.source import SourceFactory, render_shard, resolve_factory
from sim2real.errors import ConfigError, DataError, Sim2RealError

logger = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 256
_PROGRESS_EVERY_S = 0.2


Task = tuple[int, int, int]  # (shard index, first sample, stop)


@dataclass(frozen=True)
class Backend:
    """Where :func:`generate_dataset` renders: worker processes here, or actors on Ray.

    Attributes:
        name: ``"local"`` (worker processes on this machine) or ``"ray"``.
        address: Ray cluster to join (``"auto"``, ``HOST:PORT``); ``None`` starts a local one.
        ray_output: Who writes the shards on Ray: ``"driver"`` (default, any cluster) or
            ``"shared"`` (the workers, into an ``out`` every node sees).

    Example:
        >>> Backend("ray", address="auto").ray_output
        'driver'
        >>> Backend("slurm")
        Traceback (most recent call last):
        ...
        sim2real.errors.ConfigError: backend 'slurm': expected 'local' or 'ray'
    """

    name: Literal["local", "ray"] = "local"
    address: str | None = None
    ray_output: Literal["driver", "shared"] = "driver"

    def __post_init__(self) -> None:
        if self.name not in ("local", "ray"):
            raise ConfigError(f"backend {self.name!r}: expected 'local' or 'ray'")
        if self.ray_output not in ("driver", "shared"):
            raise ConfigError(f"ray output {self.ray_output!r}: expected 'driver' or 'shared'")


def generate_dataset(
    source_factory: str | SourceFactory,
    spec: Mapping[str, Any],
    n: int,
    out: str | os.PathLike[str],
    *,
    workers: int = 1,
    seed: int = 0,
    shard_size: int = DEFAULT_SHARD_SIZE,
    resume: bool = False,
    progress: bool = True,
    backend: Literal["local", "ray"] | Backend = "local",
) -> Path:
    """Render ``n`` samples into a sharded dataset folder.

    Args:
        source_factory: Module-level function ``spec -> SampleSource`` (it is pickled by
            name into spawned workers) or ``"package.module:function"``. It receives
            ``{**spec, "seed": seed}``.
        spec: JSON-serialisable description of the data (scene, randomisation, renderer,
            image size, labels); stored in the manifest and compared on resume.
        n: Number of samples.
        out: Output folder; must be absent or empty unless ``resume``.
        workers: Worker processes ("spawn" start method: a script calling this with
            ``workers > 1`` needs an ``if __name__ == "__main__":`` guard). ``1`` renders in
            this process.
        seed: Dataset seed; sample ``i`` depends only on ``(spec, seed, i)``.
        shard_size: Samples per shard (and per worker task).
        resume: Finish an interrupted run in ``out``: keep the shards whose checksums
            verify, redo the rest. Refused if spec, seed, n or shard_size differ.
        progress: Show a tqdm bar (images/s).
        backend: ``"local"`` (worker processes on this machine), ``"ray"`` (actors on a
            Ray cluster, :mod:`sim2real.data.ray_backend`) or a :class:`Backend` with the
            Ray cluster's address and who writes the shards; the bytes are the same.

    Returns:
        The dataset folder, with a ``complete`` manifest.

    Raises:
        ConfigError: bad arguments, a non-empty ``out`` without ``resume``, or a resume
            whose settings differ from the manifest's (the key is named).
        DataError: the source returned inconsistent fields.
        RuntimeError: a worker failed or died (complete shards are kept; resume).
        KeyboardInterrupt: after stopping the workers; the folder stays resumable.

    Example:
        >>> generate_dataset("sim2real.envs.sources:make_source",
        ...                  {"scene": "kuka_cube", "size": [128, 128]},
        ...                  n=10_000, out="data/kuka", workers=8)  # doctest: +SKIP
        PosixPath('data/kuka')
    """
    _check_args(spec, n, workers, seed, shard_size)
    backend = backend if isinstance(backend, Backend) else Backend(backend)
    if backend.name == "ray":
        from sim2real.data.ray_backend import require_ray

        require_ray()
    factory = resolve_factory(source_factory)
    if isinstance(source_factory, str):
        source_ref: str = source_factory
    else:
        source_ref = f"{factory.__module__}:{factory.__qualname__}"
        _check_picklable(factory, workers)
    root = Path(out)
    manifest, todo = _prepare_output(
        root, shards.new_manifest(spec, n, seed, shard_size, source_ref), resume
    )
    if not todo and manifest["status"] == "complete":
        logger.info("%s is already complete (%d samples)", root, n)
        return root
    manifest["status"] = "incomplete"
    shards.write_manifest(root, manifest)
    ranges = shards.shard_ranges(n, shard_size)
    tasks = [(k, *ranges[k]) for k in todo]
    job = _Job(root, manifest, {**spec, "seed": seed})
    count = sum(stop - start for _, start, stop in tasks)
    logger.info("generating %d samples (%d/%d shards) in %s", count, len(tasks), len(ranges), root)
    started = time.perf_counter()
    sendable = source_factory if isinstance(source_factory, str) else factory
    try:
        with tqdm(
            total=n, initial=n - count, unit="img", desc="generate", disable=not progress
        ) as bar:
            if tasks and backend.name == "ray":
                from sim2real.data.ray_backend import run_ray

                run_ray(
                    job,
                    sendable,
                    tasks,
                    workers,
                    bar,
                    address=backend.address,
                    output=backend.ray_output,
                )
            elif tasks and workers == 1:
                job.run_here(factory, tasks, bar)
            elif tasks:
                job.run_workers(sendable, tasks, workers, bar)
    except BaseException as err:
        shards.remove_tmp(root)
        done = f"{len(manifest['shards'])}/{len(ranges)}"
        if isinstance(err, Sim2RealError):  # bad input: resuming would fail the same way
            raise
        logger.error(
            "generation stopped (%s) with %s shards complete; run the same command with "
            "--resume (resume=True) to finish %s",
            type(err).__name__,
            done,
            root,
        )
        raise
    manifest["status"] = "complete"
    shards.write_manifest(root, manifest)
    elapsed = max(time.perf_counter() - started, 1e-9)
    logger.info(
        "wrote %d samples in %.1f s (%.1f img/s) to %s", count, elapsed, count / elapsed, root
    )
    return root


def _check_picklable(factory: SourceFactory, workers: int) -> None:
    if workers == 1:
        return
    try:
        pickle.dumps(factory)
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        raise ConfigError(
            f"source_factory: expected a module-level function (it is sent to worker "
            f"processes) or 'package.module:function', got {factory!r} ({err})"
        ) from err


def _check_args(spec: Mapping[str, Any], n: int, workers: int, seed: int, shard_size: int) -> None:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"spec: expected a dict, got {type(spec).__name__}")
    try:
        json.dumps(spec)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"spec: expected JSON-serialisable values ({err})") from err
    checks = (
        ("n", n, 1),
        ("workers", workers, 1),
        ("seed", seed, 0),
        ("shard_size", shard_size, 1),
    )
    for name, value, low in checks:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{name}: expected an integer >= {low}, got {value!r}")
    if "seed" in spec and spec["seed"] != seed:
        raise ConfigError(
            f"spec['seed'] is {spec['seed']!r} but seed is {seed!r}; pass the seed once, as "
            f"`seed` (the source receives it as spec['seed'])"
        )


def _prepare_output(
    root: Path, manifest: dict[str, Any], resume: bool
) -> tuple[dict[str, Any], list[int]]:
    """Create or check ``root``; return the manifest to continue and the shards to do."""
    all_shards = list(range(manifest["num_shards"]))
    if not root.exists() or not any(root.iterdir()):
        root.mkdir(parents=True, exist_ok=True)
        return manifest, all_shards
    if not resume:
        raise ConfigError(
            f"{root} exists and is not empty; pass --resume (resume=True) to finish an "
            f"interrupted run there, or choose a new output folder"
        )
    if not (root / shards.MANIFEST_NAME).is_file():
        raise ConfigError(f"cannot resume into {root}: it has no {shards.MANIFEST_NAME}")
    old = shards.read_manifest(root)
    for key in ("n", "seed", "shard_size", "spec"):
        before = _comparable_spec(old[key]) if key == "spec" else old[key]
        difference = _difference(before, manifest[key], key)
        if difference:
            raise ConfigError(
                f"cannot resume into {root}: {difference}; use the original settings or a "
                f"new output folder"
            )
    for key in ("source", "code_version"):
        if old[key] != manifest[key]:
            logger.warning("resuming with %s %s; the manifest has %s", key, manifest[key], old[key])
    shards.remove_tmp(root)
    for path in root.glob("shard-*"):
        if path.name not in old["shards"]:
            logger.info("%s: not in the manifest (never recorded); redoing it", path.name)
            shutil.rmtree(path)
    errors = shards.verify_shards(root, old["shards"])
    for name, error in errors.items():
        logger.warning("%s; redoing it", error)
        shutil.rmtree(root / name, ignore_errors=True)
    kept = {name: record for name, record in old["shards"].items() if name not in errors}
    old["shards"] = kept
    old["code_version"] = manifest["code_version"]
    todo = [k for k in all_shards if shards.shard_name(k) not in kept]
    logger.info("resuming %s: %d shards verified and kept, %d to do", root, len(kept), len(todo))
    return old, todo


def _comparable_spec(spec: Any) -> Any:
    """An older scene source spec in today's form (robot presets resolved since), else as is."""
    if isinstance(spec, dict) and spec.get("source") == "sim2real.envs.sources:make_source":
        from sim2real.envs.sources import comparable_spec

        return comparable_spec(spec)
    return spec


def _difference(old: Any, new: Any, path: str) -> str | None:
    """First place where two JSON values differ, as ``"<path>: manifest has .., this run .."``."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            if key not in old or key not in new:
                where = "manifest" if key in old else "this run"
                return f"{path}.{key} differs: only the {where} has it"
            difference = _difference(old[key], new[key], f"{path}.{key}")
            if difference:
                return difference
        return None
    if old != new:
        return f"{path} differs: the manifest has {old!r}, this run has {new!r}"
    return None


def _worker_main(
    factory_ref: str | SourceFactory,
    source_spec: dict[str, Any],
    root: Path,
    tasks: Any,
    results: Any,
) -> None:
    """Worker process loop: render shards from ``tasks``, report to ``results``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    parent = mp.parent_process()
    pending, last = 0, time.monotonic()

    def on_progress(count: int) -> None:
        nonlocal pending, last
        pending += count
        if time.monotonic() - last > _PROGRESS_EVERY_S:
            if parent is not None and not parent.is_alive():
                raise SystemExit("parent process died")
            results.put(("progress", pending))
            pending, last = 0, time.monotonic()

    index = -1
    try:
        source = resolve_factory(factory_ref)(source_spec)
        try:
            while (task := tasks.get()) is not None:
                index, start, stop = task
                arrays, fields = render_shard(source, start, stop, on_progress)
                record = shards.write_shard(root, index, start, arrays)
                results.put(("done", index, record, fields, pending))
                pending = 0
        finally:
            source.close()
    except Exception as err:
        error = err if isinstance(err, Sim2RealError) else None
        results.put(("error", index, traceback.format_exc(), error))


class _Job:
    """One generation run: renders the tasks here or in workers and records each shard."""

    def __init__(self, root: Path, manifest: dict[str, Any], source_spec: dict[str, Any]):
        self.root, self.manifest, self.source_spec = root, manifest, source_spec

    def record(self, index: int, record: dict[str, Any], fields: dict[str, Any]) -> None:
        """Add a finished shard to the manifest (checking its fields) and rewrite it."""
        known = self.manifest["fields"]
        if known and fields != known:
            raise DataError(
                f"{shards.shard_name(index)}: the source returned fields {fields}, expected "
                f"{known} (as in the other shards); sources must return the same fields, "
                f"dtypes and shapes for every index"
            )
        known.update(fields)
        self.manifest["shards"][shards.shard_name(index)] = record
        shards.write_manifest(self.root, self.manifest)

    def run_here(self, factory: SourceFactory, tasks: list[Task], bar: tqdm) -> None:
        """Render every task in this process with one source."""
        source = factory(self.source_spec)
        try:
            for index, start, stop in tasks:
                arrays, fields = render_shard(source, start, stop, bar.update)
                self.record(index, shards.write_shard(self.root, index, start, arrays), fields)
        finally:
            source.close()

    def run_workers(
        self, factory_ref: str | SourceFactory, tasks: list[Task], workers: int, bar: tqdm
    ) -> None:
        """Render the tasks in spawned worker processes that write their own shards."""
        context = mp.get_context("spawn")
        task_queue, results = context.Queue(), context.Queue()
        count = min(workers, len(tasks))
        for task in [*tasks, *[None] * count]:
            task_queue.put(task)
        args = (factory_ref, self.source_spec, self.root, task_queue, results)
        processes = [
            context.Process(target=_worker_main, args=args, name=f"generate-{w}", daemon=True)
            for w in range(count)
        ]
        try:
            for process in processes:
                process.start()
            remaining = len(tasks)
            while remaining:
                all_exited = all(process.exitcode is not None for process in processes)
                try:
                    message = results.get(timeout=0.5)
                except queue.Empty:
                    _check_alive(processes, all_exited)
                    continue
                if message[0] == "progress":
                    bar.update(message[1])
                elif message[0] == "done":
                    _, index, record, fields, pending = message
                    bar.update(pending)
                    self.record(index, record, fields)
                    remaining -= 1
                else:
                    _, index, trace, error = message
                    where = shards.shard_name(index) if index >= 0 else "source start-up"
                    if error is not None:
                        raise type(error)(f"{where}: {error}")
                    raise RuntimeError(f"a generation worker failed on {where}:\n{trace}")
            for process in processes:
                process.join()
        finally:
            _stop(processes)
            for q in (task_queue, results):
                q.cancel_join_thread()
                q.close()


def _check_alive(processes: list[Any], all_exited: bool) -> None:
    """Raise if a worker died, or if all had exited (before the last wait) with work left."""
    for process in processes:
        if process.exitcode not in (None, 0):
            raise RuntimeError(
                f"generation worker {process.name} (pid {process.pid}) died with exit code "
                f"{process.exitcode}"
            )
    if all_exited:
        raise RuntimeError("all generation workers exited before every shard was reported")


def _stop(processes: list[Any]) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        if process.pid is not None:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
