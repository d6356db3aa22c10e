"""Scaling out, measured in one run on one machine: dataset generation with the local
backend (W worker processes) against Ray (a local cluster of W CPUs), interleaved repeats,
the ratio pair by pair; and the check that both wrote the same bytes.

    .venv/bin/python benchmarks/scale.py --n 2048 --workers 2 --repeats 3
    .venv/bin/python benchmarks/scale.py --n 20000 --workers 14 --repeats 3   # a 16-core machine

Ray's start-up (~5 s here) is paid once, outside the timed runs, as on a running cluster.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from sim2real.data.generate import generate_dataset
from sim2real.envs.sources import scene_spec

FACTORY = "sim2real.envs.sources:make_source"


def timed(spec: dict, n: int, workers: int, out: Path, backend: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    generate_dataset(
        FACTORY, spec, n, out, workers=workers, seed=0, progress=False, backend=backend
    )
    return n / (time.perf_counter() - t0)


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.glob("shard-*/*.npy")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scene", default="kuka_cube")
    ap.add_argument("--size", default="128x96")
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import ray

    w, h = (int(x) for x in args.size.split("x"))
    spec = scene_spec(args.scene, "default", (w, h))
    tmp = Path(tempfile.mkdtemp(prefix="sim2real-scale-"))
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    rates: dict[str, list[float]] = {"local": [], "ray": []}
    try:
        for _ in range(args.repeats):
            for backend in ("local", "ray"):  # interleaved: drift hits both
                out = tmp / backend
                rates[backend].append(timed(spec, args.n, args.workers, out, backend))
        same = digest(tmp / "local") == digest(tmp / "ray")
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = [r / loc for loc, r in zip(rates["local"], rates["ray"], strict=True)]
    print(
        f"generation, {args.scene} {args.size} default randomisation, n={args.n}, "
        f"{args.workers} workers, median of {args.repeats} (min-max):"
    )
    for backend, values in rates.items():
        print(
            f"  {backend:5s}: {statistics.median(values):.0f} images/s "
            f"({min(values):.0f}-{max(values):.0f})"
        )
    print(
        f"  ray/local ratio: {statistics.median(ratios):.2f} "
        f"({min(ratios):.2f}-{max(ratios):.2f}); same bytes: {same}"
    )


if __name__ == "__main__":
    main()
