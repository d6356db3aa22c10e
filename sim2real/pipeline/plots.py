"""The pipeline's figures (matplotlib, Agg backend): error histograms and the RL learning curve."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def error_histograms(errors: dict[str, list[float]], out: Path, bins: int = 20) -> Path:
    """Overlaid histograms of per-frame xy errors (cm), one per model, with their means.

    Example:
        >>> error_histograms({"sim-only": [3.0, 5.0], "adapted": [1.0, 2.0]},
        ...                  Path("errors.png"))  # doctest: +SKIP
    """
    plt = _pyplot()
    values = [v for errs in errors.values() for v in errs]
    top = float(np.percentile(values, 98)) if values else 1.0
    edges = np.linspace(0.0, max(top, 1e-3), bins + 1)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (name, errs), colour in zip(errors.items(), colours, strict=False):
        clipped = np.minimum(np.asarray(errs, dtype=float), edges[-1])
        mean = float(np.mean(errs)) if errs else float("nan")
        label = f"{name} (mean {mean:.1f} cm)"
        ax.hist(clipped, bins=edges, alpha=0.55, color=colour, label=label)
        ax.axvline(min(mean, edges[-1]), ls="--", lw=1, color=colour)
    ax.set(xlabel="xy error (cm, last bin holds everything beyond)", ylabel="frames")
    ax.set_title("position error on held-out target frames")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def read_monitor(path: Path) -> dict[str, np.ndarray]:
    """SB3 ``monitor.csv`` (a ``#`` JSON line, then ``r,l,t``) as arrays; empty if missing."""
    if not path.is_file():
        return {"r": np.zeros(0), "l": np.zeros(0), "t": np.zeros(0)}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    return {k: np.array([float(r[k]) for r in rows]) for k in ("r", "l", "t")}


def learning_curve(history: list[dict[str, Any]], monitor: Path, out: Path) -> Path:
    """Success rate of the periodic evaluations and the training episodes' return against
    env steps (episode returns smoothed over a window of 10)."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.6, 3.6))
    steps = [h["timesteps"] for h in history]
    ax1.plot(steps, [h["success_rate"] for h in history], marker="o")
    ax1.set(xlabel="env steps", ylabel="success rate", ylim=(-0.03, 1.03))
    ax1.set_title("evaluation episodes")
    episodes = read_monitor(monitor)
    if episodes["r"].size:
        at = np.cumsum(episodes["l"])
        window = min(10, episodes["r"].size)
        smooth = np.convolve(episodes["r"], np.ones(window) / window, mode="valid")
        ax2.plot(at, episodes["r"], ".", alpha=0.3, label="episode")
        ax2.plot(at[window - 1 :], smooth, label=f"mean of {window}")
        ax2.legend()
    ax2.set(xlabel="env steps (all envs)", ylabel="return")
    ax2.set_title("training episodes")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
