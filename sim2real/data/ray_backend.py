"""Dataset generation on a Ray cluster: one actor per worker (one simulator each), one task
per shard.

Sample ``i`` depends only on ``(seed, i)`` and a shard is written by the same
:func:`sim2real.data.shards.write_shard` as the local backend, so the dataset is
byte-identical to ``backend="local"``. Where the shards are written:

- ``output="driver"`` (the default; ``Backend("ray", ray_output=...)`` chooses): the actors
  return the rendered arrays through Ray's object store and the driver writes them. Works on
  any cluster, with or without a shared filesystem; a shard can never end up on a node the
  driver cannot read.
- ``output="shared"``: the actors write their shards into the output folder themselves (it
  must be a path every node sees, e.g. NFS); the driver then checks that every shard it is
  told of is there and complete, and stops with a :class:`DataError` if not (never a hole).

A task whose actor dies (a killed worker, a lost node) is retried by Ray itself
(``max_restarts``/``max_task_retries``); Ctrl-C cancels the tasks and leaves only complete
shards, as the local backend does.

Example:
    >>> from sim2real.data.generate import Backend, generate_dataset
    >>> generate_dataset("sim2real.envs.sources:make_source", {"scene": "kuka_cube"},
    ...                  n=10_000, out="runs/kuka", workers=14,
    ...                  backend=Backend("ray", address="auto"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Literal

from sim2real.data import shards
from sim2real.data.source import render_shard, resolve_factory
from sim2real.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

RayOutput = Literal["driver", "shared"]
#: how often Ray restarts a dead actor and retries its task before the run fails
RETRIES = 3


def require_ray() -> Any:
    """The ``ray`` module, or a :class:`ConfigError` naming the extra to install."""
    try:
        import ray
    except ImportError as err:
        raise ConfigError(
            "backend 'ray' needs Ray, which is not installed: pip install 'sim2real[ray]' "
            "(or use --backend local)"
        ) from err
    return ray


class ShardRenderer:
    """A Ray actor's state: one sample source (one PyBullet client) for many shards."""

    def __init__(self, factory_ref: Any, source_spec: dict[str, Any]) -> None:
        self.source = resolve_factory(factory_ref)(source_spec)

    def render(
        self, index: int, start: int, stop: int, root: str | None
    ) -> tuple[int, dict[str, Any] | None, dict[str, Any], dict[str, Any] | None]:
        """Render shard ``index``; write it under ``root`` when given, else return it."""
        arrays, fields = render_shard(self.source, start, stop, lambda count: None)
        if root is None:
            return index, None, fields, arrays
        folder = Path(root) / shards.shard_name(index)
        if folder.exists():  # a retried task whose first attempt wrote it and then died
            shutil.rmtree(folder)
        return index, shards.write_shard(Path(root), index, start, arrays), fields, None


def run_ray(
    job: Any,
    factory_ref: Any,
    tasks: list[tuple[int, int, int]],
    workers: int,
    bar: Any,
    *,
    address: str | None = None,
    output: RayOutput = "driver",
) -> None:
    """Render ``tasks`` on Ray actors and record each finished shard in ``job``.

    Args:
        job: the generation run (:class:`sim2real.data.generate._Job`): its ``root`` and
            ``record(index, record, fields)``.
        factory_ref: the source factory (a ``"module:function"`` string travels best).
        tasks: ``(shard index, first sample, stop)`` triples.
        workers: actors to start (each takes one CPU).
        bar: a tqdm bar, advanced by each completed shard's samples.
        address: an existing cluster (``"auto"`` or ``HOST:PORT``); ``None`` starts a local
            one with ``workers`` CPUs, unless Ray is already initialised in this process.
        output: ``"driver"`` or ``"shared"`` (module docstring).
    """
    if output not in ("driver", "shared"):
        raise ConfigError(f"ray output {output!r}: expected 'driver' or 'shared'")
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"address": address} if address else {"num_cpus": workers}
        ray.init(**kwargs, include_dashboard=False, log_to_driver=False, logging_level="error")
        started = True
    actor_class = ray.remote(num_cpus=1, max_restarts=RETRIES, max_task_retries=RETRIES)(
        ShardRenderer
    )
    root = str(job.root.resolve()) if output == "shared" else None
    actors = [
        actor_class.remote(factory_ref, job.source_spec) for _ in range(min(workers, len(tasks)))
    ]
    starts = {index: start for index, start, _ in tasks}
    pending = list(reversed(tasks))
    in_flight: dict[Any, Any] = {}
    try:
        for actor in actors:
            if pending:
                in_flight[actor.render.remote(*pending.pop(), root)] = actor
        while in_flight:
            done, _ = ray.wait(list(in_flight), num_returns=1)
            actor = in_flight.pop(done[0])
            index, record, fields, arrays = ray.get(done[0])
            if arrays is not None:
                record = shards.write_shard(job.root, index, starts[index], arrays)
            else:
                check_shared_shard(job.root, index, record)
            job.record(index, record, fields)
            bar.update(record["stop"] - record["start"])
            if pending:
                in_flight[actor.render.remote(*pending.pop(), root)] = actor
    finally:
        for ref in in_flight:
            ray.cancel(ref, force=True)
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()


def check_shared_shard(root: Path, index: int, record: dict[str, Any] | None) -> None:
    """A shard a worker wrote must be visible to the driver, whole: else a DataError."""
    name = shards.shard_name(index)
    if record is None or not (root / name).is_dir():
        raise DataError(
            f"{root / name}: a Ray worker wrote this shard but the driver cannot see it; the "
            f"output folder must be on a filesystem every node shares, or use the default "
            f"output 'driver' (shards sent back to the driver)"
        )
    shards.check_shard(root, name, record, hash_files=False)
