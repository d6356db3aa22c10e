"""What the several-objects benchmarks share (``xarm_mug.py``, ``shared_targets.py``): data,
pretraining under a time budget, the held-out simulated target folders, per-object scores and
mean +- std over training seeds. Everything runs through the project's own API
(``generate_dataset``, ``pretrain``, ``evaluate``, ``finetune_cli``): no training loop here."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

FACTORY = "sim2real.envs.sources:make_source"


def parse_size(text: str) -> tuple[int, int]:
    """``"96x72"`` -> ``(96, 72)``."""
    w, _, h = text.lower().partition("x")
    return int(w), int(h or w)


def parse_seeds(text: str) -> list[int]:
    """``"0 1 2"`` or ``"0,1,2"`` -> ``[0, 1, 2]``."""
    return [int(s) for s in text.replace(",", " ").split()]


def common_args(ap: argparse.ArgumentParser, out: str) -> None:
    """Budget, seeds, image size and output options of both benchmarks."""
    ap.add_argument("--seeds", default="0,1,2", help="training seeds, e.g. 0,1,2")
    ap.add_argument("--frames", type=int, default=4000, help="training frames per seed")
    ap.add_argument("--size", default="128x96", help="image size WxH")
    ap.add_argument("--minutes", type=float, default=20.0, help="pretraining budget per model")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--test-frames", type=int, default=200, help="held-out target frames")
    ap.add_argument("--target-seed", type=int, default=10_000, help="seed of the target frames")
    ap.add_argument("--randomization", default="default", help="training randomisation")
    ap.add_argument("--target-randomization", default="strong", help="held-out randomisation")
    ap.add_argument("--workers", type=int, default=1, help="generation processes")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--out", default=out, help="output folder (JSON summary inside)")


def generate(scene: str, args: argparse.Namespace, out: Path, seed: int) -> Path:
    """A training dataset of ``scene`` (reused when it is already there with the same spec)."""
    from sim2real.data.generate import generate_dataset
    from sim2real.envs.sources import scene_spec

    spec = scene_spec(scene, args.randomization, parse_size(args.size))
    t0 = time.perf_counter()
    path = generate_dataset(
        FACTORY, spec, args.frames, out, seed=seed, workers=args.workers, progress=False,
        resume=True,
    )  # fmt: skip
    print(f"  data {path}: {args.frames} frames ({time.perf_counter() - t0:.0f} s)", flush=True)
    return path


def train(data: Path, out: Path, targets: Sequence[str], minutes: float, args, seed: int) -> Path:
    """An encoder with per-target heads for ``targets``, trained for ``minutes`` (wall clock)."""
    import shutil

    from sim2real.perception.train import pretrain

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    model = pretrain(
        data, out, device="cpu", progress=False, seed=seed, targets=tuple(targets),
        max_minutes=minutes, epochs=10_000, batch_size=args.batch_size,
    )  # fmt: skip
    print(f"  encoder {model} ({','.join(targets)}): {time.perf_counter() - t0:.0f} s",
          flush=True)  # fmt: skip
    return model


def target_folders(
    scene: str, args: argparse.Namespace, root: Path, objects: Sequence[str], labelled: int
) -> dict[str, Path]:
    """Held-out simulated target frames: ``labelled`` (adaptation labels), ``unlabelled``
    (AdaBN statistics; its labels are never read) and ``test`` (scored only), disjoint frame
    indices of one seeded source. Made once and reused by every seed."""
    from sim2real.data.sim_target import write_sim_frames
    from sim2real.envs.sources import scene_spec

    spec = scene_spec(scene, args.target_randomization, parse_size(args.size))
    unlabelled = max(labelled, 32) if labelled else 0  # no adaptation: no AdaBN frames
    counts = {"labelled": labelled, "unlabelled": unlabelled, "test": args.test_frames}
    folders, start = {}, 0
    for part, count in counts.items():
        folder = root / part
        if count > 0 and not (folder / "labels.csv").is_file():
            write_sim_frames(spec, folder, count, seed=args.target_seed, objects=objects,
                             start=start)  # fmt: skip
        folders[part] = folder
        start += count
    return folders


def scores(model: Path, test: Path) -> dict[str, dict[str, float | None]]:
    """Per object: mean xy error (cm) and mean yaw error (degrees modulo its symmetry)."""
    from sim2real.perception.evaluate import evaluate

    stats = evaluate(model, test)
    out = {}
    for name, s in stats["objects"].items():
        yaw = s.get("yaw_deg")
        out[name] = {"xy_cm": s["xy_cm"]["mean"], "yaw_deg": yaw["mean"] if yaw else None}
    return out


def spread(values: Sequence[float | None]) -> str:
    """``mean +- std (n)`` of the values given (std over seeds, ddof 1)."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return "not measured"
    std = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
    return f"{v.mean():6.2f} +- {std:5.2f} (n={len(v)})"


def fmt(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.2f}"


def header(args: argparse.Namespace, what: str) -> dict[str, Any]:
    """Print and return the run's settings."""
    import os
    import platform

    import torch

    torch.set_num_threads(args.threads)
    info = {
        "what": what,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "args": vars(args),
    }
    print(f"{what}\n  {info['date']}, {info['machine']}")
    print("  " + " ".join(f"{k}={v}" for k, v in vars(args).items()), flush=True)
    return info
