"""xarm_mug: sim-only and adapted errors of the mug encoder on a held-out simulated target,
position and yaw, over training seeds (issue 30's first benchmark).

Per training seed: generate ``--frames`` frames of ``configs/scenes/xarm_mug.yaml`` (the
training split of random_urdfs as distractors, ``--randomization``), pretrain an encoder with
the mug's named heads (``--targets mug``: keypoint, position, yaw; the mug's ``symmetry:
none`` is order 1, so yaw is scored modulo 360 degrees) for ``--minutes`` of wall clock, then
score it on the held-out target: ``configs/scenes/xarm_mug_test.yaml`` (the random_urdfs TEST
split as distractors) under the ``strong`` randomisation (``--target-randomization``). The
target frames are one seeded draw (``--target-seed``), shared by every seed: ``labelled``
(``--k`` frames for adaptation), ``unlabelled`` (AdaBN statistics) and ``test`` (scored
only, never used to adapt or choose). Figures: mean xy error (cm) and yaw error (deg) of the
sim-only encoder and of each ``--strategies`` entry (``sim2real finetune`` on the k labelled
frames), each as mean +- std over the seeds.

    .venv/bin/python benchmarks/xarm_mug.py                      # the full protocol
    .venv/bin/python benchmarks/xarm_mug.py --seeds 0,1 --frames 400 --size 64x64 \\
        --minutes 2 --test-frames 60 --k 8 --set epochs=5 cv_folds=2   # a small budget

Writes ``--out``/summary.json (every seed's figures and the spread) and per seed the data,
encoder and adapted encoders.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from objects_common import (
    common_args,
    fmt,
    generate,
    header,
    parse_seeds,
    scores,
    spread,
    target_folders,
    train,
)

TRAIN_SCENE, TEST_SCENE, TARGET = "xarm_mug", "xarm_mug_test", "mug"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    common_args(ap, "runs/bench_xarm_mug")
    ap.add_argument("--k", type=int, default=16, help="labelled target frames for adaptation")
    ap.add_argument("--strategies", default="adabn,top-k,adabn+top-k",
                    help="sim2real finetune strategies, comma-separated")  # fmt: skip
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="FinetuneConfig overrides, e.g. epochs=10 cv_folds=2")  # fmt: skip
    return ap.parse_args()


def one_seed(args: argparse.Namespace, seed: int, target: dict[str, Path]) -> dict:
    """Train one seed's encoder and score it sim-only and adapted; returns its rows."""
    from sim2real.transfer import finetune_cli

    out = Path(args.out) / f"seed{seed}"
    print(f"\n=== seed {seed}", flush=True)
    data = generate(TRAIN_SCENE, args, out / "data", seed)
    model = train(data, out / "encoder", [TARGET], args.minutes, args, seed)
    rows = {"sim-only": scores(model, target["test"])[TARGET]}
    overrides = dict(s.split("=", 1) for s in args.set)
    for strategy in args.strategies.split(","):
        t0 = time.perf_counter()
        adapted = finetune_cli(
            model, target["labelled"], out / f"adapted_{strategy}", strategy,
            target["unlabelled"], **{"progress": False, "seed": seed, **overrides},
        )  # fmt: skip
        record = json.loads((adapted / "card.json").read_text())["transfer"][-1]
        epochs = record.get("epochs", 0)  # label-free strategies train no epochs
        rows[strategy] = {**scores(adapted, target["test"])[TARGET], "epochs": epochs}
        print(f"  {strategy}: adapted in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"  {'model':16s} {'xy cm':>6s} {'yaw deg':>7s}  label epochs (chosen by CV)")
    for name, r in rows.items():
        print(f"  {name:16s} {fmt(r['xy_cm'])} {fmt(r['yaw_deg'])}  {r.get('epochs', '-')}")
    return rows


def main() -> None:
    from sim2real.atomic import write_json

    args = parse_args()
    info = header(args, "xarm_mug: mug encoder on a held-out simulated target")
    seeds = parse_seeds(args.seeds)
    target = target_folders(TEST_SCENE, args, Path(args.out) / "target", [TARGET], args.k)
    print(f"  target {Path(args.out) / 'target'}: {args.k} labelled, {args.test_frames} test "
          f"frames of {TEST_SCENE} ({args.target_randomization})")  # fmt: skip
    per_seed = {seed: one_seed(args, seed, target) for seed in seeds}
    names = list(next(iter(per_seed.values())))
    print(f"\nover seeds {seeds} (mean +- std): {TEST_SCENE}/{args.target_randomization}, "
          f"{args.test_frames} test frames, k={args.k}")  # fmt: skip
    summary = {}
    for name in names:
        xy = [per_seed[s][name]["xy_cm"] for s in seeds]
        yaw = [per_seed[s][name]["yaw_deg"] for s in seeds]
        summary[name] = {"xy_cm": spread(xy), "yaw_deg": spread(yaw)}
        print(f"  {name:16s} xy {spread(xy)} cm   yaw {spread(yaw)} deg")
    path = write_json(Path(args.out) / "summary.json",
                      {**info, "seeds": per_seed, "summary": summary})  # fmt: skip
    print(f"summary: {path}")


if __name__ == "__main__":
    main()
