"""The stage functions: each reads its config section and upstream results, writes under
``OUT/<stage>/`` and returns a small JSON result (paths relative to ``OUT``).

Order: ``data`` -> ``target`` -> ``pretrain`` -> ``adapt`` -> ``evaluate`` -> ``policy`` ->
``scratch`` (the from-scratch baseline) -> ``export`` -> ``run`` -> ``report`` (see
:data:`STAGES`).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

from sim2real.pipeline import plots
from sim2real.pipeline.config import PipelineConfig
from sim2real.pipeline.engine import Context, Stage
from sim2real.pipeline.target import describe_randomization, real_inputs, run_target

logger = logging.getLogger(__name__)

FACTORY = "sim2real.envs.sources:make_source"


# -- data -----------------------------------------------------------------------------------
def run_data(ctx: Context) -> dict[str, Any]:
    """Render the labelled simulated dataset and its sample grid."""
    from sim2real.data.generate import generate_dataset
    from sim2real.data.preview import preview_dataset
    from sim2real.envs.sources import scene_spec

    cfg, sec = ctx.cfg, ctx.cfg.data
    spec = scene_spec(
        cfg.scene,
        sec.randomization,  # type: ignore[arg-type]
        cfg.image_size,
        reach_poses=sec.reach_poses,
    )
    data = generate_dataset(
        FACTORY,
        spec,
        sec.n,
        ctx.dir / "sim",
        workers=sec.workers,
        seed=sec.seed,
        shard_size=sec.shard_size,
        resume=ctx.resume,
        progress=ctx.progress,
    )
    grid = preview_dataset(data, ctx.dir / "samples.png", n=sec.grid, seed=cfg.seed)
    return {"dataset": ctx.rel(data), "grid": ctx.rel(grid), "n": sec.n}


# -- pretrain -------------------------------------------------------------------------------
def run_pretrain(ctx: Context) -> dict[str, Any]:
    """Pretrain the encoder on the simulated dataset."""
    from sim2real.perception.train import pretrain

    cfg, sec = ctx.cfg, ctx.cfg.pretrain
    data = ctx.path(ctx.results["data"]["dataset"])
    model = pretrain(
        data,
        ctx.dir / "encoder",
        sec.config(data, cfg.seed),
        device=cfg.device,
        resume=ctx.resume,
        progress=ctx.progress,
    )
    card = json.loads((model / "card.json").read_text())
    return {"encoder": ctx.rel(model), "metrics": card.get("metrics", {})}


# -- adapt ----------------------------------------------------------------------------------
def run_adapt(ctx: Context) -> dict[str, Any]:
    """Adapt the encoder to the target's labelled (+ unlabelled) frames; the k-shot curve."""
    from sim2real.transfer import finetune_cli

    cfg, sec, target = ctx.cfg, ctx.cfg.adapt, ctx.results["target"]
    encoder = ctx.path(ctx.results["pretrain"]["encoder"])
    unlabelled = _maybe_path(ctx, target["unlabelled"])
    given = sec.settings.model_dump(exclude_unset=True)  # what the YAML sets
    settings = {"seed": cfg.seed, "device": cfg.device, "progress": ctx.progress, **given}
    adapted = finetune_cli(
        encoder, ctx.path(target["labelled"]), ctx.dir / "encoder", sec.strategy, unlabelled,
        None, **settings,
    )  # fmt: skip
    card = json.loads((adapted / "card.json").read_text())
    result: dict[str, Any] = {
        "encoder": ctx.rel(adapted),
        "strategy": sec.strategy,
        "transfer": card.get("transfer", [])[-1:],
        "curve": None,
    }
    if sec.curve.enabled:
        from sim2real.transfer.curve import run_curve

        curve = sec.curve
        report = run_curve(
            encoder,
            ctx.path(target["labelled"]),
            ctx.dir / "curve",
            curve.config(cfg.seed),
            unlabelled_dir=unlabelled,
            progress=ctx.progress,
            **{"device": cfg.device, **curve.settings.model_dump(exclude_unset=True)},
        )
        from sim2real.transfer.report import summary

        results = json.loads((report.parent / "curve.json").read_text())
        result["curve"] = {
            "report": ctx.rel(report),
            "png": ctx.rel(report.parent / "curve.png"),
            "summary": summary(results),
        }
    return result


def _maybe_path(ctx: Context, value: str | None) -> Path | None:
    return None if value is None else ctx.path(value)


# -- evaluate -------------------------------------------------------------------------------
def run_evaluate(ctx: Context) -> dict[str, Any]:
    """Score the sim-only and the adapted encoder on the target's test frames."""
    from sim2real.perception.evaluate import evaluate

    test = ctx.path(ctx.results["target"]["test"])
    models = {
        "sim-only": ctx.path(ctx.results["pretrain"]["encoder"]),
        "adapted": ctx.path(ctx.results["adapt"]["encoder"]),
    }
    stats, errors = {}, {}
    for name, model in models.items():
        folder = ctx.dir / name
        stats[name] = evaluate(model, test, out_dir=folder, route=ctx.cfg.evaluate.route)
        stats[name]["csv"] = ctx.rel(folder / "frames.csv")
        stats[name]["overlay"] = ctx.rel(folder / "overlay.png")
        errors[name] = _column(folder / "frames.csv", "err_xy_cm")
    picture = plots.error_histograms(errors, ctx.dir / "errors.png", bins=ctx.cfg.evaluate.bins)
    return {"stats": stats, "histogram": ctx.rel(picture)}


def _column(path: Path, name: str) -> list[float]:
    with path.open(newline="") as f:
        return [float(row[name]) for row in csv.DictReader(f)]


# -- policy ---------------------------------------------------------------------------------
def run_policy(ctx: Context) -> dict[str, Any]:
    """Train the policy on the shared (frozen) encoder; plot its learning curve."""
    from sim2real.policies.train import train

    cfg, sec = ctx.cfg, ctx.cfg.policy
    stage = "adapt" if sec.encoder == "adapted" else "pretrain"
    encoder = ctx.path(ctx.results[stage]["encoder"])
    config = sec.train_config(
        str(encoder),
        seed=cfg.seed,
        image_size=list(cfg.image_size),
        randomization=_policy_domain(cfg),
        device=cfg.device,
        progress_bar=ctx.progress,
        save_sb3=False,
    )
    run = train(config.env_id, config.encoder, ctx.dir / "run", config=config)
    history = json.loads((run / "eval.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    picture = plots.learning_curve(history, run / "monitor.csv", ctx.dir / "learning_curve.png")
    return {
        "run": ctx.rel(run),
        "bundle": ctx.rel(run / "bundle"),
        "encoder_from": stage,
        "algo": sec.algo,
        "mode": sec.mode,
        "eval_episodes": json.loads((run / "config.json").read_text()).get("eval_episodes"),
        "summary": summary,
        "history": history,
        "learning_curve": ctx.rel(picture),
        **_recipe(run, sec.algo),
    }


def _recipe(run: Path, algo: str) -> dict[str, Any]:
    """The run's training recipe in words, its behaviour-cloning rounds (``bc.json``) and the
    position route its bundle reads (``None``: no position)."""
    from sim2real.policies.config import recipe_name

    bc = json.loads((run / "bc.json").read_text()) if (run / "bc.json").is_file() else None
    contract = json.loads((run / "bundle" / "contract.json").read_text())
    encoded = contract.get("features", {}).get("encoded", [])
    route = next((e.get("route") for e in encoded if e.get("name") == "position"), None)
    return {"recipe": recipe_name(algo, bc), "bc": bc, "position_route": route}


# -- export ---------------------------------------------------------------------------------
EXTENSIONS = {"onnx": ".onnx", "torchscript": ".pt"}


def run_export(ctx: Context) -> dict[str, Any]:
    """Export the bundle to each format; record file sizes and the parity check."""
    from sim2real.deploy.export import export_bundle
    from sim2real.deploy.exported import contract_path

    bundle = ctx.path(ctx.results["policy"]["bundle"])
    files = []
    for fmt in ctx.cfg.export.formats:
        path = export_bundle(bundle, fmt, ctx.dir / f"policy{EXTENSIONS[fmt]}")
        contract = json.loads(contract_path(path).read_text())
        files.append(
            {
                "format": fmt,
                "file": ctx.rel(path),
                "bytes": path.stat().st_size,
                "parity": contract.get("parity"),
            }
        )
    bundle_bytes = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    return {"files": files, "bundle_bytes": bundle_bytes}


# -- scratch --------------------------------------------------------------------------------
def run_scratch(ctx: Context) -> dict[str, Any]:
    """The baseline: the policy stage's training on a from-scratch CNN (same env steps), then
    the same closed loop as stage ``run`` (same robot seed, domain, rate and episodes)."""
    from sim2real.deploy.policy import Policy
    from sim2real.policies.train import train

    cfg = ctx.cfg
    config = cfg.scratch.train_config(
        cfg.policy,
        seed=cfg.seed,
        image_size=list(cfg.image_size),
        randomization=_policy_domain(cfg),
        device=cfg.device,
        progress_bar=ctx.progress,
        save_sb3=False,
    )
    run = train(config.env_id, None, ctx.dir / "run", config=config)
    history = json.loads((run / "eval.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    picture = plots.learning_curve(history, run / "monitor.csv", ctx.dir / "learning_curve.png")
    policy = Policy.load(run / "bundle", device=cfg.device)
    runs, robot = _drive(ctx, policy, [("closed_loop", 0)])
    closed = runs["closed_loop"]
    return {
        "run": ctx.rel(run),
        "backbone": cfg.scratch.backbone,
        **_recipe(run, cfg.policy.algo),
        "summary": summary,
        "history": history,
        "learning_curve": ctx.rel(picture),
        **robot,
        "closed_loop": closed,
        "success_rate": closed["success_rate"],
        "episodes": len(closed["episodes"]),
    }


def _policy_domain(cfg: PipelineConfig) -> Any:
    """The training randomisation of the policies (``policy.randomization`` or the data's)."""
    own = cfg.policy.randomization
    return own if own is not None else cfg.data.randomization


# -- run ------------------------------------------------------------------------------------
def run_runner(ctx: Context) -> dict[str, Any]:
    """The bundle through ``Runner`` on a ``SimRobot``: closed loop with the robot's own
    camera in the target domain, then replayed target frames (open loop)."""
    from sim2real.deploy.policy import Policy

    cfg, sec = ctx.cfg, ctx.cfg.run
    policy = Policy.load(ctx.path(ctx.results["policy"]["bundle"]), device=cfg.device)
    kinds = [("closed_loop", 0)] + ([("replay", sec.replay_steps)] * (sec.replay_steps > 0))
    runs, robot = _drive(ctx, policy, kinds)
    (ctx.dir / "runs.json").write_text(json.dumps(runs, indent=1) + "\n")
    return {**robot, "hz": sec.hz, "runs": runs}


def _drive(
    ctx: Context, policy: Any, kinds: list[tuple[str, int]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``policy`` on one connected ``SimRobot`` (seed ``seed + 7``, the run domain) for each
    ``(kind, ticks)``: ``closed_loop`` (the robot's camera; ticks from ``run.steps`` and
    ``run.episodes``) or ``replay`` (the target's frames). Returns the runs, and the robot's
    description with the task's success radius (``robot``, ``success_radius_m``)."""
    from sim2real.deploy import ReplayCamera, SimRobot

    cfg, sec = ctx.cfg, ctx.cfg.run
    randomization = sec.randomization if sec.randomization is not None else _run_domain(cfg)
    env_kwargs = {"randomization": randomization, "image_size": list(cfg.image_size)}
    scene = cfg.target.scene if cfg.real is None else None  # the target's own scene
    scene = scene or cfg.policy.settings.get("scene")  # else the scene the policy trained on
    if scene:
        env_kwargs["scene"] = scene
    runs: dict[str, Any] = {}
    robot = SimRobot(cfg.policy.env_id, seed=cfg.seed + 7, **env_kwargs)
    try:
        robot.connect()
        env = robot.env.unwrapped
        limit = int(getattr(env, "max_steps", 0)) or 1
        radius = getattr(getattr(env, "task", None), "success_threshold", None)
        for kind, steps in kinds:
            if kind == "closed_loop":
                steps, scored = max(sec.steps, sec.episodes * limit), sec.episodes or None
                runs[kind] = _run_once(policy, robot.camera(), robot, steps, sec, scored)
            else:
                runs[kind] = _run_once(policy, ReplayCamera(_replay(ctx)), robot, steps, sec)
    finally:
        robot.disconnect()
    domain = describe_randomization(randomization)
    where = f"scene {scene!r}, " if scene else ""
    robot_text = f"SimRobot({cfg.policy.env_id}, {where}randomization {domain})"
    return runs, {"robot": robot_text, "success_radius_m": radius}


def _run_once(
    policy: Any, camera: Any, robot: Any, steps: int, sec: Any, scored: int | None = None
) -> dict[str, Any]:
    """One ``Runner.run``; the robot's episodes that finished during it (the first
    ``scored`` of them when given: a fixed count, so short successful episodes do not
    inflate the rate)."""
    from sim2real.deploy.interfaces import ActionLimits
    from sim2real.deploy.runner import Runner

    episodes_before = len(robot.episodes)
    limits = ActionLimits(policy.action_low, policy.action_high, sec.max_delta)
    runner = Runner(policy, camera, robot, sec.hz, limits=limits, watchdog_s=sec.watchdog_s)
    try:
        report = runner.run(steps=steps)
    finally:
        camera.disconnect()
    episodes = [vars(e) for e in robot.episodes[episodes_before:]][:scored]
    rate = sum(e["success"] for e in episodes) / len(episodes) if episodes else None
    return {
        **report.to_dict(),
        "camera": repr(camera),
        "actions_sent": report.steps,
        "episodes": episodes,
        "success_rate": rate,
    }


def _run_domain(cfg: PipelineConfig) -> Any:
    """Where the closed loop runs: the held-out target randomisation (sim target), else the
    training randomisation (the user's real frames come from a robot we do not simulate)."""
    return cfg.target.randomization if cfg.real is None else cfg.data.randomization


def _replay(ctx: Context) -> Path:
    replay = ctx.results["target"]["replay"]
    return Path(replay) if os.path.isabs(replay) else ctx.path(replay)


# -- the stage list -------------------------------------------------------------------------
def _policy_on(cfg: PipelineConfig) -> bool:
    return cfg.policy.enabled


def _report(ctx: Context) -> dict[str, Any]:
    from sim2real.pipeline.report import write_report

    return write_report(ctx)


UPSTREAM = (
    "data", "target", "pretrain", "adapt", "evaluate", "policy", "scratch", "export", "run"
)  # fmt: skip

STAGES: tuple[Stage, ...] = (
    Stage("data", (), ("shared", "data"), run_data, resumable=True),
    Stage("target", (), ("shared", "target"), run_target, external=real_inputs),
    Stage("pretrain", ("data",), ("shared", "pretrain"), run_pretrain, resumable=True),
    Stage("adapt", ("pretrain", "target"), ("shared", "adapt"), run_adapt),
    Stage("evaluate", ("pretrain", "adapt", "target"), ("shared", "evaluate"), run_evaluate),
    Stage(
        "policy",
        ("pretrain", "adapt"),
        ("shared", "policy", "data"),
        run_policy,
        enabled=_policy_on,
    ),
    Stage(
        "scratch",
        ("target",),
        ("shared", "scratch", "data", "target", "run"),  # "scratch" holds the policy's fields
        run_scratch,
        enabled=lambda cfg: cfg.scratch.enabled and cfg.policy.enabled,
    ),
    Stage(
        "export",
        ("policy",),
        ("shared", "export"),
        run_export,
        enabled=lambda cfg: cfg.export.enabled,
    ),
    Stage(
        "run",
        ("policy", "target"),
        ("shared", "run", "policy", "target"),
        run_runner,
        enabled=lambda cfg: cfg.run.enabled,
    ),
    Stage("report", (), ("shared", "report"), _report, optional=UPSTREAM),
)
