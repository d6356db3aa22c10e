"""Stage ``report``: ``OUT/report/report.md`` with its pictures beside it, from the results of
every upstream stage; :func:`top_level` also writes the top-level ``OUT/report.md`` (same text,
picture links into ``report/``) and ``OUT/report.json``, the headline figures
(:func:`headline`) machine-readable. The report opens with those figures in five lines."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

from sim2real.atomic import write_json, write_text
from sim2real.pipeline.engine import Context
from sim2real.pipeline.governing import flatten as _flatten
from sim2real.pipeline.governing import governing_error
from sim2real.pipeline.reproduce import reproduce_section, stage_commands

__all__ = ["SECTIONS", "headline", "render", "stage_commands", "top_level", "write_report"]

logger = logging.getLogger(__name__)

#: The runner's latency stages in tick order (``.stage.json`` stores keys sorted).
LATENCY_ORDER = ("capture", "preprocess", "inference", "send", "total")

#: Section headings, in order; every one is always filled (a disabled stage says why).
SECTIONS = (
    "Summary",
    "Stages",
    "Sample grid",
    "Pretraining",
    "Error histograms",
    "Transfer curve",
    "RL learning curve",
    "Evaluation",
    "Export",
    "Runner",
    "Reproduce",
)


def write_report(ctx: Context) -> dict[str, Any]:
    """Copy the pictures into ``OUT/report/`` and write ``report.md`` there."""
    pictures = _collect_pictures(ctx)
    text = render(ctx.cfg, ctx.results, ctx.meta, pictures, prefix="")
    path = write_text(ctx.dir / "report.md", text)
    return {"report": ctx.rel(path), "pictures": pictures}


def headline(cfg: Any, results: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The figures a reader looks at first, as written to ``OUT/report.json``.

    ``None`` where a stage did not run or produced no such figure (e.g. no episode finished).

    >>> h = headline(None, {"evaluate": {"stats": {"sim-only": {"n": 4, "xy_cm": {"mean": 9.0}}}}},
    ...              {"seconds": {"data": 1.0, "pretrain": 2.5}})
    >>> h["total_seconds"], h["target"]["sim_only"]["mean_xy_cm"], h["target"]["adapted"]
    (3.5, 9.0, None)
    """
    stats = (results.get("evaluate") or {}).get("stats", {})

    def perception(name: str) -> dict[str, Any] | None:
        s = stats.get(name)
        if not s:
            return None
        return {"mean_xy_cm": s["xy_cm"]["mean"], "frames": s["n"], "route": s.get("route")}

    closed = ((results.get("run") or {}).get("runs") or {}).get("closed_loop") or {}
    scratch = results.get("scratch") or {}
    return {
        "total_seconds": round(sum((meta.get("seconds") or {}).values()), 1),
        "stages": [name for name in (meta.get("seconds") or {}) if name != "report"],
        "budget_minutes": getattr(getattr(cfg, "report", None), "budget_minutes", None),
        "target": {"sim_only": perception("sim-only"), "adapted": perception("adapted")},
        "policy": {
            "target_success_rate": closed.get("success_rate"),
            "episodes": len(closed.get("episodes") or []),
            "training_success_rate": (
                ((results.get("policy") or {}).get("history") or [{}])[-1].get("success_rate")
            ),
            "scratch_success_rate": scratch.get("success_rate"),
            "scratch_episodes": scratch.get("episodes", 0),
            "recipe": (results.get("policy") or {}).get("recipe"),
        },
    }


def _summary(h: dict[str, Any]) -> str:
    """Five lines: what ran and the headline figures."""

    def cm(entry: dict[str, Any] | None) -> str:
        return f"{entry['mean_xy_cm']:.2f} cm" if entry else "not run"

    def rate(value: float | None) -> str:
        return f"{value:.0%}" if value is not None else "not measured"

    sim, adapted = h["target"]["sim_only"], h["target"]["adapted"]
    change = ""
    if sim and adapted and sim["mean_xy_cm"] > 0:
        change = f" ({adapted['mean_xy_cm'] / sim['mean_xy_cm'] - 1:+.0%})"
    p = h["policy"]
    budget = f" (budget {h['budget_minutes']:g} min)" if h.get("budget_minutes") else ""
    scratch = (
        f"{rate(p['scratch_success_rate'])} over {p['scratch_episodes']} episode(s)"
        if "scratch" in h["stages"] else "not run (`scratch.enabled` is false)"
    )  # fmt: skip
    return (
        "## Summary\n\n"
        f"- Ran: {', '.join(h['stages']) or 'no stage'}, in {h['total_seconds']:.0f} s{budget}.\n"
        f"- Target-domain position error (mean xy, test frames): sim-only {cm(sim)}, adapted "
        f"{cm(adapted)}{change}.\n"
        f"- Policy ({p.get('recipe') or 'not trained'}) success on the target domain through "
        f"`Runner`: {rate(p['target_success_rate'])}"
        f" over {p['episodes']} episode(s); training domain {rate(p['training_success_rate'])}.\n"
        f"- From-scratch policy (same recipe and env steps, same closed loop): {scratch}.\n"
        "- The same figures are in `report.json`; the sections below say how each was made.\n"
    )


def render(
    cfg: Any, results: dict[str, Any], meta: dict[str, Any], pictures: dict[str, str], prefix: str
) -> str:
    """The Markdown report; picture links are ``prefix + file name``."""

    def img(key: str, alt: str) -> str:
        return f"![{alt}]({prefix}{pictures[key]})" if key in pictures else f"(no {alt} picture)"

    parts = [
        f"# {cfg.report.title}: `{cfg.name}`\n",
        f"Scene `{cfg.scene}`, images {cfg.image_size[0]}x{cfg.image_size[1]}, device "
        f"`{cfg.device}`, torch threads {cfg.threads or 'default'}, seed {cfg.seed}.\n",
        _summary(headline(cfg, results, meta)),
        _stages(meta),
        _samples(results, img),
        _pretraining(results),
        _errors(results, img),
        _curve(cfg, results, img),
        _learning(results, img),
        _evaluation(cfg, results),
        _export(results),
        _runner(results),
        reproduce_section(cfg, results, meta),
    ]
    return "\n".join(parts)


def _collect_pictures(ctx: Context) -> dict[str, str]:
    wanted = {
        "data_grid": ("data", "grid"),
        "target_grid": ("target", "grid"),
        "errors": ("evaluate", "histogram"),
        "learning_curve": ("policy", "learning_curve"),
        "scratch_curve": ("scratch", "learning_curve"),
    }
    sources = {}
    for key, (stage, field) in wanted.items():
        if stage in ctx.results and ctx.results[stage].get(field):
            sources[key] = ctx.path(ctx.results[stage][field])
    curve = (ctx.results.get("adapt") or {}).get("curve")
    if curve:
        sources["transfer_curve"] = ctx.path(curve["png"])
    for name in ("sim-only", "adapted"):
        stats = (ctx.results.get("evaluate") or {}).get("stats", {}).get(name)
        if stats and stats.get("overlay"):
            sources[f"overlay_{name}"] = ctx.path(stats["overlay"])
    pictures = {}
    for key, source in sources.items():
        name = f"{key.replace('-', '_')}.png"
        if key.startswith("overlay_"):
            _first_rows(source, ctx.dir / name)
        else:
            shutil.copyfile(source, ctx.dir / name)
        pictures[key] = name
    return pictures


def _first_rows(source: Path, out: Path, width: int = 800) -> None:
    """The top of an overlay grid (its first two rows of tiles for square frames), ``width``
    pixels wide: the full grid of every test frame is megabytes and stays in ``evaluate/``."""
    import cv2

    image = cv2.imread(str(source))
    h, w = image.shape[:2]
    top = image[: min(h, w // 2)]
    scale = min(1.0, width / w)
    small = cv2.resize(top, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(out), small)


def _not_run(stage: str, results: dict[str, Any]) -> str | None:
    return None if stage in results else f"_Not run: stage `{stage}` is disabled in this config._\n"


def _stages(meta: dict[str, Any]) -> str:
    seconds = meta.get("seconds", {})
    rows = [f"| {name} | {s:.1f} |" for name, s in seconds.items()]
    total = sum(seconds.values())
    return (
        "## Stages\n\nWall time of each stage when it last ran (a resumed pipeline skips the "
        "stages whose outputs exist and whose inputs and config are unchanged).\n\n"
        "| stage | seconds |\n|---|---|\n" + "\n".join(rows) + f"\n| **total** | {total:.1f} |\n"
    )


def _samples(results: dict[str, Any], img: Any) -> str:
    data, target = results["data"], results["target"]
    counts = ", ".join(f"{k} {v}" for k, v in target["counts"].items())
    return (
        f"## Sample grid\n\nTraining data: {data['n']} randomised simulated frames (cross: "
        f"projected cube centre; box: its mask's bounds).\n\n{img('data_grid', 'training samples')}"
        f"\n\nTarget domain ({target['source']}; {counts}):\n\n"
        f"{img('target_grid', 'target samples')}\n"
    )


def _pretraining(results: dict[str, Any]) -> str:
    metrics = _flatten(results["pretrain"].get("metrics") or {})
    rows = [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
    table = "| metric | value |\n|---|---|\n" + "\n".join(rows) if rows else "(no metrics)"
    return (
        "## Pretraining\n\nThe encoder, trained on simulated frames only; validation on held-out "
        f"simulated frames of the training distribution.\n\n{table}\n"
    )


def _errors(results: dict[str, Any], img: Any) -> str:
    ev = results["evaluate"]["stats"]
    rows = []
    for name, s in ev.items():
        xy = s["xy_cm"]
        rows.append(
            f"| {name} | {s['n']} | {s['route']} | {xy['mean']:.2f} | {xy['median']:.2f} | "
            f"{xy['p90']:.2f} |"
        )
    strategy = results["adapt"]["strategy"]
    return (
        "## Error histograms\n\nCube position error on the target domain's **test** frames, "
        f"which no stage trained on: the sim-only encoder vs the encoder adapted with "
        f"`{strategy}` on the target's labelled (and unlabelled) frames.\n\n"
        "| encoder | frames | route | mean xy cm | median | p90 |\n|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\n{img('errors', 'error histograms')}\n\n"
        f"First test frames (green circle: label; crosses: each route's prediction; all "
        f"frames in `evaluate/*/overlay.png`):\n\n"
        f"{img('overlay_sim-only', 'sim-only overlay')}\n\n"
        f"{img('overlay_adapted', 'adapted overlay')}\n"
    )


def _curve(cfg: Any, results: dict[str, Any], img: Any) -> str:
    curve = results["adapt"].get("curve")
    if not curve:
        return (
            "## Transfer curve\n\n_Not measured: `adapt.curve.enabled` is false in this config._\n"
        )
    rows = []
    for name, row in curve["summary"].items():
        slope = f"{row['slope']:+.2f}" if row.get("slope") is not None else "n/a"
        flags = "; ".join(row.get("flags") or []) or "-"
        rows.append(
            f"| {name} | {row['start']:.2f} (k={row['start_k']}) | {slope} | "
            f"{row['best']:.2f} (k={row['best_k']}) | {flags} |"
        )
    return (
        "## Transfer curve\n\nMean xy error (cm) on held-out labelled target frames against the "
        "number k of labelled target frames used (cross-validated; "
        f"ks {cfg.adapt.curve.ks}, {cfg.adapt.curve.repeats} repeat(s)).\n\n"
        f"{img('transfer_curve', 'transfer curve')}\n\n"
        "| entry | start | slope per doubling of k | best | flags |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


def _learning(results: dict[str, Any], img: Any) -> str:
    if "policy" not in results:
        return "## RL learning curve\n\n" + (_not_run("policy", results) or "")
    p = results["policy"]
    s = p["summary"]
    return (
        f"## RL learning curve\n\n{p.get('recipe') or p.get('algo', 'RL').upper()} on the "
        f"`{p['encoder_from']}` encoder ({p.get('mode', 'frozen')}), position route "
        f"`{p.get('position_route')}`: {s['env_steps']} RL env steps after "
        f"{s.get('bc_env_steps', 0)} cloning env steps, {s['wall_s']:.0f} s in all "
        f"({s['env_steps_per_s']:.0f} env steps/s outside evaluations). The curve starts where "
        f"cloning left the policy.{_bc_rounds(p.get('bc'))}\n\n"
        f"{img('learning_curve', 'learning curve')}\n" + _scratch_curve(results, img)
    )


def _scratch_curve(results: dict[str, Any], img: Any) -> str:
    if "scratch" not in results:
        return ""
    sc = results["scratch"]
    s = sc["summary"]
    return (
        f"\nThe baseline: the same training from a randomly initialised `{sc['backbone']}` "
        f"(stage `scratch`), {s['env_steps']} RL env steps after {s.get('bc_env_steps', 0)} "
        f"cloning env steps, {s['wall_s']:.0f} s.{_bc_rounds(sc.get('bc'))}\n\n"
        f"{img('scratch_curve', 'from-scratch learning curve')}\n"
    )


def _bc_rounds(bc: dict[str, Any] | None) -> str:
    """The cloning rounds: who drove, and the success rate of the episodes they finished."""
    if not bc:
        return ""
    rows = [
        f"{r['driver']} {r['success_rate']:.0%}" if r.get("success_rate") is not None
        else f"{r['driver']} -" for r in bc.get("rounds", [])
    ]  # fmt: skip
    return f" Cloning rounds (driver, training-domain success): {', '.join(rows)}."


def _evaluation(cfg: Any, results: dict[str, Any]) -> str:
    lines = ["## Evaluation\n"]
    if "policy" in results:
        history = results["policy"]["history"]
        last = history[-1]
        lines.append(
            f"Training domain (the policy's last periodic evaluation, deterministic actions, "
            f"{results['policy'].get('eval_episodes', '?')} episodes): success rate "
            f"{last['success_rate']:.0%} at {last['timesteps']} steps (mean return "
            f"{last['mean_reward']:.2f}).\n"
        )
    else:
        lines.append(_not_run("policy", results) or "")
    run = (results.get("run") or {}).get("runs", {}).get("closed_loop")
    if run:
        rate = run["success_rate"]
        rate_text = f"{rate:.0%}" if rate is not None else "no episode finished"
        returns = [e["total_reward"] for e in run["episodes"]]
        mean = f", mean return {sum(returns) / len(returns):.2f}" if returns else ""
        where = (
            "Held-out target domain" if cfg.real is None
            else "Simulation (the real robot is not simulated; training randomisation)"
        )  # fmt: skip
        lines.append(
            f"{where}, closed loop through the runtime on "
            f"{results['run']['robot']}: {len(run['episodes'])} finished episode(s), success "
            f"rate {rate_text}{mean} (return: minus the gripper-to-goal distance in metres, "
            "summed over the episode's steps).\n"
        )
    lines.append(_scratch_line(results))
    sim_val = _flatten(results["pretrain"].get("metrics") or {})
    route = sim_val.get("position_route")
    val = sim_val.get(f"sim_val.{route}.xy_cm_mean")
    if val is not None:
        lines.append(f"- perception, simulated validation ({route}): mean xy error {val:.2f} cm")
    for name, s in results["evaluate"]["stats"].items():
        lines.append(
            f"- perception, {name} on the target's test frames ({s['route']}): mean xy error "
            f"{s['xy_cm']['mean']:.2f} cm"
        )
    lines.append("\n" + governing_error(results))
    return "\n".join(lines) + "\n"


def _scratch_line(results: dict[str, Any]) -> str:
    """The from-scratch baseline's closed loop, beside the deployed policy's."""
    if "scratch" not in results:
        return "From-scratch baseline: not run (`scratch.enabled` is false in this config).\n"
    sc = results["scratch"]
    rate = sc["success_rate"]
    rate_text = f"{rate:.0%}" if rate is not None else "no episode finished"
    last = (sc.get("history") or [{}])[-1]
    train = last.get("success_rate")
    train_text = f"; its last training-domain evaluation {train:.0%}" if train is not None else ""
    return (
        f"From-scratch baseline (`{sc['backbone']}` trained end to end by the same recipe for "
        f"the same env steps, no pretraining or adaptation), the same closed loop on "
        f"{sc['robot']}: {sc['episodes']} finished episode(s), success rate {rate_text}"
        f"{train_text}.\n"
    )


def _export(results: dict[str, Any]) -> str:
    if "export" not in results:
        return "## Export\n\n" + (_not_run("export", results) or "")
    e = results["export"]
    rows = []
    for f in e["files"]:
        parity = f.get("parity") or {}
        diff = parity.get("max_abs_diff")
        parity_text = (
            f"{diff:.2e} (tolerance {parity.get('tolerance')})" if diff is not None else "-"
        )
        rows.append(f"| {f['format']} | `{f['file']}` | {f['bytes'] / 1e6:.2f} | {parity_text} |")
    return (
        f"## Export\n\nThe bundle ({e['bundle_bytes'] / 1e6:.2f} MB: encoder, actor, contract) "
        "as single graphs taking uint8 frames and proprioception; parity is the largest "
        "action difference against the eager torch policy on random frames.\n\n"
        "| format | file | MB | parity max abs diff |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def _runner(results: dict[str, Any]) -> str:
    if "run" not in results:
        return "## Runner\n\n" + (_not_run("run", results) or "")
    r = results["run"]
    explain = {
        "closed_loop": "the robot's own rendered camera: the policy sees what its actions do "
        "(task success is meaningful)",
        "replay": "replayed target frames (`ReplayCamera`): the deployment path on stored "
        "frames, open loop (the frames do not follow the robot; latency and plumbing only)",
    }
    lines = [
        f"## Runner\n\n`Runner` at {r['hz']:g} Hz driving {r['robot']} with the loaded bundle "
        "(`Policy.load`), per-stage latency in ms:\n"
    ]
    for kind, run in r["runs"].items():
        lines.append(
            f"**{kind}** ({run['camera']}) -- {explain.get(kind, '')}: status {run['status']}, "
            f"{run['actions_sent']} actions sent, {run['overruns']} overruns, "
            f"{run['duration_s']:.1f} s.\n"
        )
        lines.append("| stage | n | p50 | p95 | p99 | max |\n|---|---|---|---|---|---|")
        latency = run["latency"]
        for stage in sorted(
            latency, key=lambda k: LATENCY_ORDER.index(k) if k in LATENCY_ORDER else 9
        ):
            s = latency[stage]
            lines.append(
                f"| {stage} | {s['n']} | {_ms(s['p50_ms'])} | {_ms(s['p95_ms'])} | "
                f"{_ms(s['p99_ms'])} | {_ms(s['max_ms'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _ms(value: float | None) -> str:
    return (
        "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"
    )


def top_level(out: Path, cfg: Any, results: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``OUT/report.md``: the report with picture links into ``report/``."""
    pictures = results["report"]["pictures"]
    text = render(cfg, results, meta, {k: f"report/{v}" for k, v in pictures.items()}, prefix="")
    write_json(out / "report.json", headline(cfg, results, meta))
    return write_text(out / "report.md", text)
