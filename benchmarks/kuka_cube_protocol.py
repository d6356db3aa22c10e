"""The honest protocol both kuka_cube benchmarks share (issue 29).

- **Seeds.** ``--seeds 0,1,2`` trains (or adapts) once per training seed; every figure is
  reported as the mean and spread over the seeds, never one run.
- **Judge vs report frames.** Before anything is trained, the 12 labelled frames are split
  by a fixed permutation (:data:`SPLIT_SEED`, independent of every training seed) into
  *judge* frames, on which design choices are made, and *report* frames, which only report.
  Both lists are printed first. A figure on judge frames (or on all 12) is marked as coming
  from frames a choice was made on. The transfer benchmark can instead rely on nested
  cross-validation (``strategy=auto``: the inner folds choose, the outer folds measure).
- **Unlabelled frames.** They are used only as a user could use them (AdaBN statistics,
  predictions). The benchmarks write their predictions in the ``sim2real predict`` CSV
  format for the sim-only and the adapted models, and never score them.

Example:
    >>> parse_seeds("0,1,2")
    [0, 1, 2]
    >>> judge, report = judge_split([f"f{i}.png" for i in range(12)], 6)
    >>> len(judge), len(report), sorted(judge + report) == sorted(f"f{i}.png" for i in range(12))
    (6, 6, True)
    >>> spread([1.0, 2.0, 3.0])
    '2.00 +- 0.82 (1.00..3.00, 3 seeds)'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Where the real kuka_cube frames live in a checkout next to ``shared/``.
DEFAULT_REAL = "../shared/real/kuka_cube"
#: Seed of the judge/report permutation: fixed, so no training seed or result moves it.
SPLIT_SEED = 29
JUDGE_NOTE = "judge frames: a choice was made on them (optimistic)"
REPORT_NOTE = "report frames: no choice was made on them"


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (distinct non-negative integers)."""
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError as exc:
        raise SystemExit(
            f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2"
        ) from exc
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise SystemExit(f"--seeds {text!r}: expected distinct integers >= 0, e.g. 0,1,2")
    return seeds


def judge_split(sources: Sequence[str], n_judge: int) -> tuple[list[str], list[str]]:
    """``(judge, report)`` file names: a fixed permutation of the sorted names, first
    ``n_judge`` judge. Depends on the names only (not on any seed of a run)."""
    names = sorted(sources)
    if not 0 <= n_judge <= len(names):
        raise SystemExit(f"--judge {n_judge}: expected 0..{len(names)} (labelled frames)")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(names))
    picked = [names[i] for i in order]
    return sorted(picked[:n_judge]), sorted(picked[n_judge:])


def spread(values: Sequence[float]) -> str:
    """``mean +- std (min..max, n seeds)`` of per-seed figures."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return "n/a"
    return f"{v.mean():.2f} +- {v.std():.2f} ({v.min():.2f}..{v.max():.2f}, {v.size} seeds)"


def print_protocol(real: str | Path, judge: list[str], report: list[str], seeds: list[int]) -> None:
    """State the protocol before any training."""
    print(f"protocol (fixed before training; split seed {SPLIT_SEED}, real frames {real}):")
    print(
        f"  training seeds     {','.join(str(s) for s in seeds)} (figures: mean +- std over them)"
    )
    print(f"  judge  ({len(judge):2d} frames) {' '.join(judge) or '-'}")
    print(f"  report ({len(report):2d} frames) {' '.join(report) or '-'}")
    print("  unlabelled frames: AdaBN statistics and predictions only, never scored here\n")


def subset_mean(errors: dict[str, float], names: Sequence[str]) -> float:
    """Mean xy error (cm) over ``names`` (NaN when empty)."""
    vals = [errors[n] for n in names]
    return float(np.mean(vals)) if vals else float("nan")


def labelled_errors(
    encoder: object, real: str | Path, batchnorm: str | None = None
) -> dict[str, float]:
    """``{file: xy error cm}`` of a loaded encoder on the labelled real frames, by its card's
    route, with BatchNorm statistics ``"stored"`` or ``"frame"`` (default: the card's)."""
    from sim2real.data.real import open_real
    from sim2real.perception import geometry

    frames = open_real(real).labelled()
    images = np.stack([f.image for f in frames])
    out = encoder.predict(images, batchnorm=batchnorm)  # type: ignore[attr-defined]
    routes = geometry.route_positions(out, encoder.card)  # type: ignore[attr-defined]
    pred = routes[encoder.card.get("position_route") or next(iter(routes))]  # type: ignore[attr-defined]
    xy = geometry.position_errors_cm(pred, frames.positions)["xy"]
    return {name: float(e) for name, e in zip(frames.sources, xy, strict=True)}


def require_real(real: str | Path) -> Path:
    """``real`` as a path with a ``labelled/`` folder, else a clear exit."""
    path = Path(real)
    if not (path / "labelled").is_dir():
        raise SystemExit(
            f"--real {real}: expected the kuka_cube folder with labelled/ (and unlabelled/); "
            f"it is in the shared data ({DEFAULT_REAL} from a checkout)"
        )
    return path
