"""Transfer to real frames: ``finetune``, ``curve``."""

from __future__ import annotations

import argparse
from pathlib import Path

from sim2real.cli.common import (
    Subparsers,
    add_command,
    add_set_argument,
    add_sweep_arguments,
    parse_overrides,
    sweep_backend,
)
from sim2real.cli.settings import add_setting_flags, flag_settings
from sim2real.transfer.config import DEFAULT_KS, CurveConfig, FinetuneConfig

STRATEGY_HELP = (
    "probe | top-k | full | adabn | dann | sim-only, or adabn+ one of the others; auto: "
    "chosen among --set candidates=... by cross-validation over the labelled frames"
)


#: Fine-tuning settings that are also flags of ``finetune`` (every
#: :class:`~sim2real.transfer.config.FinetuneConfig` field is a ``--set KEY=VALUE``).
FINETUNE_FLAGS = ("epochs", "lr", "top_k", "bn_mode", "seed", "device")
#: Curve settings that are flags of ``curve`` besides ``--ks`` and ``--strategies``.
CURVE_FLAGS = ("repeats", "outer_folds", "seed")


def cmd_finetune(args: argparse.Namespace) -> int:
    from sim2real.transfer import finetune_cli

    settings = {**flag_settings(args, FINETUNE_FLAGS), **parse_overrides(args.set)}
    path = finetune_cli(
        args.model,
        args.real,
        args.out,
        args.strategy,
        unlabelled_dir=args.unlabelled,
        sim_dir=args.sim,
        config=FinetuneConfig.from_overrides(settings),
    )
    print(f"adapted encoder: {path}")
    _print_objects(path)
    if args.strategy.strip() == "auto":
        import json

        selection = json.loads((path / "card.json").read_text())["transfer"][-1]["selection"]
        print(f"auto chose {selection['chosen']}: {selection['why']}")
        nested = selection.get("nested")
        if nested:
            free = ", ".join(f"{c} {v['mean']:.2f}" for c, v in nested["label_free_xy_cm"].items())
            print(
                f"nested CV ({nested['method']}, chosen per fold {nested['chosen_per_fold']}): "
                f"mean {nested['xy_cm']['mean']:.2f} cm; label-free on the same frames: {free}"
            )
    return 0


def _print_objects(path: Path) -> None:
    """The cross-validated error per object and the mean over objects, when the adapted
    encoder has several targets."""
    import json

    cv = json.loads((Path(path) / "card.json").read_text())["transfer"][-1].get("cv") or {}
    objects = cv.get("objects")
    if not objects:
        return
    cells = ", ".join(f"{k} {v['mean']:.2f} cm" for k, v in objects.items() if v)
    print(f"cross-validated xy error per object: {cells}; mean over objects "
          f"{cv['mean_over_objects']:.2f} cm")  # fmt: skip


def cmd_curve(args: argparse.Namespace) -> int:
    from sim2real.transfer.curve import run_curve

    curve = flag_settings(args, CURVE_FLAGS)
    if args.ks:
        curve["ks"] = [k if k == "all" else int(k) for k in args.ks.split(",")]
    if args.strategies:
        curve["strategies"] = args.strategies.split(",")
    report = run_curve(
        args.model,
        args.real,
        args.out,
        CurveConfig.from_overrides(curve),
        unlabelled_dir=args.unlabelled,
        sim_dir=args.sim,
        backend=sweep_backend(args),
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
            --sim). Strategies compose: adabn+top-k. --strategy auto chooses between the
            candidates (default sim-only, adabn, probe, adabn+probe, top-k, adabn+top-k) by
            cross-validation over the labelled frames and writes the choice, each candidate's
            inner-CV error and the reason into the card; --set auto_outer_folds=4 also
            measures the choice by nested cross-validation. Writes a new encoder folder.""",
        examples="""
            sim2real finetune --model runs/kuka_encoder --real ../shared/real/kuka_cube --strategy adabn+top-k --out runs/kuka_adapted
            sim2real finetune --model runs/kuka_encoder --real ../shared/real/kuka_cube --strategy top-k --out runs/kuka_topk --set top_k=2 epochs=30
            sim2real finetune --model runs/kuka_encoder --real ../shared/real/kuka_cube --strategy auto --out runs/kuka_auto --set candidates=adabn,adabn+top-k auto_outer_folds=4""",
        func=cmd_finetune,
    )
    p.add_argument("--model", required=True, help="encoder folder to adapt")
    p.add_argument("--real", required=True, help="real frames (labelled and/or unlabelled)")
    p.add_argument("--out", required=True, help="adapted encoder folder to write")
    p.add_argument("--strategy", required=True, help=STRATEGY_HELP)
    p.add_argument("--unlabelled", default=None, help="folder of unlabelled real frames")
    p.add_argument("--sim", default=None, help="sim dataset to mix in (needed by dann)")
    add_setting_flags(p, FinetuneConfig, FINETUNE_FLAGS)
    add_set_argument(p, "fine-tuning setting (FinetuneConfig field), e.g. steps_per_epoch=20")

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
    default_ks = ",".join(str(k) for k in DEFAULT_KS)
    p.add_argument(
        "--ks", default=None, help=f"labelled-frame counts, comma-separated (default {default_ks})"
    )
    p.add_argument("--strategies", default=None, help="comma-separated (default: all)")
    add_setting_flags(p, CurveConfig, CURVE_FLAGS)
    add_sweep_arguments(p, "(strategy, k, repeat) run")
    add_set_argument(p, "fine-tuning setting (FinetuneConfig field) or curve setting")
