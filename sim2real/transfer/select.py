"""``strategy="auto"``: choose the fine-tuning strategy by nested cross-validation.

With a handful of labelled real frames it is not known beforehand whether they help: in
one training run 12 labels improved the error on unseen frames, in another they made it
worse. ``auto`` lets the labelled frames decide, without scoring a choice on the frames
that made it:

- **inner folds choose.** Every candidate (``FinetuneConfig.candidates``; by default
  ``sim-only``, ``adabn``, ``probe``, ``adabn+probe``, ``top-k``, ``adabn+top-k``) is
  scored by the same k-fold cross-validation over the labelled frames: a candidate that
  trains is trained on the other folds (its epoch count ``0..epochs`` chosen on the pooled
  held-out errors); a label-free one (``sim-only``, ``adabn``: zero label epochs) is scored
  on every frame. A candidate that trains on labels is taken only when its inner-CV mean
  beats the best label-free candidate's by more than ``select_margin_cm`` plus
  ``select_se`` standard errors of the paired per-frame gain (the one-standard-error rule
  by default: a gain within the noise of 12 frames is not taken); otherwise the label-free
  one is (ties go to the label-free side, then to the order of the list).
- **outer folds measure** (``auto_outer_folds``, and the curve's ``k = all``): the whole
  selection runs again on each outer training part and is scored on its held-out frames,
  beside the label-free candidates on the same frames. That figure was chosen on nothing
  it scores.

The chosen strategy, every candidate's inner-CV error (or why it was skipped) and the
reason go to the card's ``transfer`` record under ``selection``.

Example:
    >>> cfg = FinetuneConfig(candidates=["adabn", "adabn+top-k"])
    >>> adapted = adapt(  # doctest: +SKIP
    ...     encoder, real.labelled(), "auto", real.unlabelled(), config=cfg
    ... )
    >>> adapted.card["transfer"][-1]["selection"]["chosen"]  # doctest: +SKIP
    'adabn+top-k'
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.data.frames import RealFrames
from sim2real.data.real import open_real
from sim2real.data.shards import ShardedDataset
from sim2real.errors import ConfigError, DataError
from sim2real.perception.encoder import Encoder
from sim2real.perception.geometry import summarise
from sim2real.transfer.config import FinetuneConfig
from sim2real.transfer.objects import labelled_frames
from sim2real.transfer.strategies import (
    Plan,
    Prepared,
    cv_errors,
    cv_record,
    finetune,
    kfold,
    open_unlabelled,
    parse_strategy,
    prepare,
)
from sim2real.transfer.training import FrameSet, as_frame_set, held_out_errors

logger = logging.getLogger(__name__)

AUTO = "auto"
#: Inner-CV means closer than this (cm) are equal (float rounding of the same model).
TIE_CM = 1e-6


def candidate_plans(cfg: FinetuneConfig) -> dict[str, Plan]:
    """``{canonical name: plan}`` of ``cfg.candidates`` in their order (duplicates once).

    Example:
        >>> list(candidate_plans(FinetuneConfig(candidates=["adabn", "adabn+top-k"])))
        ['adabn', 'adabn+top-k']
    """
    plans: dict[str, Plan] = {}
    for name in cfg.candidates:
        plan = parse_strategy(name)
        plans.setdefault(plan.name, plan)
    return plans


def unlabelled_plan(strategy: str, cfg: FinetuneConfig) -> Plan:
    """The plan whose unlabelled needs ``strategy`` has (``auto``: any candidate's)."""
    if str(strategy).strip() != AUTO:
        return parse_strategy(strategy)
    plans = candidate_plans(cfg).values()
    dann = any(p.train == "dann" for p in plans)
    return Plan(adabn=any(p.adabn for p in plans), train="dann" if dann else None)


def adapt(
    encoder: Encoder,
    real_labelled: RealFrames | FrameSet | None,
    strategy: str,
    unlabelled: RealFrames | FrameSet | None = None,
    sim: str | Path | ShardedDataset | None = None,
    *,
    config: FinetuneConfig | None = None,
) -> Encoder:
    """:func:`~sim2real.transfer.finetune`, or the nested selection for ``strategy="auto"``.

    Example:
        >>> adapted = adapt(enc, real.labelled(), "auto", real.unlabelled())  # doctest: +SKIP
    """
    cfg = config or FinetuneConfig()
    if str(strategy).strip() != AUTO:
        return finetune(encoder, real_labelled, strategy, unlabelled, sim, config=cfg)
    labelled = as_frame_set(real_labelled, encoder, "labelled real", labels=True)
    unl = as_frame_set(unlabelled, encoder, "unlabelled real", labels=False)
    return finetune_auto(encoder, labelled, unl, sim, cfg)


def finetune_auto(
    encoder: Encoder,
    labelled: FrameSet | None,
    unlabelled: FrameSet | None,
    sim: str | Path | ShardedDataset | None,
    cfg: FinetuneConfig,
) -> Encoder:
    """Choose a candidate by inner cross-validation and adapt with it (see the module).

    Returns:
        The adapted encoder; ``card["transfer"][-1]["selection"]`` holds ``chosen``,
        ``why``, ``candidates`` (inner-CV mean, epochs, or why skipped) and, with
        ``cfg.auto_outer_folds``, ``nested`` (the outer folds' honest errors).
    """
    n = len(labelled) if labelled is not None else 0
    plans = candidate_plans(cfg)
    if n < 2:
        enc, name = _fallback(encoder, labelled, unlabelled, sim, cfg, plans)
        selection: dict[str, Any] = {
            "chosen": name,
            "why": f"{n} labelled frame(s): cannot cross-validate, took the label-free {name}",
            "candidates": {},
        }
    else:
        assert labelled is not None
        prepared, scores = score_candidates(encoder, plans, labelled, unlabelled, sim, cfg)
        name, why = choose(scores, plans, cfg.select_margin_cm, cfg.select_se)
        score = scores[name]
        enc = prepared[name].complete(score["epochs"], score.get("cv"))
        candidates = {c: {k: v for k, v in s.items() if k != "cv"} for c, s in scores.items()}
        selection = {"chosen": name, "why": why, "candidates": candidates}
        selection["method"] = next((s["method"] for s in scores.values() if "method" in s), None)
        if cfg.auto_outer_folds is not None and n >= 3:
            free = {c: s["errors"] for c, s in scores.items() if s.get("label_free")}
            selection["nested"] = nested_cv(encoder, labelled, unlabelled, sim, cfg, free)
    selection.update(margin_cm=cfg.select_margin_cm, n_labelled=n)
    record = enc.card["transfer"][-1]
    record.update(requested=AUTO, selection=selection)
    logger.info("auto: %s (%s)", selection["chosen"], selection["why"])
    return enc


def score_candidates(
    encoder: Encoder,
    plans: dict[str, Plan],
    labelled: FrameSet,
    unlabelled: FrameSet | None,
    sim: str | Path | ShardedDataset | None,
    cfg: FinetuneConfig,
) -> tuple[dict[str, Prepared], dict[str, dict[str, Any]]]:
    """Every candidate prepared and scored by the same inner CV over ``labelled``.

    Returns:
        ``(prepared, scores)``: ``scores[name]`` has ``inner_cv_xy_cm`` (mean xy error of
        the held-out frames at the chosen epoch count), ``epochs``, ``label_free``, and for
        a training candidate ``mean_xy_cm_by_epoch`` and ``cv``; or ``skipped`` (why).
    """
    prepared: dict[str, Prepared] = {}
    scores: dict[str, dict[str, Any]] = {}
    for name, plan in plans.items():
        try:
            ready = prepare(encoder, plan, labelled, unlabelled, sim, cfg)
        except (ConfigError, DataError) as exc:
            scores[name] = {"skipped": str(exc)}
            continue
        prepared[name] = ready
        if plan.train is None:
            errors = held_out_errors(ready.encoder, labelled)
            scores[name] = {
                "inner_cv_xy_cm": float(errors.mean()),
                "epochs": 0,
                "label_free": True,
                "errors": [float(e) for e in errors],
            }
            continue
        assert ready.lr is not None
        folds, pooled = cv_errors(ready.encoder, plan, cfg, ready.data, ready.lr)
        by_epoch = [float(e.mean()) for e in pooled]
        epochs = int(np.argmin(by_epoch)) if cfg.select_epochs else cfg.epochs
        errors = np.empty(len(labelled))
        errors[np.concatenate(folds)] = pooled[epochs]  # back in frame order
        cv = cv_record(folds, pooled, epochs)
        scores[name] = {
            "inner_cv_xy_cm": by_epoch[epochs],
            "epochs": epochs,
            "label_free": False,
            "method": cv["method"],
            "mean_xy_cm_by_epoch": by_epoch,
            "errors": [float(e) for e in errors],
            "cv": cv,
        }
    if not prepared:
        why = "; ".join(f"{n}: {s['skipped']}" for n, s in scores.items())
        raise ConfigError(f"auto: no candidate can run on these inputs ({why})")
    return prepared, scores


def choose(
    scores: dict[str, dict[str, Any]],
    plans: dict[str, Plan],
    margin_cm: float = 0.0,
    se: float = 1.0,
) -> tuple[str, str]:
    """The chosen candidate and why (see the module for the rule).

    The best training candidate (lowest inner-CV mean) is taken when its gain over the best
    label-free one exceeds ``margin_cm`` plus ``se`` standard errors of the paired per-frame
    differences (scores' ``errors``, frame order; without them the standard error is 0).

    Example:
        >>> plans = candidate_plans(FinetuneConfig(candidates=["adabn", "adabn+top-k"]))
        >>> choose({"adabn": {"inner_cv_xy_cm": 2.0, "epochs": 0},
        ...         "adabn+top-k": {"inner_cv_xy_cm": 1.5, "epochs": 6}}, plans)[0]
        'adabn+top-k'
        >>> choose({"adabn": {"inner_cv_xy_cm": 2.0, "epochs": 0},
        ...         "adabn+top-k": {"inner_cv_xy_cm": 1.9, "epochs": 6}}, plans, 0.5)[0]
        'adabn'
    """
    ok = {n: s for n, s in scores.items() if "skipped" not in s}
    order = list(plans)
    trains = {n: s for n, s in ok.items() if s["epochs"] > 0}
    free = {n: s for n, s in ok.items() if s["epochs"] == 0}
    best_train = min(
        trains, key=lambda n: (trains[n]["inner_cv_xy_cm"], order.index(n)), default=None
    )
    best_free = None
    if free:
        low = min(s["inner_cv_xy_cm"] for s in free.values())
        best_free = min(
            free,
            key=lambda n: (
                free[n]["inner_cv_xy_cm"] > low + TIE_CM,
                plans[n].train is not None,
                order.index(n),
            ),
        )
    if best_free is None:
        assert best_train is not None
        s = trains[best_train]
        return best_train, (
            f"no label-free candidate could run; {best_train} had the lowest inner-CV mean "
            f"({s['inner_cv_xy_cm']:.2f} cm at {s['epochs']} epochs)"
        )
    f = free[best_free]["inner_cv_xy_cm"]
    if best_train is not None:
        t, epochs = trains[best_train]["inner_cv_xy_cm"], trains[best_train]["epochs"]
        need = margin_cm + se * paired_se(free[best_free], trains[best_train])
        if f - t > need + TIE_CM:
            return best_train, (
                f"inner-CV mean {t:.3f} cm at {epochs} label epochs beats the best label-free "
                f"candidate {best_free} ({f:.3f} cm) by {f - t:.3f} cm, more than the "
                f"{need:.3f} cm needed (margin {margin_cm:.2f} cm + {se:g} standard errors)"
            )
        return best_free, (
            f"no candidate that trains on labels beat it by the {need:.3f} cm needed (margin "
            f"{margin_cm:.2f} cm + {se:g} standard errors) in inner CV (best: {best_train} "
            f"{t:.3f} cm at {epochs} epochs vs {f:.3f} cm)"
        )
    return best_free, (
        f"lowest inner-CV mean ({f:.2f} cm); every training candidate chose 0 label epochs"
    )


def paired_se(free: dict[str, Any], train: dict[str, Any]) -> float:
    """Standard error (cm) of the mean per-frame gain ``free - train`` (0 without errors).

    Example:
        >>> round(paired_se({"errors": [2.0, 2.0, 2.0]}, {"errors": [1.0, 2.0, 3.0]}), 3)
        0.577
    """
    a, b = free.get("errors"), train.get("errors")
    if not a or not b or len(a) != len(b) or len(a) < 2:
        return 0.0
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(diff.std(ddof=1) / np.sqrt(len(diff)))


def nested_cv(
    encoder: Encoder,
    labelled: FrameSet,
    unlabelled: FrameSet | None,
    sim: str | Path | ShardedDataset | None,
    cfg: FinetuneConfig,
    label_free: dict[str, list[float]],
) -> dict[str, Any]:
    """The selection measured honestly: rerun on each outer training part, score the rest.

    ``label_free`` holds the label-free candidates' per-frame errors on ``labelled`` (they
    learn nothing from labels, so every frame is held out for them).
    """
    n = len(labelled)
    folds = kfold(n, cfg.auto_outer_folds or 0, cfg.seed + 1)
    inner = cfg.replace(auto_outer_folds=None, progress=False)
    errors = np.zeros(n)
    chosen = []
    for test in folds:
        train = np.setdiff1d(np.arange(n), test)
        sub = finetune_auto(encoder, labelled.select(train), unlabelled, sim, inner)
        errors[test] = held_out_errors(sub, labelled.select(test))
        chosen.append(sub.card["transfer"][-1]["selection"]["chosen"])
    return {
        "method": "leave-one-out" if len(folds) == n else f"{len(folds)}-fold",
        "xy_cm": summarise(errors),
        "chosen_per_fold": chosen,
        "label_free_xy_cm": {c: summarise(np.asarray(e)) for c, e in label_free.items()},
        "errors": [float(e) for e in errors],
    }


def _fallback(
    encoder: Encoder,
    labelled: FrameSet | None,
    unlabelled: FrameSet | None,
    sim: str | Path | ShardedDataset | None,
    cfg: FinetuneConfig,
    plans: dict[str, Plan],
) -> tuple[Encoder, str]:
    """Without 2 labelled frames: ``cfg.auto_fallback``, else the last label-free candidate."""
    names = [cfg.auto_fallback] if cfg.auto_fallback else []
    names += [n for n, p in reversed(plans.items()) if p.train is None] + ["sim-only"]
    errors = []
    for name in names:
        try:
            return finetune(encoder, labelled, name, unlabelled, sim, config=cfg), name
        except (ConfigError, DataError) as exc:
            if name == cfg.auto_fallback:
                raise
            errors.append(f"{name}: {exc}")
    raise AssertionError(f"sim-only always runs: {errors}")  # pragma: no cover


def finetune_cli(
    model_path: str | Path,
    real_dir: str | Path,
    out: str | Path,
    strategy: str,
    unlabelled_dir: str | Path | None = None,
    sim_dir: str | Path | None = None,
    *,
    config: FinetuneConfig | None = None,
    **overrides: Any,
) -> Path:
    """``sim2real finetune``: load, adapt, save; returns the saved model folder.

    Args:
        model_path: encoder folder (``Encoder.save``).
        real_dir: real frames (``open_real``): labelled frames with ``labels.csv``; its
            unlabelled frames are used when ``unlabelled_dir`` is not given.
        out: folder for the adapted encoder.
        strategy: see :func:`~sim2real.transfer.finetune`, or ``auto`` (nested selection
            between ``candidates``).
        unlabelled_dir: unlabelled real frames (all its frames; labels, if any, ignored).
        sim_dir: simulated dataset folder.
        config: the settings; default ``FinetuneConfig()``.
        **overrides: :class:`FinetuneConfig` fields set on top of ``config`` (strings are
            converted).

    Example:
        >>> finetune_cli("runs/kuka/encoder", "real/kuka_cube", "runs/kuka/adapted",
        ...              "adabn+top-k", epochs="30")  # doctest: +SKIP
        PosixPath('runs/kuka/adapted')
    """
    cfg = (config or FinetuneConfig()).replace(**overrides)
    plan = unlabelled_plan(strategy, cfg)
    encoder = Encoder.load(model_path)
    real = open_real(real_dir)
    labelled = labelled_frames(real, encoder)  # per object for a named encoder
    unlabelled = open_unlabelled(real, unlabelled_dir, plan)
    adapted = adapt(
        encoder, labelled if len(labelled) else None, strategy, unlabelled, sim_dir, config=cfg
    )
    adapted.card["transfer"][-1].update(
        source_model=str(model_path), real=str(real_dir), unlabelled=str(unlabelled_dir or real_dir)
    )
    return adapted.save(out)
