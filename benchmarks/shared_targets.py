"""Does sharing help or hurt each object? One encoder for three targets against three
single-object encoders trained for the same total time (issue 30's second benchmark).

Per training seed: generate ``--frames`` frames of ``configs/scenes/three_targets.yaml`` (a
red cube, the mug and random_urdfs object 005 as targets, two random_urdfs distractors from
the training split), then on that one dataset pretrain

- ``shared``: one backbone with per-target heads for all of ``--targets`` (``sim2real
  pretrain --targets cube,mug,thing``) for ``--minutes``;
- ``single``: one encoder per target (``--targets NAME``), each for ``--minutes`` / number of
  targets, so the four runs cost the same wall clock in total (2 x ``--minutes``).

Each is scored on held-out simulated frames: ``configs/scenes/three_targets_test.yaml`` (the
random_urdfs TEST split as distractors; ``--target-randomization``, default the training
one), one seeded draw shared by every seed. Printed per object: mean xy error (cm) and yaw
error (deg, modulo the object's symmetry: 90 for the cube, 360 for the mug and the thing) of
the shared and the single encoder, and the mean over objects, as mean +- std over the seeds.

    .venv/bin/python benchmarks/shared_targets.py                # the full protocol
    .venv/bin/python benchmarks/shared_targets.py --seeds 0,1 --frames 400 --size 64x64 \\
        --minutes 3 --test-frames 60                              # a small budget

Writes ``--out``/summary.json and per seed the data and the four encoders.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
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

TRAIN_SCENE, TEST_SCENE = "three_targets", "three_targets_test"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    common_args(ap, "runs/bench_shared_targets")
    ap.set_defaults(target_randomization="default")
    ap.add_argument("--targets", default="cube,mug,thing", help="the scene's target objects")
    return ap.parse_args()


def one_seed(args: argparse.Namespace, seed: int, test: Path, targets: list[str]) -> dict:
    """The shared and the single-object encoders of one seed, scored per object."""
    out = Path(args.out) / f"seed{seed}"
    print(f"\n=== seed {seed}", flush=True)
    data = generate(TRAIN_SCENE, args, out / "data", seed)
    shared = scores(train(data, out / "shared", targets, args.minutes, args, seed), test)
    single = {}
    for name in targets:
        model = train(data, out / f"single_{name}", [name], args.minutes / len(targets), args, seed)
        single[name] = scores(model, test)[name]
    rows = {name: {"shared": shared[name], "single": single[name]} for name in targets}
    print(f"  {'object':8s} {'shared xy':>9s} {'single xy':>9s} {'shared yaw':>10s} "
          f"{'single yaw':>10s}")  # fmt: skip
    for name, r in rows.items():
        sh, si = r["shared"], r["single"]
        print(f"  {name:8s} {fmt(sh['xy_cm']):>9s} {fmt(si['xy_cm']):>9s} "
              f"{fmt(sh['yaw_deg']):>10s} {fmt(si['yaw_deg']):>10s}")  # fmt: skip
    return rows


def main() -> None:
    from sim2real.atomic import write_json

    args = parse_args()
    info = header(args, "shared_targets: one shared encoder vs one encoder per object")
    seeds, targets = parse_seeds(args.seeds), args.targets.split(",")
    test = target_folders(TEST_SCENE, args, Path(args.out) / "target", targets, 0)["test"]
    print(f"  test {test}: {args.test_frames} frames of {TEST_SCENE} ({args.target_randomization})")
    per_seed = {seed: one_seed(args, seed, test, targets) for seed in seeds}
    print(f"\nover seeds {seeds} (mean +- std), {args.test_frames} held-out frames; shared "
          f"{args.minutes} min, each single {args.minutes / len(targets):.2f} min")  # fmt: skip
    summary: dict = {}
    for kind in ("shared", "single"):
        for metric, unit in (("xy_cm", "cm"), ("yaw_deg", "deg")):
            for name in targets:
                values = [per_seed[s][name][kind][metric] for s in seeds]
                summary.setdefault(name, {})[f"{kind}_{metric}"] = spread(values)
                print(f"  {kind:6s} {name:8s} {metric:7s} {spread(values)} {unit}")
            means = [
                np.mean([per_seed[s][n][kind][metric] for n in targets])
                if all(per_seed[s][n][kind][metric] is not None for n in targets)
                else None
                for s in seeds
            ]
            summary.setdefault("mean_over_objects", {})[f"{kind}_{metric}"] = spread(means)
            print(f"  {kind:6s} {'mean':8s} {metric:7s} {spread(means)} {unit}")
    path = write_json(Path(args.out) / "summary.json",
                      {**info, "seeds": per_seed, "summary": summary})  # fmt: skip
    print(f"summary: {path}")


if __name__ == "__main__":
    main()
