"""ReachCube from pixels with PPO: does a pretrained encoder learn faster than scratch?

Three arms, N seeds each, the same env-step budget:

- ``pretrained-frozen``: the given encoder checkpoint, frozen (features cached per transition);
- ``same-arch-scratch``: the same architecture (from the checkpoint's card), random init,
  trained end to end;
- ``nature_cnn-scratch``: the DQN Nature CNN from scratch, flattened map (as SB3's NatureCNN).

Writes ``OUT/curves.png`` (success rate vs env steps, mean and min-max over seeds),
``OUT/results.json`` and ``OUT/report.md``, and prints the table: success rate at 0/25/50/100%
of the budget, the success rate of each run's final bundle over ``--final-episodes`` fresh
episodes (loaded and run the way a user deploys it, through ``SimRobot``; far less noisy than
one 20-episode evaluation), the first evaluated step reaching 90%, wall time and env steps/s.
With ``--minutes M`` each run stops after M minutes (an arm too slow for the budget on this
machine, e.g. same-arch-scratch on 2 CPU cores); the table shows ``-`` at the steps a run did
not reach and says where it stopped, and the curves end there. Running the same command again
resumes every run that stopped short of the budget (time limit, Ctrl-C, a killed process: each
run's ``resume/`` state, saved every ``--resume-every`` env steps) for another ``--minutes``,
so a slow arm reaches the budget over several sessions.

Usage::

    python benchmarks/reach_transfer.py --encoder runs/reach/encoder --steps 100000 --seeds 3
    python benchmarks/reach_transfer.py --encoder imagenet --steps 2000 --seeds 1  # smoke
    python benchmarks/reach_transfer.py --encoder runs/reach/encoder --report-only  # table only
    python benchmarks/reach_transfer.py --encoder runs/reach/encoder --backend ray --address auto \
        --cpus-per-run 2   # each (arm, seed) a Ray task on a cluster

Each run's folder (``summary.json``, ``eval.json``, ``resume/``) is the journal: with
``--backend ray`` only the runs that have not finished are sent out, each as one task, and a
killed sweep resumes on either backend. The runs' folders must be on a filesystem that the
Ray workers and this process share (one machine, or an NFS/Lustre path on a cluster).

``--encoder imagenet`` builds an ImageNet-only EfficientNet-Lite0 (no task pretraining).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ARMS = ("pretrained-frozen", "same-arch-scratch", "nature_cnn-scratch")
FRACTIONS = (0.0, 0.25, 0.5, 1.0)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", required=True, help="encoder checkpoint folder or 'imagenet'")
    parser.add_argument("--out", default="runs/bench/reach_transfer")
    parser.add_argument("--env", default="Sim2Real/ReachCube-v0")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="run seeds FIRST..FIRST+SEEDS-1 (e.g. one seed per process or machine; a later "
        "run with --seeds N and the same --out reuses them all)",
    )
    parser.add_argument("--n-envs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--eval-points", type=int, default=20, help="evaluations per run")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument(
        "--final-episodes",
        type=int,
        default=100,
        help="after training, run each run's saved bundle (the deployable artefact) for this "
        "many fresh episodes through the deploy API's SimRobot (0: skip)",
    )
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--randomization", default="default")
    parser.add_argument(
        "--no-camera-jitter",
        action="store_true",
        help="the preset with its camera ranges at 0 (a diagnostic; written as OUT/"
        "randomization.yaml, which the runs train and evaluate on)",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall-clock limit per run: a run stops there (saving its bundle) and the table "
        "marks the steps it did not reach; for arms too slow for the budget on this machine",
    )
    parser.add_argument("--torch-threads", type=int, default=None)
    parser.add_argument("--ppo", default="{}", help='JSON overrides of PPO, e.g. {"n_steps": 128}')
    parser.add_argument(
        "--metre-scale",
        type=float,
        default=None,
        help="factor on the metre-valued policy inputs (default: the library's, 10)",
    )
    parser.add_argument(
        "--trunk-dim",
        nargs="+",
        default=[],
        metavar="[ARM=]N",
        help="size of the trunk on the pooled encoder features, for every arm (N) or one "
        "(ARM=N); 0: the policy reads the encoder's predicted position and proprio only "
        "(default: the library's, 256)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="retrain runs that already finished with this config, and start over the ones "
        "that stopped early instead of resuming them",
    )
    parser.add_argument(
        "--resume-every",
        type=int,
        default=5_000,
        help="env steps between saves of each run's resume state (RUN/resume/)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: tabulate the runs in OUT that finished with these settings "
        "(whatever their --minutes), leaving out and naming the ones that are missing",
    )
    from sim2real.cli.common import add_sweep_arguments

    add_sweep_arguments(parser, "(arm, seed) run")
    return parser.parse_args()


def train_one(shared: None, run: str, settings: dict[str, Any], resume: bool, every: int) -> str:
    """One (arm, seed) run: a module-level function, so a Ray worker can run it."""
    from sim2real.policies.train import train

    train(out=Path(run), resume=resume, resume_every=every, **settings)
    return run


def trunk_dims(values: list[str]) -> dict[str, int]:
    """``["8"]`` -> every arm 8; ``["pretrained-frozen=0"]`` -> that arm 0, the others default."""
    dims: dict[str, int] = {}
    for value in values:
        arm, _, size = value.rpartition("=")
        if arm and arm not in ARMS:
            raise SystemExit(f"--trunk-dim {value}: expected ARM=N with ARM in {list(ARMS)}")
        try:
            n = int(size)
        except ValueError:
            raise SystemExit(
                f"--trunk-dim {value}: expected an integer size, got {size!r}"
            ) from None
        dims.update({arm: n} if arm else dict.fromkeys(ARMS, n))
    return dims


def imagenet_encoder(out: Path, size: int) -> Path:
    from sim2real.perception.encoder import Encoder

    enc = Encoder("efficientnet_lite0", {}, input_size=(size, size), pretrained=True)
    return enc.save(out / "imagenet_lite0")


def arm_options(arm: str, encoder: str) -> dict[str, Any]:
    if arm == "pretrained-frozen":
        return {"encoder": encoder, "mode": "frozen"}
    if arm == "same-arch-scratch":
        return {"encoder": encoder, "mode": "scratch"}
    return {"encoder": None, "mode": "scratch", "backbone": "nature_cnn", "pool": "flatten"}


def resumable(run: Path, wanted: dict[str, Any]) -> bool:
    """True when ``run`` stopped short of its step budget (time limit, interrupt, killed) and
    left a resume state, with ``wanted``'s values in config.json (``minutes`` aside: it limits
    one session)."""
    from sim2real.policies.resume import find_resume_state

    state = find_resume_state(run)
    if not (run / "config.json").is_file() or state is None:
        return False
    at = json.loads((state / "state.json").read_text()).get("num_timesteps", 0)
    if at >= wanted.get("steps", float("inf")):  # at the budget, killed before its summary
        return False
    if (run / "summary.json").is_file():
        summary = json.loads((run / "summary.json").read_text())
        if summary.get("stopped") == "budget":
            return False
    config = json.loads((run / "config.json").read_text())
    return all(config.get(k) == v for k, v in wanted.items() if k != "minutes")


def finished(run: Path, wanted: dict[str, Any]) -> bool:
    """True when ``run`` holds a training that ended (at its step budget or its ``--minutes``
    limit, not interrupted) and whose config.json has ``wanted``'s values."""
    if not (run / "summary.json").is_file() or not (run / "config.json").is_file():
        return False
    if json.loads((run / "summary.json").read_text()).get("stopped") == "interrupted":
        return False
    config = json.loads((run / "config.json").read_text())
    return all(config.get(k) == v for k, v in wanted.items())


def success_at(history: list[dict[str, float]], step: float) -> float:
    """Success rate of the last evaluation at or before ``step``; NaN when the run did not
    reach ``step`` (it stopped early) or has no evaluation before it."""
    if not history or step > history[-1]["timesteps"] + 1e-9:
        return float("nan")
    before = [h for h in history if h["timesteps"] <= step + 1e-9]
    return before[-1]["success_rate"] if before else float("nan")


def first_reaching(history: list[dict[str, float]], level: float = 0.9) -> int | None:
    hits = [h["timesteps"] for h in history if h["success_rate"] >= level]
    return int(hits[0]) if hits else None


def plot(results: dict[str, list[dict[str, Any]]], steps: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, runs in results.items():
        grid = np.array(sorted({h["timesteps"] for r in runs for h in r["history"]}), dtype=float)
        curves = np.array([[success_at(r["history"], s) for s in grid] for r in runs])
        reached = ~np.isnan(curves).all(0)  # steps that some seed reached (others stopped)
        grid, curves = grid[reached], curves[:, reached]
        n = np.sum(~np.isnan(curves), 0)
        label = (
            f"{arm} (n={len(runs)})" if n.min() == len(runs) else f"{arm} (n={n.min()}-{n.max()})"
        )
        ax.plot(grid, np.nanmean(curves, 0), label=label)
        ax.fill_between(grid, np.nanmin(curves, 0), np.nanmax(curves, 0), alpha=0.2)
    ax.axhline(0.9, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="env steps", ylabel="success rate", xlim=(0, steps), ylim=(-0.02, 1.02))
    ax.set_title("ReachCube from pixels, PPO")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


FINAL_SEED = 20_000
"""Episode seeds of the final evaluation: ``FINAL_SEED + seed``, other episodes than the
curve's (``train`` evaluates on ``seed + 10_000``)."""


FINAL_VERSION = 3  # of RUN/final_eval.json; older files are recomputed
NEAR_CM = 5.0  # a failure whose closest approach is under this came near the target


def final_success(run: Path, episodes: int, seed: int) -> dict[str, Any]:
    """Success rate of ``run/bundle`` over ``episodes`` fresh episodes; cached in the run
    (recomputed when the bundle is newer than the cache, e.g. after ``--fresh``).

    The bundle is what a user deploys: it is loaded with :func:`load_bundle` and acts on the
    env's frames through :class:`~sim2real.deploy.sim_robot.SimRobot`, with the env settings
    its contract records, one observation at a time.
    """
    path = run / "final_eval.json"
    policy = run / "bundle" / "policy.safetensors"
    if path.is_file() and path.stat().st_mtime >= policy.stat().st_mtime:  # not a retrained run
        cached = json.loads(path.read_text())
        if (cached.get("episodes"), cached.get("seed"), cached.get("version")) == (
            episodes,
            seed,
            FINAL_VERSION,
        ):
            return cached
    from sim2real.deploy.sim_robot import SimRobot
    from sim2real.policies.bundle import load_bundle

    _, actor, contract = load_bundle(run / "bundle")
    robot = SimRobot(contract["env_id"], seed=seed, **contract["env_kwargs"])
    start = time.perf_counter()
    robot.connect()
    closest: list[float] = []  # per episode: the gripper's closest approach to the target
    try:
        while len(robot.episodes) < episodes:
            obs = robot.get_observation()
            task, scene = robot.env.unwrapped.task, robot.env.unwrapped.scene
            if len(closest) == len(robot.episodes):
                closest.append(np.inf)
            closest[-1] = min(closest[-1], task.distance(scene))
            robot.send_action(actor.act(obs["image"], obs["proprio"]))
    finally:
        robot.disconnect()
    failed = [100 * c for c, e in zip(closest, robot.episodes, strict=True) if not e.success]
    result = {
        "version": FINAL_VERSION,
        "episodes": episodes,
        "seed": seed,
        "success_rate": robot.success_rate,
        "mean_steps": float(np.mean([e.steps for e in robot.episodes])),
        "failed_closest_cm": [round(c, 3) for c in failed],
        "failed_within_5cm": sum(c < NEAR_CM for c in failed),
        "wall_s": time.perf_counter() - start,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(path)
    logging.getLogger(__name__).info(
        "%s: bundle success %.0f%% over %d fresh episodes (%.0f s); failures: %d came within "
        "%g cm of the target (closest approach), %d did not",
        run,
        100 * result["success_rate"],
        episodes,
        result["wall_s"],
        result["failed_within_5cm"],
        NEAR_CM,
        len(failed) - result["failed_within_5cm"],
    )
    return result


def _mean_and_values(vals: list[float]) -> str:
    """``mean (v1 v2 ...)``; a run that stopped before the step shows ``-`` and is left out of
    the mean (``not reached`` when none reached it)."""
    got = [v for v in vals if not np.isnan(v)]
    if not got:
        return "not reached"
    each = " ".join("-" if np.isnan(v) else f"{v:.2f}" for v in vals)
    return f"{np.mean(got):.2f} ({each})"


def table(results: dict[str, list[dict[str, Any]]], steps: int) -> str:
    finals = any("final" in r for runs in results.values() for r in runs)
    head = "| arm | " + " | ".join(f"success @{int(f * 100)}%" for f in FRACTIONS)
    if finals:
        n = {r["final"]["episodes"] for runs in results.values() for r in runs if "final" in r}
        head += f" | final bundle ({'/'.join(str(v) for v in sorted(n))} episodes)"
    head += " | first >=90% (steps) | wall s | env steps/s |"
    lines = [head, "|" + "---|" * (len(FRACTIONS) + 4 + finals)]
    for arm, runs in results.items():
        cells = []
        for f in FRACTIONS:
            cells.append(_mean_and_values([success_at(r["history"], f * steps) for r in runs]))
        if finals:
            vals = [r["final"]["success_rate"] for r in runs if "final" in r]
            cells.append(_mean_and_values(vals) if vals else "not measured")
        firsts = [first_reaching(r["history"]) for r in runs]
        first = " ".join("-" if f is None else str(f) for f in firsts)
        wall = np.mean([r["summary"]["wall_s"] for r in runs])
        rate = np.mean([r["summary"]["env_steps_per_s"] for r in runs])
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {first} | {wall:.0f} | {rate:.0f} |")
    notes = []
    for arm, runs in results.items():
        early = [r for r in runs if r["summary"].get("stopped", "budget") != "budget"]
        if early:
            each = "; ".join(
                f"seed {r['seed']} at {r['summary']['env_steps']} of {steps} env steps "
                f"({r['summary']['stopped']})"
                for r in early
            )
            notes.append(f"{arm}: stopped early, its cells past that step are '-': {each}")
    for arm, runs in results.items():
        evals = [r["final"] for r in runs if "final" in r]
        if evals:
            near = " ".join(str(f["failed_within_5cm"]) for f in evals)
            far = " ".join(str(len(f["failed_closest_cm"]) - f["failed_within_5cm"]) for f in evals)
            notes.append(
                f"{arm}: final-bundle failures per seed that came within {NEAR_CM:g} cm of the "
                f"target (closest approach): {near}; that did not: {far}"
            )
    return "\n".join(lines + (["", *notes] if notes else []))


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    from sim2real.cli.common import sweep_backend
    from sim2real.policies.config import METRE_SCALE
    from sim2real.sweep import run_tasks

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    encoder = args.encoder
    if encoder == "imagenet":
        encoder = str(imagenet_encoder(out, args.image_size))
    randomization = args.randomization
    if args.no_camera_jitter:
        from sim2real.envs.randomization import CameraRanges, RandomizationConfig

        fixed = RandomizationConfig.load(args.randomization)
        fixed = fixed.model_copy(update={"camera": CameraRanges()})
        path = out / "randomization.yaml"
        path.write_text(yaml.safe_dump(fixed.model_dump(mode="json"), sort_keys=False))
        randomization = str(path)
    eval_every = max(1, args.steps // args.eval_points)
    metre_scale = METRE_SCALE if args.metre_scale is None else args.metre_scale
    trunks = trunk_dims(args.trunk_dim)
    start = time.perf_counter()
    jobs: list[tuple[str, int, Path, dict[str, Any]]] = []
    todo: list[tuple[str, dict[str, Any], bool, int]] = []
    for arm in args.arms:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            run = out / arm / f"seed{seed}"
            settings = {
                "env_id": args.env,
                "algo": "ppo",
                "steps": args.steps,
                "n_envs": args.n_envs,
                "seed": seed,
                "image_size": args.image_size,
                "randomization": randomization,
                "eval_every": eval_every,
                "eval_episodes": args.eval_episodes,
                "save_sb3": False,
                "algo_kwargs": json.loads(args.ppo),
                "metre_scale": metre_scale,
                **({"trunk_dim": trunks[arm]} if arm in trunks else {}),
                **({"minutes": args.minutes} if args.minutes else {}),
                **arm_options(arm, encoder),
            }
            if args.report_only:
                if not finished(run, {k: v for k, v in settings.items() if k != "minutes"}):
                    print(f"{arm} seed {seed}: no finished run with these settings in {run}")
                    continue
            elif not args.fresh and resumable(run, settings):
                print(f"{arm} seed {seed}: resuming the run in {run} (--fresh starts over)")
                todo.append((str(run), settings, True, args.resume_every))
            elif not args.fresh and finished(run, settings):
                print(f"{arm} seed {seed}: finished run in {run} reused (--fresh retrains)")
            else:
                todo.append((str(run), settings, False, args.resume_every))
            jobs.append((arm, seed, run, settings))
    for _, done in run_tasks(train_one, todo, backend=sweep_backend(args)):
        print(f"finished {done}")
    results: dict[str, list[dict[str, Any]]] = {}
    for arm, seed, run, _ in jobs:
        entry = {
            "seed": seed,
            "history": json.loads((run / "eval.json").read_text()),
            "summary": json.loads((run / "summary.json").read_text()),
        }
        if args.final_episodes > 0:
            entry["final"] = final_success(run, args.final_episodes, FINAL_SEED + seed)
        results.setdefault(arm, []).append(entry)
    if not results:
        raise SystemExit(f"no finished runs in {out} for arms {args.arms}")
    plot(results, args.steps, out / "curves.png")
    text = table(results, args.steps)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    meta = (
        f"env {args.env}, {args.steps} env steps, {args.n_envs} envs, encoder {encoder}, "
        f"metre_scale {metre_scale}, trunk_dim {trunks or 'default'}, PPO overrides "
        f"{args.ppo}, {f'{args.minutes:g} min limit per run, ' if args.minutes else ''}"
        f"randomization "
        f"{args.randomization}{' without camera jitter' if args.no_camera_jitter else ''}"
    )
    (out / "report.md").write_text(f"# reach_transfer\n\n{meta}\n\n{text}\n")
    print(meta)
    print(text)
    print(f"total {time.perf_counter() - start:.0f} s; curves: {out / 'curves.png'}")


if __name__ == "__main__":
    main()
