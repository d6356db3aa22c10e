"""Independent runs of a sweep (a transfer curve's strategy x k x repeat, a benchmark's arm x
seed), run here one after the other or as Ray tasks on a cluster.

The caller keeps its journal as the single source of truth: it asks only for the runs its
journal lacks and records each result as it arrives (in this process, in completion order),
so a killed sweep resumes on either backend and mixes nothing.

Example:
    >>> def square(shared, x):
    ...     return shared * x * x
    >>> sorted(run_tasks(square, [(1,), (2,), (3,)], shared=10))
    [(0, 10), (1, 40), (2, 90)]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sim2real.errors import ConfigError

logger = logging.getLogger(__name__)

Backend = Literal["local", "ray"]


@dataclass(frozen=True)
class SweepBackend:
    """Where a sweep's runs go: ``local`` (this process) or ``ray`` (tasks on a cluster,
    ``address`` ``None`` = a local one), each run declaring ``num_cpus``/``num_gpus``."""

    name: Backend = "local"
    address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in ("local", "ray"):
            raise ConfigError(f"backend {self.name!r}: expected 'local' or 'ray'")
        if not self.num_cpus > 0 or self.num_gpus < 0:
            raise ConfigError(
                f"num_cpus={self.num_cpus!r}, num_gpus={self.num_gpus!r}: expected num_cpus > 0 "
                "and num_gpus >= 0"
            )


def run_tasks(
    fn: Callable[..., Any],
    args: Sequence[tuple[Any, ...]],
    *,
    shared: Any = None,
    backend: SweepBackend | None = None,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(i, fn(shared, *args[i]))`` for every ``i``, as each run finishes.

    ``shared`` (models, frames) is sent to the cluster once, not with every task. On Ray,
    ``fn`` must be importable by the workers (a module-level function) and a failed run
    raises here after the other in-flight runs are cancelled; results already yielded stay
    with the caller.
    """
    backend = backend or SweepBackend()
    if backend.name == "local":
        for i, a in enumerate(args):
            yield i, fn(shared, *a)
        return
    from sim2real.data.ray_backend import require_ray

    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"address": backend.address} if backend.address else {}
        ray.init(**kwargs, include_dashboard=False, log_to_driver=False, logging_level="error")
    remote = ray.remote(num_cpus=backend.num_cpus, num_gpus=backend.num_gpus)(fn)
    shared_ref = ray.put(shared)
    refs = {remote.remote(shared_ref, *a): i for i, a in enumerate(args)}
    logger.info("sweep: %d runs submitted to Ray", len(refs))
    try:
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            i = refs.pop(done[0])
            yield i, ray.get(done[0])
    finally:
        for ref in refs:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
