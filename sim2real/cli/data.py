"""Simulated and real data: ``generate``, ``preview``, ``calibrate``, ``label-pixels``,
``bench render``."""

from __future__ import annotations

import argparse

from sim2real.cli.common import Subparsers, add_command, image_size
from sim2real.errors import ConfigError


def cmd_generate(args: argparse.Namespace) -> int:
    from sim2real.data.generate import Backend, generate_dataset
    from sim2real.envs.sources import scene_spec

    spec = scene_spec(
        args.scene,
        args.randomization,
        image_size(args.size),
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
        backend=Backend(args.backend, address=args.address, ray_output=args.ray_output),
    )
    print(f"wrote {args.n} samples to {path}")
    print(visible_share(path))
    return 0


def visible_share(path: str) -> str:
    """One line: the share of a dataset's samples in which the target is seen (a spawn
    region may reach beyond the camera's view), and each object's mean visible fraction."""
    from sim2real.data.shards import ShardedDataset

    ds = ShardedDataset(path, verify=False)
    seen = ds.column("visible_pixels") > 0 if "visible_pixels" in ds.fields else None
    text = "visible: no visible_pixels field"
    if seen is not None:
        text = f"visible: the target in {int(seen.sum())}/{len(seen)} samples ({seen.mean():.0%})"
    means = [
        f"{f.split('.')[1]} {ds.column(f).mean():.2f}"
        for f in ds.fields
        if f.startswith("objects.") and f.endswith(".visible_fraction")
    ]
    return text + (
        f"; mean visible fraction (0 when not shown): {', '.join(means)}" if means else ""
    )


def cmd_preview(args: argparse.Namespace) -> int:
    from sim2real import preview

    if args.scene and args.real:
        path = preview.preview_side_by_side(args.scene, args.real, args.out)
    elif args.scene:
        path = preview.preview_scene(
            args.scene, args.out, args.randomization, args.n, image_size(args.size), args.seed
        )
    elif args.data:
        from sim2real.data.preview import preview_dataset

        path = preview_dataset(args.data, args.out, n=args.n, seed=args.seed)
    else:
        raise ConfigError("preview: expected a dataset folder, or --scene YAML [--real DIR]")
    print(f"wrote {path}")
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


def cmd_bench_render(args: argparse.Namespace) -> int:
    from sim2real.bench import bench_render, format_render

    size = image_size(args.size)
    env_id = args.env or ("Sim2Real/Reach-v0" if args.scene else "Sim2Real/ReachCube-v0")
    result = bench_render(
        env_id, size, args.seconds, args.randomization, repeats=args.repeats, scene=args.scene
    )
    print(format_render(result))
    return 0


def add_parsers(sub: Subparsers) -> None:
    """Add the data commands to ``sub``."""
    _add_generate(sub)
    _add_preview(sub)
    _add_calibrate(sub)
    _add_label_pixels(sub)
    _add_bench(sub)


def _add_generate(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "generate",
        summary="render a labelled, randomised synthetic dataset (sharded, resumable)",
        description="""
            Render N labelled frames of a scene with domain randomisation into a folder of
            shards and a manifest. Sample i depends only on (seed, i): the bytes are the same
            whatever the number of workers. A killed run keeps its complete shards; run the
            same command with --resume to finish it.""",
        examples="""
            sim2real generate --scene kuka_cube --n 20000 --out runs/kuka_data --workers 2 --size 128x96
            sim2real generate --scene kuka_cube --n 20000 --out runs/kuka_data --workers 2 --size 128x96 --resume
            sim2real generate --scene kuka_cube --n 1000000 --out /shared/kuka_1m --workers 64 --backend ray --address auto""",
        func=cmd_generate,
    )
    p.add_argument("--scene", required=True, help="scene preset name or YAML file")
    p.add_argument(
        "--randomization", default="default", help="randomisation preset or YAML (default: default)"
    )
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--out", required=True, help="output folder (new, or the one to --resume)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--size", default="128x96", help="image size, N or WxH (default 128x96)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--shard-size", type=int, default=256, help="samples per shard (default 256)")
    p.add_argument("--masks", action="store_true", help="also store instance masks")
    p.add_argument("--depth", action="store_true", help="also store metric depth")
    p.add_argument(
        "--renderer", default="tiny", choices=["tiny", "egl"], help="PyBullet renderer (tiny: CPU)"
    )
    p.add_argument(
        "--reach-poses",
        type=float,
        default=0.0,
        help="fraction of samples with the gripper posed near and above the cube (for "
        "pretrain --position-target ee_relative); the rest keep the jittered rest pose",
    )
    p.add_argument("--resume", action="store_true", help="finish an interrupted run in --out")
    p.add_argument(
        "--backend",
        default="local",
        choices=["local", "ray"],
        help="local: worker processes here; ray: one actor per worker on a Ray cluster "
        "(pip install 'sim2real[ray]'); the bytes are the same",
    )
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join: auto | HOST:PORT (default: start a local one)",
    )
    p.add_argument(
        "--ray-output",
        default="driver",
        choices=["driver", "shared"],
        help="who writes the shards on Ray: the driver (default, any cluster) or the workers "
        "(--out must be on a filesystem every node shares)",
    )


def _add_preview(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "preview",
        summary="a picture grid of a dataset or a scene; simulated beside real frames",
        description="""
            Write a PNG grid: samples of a generated dataset (with their labels drawn), fresh
            randomised frames of a scene, or a scene's nominal camera beside real frames
            (--scene with --real), to check that the simulated camera matches the real one.""",
        examples="""
            sim2real preview runs/kuka_data --out runs/kuka_grid.png
            sim2real preview --scene tabletop_panda --out runs/preview.png
            sim2real preview --scene kuka_cube --real ../shared/real/kuka_cube/labelled --out runs/side_by_side.png""",
        func=cmd_preview,
    )
    p.add_argument("data", nargs="?", help="a generated dataset folder")
    p.add_argument("--scene", help="scene preset name or YAML file")
    p.add_argument("--real", help="folder of labelled real frames (with --scene)")
    p.add_argument("--randomization", default="default", help="randomisation preset or YAML")
    p.add_argument("--n", type=int, default=16, help="frames in the grid (default 16)")
    p.add_argument("--size", default="160x120", help="frame size for --scene, N or WxH")
    p.add_argument("--seed", type=int, default=0, help="which frames (default 0)")
    p.add_argument("--out", required=True, help="PNG file to write")


def _add_calibrate(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "calibrate",
        summary="fit the scene's camera to labelled real frames",
        description="""
            Fit the camera pose and vertical field of view to real frames that carry both the
            object's 3-D position (labels.csv) and its clicked pixel centre (--uv, from
            label-pixels); print the per-frame reprojection error; write a scene YAML with the
            fitted camera.""",
        examples="""
            sim2real calibrate --scene kuka_cube --real ../shared/real/kuka_cube/labelled --uv configs/labels/kuka_cube_uv.csv --out runs/kuka_cube_calibrated.yaml""",
        func=cmd_calibrate,
    )
    p.add_argument("--scene", required=True, help="scene preset name or YAML to start from")
    p.add_argument("--real", required=True, help="folder with labels.csv (x_m,y_m,z_m)")
    p.add_argument("--uv", default=None, help="CSV file,u,v (default: u,v in labels.csv)")
    p.add_argument("--out", required=True, help="scene YAML to write")


def _add_label_pixels(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "label-pixels",
        summary="click the object's centre in each frame (or write a CSV template)",
        description="""
            Show each frame of a folder and record a click on the object's centre as file,u,v
            (the input of calibrate). --headless writes a template to fill by hand instead.""",
        examples="""
            sim2real label-pixels ../shared/real/kuka_cube/labelled --out runs/uv.csv
            sim2real label-pixels ../shared/real/kuka_cube/labelled --out runs/uv.csv --headless""",
        func=cmd_label_pixels,
    )
    p.add_argument("folder", help="folder of frames")
    p.add_argument("--out", required=True, help="CSV file,u,v to write")
    p.add_argument("--headless", action="store_true", help="write a template to fill by hand")


def _add_bench(sub: Subparsers) -> None:
    bench = add_command(
        sub,
        "bench",
        summary="speed measurements (render)",
        description="Speed measurements; `sim2real bench render --help` for the options.",
        examples="sim2real bench render --env Sim2Real/ReachCube-v0 --size 84 --seconds 10",
        func=lambda args: 0,
    )
    bench_sub = bench.add_subparsers(
        dest="bench_command", required=True, metavar="WHAT", help="what to measure"
    )
    p = add_command(
        bench_sub,
        "render",
        summary="frames/s of an env's camera with randomisation on",
        description="""
            Render an env's camera for --seconds, --repeats times, and print the median
            frames/s (render + image augmentation) and env steps/s (physics + IK + render).""",
        examples="""
            sim2real bench render --env Sim2Real/ReachCube-v0 --size 84 --seconds 10
            sim2real bench render --env Sim2Real/ReachCube-v0 --size 84 --randomization none
            sim2real bench render --scene xarm_mug --size 84""",
        func=cmd_bench_render,
    )
    p.add_argument(
        "--env",
        help="registered env id (default Sim2Real/ReachCube-v0; Sim2Real/Reach-v0 with --scene)",
    )
    p.add_argument("--scene", help="scene preset or YAML, in place of the env id's own scene")
    p.add_argument("--size", default="84", help="image size, N or WxH (default 84)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per repeat (default 10)")
    p.add_argument("--randomization", default="default", help="randomisation preset or YAML")
    p.add_argument("--repeats", type=int, default=3, help="repeats; the median is printed")
