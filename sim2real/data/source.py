"""What a sample source is, how a factory reference resolves, and rendering one shard.

The lowest layer of generation: :mod:`sim2real.data.generate` (local workers) and
:mod:`sim2real.data.ray_backend` (Ray actors) both render shards with :func:`render_shard`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from sim2real.data import shards
from sim2real.errors import ConfigError, DataError


class SampleSource(Protocol):
    """Renders the samples of one dataset; one instance per worker process."""

    def __call__(self, index: int) -> Mapping[str, np.ndarray | str]:
        """Sample ``index``: the same fields, dtypes and shapes for every index."""
        ...

    def close(self) -> None:
        """Release the simulator."""
        ...


SourceFactory = Callable[[dict[str, Any]], SampleSource]


def resolve_factory(factory: str | SourceFactory) -> SourceFactory:
    """Turn ``"package.module:function"`` into the function; pass callables through.

    Example:
        >>> resolve_factory("json:loads")  # doctest: +ELLIPSIS
        <function loads at ...>
    """
    if callable(factory):
        return factory
    if not isinstance(factory, str) or factory.count(":") != 1:
        raise ConfigError(
            f"source_factory: expected a callable or 'package.module:function', got {factory!r}"
        )
    module_name, attr = factory.split(":")
    try:
        function = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"source_factory {factory!r}: cannot import it ({err})") from err
    if not callable(function):
        raise ConfigError(f"source_factory {factory!r}: expected a callable, got {function!r}")
    return function


def render_shard(
    source: SampleSource, start: int, stop: int, on_progress: Callable[[int], None]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Render samples ``[start, stop)`` into one stacked array per field."""
    arrays: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    for index in range(start, stop):
        sample = source(index)
        if not isinstance(sample, Mapping):
            raise DataError(f"sample {index}: expected a dict of fields, got {type(sample)}")
        infos = {name: shards.field_info(name, value) for name, value in sample.items()}
        if index == start:
            fields = infos
            arrays = {
                name: []
                if info["dtype"] == shards.STR_DTYPE
                else np.empty((stop - start, *info["shape"]), dtype=info["dtype"])
                for name, info in infos.items()
            }
        elif infos != fields:
            raise DataError(
                f"sample {index}: fields {infos}, expected {fields} (as sample {start}); "
                f"sources must return the same fields, dtypes and shapes for every index"
            )
        for name, value in sample.items():
            if fields[name]["dtype"] == shards.STR_DTYPE:
                arrays[name].append(value.encode("utf-8"))
            else:
                arrays[name][index - start] = value
        on_progress(1)
    for name, info in fields.items():
        if info["dtype"] == shards.STR_DTYPE:
            width = max([1, *map(len, arrays[name])])
            arrays[name] = np.array(arrays[name], dtype=f"S{width}")
    return arrays, fields
