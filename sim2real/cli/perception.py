"""The perception encoder: ``pretrain``, ``evaluate``, ``predict``."""

from __future__ import annotations

import argparse
import os

from sim2real.cli.common import (
    Subparsers,
    add_command,
    add_set_argument,
    crop_box,
    image_size,
    parse_overrides,
)

#: pretrain flags that map one to one onto the pretraining settings of the same name.
PRETRAIN_FIELDS = (
    "backbone", "head", "epochs", "batch_size", "lr", "freeze_blocks", "feature_stride",
    "dilated", "position_pool", "position_target", "heatmap_weight", "shift_px",
    "keypoint_window", "mixstyle", "randconv", "exposure", "seed", "init",
)  # fmt: skip


def cmd_pretrain(args: argparse.Namespace) -> int:
    from sim2real.perception.train import pretrain

    settings = {name: getattr(args, name) for name in PRETRAIN_FIELDS}
    settings["size"] = image_size(args.size) if args.size else None
    if args.crop:
        settings["crop"] = args.crop if args.crop == "table" else crop_box(args.crop)
    settings["max_minutes"] = args.minutes
    settings.update(parse_overrides(args.set))
    path = pretrain(args.data, args.out, device=args.device, resume=args.resume, **settings)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0
        print(f"encoder checkpoint: {path}")
    return 0


def _print_errors(stats: dict) -> None:
    for key in ("xy_cm", "xyz_cm"):
        e = stats[key]
        print(
            f"{key[:-3]:>4} error (cm): mean {e['mean']:.2f}  median {e['median']:.2f}  "
            f"p90 {e['p90']:.2f}  (n={stats['n']}, route {stats['route']})"
        )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sim2real.perception.evaluate import evaluate

    stats = evaluate(
        args.model,
        args.real,
        out_dir=args.out,
        route=args.route,
        keypoint_window=args.keypoint_window,
        batchnorm=args.batchnorm,
    )
    _print_errors(stats)
    for route, r in stats.get("routes", {}).items():
        print(
            f"  route {route}: xy mean {r['xy_cm']['mean']:.2f} cm, "
            f"median {r['xy_cm']['median']:.2f} cm, p90 {r['xy_cm']['p90']:.2f} cm"
        )
    if stats.get("csv"):
        print(f"per-frame CSV: {stats['csv']}\noverlay: {stats.get('overlay')}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from sim2real.perception.evaluate import predict_folder

    path = predict_folder(
        args.model, args.images, args.out, route=args.route, batchnorm=args.batchnorm
    )
    print(f"wrote {path}")
    return 0


def add_parsers(sub: Subparsers) -> None:
    """Add the perception commands to ``sub``."""
    _add_pretrain(sub)
    _add_evaluate(sub)
    _add_predict(sub)


def _add_batchnorm(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--batchnorm",
        choices=("stored", "frame"),
        default=None,
        help="BatchNorm statistics: stored (running) or frame (each frame's own); default: card's",
    )


def _add_pretrain(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "pretrain",
        summary="train the perception encoder on a generated dataset",
        description="""
            Train an ImageNet-pretrained encoder (EfficientNet-Lite0 by default) with a 3-D
            position head and a keypoint head on a dataset from `sim2real generate`. Writes
            MODEL/model.safetensors + MODEL/card.json; --resume continues a killed run with the
            same settings. Every pretraining setting is also a --set KEY=VALUE.""",
        examples="""
            sim2real pretrain --data runs/kuka_data --out runs/kuka_encoder --minutes 25
            sim2real pretrain --data runs/kuka_data --out runs/kuka_encoder --feature-stride 8 --dilated --heatmap-weight 0.1
            sim2real pretrain --data runs/kuka_data --out runs/kuka_encoder --resume""",
        func=cmd_pretrain,
    )
    p.add_argument("--data", required=True, help="dataset folder from `sim2real generate`")
    p.add_argument("--out", required=True, help="encoder folder to write")
    p.add_argument(
        "--backbone",
        default="efficientnet_lite0",
        help="efficientnet_lite0 | resnet18 | a small CNN (default efficientnet_lite0)",
    )
    p.add_argument(
        "--head",
        default="keypoint+position",
        help="position | keypoint | keypoint+position (default)",
    )
    p.add_argument("--epochs", type=int, default=10, help="passes over the data (default 10)")
    p.add_argument("--size", default=None, help="input size WxH (default: the dataset's)")
    p.add_argument(
        "--crop",
        default=None,
        help="X0,Y0,X1,Y1 region of interest in pixels of the --size frame, or 'table' "
        "(the scene's table seen by the nominal camera); default: the whole frame",
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--freeze-blocks", type=int, default=0, help="freeze the first N blocks")
    p.add_argument(
        "--mixstyle",
        type=float,
        default=0.0,
        help="probability of MixStyle (feature statistics mixed across the batch after the "
        "first 3 blocks) per step; 0: off",
    )
    p.add_argument(
        "--randconv",
        type=float,
        default=0.0,
        help="probability of a random convolution over the training images per step; 0: off",
    )
    p.add_argument(
        "--exposure",
        type=float,
        default=0.0,
        help="overexposure: half the training images get a gain up to 1+E, clipped; 0: off",
    )
    p.add_argument(
        "--feature-stride", type=int, default=None, help="8|16|32 (default: 16 for lite0/resnet18)"
    )
    p.add_argument(
        "--dilated", action="store_true", help="lite0 stride 8 by dilation, keeping 112 channels"
    )
    p.add_argument(
        "--position-pool", default="mean", help="position head input: mean | mean+points"
    )
    p.add_argument(
        "--position-target",
        default="cube",
        choices=["cube", "ee_relative"],
        help="what the routes locate: the cube (robot base frame) or the cube relative to "
        "the gripper (needs data from generate --reach-poses; for reaching policies)",
    )
    p.add_argument(
        "--heatmap-weight",
        type=float,
        default=0.0,
        help="weight of the keypoint heatmap KL term (0: L1 on the soft-argmax only)",
    )
    p.add_argument(
        "--shift-px",
        type=int,
        default=0,
        help="random image translation up to N px, keypoint label moved along",
    )
    p.add_argument(
        "--keypoint-window",
        type=int,
        default=3,
        help="keypoint decoding at eval: soft-argmax over N cells around the peak (0: whole map)",
    )
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget in minutes")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument(
        "--init",
        default=None,
        metavar="ENCODER",
        help="start from this saved encoder's weights (same architecture settings) with a "
        "fresh optimiser and schedule: fine-tune it on new or more data",
    )
    add_set_argument(p, "any pretraining setting, e.g. weight_decay=1e-4 heatmap_sigma=1.5")


def _add_evaluate(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "evaluate",
        summary="error statistics of an encoder on labelled real frames",
        description="""
            Predict the object's position in labelled frames and print the xy and xyz error
            (mean, median, p90, in cm) per route; with --out, also a per-frame CSV and an
            overlay PNG.""",
        examples="""
            sim2real evaluate --model runs/kuka_encoder --real ../shared/real/kuka_cube/labelled --out runs/eval""",
        func=cmd_evaluate,
    )
    p.add_argument("--model", required=True, help="encoder folder")
    p.add_argument("--real", required=True, help="folder of frames with labels.csv")
    p.add_argument("--out", default=None, help="folder for the per-frame CSV and overlay PNG")
    p.add_argument("--route", default=None, help="position_head|keypoint_plane (default: card's)")
    p.add_argument(
        "--keypoint-window", type=int, default=None, help="override the card's keypoint window"
    )
    _add_batchnorm(p)


def _add_predict(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "predict",
        summary="positions for a folder of images, to a CSV",
        description="Predict the object's position for every image of a folder; write a CSV.",
        examples="""
            sim2real predict --model runs/kuka_encoder --images ../shared/real/kuka_cube/unlabelled --out runs/preds.csv""",
        func=cmd_predict,
    )
    p.add_argument("--model", required=True, help="encoder folder")
    p.add_argument("--images", required=True, help="folder of images")
    p.add_argument("--out", required=True, help="CSV file to write")
    p.add_argument("--route", default=None, help="position_head|keypoint_plane (default: card's)")
    _add_batchnorm(p)
