"""Dataset generation speed: images/s with 1 and 2 workers (side by side, one run), and the
wall time of a full-size kuka_cube dataset.

    .venv/bin/python benchmarks/generate.py --n 2000 --repeats 3
    .venv/bin/python benchmarks/generate.py --full 20000        # the 20k @ 128x96 goal
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from sim2real.data.generate import generate_dataset
from sim2real.envs.sources import scene_spec

FACTORY = "sim2real.envs.sources:make_source"


def timed(spec: dict, n: int, workers: int, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    generate_dataset(FACTORY, spec, n, out, workers=workers, seed=0, progress=False)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scene", default="kuka_cube")
    ap.add_argument("--randomization", default="default")
    ap.add_argument("--size", default="128x96")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--full", type=int, default=0, help="also time one dataset of this size")
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))
    spec = scene_spec(args.scene, args.randomization, (w, h))
    tmp = Path(tempfile.mkdtemp(prefix="sim2real-bench-"))
    rates: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for workers in (1, 2):  # interleaved, so drift on a shared machine hits both
            rates[workers].append(timed(spec, args.n, workers, tmp / f"w{workers}"))
    one, two = (statistics.median(rates[k]) for k in (1, 2))
    print(f"{args.scene} {args.size} {args.randomization}, n={args.n}, median of {args.repeats}:")
    print(f"  1 worker : {one:.0f} images/s")
    print(f"  2 workers: {two:.0f} images/s  (speed-up {two / one:.2f}x)")
    if args.full:
        t0 = time.perf_counter()
        generate_dataset(FACTORY, spec, args.full, tmp / "full", workers=2, seed=0)
        dt = time.perf_counter() - t0
        print(f"  {args.full} images with 2 workers: {dt:.0f} s ({args.full / dt:.0f} images/s)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
