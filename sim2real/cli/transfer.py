"""Transfer to real frames: ``finetune``, ``curve``."""

from __future__ import annotations

import argparse

from sim2real.cli.common import (
    Subparsers,
    add_command,
    add_set_argument,
    add_sweep_arguments,
    parse_overrides,
    sweep_backend,
)

STRATEGY_HELP = "probe | top-k | full | adabn | dann, or adabn+ one of the others"


def cmd_finetune(args: argparse.Namespace) -> int:
    from sim2real.transfer import finetune_cli

    path = finetune_cli(
        args.model,
        args.real,
        args.out,
        args.strategy,
        unlabelled_dir=args.unlabelled,
        sim_dir=args.sim,
        **parse_overrides(args.set),
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
        backend=sweep_backend(args),
        **kwargs,
        **parse_overrides(args.set),
    )
    print(f"transfer report: {report}")
    return 0


def add_parsers(sub: Subparsers) -> None:
    """Add the transfer commands to ``sub``."""
    p = add_command(
        sub,
        "finetune",
        summary="adapt an encoder to real frames (probe, top-k, full, AdaBN, DANN)",
        description="""
            Adapt a simulation-trained encoder to real frames: labelled frames train the
            head (probe) or the top blocks (top-k) or everything (full); unlabelled frames
            re-estimate BatchNorm statistics (adabn) or drive a domain classifier (dann, with
            --sim). Strategies compose: adabn+top-k. Writes a new encoder folder.""",
        examples="""
            sim2real finetune --model runs/kuka_encoder --real ../shared/real/kuka_cube --strategy adabn+top-k --out runs/kuka_adapted
            sim2real finetune --model runs/kuka_encoder --real ../shared/real/kuka_cube --strategy top-k --out runs/kuka_topk --set top_k=2 epochs=30""",
        func=cmd_finetune,
    )
    p.add_argument("--model", required=True, help="encoder folder to adapt")
    p.add_argument("--real", required=True, help="real frames (labelled and/or unlabelled)")
    p.add_argument("--out", required=True, help="adapted encoder folder to write")
    p.add_argument("--strategy", required=True, help=STRATEGY_HELP)
    p.add_argument("--unlabelled", default=None, help="folder of unlabelled real frames")
    p.add_argument("--sim", default=None, help="sim dataset to mix in (needed by dann)")
    add_set_argument(p, "fine-tuning setting (FinetuneConfig field), e.g. epochs=30")

    p = add_command(
        sub,
        "curve",
        summary="k-shot transfer report: every strategy at 0, 1, 2, ... labelled frames",
        description="""
            Fine-tune with each strategy on k labelled frames (repeats draws of k) and score
            on the held-out labelled frames; write OUT/report.md with the curves, the sim-only
            and real-only baselines and any negative transfer flagged. Every finished run is
            appended to OUT/runs.jsonl, so a killed curve resumes when run again.""",
        examples="""
            sim2real curve --model runs/kuka_encoder --real ../shared/real/kuka_cube --out runs/curve
            sim2real curve --model runs/kuka_encoder --real ../shared/real/kuka_cube --out runs/curve --strategies probe,adabn --ks 0,2,all
            sim2real curve --model runs/kuka_encoder --real ../shared/real/kuka_cube --out runs/curve --backend ray --address auto --cpus-per-run 2""",
        func=cmd_curve,
    )
    p.add_argument("--model", required=True, help="simulation-trained encoder folder")
    p.add_argument("--real", required=True, help="real frames with labels.csv")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--unlabelled", default=None, help="folder of unlabelled real frames")
    p.add_argument("--sim", default=None, help="sim dataset (for dann)")
    p.add_argument("--ks", default="0,1,2,4,8,all", help="labelled-frame counts, comma-separated")
    p.add_argument("--repeats", type=int, default=3, help="draws of k frames (default 3)")
    p.add_argument("--strategies", default=None, help="comma-separated (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    add_sweep_arguments(p, "(strategy, k, repeat) run")
    add_set_argument(p, "fine-tuning setting (FinetuneConfig field)")
