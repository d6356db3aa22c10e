"""Names of a package loaded on first use (PEP 562), so importing the package stays cheap.

``sim2real.perception`` and ``sim2real.transfer`` list where each public name is defined;
``from sim2real.perception import Encoder`` then imports torch only when it is asked for,
and ``sim2real --help`` starts without it.

Example:
    >>> namespace = {"__name__": "demo"}
    >>> getter = lazy_getattr(namespace, {"sqrt": "math"})
    >>> getter("sqrt")(9.0), "sqrt" in namespace
    (3.0, True)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(namespace: dict[str, Any], sources: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``name`` from ``sources[name]`` and caches it."""

    def __getattr__(name: str) -> Any:
        source = sources.get(name)
        if source is None:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        namespace[name] = value
        return value

    return __getattr__
