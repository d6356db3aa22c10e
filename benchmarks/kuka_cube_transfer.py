"""Sim-to-real transfer on the real kuka_cube frames: the k-shot curve for every strategy and
for ``auto`` (nested selection), then the final adapted model and predictions for the
unlabelled frames, once per training seed.

Runs ``run_curve`` (k = 0, 1, 2, 4, 8, all over the 12 labelled frames; the 40 unlabelled
frames only for AdaBN / DANN), prints the table and the summary, adapts the model on all
labelled frames with ``--final`` (default ``auto``: the candidates compared by inner
cross-validation over the labelled frames), and writes ``sim2real predict``-style CSVs for
the unlabelled frames from the sim-only and the adapted model. The unlabelled frames are
never scored.

The honest protocol (``kuka_cube_protocol.py``): nested cross-validation. In every curve
run the choices (``auto``'s strategy, every strategy's epoch count) are made by inner folds
over that run's training frames, and the run is scored on the frames it left out; the
``auto`` row at ``k = all`` is that nested figure. Which figures come from frames a choice
was made on is printed: picking the best row of the table, or the final model's inner-CV
errors, are choices on all 12 frames. ``--seeds 0,1,2`` repeats everything per training
seed (``--model``/``--sim`` may contain ``{seed}``, e.g. ``runs/kuka_bench/seed{seed}/model``
from ``kuka_cube_real.py --seeds 0,1,2``) and reports mean +- std over the seeds.

    .venv/bin/python benchmarks/kuka_cube_transfer.py \\
        --model runs/kuka_bench/seed{seed}/model --sim runs/kuka_bench/data --seeds 0,1,2
    .venv/bin/python benchmarks/kuka_cube_transfer.py --smoke --seeds 0,1 --out runs/transfer_smoke

Outputs under ``--out``/seedS: ``curve/`` (report.md, curve.json, curve.png, best.png),
``model/`` (the adapted encoder, its card's ``transfer`` record says what was chosen and
why) and ``predictions/{sim_only,adapted}.csv``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import torch
from kuka_cube_protocol import DEFAULT_REAL, parse_seeds, require_real, spread

from sim2real.data.generate import generate_dataset
from sim2real.data.real import open_real
from sim2real.envs.sources import scene_spec
from sim2real.perception.evaluate import predict_folder
from sim2real.perception.train import pretrain
from sim2real.transfer import finetune_cli
from sim2real.transfer.config import DEFAULT_STRATEGIES
from sim2real.transfer.curve import run_curve, splits
from sim2real.transfer.report import summary

FACTORY = "sim2real.envs.sources:make_source"
SMOKE = {"epochs": 2, "steps_per_epoch": 2, "batch_size": 4, "cv_folds": 2}
STRATEGIES = (*DEFAULT_STRATEGIES, "auto")


def make_smoke_model(out: Path, seed: int = 0) -> tuple[Path, Path]:
    """A tiny kuka_cube dataset (64 frames, 64x48) and an encoder pretrained on it briefly."""
    shutil.rmtree(out, ignore_errors=True)
    spec = scene_spec("kuka_cube", "default", (64, 48))
    sim = generate_dataset(FACTORY, spec, 64, out / "sim", seed=0, progress=False)
    model = pretrain(
        sim, out / "encoder", epochs=2, batch_size=16, device="cpu", progress=False, seed=seed
    )
    return model, sim


def print_table(results: dict) -> None:
    ks = results["meta"]["ks"]
    print(f"\n{'entry':24s} {'k':>4s} {'train':>5s} {'runs':>4s} {'mean':>7s} {'std':>6s} "
          f"{'median':>7s} {'p90':>7s} {'epochs':>6s}")  # fmt: skip
    for name, entry in results["entries"].items():
        if entry["skipped"]:
            print(f"{name:24s} not measured: {entry['skipped']}")
            continue
        for k in ks:
            p = entry["points"].get(k)
            if p is None:
                continue
            epochs = f"{p['epochs']:.1f}" if p["epochs"] is not None else ""
            print(
                f"{name:24s} {k:>4s} {p['k_train']:5d} {p['runs']:4d} {p['mean']:7.2f} "
                f"{p['std']:6.2f} {p['median']:7.2f} {p['p90']:7.2f} {epochs:>6s}"
            )
    print("\nsummary (mean xy cm): start / slope per doubling of k / best / negative transfer")
    for name, row in summary(results).items():
        slope = f"{row['slope']:+.2f}" if row["slope"] is not None else "  n/a"
        print(
            f"  {name:24s} {row['start']:6.2f} (k={row['start_k']}) {slope} "
            f"{row['best']:6.2f} (k={row['best_k']})  {'; '.join(row['flags']) or '-'}"
        )


def best_strategy(results: dict) -> tuple[str, float]:
    """The strategy with the lowest mean at k = all (its only point for k = 0-only ones).

    A choice made on all the labelled frames: its figure is optimistic."""
    scores = {}
    for name, entry in results["entries"].items():
        if entry["kind"] in ("strategy", "unsupervised") and not entry["skipped"]:
            points = entry["points"]
            p = points.get("all") or points[max(points, key=lambda k: points[k]["k_train"])]
            scores[name] = p["mean"]
    name = min(scores, key=scores.get)
    return name, scores[name]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", help="simulation-trained encoder folder ({seed} allowed)")
    ap.add_argument(
        "--real", default=DEFAULT_REAL, help="kuka_cube folder (labelled/, unlabelled/)"
    )
    ap.add_argument("--sim", help="simulated dataset (DANN, sim mixing; {seed} allowed)")
    ap.add_argument("--unlabelled", help="unlabelled frames (default: REAL/unlabelled)")
    ap.add_argument("--out", default="runs/transfer")
    ap.add_argument("--seeds", default="0", help="training seeds, e.g. 0,1,2")
    ap.add_argument("--ks", default="0,1,2,4,8,all")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--outer-folds", type=int, default=4, help="k=all CV folds; 0 = LOO")
    ap.add_argument(
        "--no-baselines", action="store_true", help="skip the real-only baselines (faster)"
    )
    ap.add_argument("--final", default="auto", help="strategy of the final model (default auto)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="FinetuneConfig overrides, e.g. epochs=30 lr=3e-4")  # fmt: skip
    ap.add_argument("--threads", type=int, help="torch CPU threads (1 on a busy machine)")
    ap.add_argument("--smoke", action="store_true", help="tiny data, encoder and budget")
    args = ap.parse_args()
    if args.model is None and not args.smoke:
        ap.error("--model is required (or --smoke)")
    args.seed_list = parse_seeds(args.seeds)
    return args


def one_seed(args: argparse.Namespace, seed: int, overrides: dict) -> dict:
    """Curve, final model and predictions for one training seed; returns its figures."""
    out = Path(args.out) / f"seed{seed}"
    model = args.model.format(seed=seed) if args.model else None
    sim = args.sim.format(seed=seed) if args.sim else None
    if args.smoke:
        made_model, made_sim = make_smoke_model(out / "smoke", seed)
        model, sim = model or made_model, sim or made_sim
    ks = [k if k == "all" else int(k) for k in args.ks.split(",")]
    unlabelled = Path(args.unlabelled) if args.unlabelled else Path(args.real) / "unlabelled"
    names = open_real(args.real).labelled().sources
    outer = splits(len(names), "all", 1, args.outer_folds, seed)
    print(f"\nseed {seed}: k=all outer folds (fixed before training; each scores frames no "
          "choice of its run saw):")  # fmt: skip
    for i, (_, test) in enumerate(outer):
        print(f"  fold {i + 1}: {' '.join(names[j] for j in test)}")
    t0 = time.perf_counter()
    report = run_curve(
        model, args.real, out / "curve", unlabelled_dir=args.unlabelled, sim_dir=sim, ks=ks,
        repeats=args.repeats, strategies=args.strategies.split(","),
        outer_folds=args.outer_folds, baselines=not args.no_baselines, seed=seed, **overrides,
    )  # fmt: skip
    results = json.loads((out / "curve" / "curve.json").read_text())
    print(f"\n=== training seed {seed}: k-shot curve of {model} on {args.real} "
          f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    print_table(results)
    print("  (each row: choices by inner folds of its own runs, scored on frames left out)")
    best, score = best_strategy(results)
    print(f"best row at k=all: {best} {score:.2f} cm (picked on all 12 frames: optimistic)")
    adapted = finetune_cli(
        model, args.real, out / "model", args.final, args.unlabelled, sim,
        **{"progress": False, "seed": seed, **overrides},
    )  # fmt: skip
    record = json.loads((adapted / "card.json").read_text())["transfer"][-1]
    selection = record.get("selection")
    if selection:
        print(f"final model: auto chose {selection['chosen']} ({selection['why']})")
        for name, c in selection["candidates"].items():
            what = c.get("skipped") or f"{c['inner_cv_xy_cm']:.2f} cm, {c['epochs']} epochs"
            print(f"    {name:16s} inner CV on all 12 frames (chose on them): {what}")
    preds = {
        "sim_only": predict_folder(model, unlabelled, out / "predictions" / "sim_only.csv"),
        "adapted": predict_folder(adapted, unlabelled, out / "predictions" / "adapted.csv"),
    }
    print(f"report: {report}\nmodel: {adapted}")
    for name, path in preds.items():
        print(f"predictions ({name}, unlabelled frames, not scored): {path}")
    entries = results["entries"]
    auto = entries.get("auto", {}).get("points", {}).get("all")
    adabn = entries.get("adabn", {}).get("points", {}).get("0")
    return {
        "zero-shot (all 12, no choice)": entries["zero-shot"]["points"]["0"]["mean"],
        "adabn, no label (all 12, no choice)": adabn["mean"] if adabn else None,
        "auto at k=all (nested CV: outer folds)": auto["mean"] if auto else None,
        "best row at k=all (picked on all 12: optimistic)": score,
        "best": best,
        "final": record["strategy"],
    }


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    require_real(args.real)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = dict(item.split("=", 1) for item in args.set)
    if args.smoke:
        overrides = {**SMOKE, **overrides}
    print("protocol: nested cross-validation over the 12 labelled frames (fixed up front);")
    print(f"  training seeds {args.seeds}; unlabelled frames: adaptation and predictions only")
    figures = [one_seed(args, seed, overrides) for seed in args.seed_list]
    print(f"\nover {len(figures)} training seed(s), mean xy error in cm (mean +- std over seeds):")
    for key in figures[0]:
        if key in ("best", "final"):
            continue
        values = [f[key] for f in figures if f.get(key) is not None]
        print(f"  {key:52s} {spread(values)}")
    print(f"  best rows per seed: {[f['best'] for f in figures]}")
    print(f"  final strategies per seed: {[f['final'] for f in figures]}")


if __name__ == "__main__":
    main()
