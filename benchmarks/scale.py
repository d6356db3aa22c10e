"""Scaling out, measured in one run on one machine: dataset generation with the local
backend (W worker processes) against Ray (a local cluster of W CPUs), interleaved repeats,
the ratio pair by pair, and the check that both wrote the same bytes; then pretraining
images/s in 1 process against ``torchrun`` with P DDP processes (same global batch).

    .venv/bin/python benchmarks/scale.py --n 2048 --workers 2 --repeats 3
    .venv/bin/python benchmarks/scale.py --n 20000 --workers 14 --repeats 3   # a 16-core machine
    .venv/bin/python benchmarks/scale.py --part pretrain --procs 2 --device cpu

Ray's start-up (~5 s here) is paid once, outside the timed runs, as on a running cluster.
Pretraining figures are the trainer's own images/s over its epochs (``metrics.csv``, all
processes counted), so process start-up is not in them.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
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


def pretrain_rate(data: Path, out: Path, procs: int, batch: int, args: argparse.Namespace) -> float:
    """Images/s of one pretraining run (median over its epochs), started as a user would."""
    shutil.rmtree(out, ignore_errors=True)
    cli = ["-m", "sim2real", "pretrain", "--data", str(data), "--out", str(out)]
    cli += ["--backbone", args.backbone, "--epochs", str(args.epochs), "--device", args.device]
    cli += ["--batch-size", str(batch // procs)]
    if procs > 1:
        cli = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *cli]
    subprocess.run([sys.executable, *cli], check=True, capture_output=True, env=dict(os.environ))
    with (out / "metrics.csv").open(newline="") as f:
        return statistics.median(float(r["images_per_s"]) for r in csv.DictReader(f))


def bench_pretrain(args: argparse.Namespace, tmp: Path) -> None:
    w, h = (int(x) for x in args.size.split("x"))
    spec = scene_spec(args.scene, "default", (w, h))
    data = generate_dataset(
        FACTORY, spec, args.pretrain_n, tmp / "data", workers=args.workers, seed=0,
        progress=False,
    )  # fmt: skip
    rates: dict[int, list[float]] = {1: [], args.procs: []}
    for _ in range(args.repeats):
        for procs in rates:  # interleaved
            rates[procs].append(pretrain_rate(data, tmp / f"p{procs}", procs, args.batch, args))
    ratios = [d / s for s, d in zip(rates[1], rates[args.procs], strict=True)]
    print(
        f"pretraining, {args.backbone} {args.size}, {args.pretrain_n} images, global batch "
        f"{args.batch}, {args.epochs} epochs, {args.device}, median of {args.repeats} (min-max):"
    )
    for procs, values in rates.items():
        label = "1 process" if procs == 1 else f"{procs} DDP"
        print(
            f"  {label:9s}: {statistics.median(values):.1f} images/s "
            f"({min(values):.1f}-{max(values):.1f})"
        )
    print(
        f"  DDP/single ratio: {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scene", default="kuka_cube")
    ap.add_argument("--size", default="128x96")
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--part", choices=("all", "generate", "pretrain"), default="all")
    ap.add_argument("--procs", type=int, default=2, help="DDP processes (torchrun)")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--batch", type=int, default=32, help="global batch (split over procs)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--pretrain-n", type=int, default=384, help="pretraining images")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (one GPU per process)")
    args = ap.parse_args()
    if args.part in ("all", "generate"):
        bench_generate(args)
    if args.part in ("all", "pretrain"):
        tmp = Path(tempfile.mkdtemp(prefix="sim2real-scale-"))
        try:
            bench_pretrain(args, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def bench_generate(args: argparse.Namespace) -> None:
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
