"""Per-stage durations of the control loop's ticks (:class:`LatencyStats`), as percentiles."""

from __future__ import annotations

from collections import deque

import numpy as np

STAGES = ("capture", "preprocess", "inference", "send", "total")
_KEYS = ("mean_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms")


class LatencyStats:
    """Per-stage durations of the control ticks, summarised as percentiles.

    Args:
        stages: stage names.
        window: keep only the last ``window`` durations per stage (bounded memory on long
            runs); ``None`` keeps all.

    Example:
        >>> stats = LatencyStats()
        >>> for ms in (1.0, 2.0, 3.0):
        ...     stats.add("inference", ms / 1000)
        >>> stats.summary()["inference"]["p50_ms"]
        2.0
    """

    def __init__(self, stages: tuple[str, ...] = STAGES, window: int | None = 100_000) -> None:
        self.stages = stages
        self._seconds = {stage: deque[float](maxlen=window) for stage in stages}

    def add(self, stage: str, seconds: float) -> None:
        """Record one duration of ``stage`` (seconds)."""
        self._seconds[stage].append(seconds)

    def seconds(self, stage: str) -> np.ndarray:
        """All recorded durations of ``stage`` in seconds, ``float64`` ``(n,)``."""
        return np.asarray(self._seconds[stage], dtype=np.float64)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{stage: {"n", "mean_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms"}}``.

        Stages with no samples have ``n == 0`` and ``nan`` statistics.
        """
        out: dict[str, dict[str, float]] = {}
        for stage in self.stages:
            ms = self.seconds(stage) * 1000.0
            if ms.size:
                p50, p95, p99 = np.percentile(ms, [50, 95, 99])
                values = [ms.mean(), p50, p95, p99, ms.max()]
            else:
                values = [float("nan")] * 5
            out[stage] = {"n": int(ms.size)}
            out[stage].update((key, float(v)) for key, v in zip(_KEYS, values, strict=True))
        return out

    def format(self) -> str:
        """A small text table of :meth:`summary` (milliseconds)."""
        lines = [f"{'stage':<11}{'n':>7}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}  ms"]
        for stage, s in self.summary().items():
            lines.append(
                f"{stage:<11}{s['n']:>7}{s['p50_ms']:>9.2f}{s['p95_ms']:>9.2f}"
                f"{s['p99_ms']:>9.2f}{s['max_ms']:>9.2f}"
            )
        return "\n".join(lines)
