"""Sim-only accuracy on the real kuka_cube frames: generate, pretrain under a budget, evaluate.

Renders ``--n`` randomised kuka_cube frames (2 workers), pretrains the default encoder for
``--minutes`` of training wall time, and scores it on the 12 labelled real frames (never the
unlabelled ones), with the BatchNorm running statistics of training and with per-frame
statistics (each frame normalised by its own; no other real frame). The camera comes from the
dataset manifest (the scene config at generation time), never from this script.

    .venv/bin/python benchmarks/kuka_cube_real.py --real ../shared/real/kuka_cube
    .venv/bin/python benchmarks/kuka_cube_real.py --real ../shared/real/kuka_cube \\
        --n 256 --minutes 1 --out runs/kuka_bench_smoke                      # smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import time
from pathlib import Path

from sim2real.data.generate import generate_dataset
from sim2real.data.shards import read_manifest
from sim2real.envs.sources import scene_spec
from sim2real.perception.evaluate import evaluate
from sim2real.perception.train import pretrain

FACTORY = "sim2real.envs.sources:make_source"


def _stats(s: dict[str, float]) -> str:
    return f"mean {s['mean']:6.2f}  median {s['median']:6.2f}  p90 {s['p90']:6.2f}"


def _crop(text: str | None) -> tuple[int, ...] | str | None:
    if text is None or text == "table":
        return text
    parts = [int(v) for v in text.split(",")]
    if len(parts) != 4:
        raise SystemExit(f"--crop {text!r}: expected X0,Y0,X1,Y1 or 'table'")
    return tuple(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--real", required=True, help="kuka_cube real folder (labelled/ inside)")
    ap.add_argument("--n", type=int, default=20_000, help="simulated images to render")
    ap.add_argument("--minutes", type=float, default=25.0, help="training wall-clock budget")
    ap.add_argument("--size", default="128x96", help="image size WxH")
    ap.add_argument("--randomization", default="kuka_cube", help="preset or YAML")
    ap.add_argument("--out", default="runs/kuka_bench")
    ap.add_argument("--data", default=None, help="dataset folder (default: OUT/data); reused")
    ap.add_argument("--workers", type=int, default=2, help="generation workers")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--feature-stride", type=int, default=None, help="default: pretrain's")
    ap.add_argument("--dilated", action="store_true", help="lite0 stride 8 by dilation")
    ap.add_argument("--position-pool", default="mean", help="mean | mean+points")
    ap.add_argument("--heatmap-weight", type=float, default=0.0, help="keypoint heatmap KL term")
    ap.add_argument("--shift-px", type=int, default=0, help="random translation (keypoint)")
    ap.add_argument(
        "--keypoint-window", type=int, default=3, help="eval soft-argmax window (0: whole map)"
    )
    ap.add_argument(
        "--spawn-near", type=float, default=0.0, help="fraction of cube spawns uniform per pixel"
    )
    ap.add_argument(
        "--freeze-blocks",
        type=int,
        default=0,
        help="keep the first N backbone blocks at their ImageNet weights (faster on CPU)",
    )
    ap.add_argument(
        "--crop",
        default=None,
        help="X0,Y0,X1,Y1 region of interest in pixels of --size, or 'table' (the scene's "
        "table through the nominal camera); default: the whole frame",
    )
    ap.add_argument(
        "--mixstyle", type=float, default=0.0, help="MixStyle probability per step (0: off)"
    )
    ap.add_argument(
        "--randconv", type=float, default=0.0, help="RandConv probability per step (0: off)"
    )
    ap.add_argument(
        "--exposure", type=float, default=0.0, help="overexposure gain up to 1+E, clipped (0: off)"
    )
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0, help="dataset seed (and training seed)")
    ap.add_argument(
        "--train-seed", type=int, default=None, help="training seed only (default: --seed)"
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--fresh", action="store_true", help="delete --out first")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    width, height = (int(v) for v in args.size.lower().split("x"))
    out = Path(args.out)
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    data, model = Path(args.data) if args.data else out / "data", out / "model"

    t0 = time.perf_counter()
    spec = scene_spec("kuka_cube", args.randomization, size=(width, height))
    if args.spawn_near:
        spec["scene"]["cube"]["spawn_near"] = args.spawn_near
    resume = (data / "manifest.json").is_file()
    if resume and read_manifest(data)["n"] != args.n:
        raise SystemExit(f"{data} holds another --n; pass --fresh or another --out")
    generate_dataset(
        FACTORY, spec, args.n, data, workers=args.workers, seed=args.seed, resume=resume
    )
    gen_seconds = time.perf_counter() - t0

    if model.exists():
        shutil.rmtree(model)
    t0 = time.perf_counter()
    pretrain(
        data,
        model,
        backbone=args.backbone,
        feature_stride=args.feature_stride,
        dilated=args.dilated,
        position_pool=args.position_pool,
        heatmap_weight=args.heatmap_weight,
        shift_px=args.shift_px,
        keypoint_window=args.keypoint_window,
        freeze_blocks=args.freeze_blocks,
        crop=_crop(args.crop),
        mixstyle=args.mixstyle,
        randconv=args.randconv,
        exposure=args.exposure,
        epochs=10_000,  # the time budget ends training; the cosine schedule follows it
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed if args.train_seed is None else args.train_seed,
        device=args.device,
        max_minutes=args.minutes,
    )
    train_seconds = time.perf_counter() - t0
    card = json.loads((model / "card.json").read_text())
    stats = evaluate(model, args.real, out_dir=out / "eval", device=args.device)
    framed = evaluate(
        model, args.real, out_dir=out / "eval_frame_bn", device=args.device, batchnorm="frame"
    )

    with (model / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    images_seen = int(rows[-1]["step"]) * args.batch_size if rows else 0
    stride = card["backbone"]["kwargs"].get("feature_stride")
    dilated = " dilated" if card["backbone"]["kwargs"].get("dilated") else ""
    heat, shift = card["training"].get("heatmap_weight", 0.0), card["training"].get("shift_px", 0)
    train = card["training"]
    print(f"\nkuka_cube sim-only benchmark  ({args.backbone}, {width}x{height}, "
          f"stride {stride}{dilated}, heatmap weight {heat}, shift {shift} px, "
          f"first {train.get('freeze_blocks', 0)} blocks frozen, "
          f"crop {card['preprocessing'].get('crop')}, "
          f"mixstyle {train.get('mixstyle', 0.0)}, "
          f"randconv {train.get('randconv', 0.0)}, "
          f"exposure {train.get('exposure', 0.0)})")  # fmt: skip
    print(f"  sim images generated       {args.n} in {gen_seconds:.0f} s "
          f"({train['train_samples']} train / {train['val_samples']} val)")  # fmt: skip
    speed = float(rows[-1]["images_per_s"])
    print(f"  training                   {train_seconds / 60:.1f} min wall, {len(rows)} epochs, "
          f"~{images_seen} images seen, {speed:.0f} img/s last epoch")  # fmt: skip
    sim = card["metrics"]["sim_val"]
    print(f"  best epoch                 {sim['epoch']}; default route {card['position_route']}")
    for route, m in stats["routes"].items():
        print(f"  [{route}]")
        if route in sim:
            print(f"    sim val  xy cm           mean {sim[route]['xy_cm_mean']:6.2f}  "
                  f"(xyz {sim[route]['xyz_cm_mean']:.2f})")  # fmt: skip
        print(f"    real xy  cm (n={stats['n']:2d})     {_stats(m['xy_cm'])}")
        print(f"    real xyz cm              {_stats(m['xyz_cm'])}")
    print(f"  per-frame CSV {stats['csv']}\n  overlay       {stats['overlay']}")
    print(f"  [{framed['route']}, per-frame BatchNorm statistics at inference (--batchnorm frame)]")
    print(f"    real xy  cm (n={framed['n']:2d})     {_stats(framed['xy_cm'])}")
    print(f"    per-frame CSV {framed['csv']}")


if __name__ == "__main__":
    main()
