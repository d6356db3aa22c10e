"""The ``sim2real`` command. Each subcommand parses its flags and calls one library function;
only this module configures logging."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from sim2real.errors import ConfigError, Sim2RealError

logger = logging.getLogger("sim2real")

Handler = Callable[[argparse.Namespace], int]


def _size(text: str) -> tuple[int, int]:
    from sim2real.envs.core import image_size_tuple

    return image_size_tuple(int(text) if text.isdigit() else text)


# -- subcommands ----------------------------------------------------------------------------
def cmd_bench_render(args: argparse.Namespace) -> int:
    from sim2real.bench import bench_render, format_render

    size = _size(args.size)
    result = bench_render(args.env, size, args.seconds, args.randomization, repeats=args.repeats)
    print(format_render(result))
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from sim2real import preview

    if args.scene and args.real:
        path = preview.preview_side_by_side(args.scene, args.real, args.out)
    elif args.scene:
        path = preview.preview_scene(
            args.scene, args.out, args.randomization, args.n, _size(args.size), args.seed
        )
    elif args.data:
        from sim2real.data.preview import preview_dataset

        path = preview_dataset(args.data, args.out, n=args.n, seed=args.seed)
    else:
        raise Sim2RealError("preview: give a dataset folder, or --scene YAML [--real DIR]")
    print(f"wrote {path}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from sim2real.data.generate import generate_dataset
    from sim2real.envs.sources import scene_spec

    spec = scene_spec(
        args.scene,
        args.randomization,
        _size(args.size),
        args.masks,
        args.depth,
        args.renderer,
        reach_poses=args.reach_poses,
    )
    path = generate_dataset(
        spec["source"],
        spec,
        args.n,
        args.out,
        workers=args.workers,
        seed=args.seed,
        shard_size=args.shard_size,
        resume=args.resume,
    )
    print(f"wrote {args.n} samples to {path}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from sim2real.data.calibrate import calibrate_scene

    result = calibrate_scene(args.scene, args.real, args.uv, args.out)
    print(f"reprojection RMS {result.rms_px:.2f} px; wrote {args.out}")
    return 0


def cmd_label_pixels(args: argparse.Namespace) -> int:
    from sim2real.data.label_pixels import label_pixels

    out = label_pixels(args.folder, args.out, headless=True if args.headless else None)
    print(f"pixel labels: {out}")
    return 0


def _crop(text: str) -> tuple[int, int, int, int]:
    """``"X0,Y0,X1,Y1"`` -> four ints; :class:`ConfigError` naming the expected form."""
    from sim2real.errors import ConfigError

    parts = text.replace(" ", "").split(",")
    if len(parts) != 4 or not all(p.lstrip("-").isdigit() for p in parts):
        raise ConfigError(f"--crop {text!r}: expected X0,Y0,X1,Y1 (four integers, pixels)")
    x0, y0, x1, y1 = (int(p) for p in parts)
    return x0, y0, x1, y1


def cmd_pretrain(args: argparse.Namespace) -> int:
    from sim2real.perception.train import pretrain

    size = _size(args.size) if args.size else None
    path = pretrain(
        args.data,
        args.out,
        backbone=args.backbone,
        head=args.head,
        epochs=args.epochs,
        size=size,
        crop=(args.crop if args.crop == "table" else _crop(args.crop)) if args.crop else None,
        batch_size=args.batch_size,
        lr=args.lr,
        freeze_blocks=args.freeze_blocks,
        feature_stride=args.feature_stride,
        dilated=args.dilated,
        position_pool=args.position_pool,
        position_target=args.position_target,
        heatmap_weight=args.heatmap_weight,
        shift_px=args.shift_px,
        keypoint_window=args.keypoint_window,
        mixstyle=args.mixstyle,
        randconv=args.randconv,
        exposure=args.exposure,
        seed=args.seed,
        device=args.device,
        init=args.init,
        resume=args.resume,
        max_minutes=args.minutes,
    )
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


def _overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs; a VALUE starting with ``{`` or ``[`` is read as JSON (e.g.
    ``algo_kwargs={"n_steps": 512}``, ``hidden=[64,64]``), any other stays a string for the
    config's own validation to convert."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise Sim2RealError(f"--set {pair!r}: expected key=value")
        if value.lstrip()[:1] in ("{", "["):
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise Sim2RealError(f"--set {pair!r}: expected JSON after '=', {exc}") from None
        else:
            out[key] = value
    return out


def cmd_finetune(args: argparse.Namespace) -> int:
    from sim2real.transfer import finetune_cli

    path = finetune_cli(
        args.model,
        args.real,
        args.out,
        args.strategy,
        unlabelled_dir=args.unlabelled,
        sim_dir=args.sim,
        **_overrides(args.set),
    )
    print(f"adapted encoder: {path}")
    return 0


def cmd_curve(args: argparse.Namespace) -> int:
    from sim2real.transfer.curve import run_curve

    ks = tuple(k if k == "all" else int(k) for k in args.ks.split(","))
    kwargs = {"strategies": tuple(args.strategies.split(","))} if args.strategies else {}
    report = run_curve(
        args.model,
        args.real,
        args.out,
        unlabelled_dir=args.unlabelled,
        sim_dir=args.sim,
        ks=ks,
        repeats=args.repeats,
        seed=args.seed,
        **kwargs,
        **_overrides(args.set),
    )
    print(f"transfer report: {report}")
    return 0


#: ``sim2real train`` options that a resumed run takes from its config.json.
_TRAIN_FIXED = {
    "env": "Sim2Real/ReachCube-v0",
    "encoder": None,
    "out": None,
    "algo": "ppo",
    "n_envs": 2,
    "mode": "frozen",
    "seed": 0,
}


def cmd_train(args: argparse.Namespace) -> int:
    from sim2real.policies.train import resume_training, train

    if args.resume:
        given = [
            f"--{k.replace('_', '-')}" for k, v in _TRAIN_FIXED.items() if getattr(args, k) != v
        ]
        if given:
            raise ConfigError(
                f"train --resume RUN takes the run's own configuration; got {', '.join(given)} "
                "(only --steps, --minutes and --set for steps/minutes/device/progress_bar/"
                "tensorboard/resume_every/save_sb3 apply)"
            )
        changes = {
            **({"steps": args.steps} if args.steps is not None else {}),
            **({"minutes": args.minutes or None} if args.minutes is not None else {}),
            **_overrides(args.set),
        }
        run = resume_training(args.resume, **changes)
        print(f"run folder (with bundle/): {run}")
        return 0
    if args.out is None:
        raise ConfigError("train needs --out RUN (or --resume RUN to go on with a run)")
    run = train(
        args.env,
        args.encoder,
        args.out,
        algo=args.algo,
        steps=100_000 if args.steps is None else args.steps,
        n_envs=args.n_envs,
        mode=args.mode,
        seed=args.seed,
        **{
            **({"minutes": args.minutes} if args.minutes is not None else {}),
            **_overrides(args.set),
        },
    )
    print(f"run folder (with bundle/): {run}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sim2real.deploy.export import cmd_export as export

    return export(args)


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from sim2real.deploy.run import run_bundle

    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_bundle(
        args.bundle,
        camera=args.camera,
        robot=args.robot,
        hz=args.hz,
        steps=args.steps or None,
        duration_s=args.duration,
        max_delta=args.max_delta,
        watchdog_s=args.watchdog,
        dry_run=args.dry_run,
        record=args.record,
        device=args.device,
        seed=args.seed,
    )
    report = result.report
    print(result.policy)
    print(
        f"{report.status}: {report.steps} steps in {report.duration_s:.1f} s at {args.hz:g} Hz "
        f"({report.overruns} overruns){' [dry run: nothing sent]' if args.dry_run else ''}"
    )
    if result.episodes:
        print(f"episodes finished: {len(result.episodes)}, success rate {result.success_rate:.0%}")
    print(report.latency.format())
    if result.recording:
        print(f"recording: {result.recording}")
    return 0


# -- parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from sim2real.demo import add_demo_parser
    from sim2real.pipeline.cli import add_pipeline_parser

    parser = argparse.ArgumentParser(prog="sim2real", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    add_demo_parser(sub)
    add_pipeline_parser(sub)

    gen = sub.add_parser("generate", help="render a labelled synthetic dataset (sharded)")
    gen.add_argument("--scene", required=True, help="scene preset or YAML")
    gen.add_argument("--randomization", default="default", help="preset or YAML")
    gen.add_argument("--n", type=int, required=True)
    gen.add_argument("--out", required=True)
    gen.add_argument("--workers", type=int, default=1)
    gen.add_argument("--size", default="128x96", help="N or WxH")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--shard-size", type=int, default=256)
    gen.add_argument("--masks", action="store_true", help="store instance masks")
    gen.add_argument("--depth", action="store_true", help="store metric depth")
    gen.add_argument("--renderer", default="tiny", choices=["tiny", "egl"])
    gen.add_argument(
        "--reach-poses",
        type=float,
        default=0.0,
        help="fraction of samples with the gripper posed near and above the cube (for "
        "pretrain --position-target ee_relative); the rest keep the jittered rest pose",
    )
    gen.add_argument("--resume", action="store_true", help="finish an interrupted run")
    gen.set_defaults(func=cmd_generate)

    cal = sub.add_parser("calibrate", help="fit the scene camera to labelled real frames")
    cal.add_argument("--scene", required=True)
    cal.add_argument("--real", required=True, help="folder with labels.csv (x_m,y_m,z_m)")
    cal.add_argument("--uv", default=None, help="CSV file,u,v (default: u,v in labels.csv)")
    cal.add_argument("--out", required=True, help="new scene YAML")
    cal.set_defaults(func=cmd_calibrate)

    lp = sub.add_parser("label-pixels", help="click the object in each frame (or a CSV template)")
    lp.add_argument("folder")
    lp.add_argument("--out", required=True, help="CSV file,u,v")
    lp.add_argument("--headless", action="store_true", help="write a template to fill by hand")
    lp.set_defaults(func=cmd_label_pixels)

    pt = sub.add_parser("pretrain", help="train the perception encoder on a generated dataset")
    pt.add_argument("--data", required=True)
    pt.add_argument("--out", required=True)
    pt.add_argument("--backbone", default="efficientnet_lite0")
    pt.add_argument(
        "--head", default="keypoint+position", help="position|keypoint|keypoint+position"
    )
    pt.add_argument("--epochs", type=int, default=10)
    pt.add_argument("--size", default=None, help="WxH (default: the dataset's)")
    pt.add_argument(
        "--crop",
        default=None,
        help="X0,Y0,X1,Y1 region of interest in pixels of the --size frame, or 'table' "
        "(the scene's table seen by the nominal camera); default: the whole frame",
    )
    pt.add_argument("--batch-size", type=int, default=64)
    pt.add_argument("--lr", type=float, default=1e-3)
    pt.add_argument("--freeze-blocks", type=int, default=0, help="freeze the first N blocks")
    pt.add_argument(
        "--mixstyle",
        type=float,
        default=0.0,
        help="probability of MixStyle (feature statistics mixed across the batch after the "
        "first 3 blocks) per step; training only; 0: off",
    )
    pt.add_argument(
        "--randconv",
        type=float,
        default=0.0,
        help="probability of a random convolution over the training images per step; 0: off",
    )
    pt.add_argument(
        "--exposure",
        type=float,
        default=0.0,
        help="overexposure: half the training images get a gain up to 1+E, clipped; 0: off",
    )
    pt.add_argument(
        "--feature-stride", type=int, default=None, help="8|16|32 (default: 16 for lite0/resnet18)"
    )
    pt.add_argument(
        "--dilated", action="store_true", help="lite0 stride 8 by dilation, keeping 112 channels"
    )
    pt.add_argument(
        "--position-pool", default="mean", help="position head input: mean | mean+points"
    )
    pt.add_argument(
        "--position-target",
        default="cube",
        choices=["cube", "ee_relative"],
        help="what the routes locate: the cube (robot base frame) or the cube relative to "
        "the gripper: the position head regresses the offset and the keypoint head finds "
        "the cube and the gripper (route keypoint_relative). Needs data from generate "
        "--reach-poses; for reaching policies",
    )
    pt.add_argument(
        "--heatmap-weight",
        type=float,
        default=0.0,
        help="weight of the keypoint heatmap KL term (0: L1 on the soft-argmax only)",
    )
    pt.add_argument(
        "--shift-px",
        type=int,
        default=0,
        help="random image translation up to N px, keypoint label moved along",
    )
    pt.add_argument(
        "--keypoint-window",
        type=int,
        default=3,
        help="keypoint decoding at eval: soft-argmax over N cells around the peak (0: whole map)",
    )
    pt.add_argument("--minutes", type=float, default=None, help="wall-clock budget")
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("--device", default="auto")
    pt.add_argument("--resume", action="store_true")
    pt.add_argument(
        "--init",
        default=None,
        metavar="ENCODER",
        help="start from this saved encoder's weights (same architecture settings) with a "
        "fresh optimiser and schedule: fine-tune it on new or more data",
    )
    pt.set_defaults(func=cmd_pretrain)

    ev = sub.add_parser("evaluate", help="error statistics on labelled real frames")
    ev.add_argument("--model", required=True)
    ev.add_argument("--real", required=True)
    ev.add_argument("--out", default=None, help="folder for the per-frame CSV and overlay PNG")
    ev.add_argument("--route", default=None, help="position_head|keypoint_plane (default: card's)")
    ev.add_argument(
        "--keypoint-window", type=int, default=None, help="override the card's keypoint window"
    )
    ev.add_argument(
        "--batchnorm",
        choices=("stored", "frame"),
        default=None,
        help="BatchNorm statistics: stored (running) or frame (each frame's own); default: card's",
    )
    ev.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="positions for a folder of images -> CSV")
    pr.add_argument("--model", required=True)
    pr.add_argument("--images", required=True)
    pr.add_argument("--out", required=True)
    pr.add_argument("--route", default=None)
    pr.add_argument(
        "--batchnorm",
        choices=("stored", "frame"),
        default=None,
        help="BatchNorm statistics: stored (running) or frame (each frame's own); default: card's",
    )
    pr.set_defaults(func=cmd_predict)

    ft = sub.add_parser("finetune", help="adapt an encoder to real frames")
    ft.add_argument("--model", required=True)
    ft.add_argument("--real", required=True, help="real frames (labelled and/or unlabelled)")
    ft.add_argument("--out", required=True)
    ft.add_argument("--strategy", required=True, help="probe|top-k|full|adabn|dann|adabn+top-k...")
    ft.add_argument("--unlabelled", default=None, help="folder of unlabelled real frames")
    ft.add_argument("--sim", default=None, help="sim dataset to mix in (needed by dann)")
    ft.add_argument("--set", action="append", metavar="KEY=VALUE", help="FinetuneConfig field")
    ft.set_defaults(func=cmd_finetune)

    cv = sub.add_parser("curve", help="k-shot transfer report for every strategy")
    cv.add_argument("--model", required=True)
    cv.add_argument("--real", required=True)
    cv.add_argument("--out", required=True)
    cv.add_argument("--unlabelled", default=None)
    cv.add_argument("--sim", default=None)
    cv.add_argument("--ks", default="0,1,2,4,8,all")
    cv.add_argument("--repeats", type=int, default=3)
    cv.add_argument("--strategies", default=None, help="comma-separated (default: all)")
    cv.add_argument("--seed", type=int, default=0)
    cv.add_argument("--set", action="append", metavar="KEY=VALUE", help="FinetuneConfig field")
    cv.set_defaults(func=cmd_curve)

    tr = sub.add_parser("train", help="train an SB3 policy on the shared encoder")
    tr.add_argument("--env", default="Sim2Real/ReachCube-v0")
    tr.add_argument("--encoder", default=None, help="encoder checkpoint (default: fresh)")
    tr.add_argument("--out", default=None, help="run folder to write")
    tr.add_argument(
        "--resume",
        default=None,
        metavar="RUN",
        help="go on with RUN from its last resume state (its own configuration; --steps "
        "raises the budget, --minutes limits this session)",
    )
    tr.add_argument("--algo", default="ppo", choices=["ppo", "sac"])
    tr.add_argument("--steps", type=int, default=None, help="env steps (default 100000)")
    tr.add_argument("--n-envs", type=int, default=2)
    tr.add_argument("--mode", default="frozen", choices=["frozen", "finetune", "scratch"])
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall-clock limit: stop there and save the run as at the end (Ctrl-C or SIGTERM "
        "also save it); with --resume, limits this session (default: the run's; 0: none)",
    )
    tr.add_argument("--set", action="append", metavar="KEY=VALUE", help="TrainConfig field")
    tr.set_defaults(func=cmd_train)

    ex = sub.add_parser("export", help="policy bundle -> one ONNX/TorchScript graph")
    ex.add_argument("--bundle", required=True, help="run folder or its bundle/")
    ex.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    ex.add_argument("--out", required=True, help="graph file; its contract goes to FILE.json")
    ex.add_argument("--opset", type=int, default=17, help="ONNX opset")
    ex.add_argument("--input-size", type=_size, help="WxH of the frames the graph takes")
    ex.set_defaults(func=cmd_export)

    rn = sub.add_parser("run", help="run a policy bundle on a camera + robot at a fixed rate")
    rn.add_argument("--bundle", required=True, help="RUN or RUN/bundle")
    rn.add_argument("--camera", default="sim", help="sim | replay:DIR | opencv:0")
    rn.add_argument("--robot", default="sim", help="sim (the bundle's env) | sim:ENV_ID")
    rn.add_argument("--hz", type=float, default=10.0, help="control rate")
    rn.add_argument("--steps", type=int, default=100, help="ticks to run (0: no limit)")
    rn.add_argument("--duration", type=float, help="seconds to run")
    rn.add_argument("--max-delta", type=float, help="largest action change per tick")
    rn.add_argument("--watchdog", type=float, default=0.5, help="largest frame age, seconds")
    rn.add_argument("--dry-run", action="store_true", help="compute actions, send nothing")
    rn.add_argument("--record", help="record observations, actions and timings to this folder")
    rn.add_argument("--device", default="auto")
    rn.add_argument("--seed", type=int, default=0, help="first simulated episode's seed")
    rn.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steadiest latency; 0: default)"
    )
    rn.set_defaults(func=cmd_run)

    bench = sub.add_parser("bench", help="speed measurements")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    br = bench_sub.add_parser("render", help="frames/s of an env's camera with randomisation on")
    br.add_argument("--env", default="Sim2Real/ReachCube-v0")
    br.add_argument("--size", default="84", help="N or WxH")
    br.add_argument("--seconds", type=float, default=10.0)
    br.add_argument("--randomization", default="default")
    br.add_argument("--repeats", type=int, default=3)
    br.set_defaults(func=cmd_bench_render)

    pv = sub.add_parser("preview", help="sample grid of a dataset or scene; sim beside real")
    pv.add_argument("data", nargs="?", help="a generated dataset folder")
    pv.add_argument("--scene", help="scene preset or YAML")
    pv.add_argument("--real", help="folder of labelled real frames (with --scene)")
    pv.add_argument("--randomization", default="default")
    pv.add_argument("--n", type=int, default=16)
    pv.add_argument("--size", default="160x120")
    pv.add_argument("--seed", type=int, default=0)
    pv.add_argument("--out", required=True)
    pv.set_defaults(func=cmd_preview)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except Sim2RealError as exc:
        logger.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        logger.warning("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
