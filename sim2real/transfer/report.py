"""The transfer report: Markdown tables and PNG plots of a k-shot curve (``curve.json``).

Per entry it states the start (``k = 0``, else ``k = 1``), the slope (change of the mean
error per doubling of ``k``, least squares over ``k >= 1``), the best mean error and its
``k``, and flags negative transfer: a mean error worse than the better real-only baseline
at the same ``k``, or worse than zero-shot.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ZERO_SHOT = "zero-shot"
BASELINE_KIND = "baseline"
#: Differences below the report's precision (cm) are not flagged: a run that kept its
#: starting model can differ from zero-shot in float rounding (another batch composition).
TOLERANCE_CM = 0.005


def summary(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{entry: {"start", "start_k", "slope", "best", "best_k", "flags"}}`` for run entries.

    Negative transfer at ``k``: the mean error is above the zero-shot model's on the same
    held-out frames, or above the better real-only baseline's on the same subsets.

    Example:
        >>> summary(json.loads(Path("runs/curve/curve.json").read_text()))  # doctest: +SKIP
    """
    entries = results["entries"]
    baselines = [e for e in entries.values() if e["kind"] == BASELINE_KIND and not e["skipped"]]
    out: dict[str, dict[str, Any]] = {}
    for name, entry in entries.items():
        points = entry["points"]
        if entry["skipped"] or not points:
            continue
        start_k = "0" if "0" in points else next(iter(points))
        best_k = min(points, key=lambda k: points[k]["mean"])
        worse_zero, worse_real = [], []
        if entry["kind"] != BASELINE_KIND and name != ZERO_SHOT:
            for k, p in points.items():
                if p["mean"] > p["zero_shot"] + TOLERANCE_CM:
                    worse_zero.append(f"{k} ({p['mean']:.2f} > {p['zero_shot']:.2f})")
                real_only = [b["points"][k]["mean"] for b in baselines if k in b["points"]]
                if real_only and p["mean"] > min(real_only) + TOLERANCE_CM:
                    worse_real.append(f"{k} ({p['mean']:.2f} > {min(real_only):.2f})")
        flags = []
        if worse_zero:
            flags.append("worse than zero-shot at k=" + ", ".join(worse_zero))
        if worse_real:
            flags.append("worse than real-only at k=" + ", ".join(worse_real))
        out[name] = {
            "start": points[start_k]["mean"],
            "start_k": start_k,
            "slope": _slope(points),
            "best": points[best_k]["mean"],
            "best_k": best_k,
            "flags": flags,
        }
    return out


def _slope(points: dict[str, dict[str, Any]]) -> float | None:
    pairs = [(math.log2(p["k_train"]), p["mean"]) for p in points.values() if p["k_train"] >= 1]
    if len({x for x, _ in pairs}) < 2:
        return None
    xs, ys = zip(*pairs, strict=True)
    return float(np.polyfit(xs, ys, 1)[0])


def _ks(results: dict[str, Any]) -> list[str]:
    ks = [str(k) for k in results["meta"]["ks"]]
    seen = {k for e in results["entries"].values() for k in e["points"]}
    return [k for k in ks if k in seen]


def _k_label(results: dict[str, Any], k: str) -> str:
    if k != "all":
        return f"k={k}"
    sizes = [
        e["points"]["all"]["k_train"] for e in results["entries"].values() if "all" in e["points"]
    ]
    return f"all (~{sizes[0]})" if sizes else "all"


def markdown(results: dict[str, Any]) -> str:
    """The report text (see the module docstring)."""
    meta, entries = results["meta"], results["entries"]
    ks, rows = _ks(results), summary(results)
    folds = "leave-one-out" if meta["outer_folds"] == 0 else f"{meta['outer_folds']}-fold"
    lines = [
        "# Transfer report: k-shot learning curve",
        "",
        f"- model: `{meta['model']}` (backbone {meta['backbone'].get('name')}, position route "
        f"{meta['position_route']})",
        f"- real frames: `{meta['real']}`: {meta['n_labelled']} labelled, "
        f"{meta['n_unlabelled']} unlabelled (adaptation only, never scored)",
        f"- simulated data: `{meta['sim']}`",
        f"- {meta['repeats']} random subsets per k (the same for every entry), scored on the "
        f"labelled frames left out; k=all: {folds} cross-validation over the labelled frames",
        "- epochs of each run chosen by cross-validation over its own k training frames "
        "(0 = the run kept its starting model); k=1 runs cannot cross-validate and train "
        f"{meta['config'].get('fallback_epochs') or meta['config']['epochs']} epochs",
        "- error: Euclidean xy distance in cm; cells: mean over runs (std over runs)",
        "- negative transfer: mean error above the zero-shot model's on the same held-out "
        "frames, or above the better real-only baseline's on the same subsets",
        f"- time: {meta['seconds']:.0f} s",
        "",
        "## Mean xy error (cm)",
        "",
        "| entry | " + " | ".join(_k_label(results, k) for k in ks) + " |",
        "|---|" + "---:|" * len(ks),
    ]
    for name, entry in entries.items():
        if entry["skipped"]:
            continue
        cells = []
        for k in ks:
            p = entry["points"].get(k)
            cells.append(f"{p['mean']:.2f} ({p['std']:.2f})" if p else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Summary", ""]
    lines += ["| entry | start | slope (cm per doubling of k) | best | negative transfer |"]
    lines += ["|---|---:|---:|---:|---|"]
    for name, row in rows.items():
        slope = f"{row['slope']:+.2f}" if row["slope"] is not None else "n/a"
        flags = "; ".join(row["flags"]) or "none"
        lines.append(
            f"| {name} | {row['start']:.2f} (k={row['start_k']}) | {slope} | "
            f"{row['best']:.2f} (k={row['best_k']}) | {flags} |"
        )
    ranked = [(r["best"], n, r["best_k"]) for n, r in rows.items() if n != ZERO_SHOT]
    if ranked:
        best, name, k = min(ranked)
        lines += ["", f"**Best: {name} at k={k}: {best:.2f} cm mean xy error.**"]
    lines += _selection_lines(results)
    lines += object_lines(results)
    skipped = [(n, e["skipped"]) for n, e in entries.items() if e["skipped"]]
    if skipped:
        lines += ["", "## Not measured", ""] + [f"- {n}: {why}" for n, why in skipped]
    lines += ["", "## Full table", ""]
    lines += ["| entry | k | training frames | runs | mean | std | median | p90 | epochs |"]
    lines += ["|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, entry in entries.items():
        for k, p in entry["points"].items():
            epochs = f"{p['epochs']:.1f}" if p["epochs"] is not None else ""
            lines.append(
                f"| {name} | {k} | {p['k_train']} | {p['runs']} | {p['mean']:.2f} | "
                f"{p['std']:.2f} | {p['median']:.2f} | {p['p90']:.2f} | {epochs} |"
            )
    lines += ["", "![learning curve](curve.png)", "", "![best per entry](best.png)", ""]
    return "\n".join(lines)


def _selection_lines(results: dict[str, Any]) -> list[str]:
    """What ``auto`` chose at each ``k`` and why its figures are honest."""
    auto = results["entries"].get("auto")
    if not auto or auto["skipped"] or not auto["points"]:
        return []
    cands = results["meta"]["config"].get("candidates", [])
    lines = [
        "",
        "## Nested selection (auto)",
        "",
        f"Candidates: {', '.join(cands)}. In every run the candidates were compared by "
        f"{results['meta']['config'].get('cv_folds')}-fold cross-validation (0 = leave-one-out) "
        "over that run's own training frames (inner folds); a candidate that trains on labels "
        "was taken only when its inner mean beat the best label-free one's by more than "
        f"{results['meta']['config'].get('select_margin_cm', 0.0):.2f} cm plus "
        f"{results['meta']['config'].get('select_se', 0.0):g} standard errors of the paired "
        "per-frame gain. Its figures above "
        "are measured on the frames the run left out (outer folds), which took no part in "
        "the choice.",
        "",
        "| k | chosen (runs) | inner-CV mean per candidate, cm (the why) | auto mean | "
        "zero-shot on the same frames |",
        "|---|---|---|---:|---:|",
    ]
    for k, p in auto["points"].items():
        chosen = ", ".join(f"{c} ({m})" for c, m in sorted(p.get("chosen", {}).items()))
        inner = p.get("inner_cv_xy_cm", {})
        why = ", ".join(
            f"{c} {v:.2f}" if v is not None else f"{c} skipped" for c, v in inner.items()
        )
        lines.append(
            f"| {k} | {chosen or '-'} | {why or 'no CV (fewer than 2 frames)'} | "
            f"{p['mean']:.2f} | {p['zero_shot']:.2f} |"
        )
    return lines


def plot(results: dict[str, Any], out: Path) -> list[Path]:
    """Write ``curve.png`` (mean and p90 against k) and ``best.png``; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks, entries, colour = _ks(results), results["entries"], _colours(results)
    x = {k: i for i, k in enumerate(ks)}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, stat in zip(axes, ("mean", "p90"), strict=True):
        for name, entry in entries.items():
            pts = [(x[k], p) for k, p in entry["points"].items() if k in x]
            if entry["skipped"] or not pts:
                continue
            if len(pts) == 1 and pts[0][0] == 0:  # k = 0 only: a reference level
                ax.axhline(pts[0][1][stat], ls=":", lw=1.5, label=name, color=colour[name])
                continue
            xs = [i for i, _ in pts]
            ys = [p[stat] for _, p in pts]
            err = [p["std"] for _, p in pts] if stat == "mean" else None
            style = "--" if entry["kind"] == BASELINE_KIND else "-"
            ax.errorbar(
                xs, ys, yerr=err, ls=style, marker="o", capsize=3, label=name, color=colour[name]
            )
        ax.set_xticks(range(len(ks)), [_k_label(results, k) for k in ks])
        ax.set_xlabel("labelled real frames")
        ax.set_ylabel(f"{stat} xy error (cm)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"k-shot transfer: {Path(results['meta']['model']).name}")
    fig.tight_layout()
    paths = [out / "curve.png", out / "best.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    rows = summary(results)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    names = list(rows)
    ax.barh(names, [rows[n]["best"] for n in names], color=[colour[n] for n in names])
    for i, n in enumerate(names):
        ax.text(rows[n]["best"], i, f" {rows[n]['best']:.2f} (k={rows[n]['best_k']})", va="center")
    ax.invert_yaxis()
    ax.set_xlabel("best mean xy error (cm)")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths


def _colours(results: dict[str, Any]) -> dict[str, str]:
    names = [n for n in results["entries"] if n != ZERO_SHOT]
    return {ZERO_SHOT: "black", **{n: f"C{i % 10}" for i, n in enumerate(names)}}


def object_lines(results: dict[str, Any]) -> list[str]:
    """The report's per-object table (a named-target encoder on several objects): per entry
    and k, each object's mean xy error over runs and the mean over objects; none otherwise.

    Example:
        >>> point = {"objects": {"mug": {"mean": 2.0}, "duck": {"mean": 4.0}},
        ...          "mean_over_objects": 3.0}
        >>> res = {"entries": {"probe": {"skipped": None, "points": {"2": point}}}}
        >>> object_lines(res)[-1]
        '| probe | 2 | 2.00 | 4.00 | 3.00 |'
    """
    names: list[str] = []
    for entry in results["entries"].values():
        for p in entry["points"].values():
            names += [n for n in p.get("objects", {}) if n not in names]
    if not names:
        return []
    lines = ["", "## Per object (mean xy error, cm)", ""]
    lines += ["| entry | k | " + " | ".join(names) + " | mean over objects |"]
    lines += ["|---|---|" + "---:|" * (len(names) + 1)]
    for name, entry in results["entries"].items():
        if entry["skipped"]:
            continue
        for k, p in entry["points"].items():
            objects = p.get("objects") or {}
            cells = [f"{objects[n]['mean']:.2f}" if objects.get(n) else "" for n in names]
            mean = p.get("mean_over_objects")
            cells.append(f"{mean:.2f}" if mean is not None else "")
            lines.append(f"| {name} | {k} | " + " | ".join(cells) + " |")
    return lines


def write_report(results: dict[str, Any], out: Path) -> Path:
    """Write the plots and ``report.md`` into ``out``; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    plot(results, out)
    path = out / "report.md"
    path.write_text(markdown(results))
    logger.info("transfer report written to %s", path)
    return path
