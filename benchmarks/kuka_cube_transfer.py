"""Sim-to-real transfer on the real kuka_cube frames: the k-shot curve for every strategy,
then the final adapted model and its predictions for the unlabelled frames.

Runs ``run_curve`` (k = 0, 1, 2, 4, 8, all over the 12 labelled frames, cross-validated;
the 40 unlabelled frames only for AdaBN / DANN), prints the full table and the summary,
adapts the model with the best strategy (lowest mean xy error at k = all) on all labelled
frames, and writes ``sim2real predict``-style ``file,x_m,y_m,z_m`` for the unlabelled
frames. The unlabelled frames are never scored.

    .venv/bin/python benchmarks/kuka_cube_transfer.py --model runs/kuka/encoder \\
        --real ../shared/real/kuka_cube --sim data/kuka --out runs/transfer
    .venv/bin/python benchmarks/kuka_cube_transfer.py --real ../shared/real/kuka_cube \\
        --smoke --out runs/transfer_smoke         # tiny sim data + encoder made here, tiny budget

Outputs under ``--out``: ``curve/`` (report.md, curve.json, curve.png, best.png), ``model/``
(the adapted encoder) and ``predictions.csv``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import torch

from sim2real.data.generate import generate_dataset
from sim2real.envs.sources import scene_spec
from sim2real.perception.evaluate import predict_folder
from sim2real.perception.train import pretrain
from sim2real.transfer import finetune_cli
from sim2real.transfer.config import DEFAULT_STRATEGIES
from sim2real.transfer.curve import run_curve
from sim2real.transfer.report import summary

FACTORY = "sim2real.envs.sources:make_source"
SMOKE = {"epochs": 2, "steps_per_epoch": 2, "batch_size": 4, "cv_folds": 2}


def make_smoke_model(out: Path) -> tuple[Path, Path]:
    """A tiny kuka_cube dataset (64 frames, 64x48) and an encoder pretrained on it briefly."""
    shutil.rmtree(out, ignore_errors=True)
    spec = scene_spec("kuka_cube", "default", (64, 48))
    sim = generate_dataset(FACTORY, spec, 64, out / "sim", seed=0, progress=False)
    model = pretrain(sim, out / "encoder", epochs=2, batch_size=16, device="cpu", progress=False)
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
    """The strategy with the lowest mean at k = all (its only point for k = 0-only ones)."""
    scores = {}
    for name, entry in results["entries"].items():
        if entry["kind"] in ("strategy", "unsupervised") and not entry["skipped"]:
            points = entry["points"]
            p = points.get("all") or points[max(points, key=lambda k: points[k]["k_train"])]
            scores[name] = p["mean"]
    name = min(scores, key=scores.get)
    return name, scores[name]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", help="simulation-trained encoder folder")
    ap.add_argument("--real", required=True, help="kuka_cube folder (labelled/, unlabelled/)")
    ap.add_argument("--sim", help="simulated dataset (DANN, sim mixing)")
    ap.add_argument("--unlabelled", help="unlabelled frames (default: REAL/unlabelled)")
    ap.add_argument("--out", default="runs/transfer")
    ap.add_argument("--ks", default="0,1,2,4,8,all")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    ap.add_argument("--outer-folds", type=int, default=4, help="k=all CV folds; 0 = LOO")
    ap.add_argument(
        "--no-baselines", action="store_true", help="skip the real-only baselines (faster)"
    )
    ap.add_argument("--final", help="strategy of the final model (default: best at k=all)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="FinetuneConfig overrides, e.g. epochs=30 sim_batch_size=8")  # fmt: skip
    ap.add_argument("--threads", type=int, help="torch CPU threads (1 on a busy machine)")
    ap.add_argument("--smoke", action="store_true", help="tiny data, encoder and budget")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    overrides = dict(item.split("=", 1) for item in args.set)
    model, sim = args.model, args.sim
    if args.smoke:
        overrides = {**SMOKE, **overrides}
        made_model, made_sim = make_smoke_model(out / "smoke")
        model, sim = model or made_model, sim or made_sim
    if model is None:
        ap.error("--model is required (or --smoke)")
    ks = [k if k == "all" else int(k) for k in args.ks.split(",")]
    unlabelled = Path(args.unlabelled) if args.unlabelled else Path(args.real) / "unlabelled"
    t0 = time.perf_counter()
    report = run_curve(
        model, args.real, out / "curve", unlabelled_dir=args.unlabelled, sim_dir=sim, ks=ks,
        repeats=args.repeats,
        strategies=args.strategies.split(","), outer_folds=args.outer_folds,
        baselines=not args.no_baselines, **overrides,
    )  # fmt: skip
    results = json.loads((out / "curve" / "curve.json").read_text())
    print(f"k-shot curve: {Path(model)} on {args.real} ({time.perf_counter() - t0:.0f} s)")
    print_table(results)
    final, score = best_strategy(results)
    final = args.final or final
    print(f"\nfinal strategy: {final} (curve mean at k=all: {score:.2f} cm)")
    adapted = finetune_cli(
        model,
        args.real,
        out / "model",
        final,
        args.unlabelled,
        sim,
        **{"progress": False, **overrides},
    )
    card = json.loads((adapted / "card.json").read_text())
    cv = card.get("metrics", {}).get("real_cv")
    if cv:
        print(f"final model CV (optimistic, chose its epochs): mean {cv['mean']:.2f} cm")
    preds = predict_folder(adapted, unlabelled, out / "predictions.csv")
    print(f"report: {report}\nmodel: {adapted}\npredictions: {preds}")


if __name__ == "__main__":
    main()
