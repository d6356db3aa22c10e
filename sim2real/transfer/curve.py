"""k-shot transfer curve: error against the number of labelled real frames, per strategy.

For every strategy and for the baselines, ``k`` labelled frames are drawn at random
(``repeats`` times, the same subsets for every strategy) and the adapted model is scored on
the labelled frames left out; ``k = "all"`` is an outer k-fold cross-validation. Inside each
run the epoch count is chosen by cross-validation over the ``k`` training frames only, and
unlabelled frames are used for adaptation, never for scoring. Errors are Euclidean xy
distances in centimetres (z is fixed by the table).

Entries: ``zero-shot`` (the simulation-trained model as is), each strategy (its ``k = 0``
point is the model before any labelled training: zero-shot, after AdaBN, or DANN without
labels), ``real-only (ImageNet)`` and ``real-only (scratch)`` (the same architecture trained
on the ``k`` real frames only, ``full`` strategy). :func:`run_curve` writes ``curve.json``,
``curve.png``, ``best.png`` and ``report.md`` (see :mod:`sim2real.transfer.report`).

A curve takes tens of minutes to hours, so every finished run is appended to
``runs.jsonl`` in the output folder as it ends (one JSON line, flushed and fsynced). Run the
same command again after a kill and it resumes: runs already in the journal are read back,
not trained again. The journal's first line records what the runs depend on (model weights,
frames, settings, seed); a rerun with anything different stops with a ``ConfigError`` rather
than mixing the two.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sim2real.atomic import write_text
from sim2real.data.real import open_real
from sim2real.errors import CheckpointError, ConfigError, DataError
from sim2real.perception.encoder import Encoder
from sim2real.sweep import SweepBackend, run_tasks
from sim2real.transfer.adabn import has_batchnorm
from sim2real.transfer.config import CurveConfig, FinetuneConfig
from sim2real.transfer.journal import Journal
from sim2real.transfer.objects import labelled_frames, object_errors, object_point
from sim2real.transfer.select import AUTO, adapt, unlabelled_plan
from sim2real.transfer.strategies import (
    LABELLED_STRATEGIES,
    kfold,
    open_unlabelled,
    parse_strategy,
)
from sim2real.transfer.training import FrameSet, as_frame_set, held_out_errors

logger = logging.getLogger(__name__)

#: One finished run: training indices, held-out errors (cm), epochs, for ``auto`` its
#: selection ``{"chosen": name, "inner_cv_xy_cm": {candidate: mean or None (skipped)}}``,
#: and for a named-target encoder the held-out errors per object (NaN where a frame has no
#: row for it; else None). A frame's error is then its mean over the objects it labels.
Run = tuple[np.ndarray, np.ndarray, int | None, dict[str, Any] | None, dict[str, Any] | None]

JOURNAL = "runs.jsonl"
ZERO_SHOT = "zero-shot"
IMAGENET = "real-only (ImageNet)"
SCRATCH = "real-only (scratch)"
BASELINE_LR = 1e-3


@dataclass
class _Setup:
    encoder: Encoder
    labelled: FrameSet
    unlabelled: FrameSet | None
    sim: str | None
    cfg: FinetuneConfig
    outer_folds: int
    seed: int
    journal: Journal | None = None


def run_curve(
    model_path: str | Path,
    real_dir: str | Path,
    out_dir: str | Path,
    config: CurveConfig | None = None,
    *,
    unlabelled_dir: str | Path | None = None,
    sim_dir: str | Path | None = None,
    progress: bool = True,
    backend: SweepBackend | None = None,
    **overrides: Any,
) -> Path:
    """Measure the k-shot transfer curve and write the report; returns ``out_dir/report.md``.

    Args:
        model_path: the simulation-trained encoder folder.
        real_dir: real frames with ``labels.csv`` (at least 2 labelled); its unlabelled
            frames are the unlabelled set unless ``unlabelled_dir`` is given.
        out_dir: where ``report.md``, ``curve.json`` and the PNG plots go.
        config: the curve's settings (:class:`~sim2real.transfer.config.CurveConfig`: ``ks``,
            ``repeats``, ``strategies``, ``baselines``, ``outer_folds``, ``seed``).
        unlabelled_dir: unlabelled real frames for AdaBN / DANN.
        sim_dir: simulated dataset (DANN, and ``sim_batch_size`` mixing).
        progress: a tqdm bar over the runs.
        backend: where the runs go (:class:`~sim2real.sweep.SweepBackend`: here, or one Ray
            task per run with its declared CPUs/GPUs); the journal is kept here either way.
        **overrides: :class:`~sim2real.transfer.config.CurveConfig` fields (on top of
            ``config``) and :class:`~sim2real.transfer.config.FinetuneConfig` fields for every
            run.

    Raises:
        ConfigError: bad ``ks``, ``repeats``, strategy or setting, or an unknown name.
        DataError: fewer than 2 labelled frames.

    Example:
        >>> run_curve("runs/kuka/encoder", "real/kuka_cube", "runs/kuka/curve",
        ...           sim_dir="data/kuka", repeats=3)  # doctest: +SKIP
        PosixPath('runs/kuka/curve/report.md')
    """
    from sim2real.transfer.report import write_report

    curve, cfg = curve_settings(config, overrides)
    ks, repeats, outer_folds, seed = curve.ks, curve.repeats, curve.outer_folds, curve.seed
    plans = {s: unlabelled_plan(s, cfg) for s in curve.strategies}
    encoder = Encoder.load(model_path, device=cfg.device)
    real = open_real(real_dir)
    labelled = as_frame_set(labelled_frames(real, encoder), encoder, "labelled real", labels=True)
    if labelled is None or len(labelled) < 2:
        raise DataError(f"{real_dir}: the curve needs at least 2 labelled frames (labels.csv)")
    needs_unl = next((p for p in plans.values() if p.adabn or p.train == "dann"), None)
    unl = open_unlabelled(real, unlabelled_dir, needs_unl) if needs_unl else None
    setup = _Setup(
        encoder=encoder,
        labelled=labelled,
        unlabelled=as_frame_set(unl, encoder, "unlabelled real", labels=False),
        sim=str(sim_dir) if sim_dir is not None else None,
        cfg=cfg,
        outer_folds=outer_folds,
        seed=seed,
    )
    out = Path(out_dir)
    fingerprint = {
        "model_sha256": _weights_digest(model_path),
        "labelled": list(labelled.sources),
        "positions": _json_positions(labelled.positions),
        **({"objects": list(labelled.objects)} if labelled.objects else {}),
        "unlabelled": list(setup.unlabelled.sources) if setup.unlabelled else [],
        "sim": setup.sim,
        "outer_folds": outer_folds,
        "seed": seed,
        "config": {k: v for k, v in cfg.to_dict().items() if k != "progress"},
    }
    setup.journal = Journal(out / JOURNAL, fingerprint)
    started = time.time()
    entries = measure(setup, curve, progress=progress, backend=backend)
    results = {
        "meta": {
            "model": str(model_path),
            "real": str(real_dir),
            "unlabelled": str(unlabelled_dir or real_dir) if setup.unlabelled else None,
            "sim": setup.sim,
            "n_labelled": len(labelled),
            "n_unlabelled": len(setup.unlabelled) if setup.unlabelled else 0,
            "ks": [str(k) for k in ks],
            "repeats": repeats,
            "outer_folds": outer_folds,
            "seed": seed,
            "config": cfg.to_dict(),
            "backbone": encoder.card.get("backbone", {}),
            "position_route": encoder.card.get("position_route"),
            "seconds": round(time.time() - started, 1),
            "resumed_runs": setup.journal.reused,
        },
        "entries": entries,
    }
    write_text(out / "curve.json", json.dumps(results, indent=1) + "\n")
    return write_report(results, out)


def curve_settings(
    config: CurveConfig | None, overrides: dict[str, Any]
) -> tuple[CurveConfig, FinetuneConfig]:
    """Split ``overrides`` into :class:`CurveConfig` fields (on top of ``config``) and
    :class:`FinetuneConfig` fields (``progress`` off unless given). ``seed`` is the curve's
    (subsets, baselines); the runs' fine-tuning seed stays ``FinetuneConfig``'s default.

    Raises:
        ConfigError: a name that is a field of neither (the valid ones listed), a bad value.
    """
    known = set(CurveConfig.model_fields) | set(FinetuneConfig.model_fields)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(
            f"unknown curve or fine-tuning settings {unknown}: expected {sorted(known)}"
        )
    mine = {k: v for k, v in overrides.items() if k in CurveConfig.model_fields}
    curve = (config or CurveConfig()).replace(**mine)
    runs = {k: v for k, v in overrides.items() if k not in CurveConfig.model_fields}
    return curve, FinetuneConfig.from_overrides({"progress": False, **runs})


def splits(
    n: int, k: int | str, repeats: int, outer_folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train, test)`` index pairs for one ``k``: random subsets, or outer CV for ``"all"``.

    Example:
        >>> [(len(a), len(b)) for a, b in splits(12, 4, 2, 4, seed=0)]
        [(4, 8), (4, 8)]
    """
    if k == "all":
        return [(np.setdiff1d(np.arange(n), test), test) for test in kfold(n, outer_folds, seed)]
    assert isinstance(k, int)
    out = []
    for r in range(repeats):
        order = np.random.default_rng([seed, k, r]).permutation(n)
        out.append((np.sort(order[:k]), np.sort(order[k:])))
    return out


def _skip_reason(setup: _Setup, strategy: str) -> str | None:
    if strategy == AUTO:
        return None  # candidates that cannot run are skipped inside each run
    plan = parse_strategy(strategy)
    if plan.adabn and not has_batchnorm(setup.encoder):
        return f"backbone {setup.encoder.backbone.name!r} has no BatchNorm layers (AdaBN n/a)"
    if (plan.adabn or plan.train == "dann") and not setup.unlabelled:
        return "no unlabelled real frames"
    if (plan.train == "dann" or setup.cfg.sim_batch_size) and plan.train and not setup.sim:
        return "no simulated dataset (--sim)"
    return None


def _baseline_encoder(setup: _Setup, imagenet: bool) -> Encoder:
    """Same architecture and card (camera, route), fresh weights, the sim head's target stats."""
    card = setup.encoder.card
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(setup.seed)
        fresh = Encoder.from_card(card, pretrained=imagenet)
    if imagenet and not fresh.backbone.pretrained:
        raise CheckpointError(f"backbone {fresh.backbone.name!r} has no ImageNet weights")
    buffers = {k: v for k, v in setup.encoder.state_dict().items() if k.endswith("target_mean")}
    buffers |= {k: v for k, v in setup.encoder.state_dict().items() if k.endswith("target_std")}
    fresh.load_state_dict(buffers, strict=False)
    fresh.card["backbone"] = {**card.get("backbone", {}), "imagenet_init": imagenet}
    return fresh.to(setup.encoder.device)


@dataclass
class _Job:
    name: str
    strategy: str
    cfg: FinetuneConfig
    ks: list[int | str]
    baseline: bool | None = None  # None: the sim encoder; True/False: real-only, ImageNet init

    def start(self, setup: _Setup) -> Encoder:
        """The encoder a run starts from."""
        if self.baseline is None:
            return setup.encoder
        return _baseline_encoder(setup, self.baseline)


def measure(
    setup: _Setup,
    curve: CurveConfig,
    *,
    progress: bool = True,
    backend: SweepBackend | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every entry at every ``k``; returns ``{entry: {"kind", "skipped", "points"}}``.

    ``points`` maps ``str(k)`` to the statistics of :func:`_point` (mean over runs of the
    per-run mean error, its std, pooled median / p90, the raw errors and training subsets).
    The runs the journal lacks go to ``backend`` (here, or Ray tasks); each is journalled here
    as it arrives.
    """
    ks, repeats, n = curve.ks, curve.repeats, len(setup.labelled)
    usable = [k for k in ks if k == "all" or (isinstance(k, int) and k < n)]
    for k in ks:
        if k not in usable:
            logger.warning("k=%s skipped: only %d labelled frames (need k < n)", k, n)
    entries: dict[str, dict[str, Any]] = {ZERO_SHOT: _entry("reference", None)}
    jobs = _jobs(setup, entries, usable, curve.strategies, curve.baselines)
    plan_runs = {
        (job.name, str(k)): _splits_or_all(setup, k, repeats) for job in jobs for k in job.ks
    }
    runs: dict[tuple[str, str, int], Run] = {}
    todo = []
    for job in jobs:
        for k in job.ks:
            for r, (train, test) in enumerate(plan_runs[(job.name, str(k))]):
                done = setup.journal.get(job.name, k, r, train) if setup.journal else None
                if done is None:
                    todo.append((job, k, r, train, test))
                else:
                    runs[(job.name, str(k), r)] = done
    total = 1 + len(runs) + len(todo)
    with tqdm(total=total, desc="curve", unit="run", disable=not progress) as bar:
        zero = held_out_errors(setup.encoder, setup.labelled)
        zero_objects = _object_errors(setup.encoder, setup.labelled)
        entries[ZERO_SHOT]["points"]["0"] = _point(
            0, [(np.arange(0), zero, None, None, zero_objects)], zero, n
        )
        bar.update(1 + len(runs))
        shared = replace(setup, journal=None)
        args = [(job, train, test, r) for job, _, r, train, test in todo]
        for i, done in run_tasks(_one_run, args, shared=shared, backend=backend):
            job, k, r, *_ = todo[i]
            if setup.journal:
                setup.journal.add(job.name, k, r, done)
            runs[(job.name, str(k), r)] = done
            bar.set_postfix_str(f"{job.name} k={k} #{r + 1}")
            bar.update(1)
    for job in jobs:
        for k in job.ks:
            done = [runs[(job.name, str(k), r)] for r in range(len(plan_runs[(job.name, str(k))]))]
            entries[job.name]["points"][str(k)] = _point(len(done[0][0]), done, zero, n)
            logger.info(
                "%s k=%s: %.2f cm", job.name, k, entries[job.name]["points"][str(k)]["mean"]
            )
    return entries


def _jobs(
    setup: _Setup,
    entries: dict[str, dict[str, Any]],
    usable: list[int | str],
    strategies: list[str],
    baselines: bool,
) -> list[_Job]:
    """The entries to measure (skipped ones recorded in ``entries`` with their reason)."""
    jobs: list[_Job] = []
    for s in strategies:
        labels = s == AUTO or parse_strategy(s).train is not None
        reason = _skip_reason(setup, s)
        entries[s] = _entry("strategy" if labels else "unsupervised", reason)
        if reason is None:
            own_ks = [k for k in usable if labels or k == 0]
            jobs.append(_Job(s, s, setup.cfg, own_ks))
    if baselines:
        lr = setup.cfg.lr or BASELINE_LR
        base_cfg = setup.cfg.replace(lr=lr, bn_mode="train", sim_batch_size=0)
        for name, imagenet in ((IMAGENET, True), (SCRATCH, False)):
            try:
                _baseline_encoder(setup, imagenet)
            except (CheckpointError, ConfigError) as exc:
                entries[name] = _entry("baseline", str(exc))
                continue
            entries[name] = _entry("baseline", None)
            jobs.append(_Job(name, "full", base_cfg, [k for k in usable if k != 0], imagenet))
    return jobs


def _entry(kind: str, skipped: str | None) -> dict[str, Any]:
    if skipped:
        logger.warning("curve: %s skipped: %s", kind, skipped)
    return {"kind": kind, "skipped": skipped, "points": {}}


def _splits_or_all(
    setup: _Setup, k: int | str, repeats: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    n = len(setup.labelled)
    if k == 0:
        return [(np.zeros(0, dtype=np.int64), np.arange(n))]
    return splits(n, k, repeats, setup.outer_folds, setup.seed)


def _one_run(setup: _Setup, job: _Job, train: np.ndarray, test: np.ndarray, repeat: int) -> Run:
    """Adapt a fresh start on ``train`` (none for k = 0) and score ``test``.

    Returns ``(train, errors, epochs, selection)``; ``selection`` is what ``auto`` picked and
    each candidate's inner-CV mean (else ``None``), by cross-validation over ``train`` alone.
    """
    strategy = job.strategy
    plan = parse_strategy(strategy) if strategy != AUTO else None
    if plan is not None and len(train) == 0 and plan.train in LABELLED_STRATEGIES:
        strategy = "adabn" if plan.adabn else ""  # k = 0: only the unsupervised part
    encoder, epochs, chosen = job.start(setup), None, None
    if strategy:
        encoder = adapt(
            encoder,
            setup.labelled.select(train) if len(train) else None,
            strategy,
            setup.unlabelled,
            setup.sim,
            config=job.cfg.replace(seed=job.cfg.seed + 7919 * repeat, auto_outer_folds=None),
        )
        record = encoder.card["transfer"][-1]
        epochs = record.get("epochs")
        if "selection" in record:
            sel = record["selection"]
            inner = {c: v.get("inner_cv_xy_cm") for c, v in sel["candidates"].items()}
            chosen = {"chosen": sel["chosen"], "inner_cv_xy_cm": inner}
    held_out = setup.labelled.select(test)
    errors = held_out_errors(encoder, held_out)
    return train, errors, epochs, chosen, _object_errors(encoder, held_out)


def _object_errors(encoder: Encoder, frames: FrameSet) -> dict[str, np.ndarray] | None:
    """Per-object held-out errors of a named encoder's frames (None for a single target)."""
    if not frames.objects:
        return None
    assert frames.positions is not None
    return object_errors(encoder, frames.images, frames.positions, frames.objects)


def _point(k_train: int, runs: list[Run], zero: np.ndarray, n: int) -> dict[str, Any]:
    """Statistics of one ``(entry, k)`` over its runs ``(train, errors, epochs, chosen)``.

    ``zero_shot`` is the zero-shot model's mean error on the same held-out frames (paired);
    ``chosen`` counts what ``auto`` picked per run and ``inner_cv_xy_cm`` averages each
    candidate's inner-CV mean over the runs (both empty for other entries).
    """
    means = [float(np.mean(run[1])) for run in runs]
    pooled = np.concatenate([run[1] for run in runs])
    tests = [np.setdiff1d(np.arange(n), run[0]) for run in runs]
    epochs = [run[2] for run in runs if run[2] is not None]
    chosen: dict[str, int] = {}
    inner: dict[str, list[float]] = {}
    for run in runs:
        if run[3] is not None:
            chosen[run[3]["chosen"]] = chosen.get(run[3]["chosen"], 0) + 1
            for cand, value in run[3]["inner_cv_xy_cm"].items():
                inner.setdefault(cand, []).extend([] if value is None else [value])
    return {
        "k_train": k_train,
        "runs": len(runs),
        "mean": float(np.mean(means)),
        "std": float(np.std(means)) if len(means) > 1 else 0.0,
        "median": float(np.median(pooled)),
        "p90": float(np.percentile(pooled, 90)),
        "zero_shot": float(np.mean([zero[t].mean() for t in tests])),
        "epochs": float(np.mean(epochs)) if epochs else None,
        "run_means": means,
        "errors": [float(x) for x in pooled],
        "train_sets": [[int(i) for i in run[0]] for run in runs],
        "chosen": chosen,
        "inner_cv_xy_cm": {c: float(np.mean(v)) if v else None for c, v in inner.items()},
        **(object_point(runs) or {}),
    }


def _json_positions(positions: np.ndarray | None) -> Any:
    """Positions rounded for the journal's fingerprint; NaN (an object a frame does not
    label) as None, so the fingerprint reads back equal."""
    arr = np.round(np.asarray(positions, dtype=np.float64), 6)
    if np.isfinite(arr).all():
        return arr.tolist()
    return np.where(np.isfinite(arr), arr, None).tolist()


def _weights_digest(model_path: str | Path) -> str:
    """SHA-256 of the encoder folder's weight files (the journal's guard against a new model)."""
    h = hashlib.sha256()
    for f in sorted(Path(model_path).glob("*.safetensors")):
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
