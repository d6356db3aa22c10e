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
from sim2real.cli.settings import add_setting_flags, flag_settings
from sim2real.perception.train_config import PretrainConfig

#: Pretraining settings that are also flags (``--batch-size`` for ``batch_size``); every
#: setting of :class:`~sim2real.perception.train_config.PretrainConfig` is a ``--set KEY=VALUE``.
PRETRAIN_FLAGS = (
    "backbone", "head", "epochs", "batch_size", "lr", "freeze_blocks", "mixstyle", "randconv",
    "exposure", "feature_stride", "dilated", "position_pool", "position_target",
    "heatmap_weight", "shift_px", "keypoint_window", "max_minutes", "seed", "init", "targets",
    "yaw_weight",
)  # fmt: skip


def cmd_pretrain(args: argparse.Namespace) -> int:
    from sim2real.perception.train import pretrain
    from sim2real.perception.train_config import PretrainConfig

    settings = flag_settings(args, PRETRAIN_FLAGS)
    if args.size:
        settings["size"] = image_size(args.size)
    if args.crop:
        settings["crop"] = args.crop if args.crop == "table" else crop_box(args.crop)
    config = PretrainConfig.from_overrides({**settings, **parse_overrides(args.set)})
    path = pretrain(args.data, args.out, config, device=args.device, resume=args.resume)
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
        objects=_objects(args.objects),
    )
    if "objects" in stats:  # per object, then the mean over objects
        _print_objects(stats)
        return 0
    _print_errors(stats)
    _print_detection(stats.get("detection"))
    for route, r in stats.get("routes", {}).items():
        print(
            f"  route {route}: xy mean {r['xy_cm']['mean']:.2f} cm, "
            f"median {r['xy_cm']['median']:.2f} cm, p90 {r['xy_cm']['p90']:.2f} cm"
        )
    if stats.get("csv"):
        print(f"per-frame CSV: {stats['csv']}\noverlay: {stats.get('overlay')}")
    return 0


def _objects(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _print_objects(stats: dict) -> None:
    for name, r in stats["objects"].items():
        print(f"object {name}:")
        _print_errors(r)
        if r.get("yaw_deg"):
            y = r["yaw_deg"]
            print(f" yaw error (deg): mean {y['mean']:.1f}  median {y['median']:.1f}  "
                  f"p90 {y['p90']:.1f}  (modulo the object's symmetry)")  # fmt: skip
        _print_detection(r.get("detection"))
    mean = stats["mean"]
    print(f"mean over {len(stats['objects'])} objects:")
    _print_errors({**stats, "xy_cm": mean["xy_cm"], "xyz_cm": mean["xyz_cm"]})
    if mean.get("yaw_deg"):
        print(f" yaw error (deg): mean {mean['yaw_deg']['mean']:.1f}")
    if stats.get("csv"):
        print(f"per-frame CSV: {stats['csv']}")


def _print_detection(det: dict | None) -> None:
    if not det:
        return
    line = f"detection: {det['n_claimed_visible']} frames claimed visible"
    if det["missed"] is not None:
        line += (
            f"; of {det['labelled_visibility']} with a visible label, {det['missed']} visible "
            f"missed, {det['false_visible']} claimed visible but not"
        )
    line += f"; {det['n_low_confidence']} with confidence < 0.5"
    if det["detected_xy_cm"]:
        line += f"; xy on detected frames: mean {det['detected_xy_cm']['mean']:.2f} cm"
    print(line)


def cmd_predict(args: argparse.Namespace) -> int:
    from sim2real.perception.evaluate import predict_folder

    model = args.model
    if args.no_refine:  # the encoder's refiner (if any) off for this run
        from sim2real.perception.encoder import Encoder
        from sim2real.perception.refine import set_refine

        model = Encoder.load(args.model)
        set_refine(model, False)
    path = predict_folder(
        model,
        args.images,
        args.out,
        route=args.route,
        batchnorm=args.batchnorm,
        objects=_objects(args.objects),
    )
    print(f"wrote {path}")
    return 0


def add_parsers(sub: Subparsers) -> None:
    """Add the perception commands to ``sub``."""
    _add_pretrain(sub)
    _add_evaluate(sub)
    _add_predict(sub)


def _add_objects(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--objects",
        default=None,
        help="NAME,NAME: only these objects (of the encoder's targets); default: all",
    )


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
            position head and a keypoint head on a dataset from `sim2real generate`; with
            --targets NAME,NAME one keypoint, position, visibility (and yaw, for objects that
            declare a symmetry) output per named object on the shared backbone. Writes
            MODEL/model.safetensors + MODEL/card.json; --resume continues a killed run with the
            same settings. Every pretraining setting is also a --set KEY=VALUE.""",
        examples="""
            sim2real pretrain --data runs/kuka_data --out runs/kuka_encoder --minutes 25
            sim2real pretrain --data runs/kuka_data --out runs/kuka_encoder --feature-stride 8 --dilated --heatmap-weight 0.1
            sim2real pretrain --data runs/kuka_data --out runs/kuka_encoder --resume
            sim2real pretrain --data runs/mug_data --out runs/mug_encoder --targets mug,clutter_0 --yaw-weight 0.5""",
        func=cmd_pretrain,
    )
    p.add_argument("--data", required=True, help="dataset folder from `sim2real generate`")
    p.add_argument("--out", required=True, help="encoder folder to write")
    p.add_argument("--size", default=None, help="input size WxH (default: the dataset's)")
    p.add_argument(
        "--crop",
        default=None,
        help="X0,Y0,X1,Y1 region of interest in pixels of the --size frame, or 'table' "
        "(the scene's table seen by the nominal camera); default: the whole frame",
    )
    add_setting_flags(p, PretrainConfig, PRETRAIN_FLAGS, flags={"max_minutes": "minutes"})
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    add_set_argument(p, "any pretraining setting, e.g. weight_decay=1e-4 heatmap_sigma=1.5")


def _add_evaluate(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "evaluate",
        summary="error statistics of an encoder on labelled real frames",
        description="""
            Predict the object's position in labelled frames and print the xy and xyz error
            (mean, median, p90, in cm) per route; with --out, also a per-frame CSV and an
            overlay PNG. An encoder with several targets, or a long labels.csv
            (file,object,...) naming several objects, is scored per object (position, yaw
            modulo the object's symmetry, detection) and as the mean over objects.""",
        examples="""
            sim2real evaluate --model runs/kuka_encoder --real ../shared/real/kuka_cube/labelled --out runs/eval
            sim2real evaluate --model runs/mug_encoder --real runs/mug_real --objects mug""",
        func=cmd_evaluate,
    )
    p.add_argument("--model", required=True, help="encoder folder")
    p.add_argument("--real", required=True, help="folder of frames with labels.csv")
    p.add_argument("--out", default=None, help="folder for the per-frame CSV and overlay PNG")
    p.add_argument("--route", default=None, help="position_head|keypoint_plane (default: card's)")
    p.add_argument(
        "--keypoint-window", type=int, default=None, help="override the card's keypoint window"
    )
    _add_objects(p)
    _add_batchnorm(p)


def _add_predict(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "predict",
        summary="positions for a folder of images, to a CSV",
        description="""
            Predict the object's position for every image of a folder and write
            file,x_m,y_m,z_m,visible,confidence,ood (one row per frame; positions also when not
            visible; confidence below 0.5: do not act on the position). An encoder with
            several targets writes file,object,x_m,y_m,z_m,yaw_deg,visible,confidence,ood, one
            row per frame and object.""",
        examples="""
            sim2real predict --model runs/kuka_encoder --images ../shared/real/kuka_cube/unlabelled --out runs/preds.csv
            sim2real predict --model runs/mug_encoder --images runs/mug_real --out runs/mug_preds.csv --objects mug
            sim2real predict --model runs/kuka_encoder --images ../shared/real/kuka_cube/unlabelled --out runs/preds.csv --no-refine""",
        func=cmd_predict,
    )
    p.add_argument("--model", required=True, help="encoder folder")
    p.add_argument("--images", required=True, help="folder of images")
    p.add_argument("--out", required=True, help="CSV file to write")
    p.add_argument("--route", default=None, help="position_head|keypoint_plane (default: card's)")
    _add_objects(p)
    p.add_argument(
        "--no-refine",
        action="store_true",
        help="skip the encoder's refiner (sim2real refine train), use the coarse keypoint",
    )
    _add_batchnorm(p)
