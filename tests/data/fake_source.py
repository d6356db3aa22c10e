"""A numpy sample source standing in for the simulator in the data tests.

It lives in its own module so that spawned generation workers can import it by name
(``tests.data.fake_source:make_source``; pytest puts the repository root on ``sys.path``, as
``tests`` is a package). Environment
variables inject faults without changing the spec, so a failed run can be resumed:
``FAKE_SOURCE_FAIL_AT`` raises from that sample index on, ``FAKE_SOURCE_DELAY`` sleeps that
many seconds per sample, and from sample ``FAKE_SOURCE_SLOW_FROM`` on it sleeps
``FAKE_SOURCE_SLOW_DELAY`` seconds instead (so a test can stop a run between its first shard
and its last without racing it).

Faults can also come through the spec, for workers that do not inherit this process's
environment (Ray actors): ``{"exit_once_at": i, "marker": PATH}`` kills the worker process at
sample ``i`` the first time (creating ``PATH``), ``{"fail_at": i, "unless": PATH}`` raises at
sample ``i`` until ``PATH`` exists.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np


class FakeSource:
    """Renders sample ``index`` from ``(seed, index)``: image, position, index, params."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.seed = int(spec["seed"])
        self.size = int(spec.get("size", 8))
        fail_at = os.environ.get("FAKE_SOURCE_FAIL_AT")
        self.fail_at = int(fail_at) if fail_at else None
        self.delay = float(os.environ.get("FAKE_SOURCE_DELAY", "0"))
        slow_from = os.environ.get("FAKE_SOURCE_SLOW_FROM")
        self.slow_from = int(slow_from) if slow_from else None
        self.slow_delay = float(os.environ.get("FAKE_SOURCE_SLOW_DELAY", "0"))
        self.closed = False
        self.spec = spec

    def _spec_faults(self, index: int) -> None:
        marker = self.spec.get("marker")
        if marker and index == self.spec.get("exit_once_at") and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # the worker process dies mid-shard
        unless = self.spec.get("unless")
        if unless and index == self.spec.get("fail_at") and not os.path.exists(unless):
            raise RuntimeError(f"fake source failure at sample {index}")

    def __call__(self, index: int) -> dict[str, np.ndarray | str]:
        self._spec_faults(index)
        if self.fail_at is not None and index >= self.fail_at:
            raise RuntimeError(f"fake source failure at sample {index}")
        if self.slow_from is not None and index >= self.slow_from:
            time.sleep(self.slow_delay)
        elif self.delay:
            time.sleep(self.delay)
        rng = np.random.default_rng([self.seed, index])
        return {
            "image": rng.integers(0, 256, (self.size, self.size, 3), dtype=np.uint8),
            "position": rng.normal(size=3).astype(np.float32),
            "index": np.int64(index),
            "params": json.dumps({"index": index, "pad": "é" * (index % 5)}),
        }

    def close(self) -> None:
        self.closed = True


def make_source(spec: dict[str, Any]) -> FakeSource:
    """The source factory handed to ``generate_dataset``."""
    return FakeSource(spec)


class ShapeChangingSource(FakeSource):
    """Returns a differently shaped image from sample 3 on (an inconsistent source)."""

    def __call__(self, index: int) -> dict[str, np.ndarray | str]:
        sample = super().__call__(index)
        if index >= 3:
            sample["image"] = sample["image"][:-1]
        return sample


def make_shape_changing_source(spec: dict[str, Any]) -> ShapeChangingSource:
    """Factory of :class:`ShapeChangingSource`."""
    return ShapeChangingSource(spec)
