"""The coarse-to-fine keypoint refiner: ``refine train``, ``refine eval``, ``refine export``."""

from __future__ import annotations

import argparse

from sim2real.cli.common import Subparsers, add_command


def cmd_refine_train(args: argparse.Namespace) -> int:
    from sim2real.perception.refine_train import RefineConfig, train_refiner

    cfg = RefineConfig(
        crop=args.crop,
        width=args.width,
        iterations=args.iterations,
        jitter_px=args.jitter_px,
        coarse_fraction=args.coarse_fraction,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        max_minutes=args.minutes,
    )
    result = train_refiner(args.data, args.encoder, cfg, out=args.out, device=args.device)
    print(
        f"refiner ({result['frame_size'][0]}x{result['frame_size'][1]} frames, "
        f"{result['epochs']} epochs, {result['seconds']:.0f} s): validation windows "
        f"{result['val_px_before']:.2f} px -> {result['val_px_after']:.2f} px\n"
        f"encoder with refiner: {result['out']}"
    )
    return 0


def cmd_refine_eval(args: argparse.Namespace) -> int:
    from sim2real.perception.refine_train import evaluate_refinement

    r = evaluate_refinement(args.data, args.encoder, limit=args.limit)
    w, h = r["frame_size"]
    print(f"{r['n']} frames with the target in view, {w}x{h}")
    rows = [("px", "px", r["px"]), ("xy_cm", "cm", r["xy_cm"])]
    rows.append((f"px, {r['in_reach']['n']} frames coarse within reach", "px", r["in_reach"]["px"]))
    for key, unit, stats in rows:
        for name, s in stats.items():
            print(
                f"  {name:<8} {key:<6} mean {s['mean']:.2f} {unit}  median {s['median']:.2f}  "
                f"p90 {s['p90']:.2f}"
            )
    return 0


def cmd_refine_export(args: argparse.Namespace) -> int:
    import json

    from sim2real.deploy.export_refine import export_keypoints
    from sim2real.deploy.exported import contract_path

    frames = None
    if args.data:  # check parity on the dataset's first frames instead of noise
        import numpy as np

        from sim2real.data.shards import ShardedDataset

        ds = ShardedDataset(args.data, fields=["image"], verify=False)
        frames = np.stack([ds[i]["image"] for i in range(min(8, len(ds)))])
    out = export_keypoints(args.encoder, args.out, fmt=args.format, opset=args.opset, frames=frames)
    contract = json.loads(contract_path(out).read_text())
    print(f"wrote {out} and {contract_path(out).name} ({args.format})")
    if "parity" in contract:
        par = contract["parity"]
        print(
            f"max |keypoint - Encoder.predict| on {par['frames']} frames: "
            f"{par['max_abs_diff']:.2g} (refiner stage {par['refiner_max_abs_diff']:.2g})"
        )
    return 0


def add_parsers(sub: Subparsers) -> None:
    """Add ``refine`` and its subcommands to ``sub``."""
    refine = add_command(
        sub,
        "refine",
        summary="coarse-to-fine keypoints on full-resolution crops (train, eval, export)",
        description="""
            A second look at a full-resolution crop around the encoder's keypoint, trained in
            simulation; `sim2real refine train --help` for the options.""",
        examples="""
            sim2real refine train --data runs/kuka_data640 --encoder runs/kuka_encoder""",
        func=lambda args: 0,
    )
    refine_sub = refine.add_subparsers(
        dest="refine_command", required=True, metavar="WHAT", help="train | eval | export"
    )
    _add_train(refine_sub)
    _add_eval(refine_sub)
    _add_export(refine_sub)


def _add_train(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "train",
        summary="train a refiner for an encoder on full-resolution simulated frames",
        description="""
            Train the refiner on windows of the dataset's frames (render them at the camera's
            size: `sim2real generate --size 640x480`) centred on the true keypoint plus a
            random jitter, or on the encoder's own estimate; store it beside the encoder
            (refiner.safetensors + the card's refiner entry). Encoder.predict, `sim2real
            predict` and `sim2real refine export` then use it.""",
        examples="""
            sim2real refine train --data runs/kuka_data640 --encoder runs/kuka_encoder
            sim2real refine train --data runs/kuka_data640 --encoder runs/kuka_encoder --out runs/kuka_refined --minutes 5""",
        func=cmd_refine_train,
    )
    p.add_argument("--data", required=True, help="full-resolution dataset (sim2real generate)")
    p.add_argument("--encoder", required=True, help="encoder folder with a keypoint head")
    p.add_argument("--out", default=None, help="encoder folder to write (default: --encoder)")
    p.add_argument("--crop", type=int, default=64, help="window side in pixels (default 64)")
    p.add_argument("--width", type=int, default=16, help="refiner channels (default 16)")
    p.add_argument(
        "--iterations", type=int, default=1, help="looks per prediction at inference (default 1)"
    )
    p.add_argument(
        "--jitter-px", type=float, default=16.0, help="max centre jitter, pixels (default 16)"
    )
    p.add_argument(
        "--coarse-fraction",
        type=float,
        default=0.5,
        help="share of windows centred on the encoder's estimate (default 0.5)",
    )
    p.add_argument("--epochs", type=int, default=10, help="passes over the frames (default 10)")
    p.add_argument("--batch-size", type=int, default=64, help="windows per step (default 64)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget (default none)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (default cpu)")


def _add_eval(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "eval",
        summary="coarse vs refined keypoint (px) and position (cm) error on simulated frames",
        description="""
            On the in-view frames of a (held-out) full-resolution dataset: the keypoint error
            in pixels of its frames and the xy position error in cm (keypoint_plane route),
            coarse and refined.""",
        examples="""
            sim2real refine eval --data runs/kuka_test640 --encoder runs/kuka_encoder""",
        func=cmd_refine_eval,
    )
    p.add_argument("--data", required=True, help="full-resolution dataset (held out)")
    p.add_argument("--encoder", required=True, help="encoder folder with a refiner")
    p.add_argument("--limit", type=int, default=None, help="first N in-view frames only")


def _add_export(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "export",
        summary="the coarse-to-fine keypoint pass as one ONNX or TorchScript graph",
        description="""
            Write one graph (uint8 full-resolution frame -> coarse and refined keypoints) and
            its contract FILE.json, and record its largest difference from Encoder.predict on
            random frames (parity).""",
        examples="""
            sim2real refine export --encoder runs/kuka_encoder --out runs/kuka_encoder/keypoints.onnx
            sim2real refine export --encoder runs/kuka_encoder --out runs/kuka_encoder/keypoints.onnx --data runs/kuka_test640""",
        func=cmd_refine_export,
    )
    p.add_argument("--encoder", required=True, help="encoder folder with a refiner")
    p.add_argument("--out", required=True, help="graph file to write (.onnx or .pt)")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="graph format")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 16 (default 17)")
    p.add_argument(
        "--data", default=None, help="check parity on this dataset's first 8 frames (not noise)"
    )
