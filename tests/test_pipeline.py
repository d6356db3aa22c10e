"""The pipeline: the tiny demo end to end, resume and skip logic, config errors."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from sim2real.demo import DEMO_CONFIG, add_demo_parser
from sim2real.errors import ConfigError
from sim2real.pipeline import load_config, run_pipeline, run_stages
from sim2real.pipeline.cli import add_pipeline_parser
from sim2real.pipeline.engine import PARTIAL_FILE, STAGE_FILE, Context, Stage
from sim2real.pipeline.report import SECTIONS
from sim2real.pipeline.stages import STAGES

ALL = [s.name for s in STAGES]
MISSING = [m for m in ("sim2real.deploy.export", "sim2real.deploy.policy", "onnx") if
           importlib.util.find_spec(m) is None]  # fmt: skip
needs_deploy = pytest.mark.skipif(bool(MISSING), reason=f"not installed/written yet: {MISSING}")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The tiny demo pipeline, run once for the module."""
    if MISSING:
        pytest.skip(f"not installed/written yet: {MISSING}")
    out = tmp_path_factory.mktemp("pipeline") / "demo"
    return out, run_pipeline(DEMO_CONFIG, out, tiny=True, progress=False)


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1].strip() for i in range(1, len(parts), 2)}


@needs_deploy
def test_tiny_demo_end_to_end(tiny_run: tuple[Path, Any]) -> None:
    out, result = tiny_run
    assert result.ran() == ALL
    for stage in ALL:
        assert (out / stage / STAGE_FILE).is_file(), stage
    text = (out / "report.md").read_text()
    sections = _sections(text)
    assert list(sections) == list(SECTIONS)
    for name, body in sections.items():
        assert body and "TODO" not in body and "Not run" not in body, name
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (out / link).is_file(), link
    assert len(re.findall(r"!\[", text)) >= 7  # grids, histograms, overlays, curves
    runs = result.results["run"]["runs"]
    assert runs["closed_loop"]["actions_sent"] == 20 and runs["replay"]["actions_sent"] == 5
    for run in runs.values():
        assert run["latency"]["inference"]["p99_ms"] is not None
    export = result.results["export"]["files"][0]
    assert export["parity"]["max_abs_diff"] < 1e-3 and (out / export["file"]).stat().st_size > 0
    targets = {p.name for p in (out / "target").iterdir()}
    assert {"labelled", "test", "unlabelled"} <= targets


@needs_deploy
def test_report_json_holds_the_headline_figures(tiny_run: tuple[Path, Any]) -> None:
    out, result = tiny_run
    h = json.loads((out / "report.json").read_text())
    stats = result.results["evaluate"]["stats"]
    assert h["target"]["sim_only"]["mean_xy_cm"] == stats["sim-only"]["xy_cm"]["mean"]
    assert h["target"]["adapted"]["mean_xy_cm"] == stats["adapted"]["xy_cm"]["mean"]
    closed = result.results["run"]["runs"]["closed_loop"]
    assert h["policy"]["target_success_rate"] == closed["success_rate"]
    assert h["policy"]["episodes"] == len(closed["episodes"])
    scratch = result.results["scratch"]
    assert h["policy"]["scratch_success_rate"] == scratch["success_rate"]
    assert (
        h["policy"]["scratch_episodes"]
        == scratch["episodes"]
        == len(scratch["closed_loop"]["episodes"])
    )
    policy = result.results["policy"]
    assert scratch["summary"]["env_steps"] >= policy["summary"]["env_steps"]
    # the same recipe for both: cloning from the scripted expert, same env steps, then PPO
    assert policy["bc"]["env_steps"] == scratch["bc"]["env_steps"] == 32
    assert h["policy"]["recipe"] == policy["recipe"] == scratch["recipe"]
    assert h["policy"]["recipe"].startswith("PPO warm-started by behaviour cloning")
    # the policy reads the route the card chose (the one evaluate scores) where it can
    card = result.results["pretrain"]["metrics"].get("position_route")
    assert policy["position_route"] == (card if card == "keypoint_plane" else "position_head")
    assert (out / scratch["run"] / "bundle").is_dir()
    assert h["total_seconds"] > 0 and h["budget_minutes"] == 10
    sections = _sections((out / "report.md").read_text())
    summary = sections["Summary"]
    assert len(summary.splitlines()) == 5
    assert "From-scratch policy" in summary
    assert "From-scratch baseline (`nature_cnn`" in sections["Evaluation"]
    assert f"sim-only {stats['sim-only']['xy_cm']['mean']:.2f} cm" in summary


def test_demo_clones_the_expert_for_the_policy_and_the_baseline_alike() -> None:
    """The default recipe: behaviour cloning then PPO, the same for the from-scratch baseline
    (only the encoder differs); a bad cloning setting is refused with its key."""
    cfg = load_config(DEMO_CONFIG)
    policy = cfg.policy.train_config("encoder", seed=0)
    scratch = cfg.scratch.train_config(cfg.policy, seed=0)
    assert policy.bc.steps > 0 and policy.bc == scratch.bc
    assert (scratch.mode, scratch.steps, scratch.algo) == ("scratch", policy.steps, "ppo")
    bad = load_config(DEMO_CONFIG, overrides=["policy.settings.bc={steps: 64, rounds: 0}"])
    with pytest.raises(ConfigError, match="rounds"):
        bad.policy.train_config("encoder", seed=0)


def test_demo_minutes_scales_the_stages() -> None:
    from sim2real.demo import budget_overrides

    parser = argparse.ArgumentParser()
    add_demo_parser(parser.add_subparsers())
    assert parser.parse_args(["demo", "--minutes", "30"]).minutes == 30
    cfg = load_config(DEMO_CONFIG, overrides=budget_overrides(30))
    base = load_config(DEMO_CONFIG)
    assert cfg.data.n == 3 * base.data.n and cfg.policy.steps == 3 * base.policy.steps
    assert cfg.report.budget_minutes == 30
    with pytest.raises(ConfigError, match="--minutes"):
        budget_overrides(0)


@needs_deploy
def test_rerun_skips_every_stage(tiny_run: tuple[Path, Any]) -> None:
    out, first = tiny_run
    again = run_pipeline(DEMO_CONFIG, out, tiny=True, progress=False)
    assert again.ran() == []
    assert [o.status for o in again.outcomes] == ["skipped"] * len(ALL)
    assert again.results["evaluate"] == first.results["evaluate"]
    assert (out / "report.md").is_file()


@needs_deploy
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("evaluate.bins=7", ["evaluate", "report"]),
        ("policy.steps=32", ["policy", "scratch", "export", "run", "report"]),  # same budget
        ("scratch.pool=mean", ["scratch", "report"]),
        ("policy.settings.trunk_dim=8", ["policy", "export", "run", "report"]),  # encoder-only
    ],
)
def test_changed_setting_reruns_that_stage_and_downstream(
    tiny_run: tuple[Path, Any], tmp_path: Path, override: str, expected: list[str]
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(tiny_run[0], out, symlinks=True)
    result = run_pipeline(DEMO_CONFIG, out, [override], tiny=True, progress=False)
    assert result.ran() == expected


@needs_deploy
def test_force_from_reruns_from_that_stage(tiny_run: tuple[Path, Any], tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(tiny_run[0], out, symlinks=True)
    result = run_pipeline(DEMO_CONFIG, out, tiny=True, force_from="run", progress=False)
    assert result.ran() == ["run", "report"]


@needs_deploy
def test_real_folder_is_split_by_links(tiny_run: tuple[Path, Any], tmp_path: Path) -> None:
    """``--real DIR``: labelled frames split into adaptation/test links, nothing copied."""
    real = tmp_path / "real"
    shutil.copytree(tiny_run[0] / "target" / "test", real / "labelled")
    shutil.copytree(tiny_run[0] / "target" / "unlabelled", real / "unlabelled")
    out = tmp_path / "out"
    result = run_pipeline(
        DEMO_CONFIG, out, tiny=True, real=real, stop_after="target", progress=False
    )
    target = result.results["target"]
    assert target["counts"] == {"labelled": 3, "test": 1}
    links = list((out / "target" / "labelled").glob("*.png"))
    assert len(links) == 3 and all(p.is_symlink() for p in links)
    assert target["unlabelled"] == str((real / "unlabelled").resolve())
    (real / "labelled" / "labels.csv").write_text("file,x_m,y_m,z_m\n")  # the real data changed
    with pytest.raises(Exception, match="labelled frames"):
        run_pipeline(DEMO_CONFIG, out, tiny=True, real=real, stop_after="target", progress=False)
    assert not (out / "target" / STAGE_FILE).exists()


# -- the engine, with fake stages ------------------------------------------------------------
def _write(name: str, calls: list[str], fail: bool = False) -> Any:
    def run(ctx: Context) -> dict[str, Any]:
        calls.append(name)
        (ctx.dir / "out.txt").write_text(f"{name} {ctx.cfg.seed}")
        if fail:
            raise RuntimeError(f"{name} was killed")
        return {"upstream": sorted(ctx.results)}

    return run


def test_failed_stage_leaves_no_record_and_reruns(tmp_path: Path) -> None:
    cfg = load_config(DEMO_CONFIG)
    calls: list[str] = []
    ok = Stage("a", (), ("shared",), _write("a", calls))
    bad = Stage("b", ("a",), ("shared",), _write("b", calls, fail=True))
    with pytest.raises(RuntimeError, match="killed"):
        run_stages([ok, bad], cfg, tmp_path)
    assert (tmp_path / "a" / STAGE_FILE).is_file() and not (tmp_path / "b" / STAGE_FILE).exists()
    fixed = Stage("b", ("a",), ("shared",), _write("b", calls))
    result = run_stages([ok, fixed], cfg, tmp_path)
    assert result.ran() == ["b"] and calls == ["a", "b", "b"]
    assert result.results["b"] == {"upstream": ["a"]}


def test_resumable_stage_continues_an_interrupted_run(tmp_path: Path) -> None:
    cfg = load_config(DEMO_CONFIG)
    seen: list[tuple[bool, bool]] = []

    def run(ctx: Context) -> dict[str, Any]:
        part = ctx.dir / "part1.txt"
        seen.append((ctx.resume, part.is_file()))
        if not part.is_file():
            part.write_text("done")
            raise KeyboardInterrupt
        return {}

    stage = Stage("a", (), ("data",), run, resumable=True)
    with pytest.raises(KeyboardInterrupt):
        run_stages([stage], cfg, tmp_path)
    assert run_stages([stage], cfg, tmp_path).ran() == ["a"]
    assert seen == [(False, False), (True, True)]  # the second run kept the first's work
    assert not (tmp_path / "a" / PARTIAL_FILE).exists()
    with pytest.raises(KeyboardInterrupt):  # another config: a fresh start, nothing kept
        run_stages([stage], load_config(DEMO_CONFIG, ["data.n=7"]), tmp_path)
    assert seen[-1] == (False, False)


def test_fingerprint_uses_contents_not_times(tmp_path: Path) -> None:
    cfg = load_config(DEMO_CONFIG)
    calls: list[str] = []
    stages = [Stage("a", (), ("shared",), _write("a", calls)),
              Stage("b", ("a",), ("data",), _write("b", calls))]  # fmt: skip
    run_stages(stages, cfg, tmp_path)
    (tmp_path / "a" / "out.txt").touch()  # a newer time, same bytes: still up to date
    assert run_stages(stages, cfg, tmp_path).ran() == []
    (tmp_path / "b" / "out.txt").write_text("edited by hand")  # changed output: redo it
    assert run_stages(stages, cfg, tmp_path).ran() == ["b"]
    changed = load_config(DEMO_CONFIG, ["data.n=5"])  # only b reads the data section
    assert run_stages(stages, changed, tmp_path).ran() == ["b"]
    reseeded = load_config(DEMO_CONFIG, ["seed=3"])  # a changes: b follows
    assert run_stages(stages, reseeded, tmp_path).ran() == ["a", "b"]
    record = json.loads((tmp_path / "b" / STAGE_FILE).read_text())
    assert set(record["outputs"]) == {"out.txt"} and record["result"] == {"upstream": ["a"]}


# -- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("pretrain.epochs=abc", "pretrain.epochs"),
        ("pretrain.epochz=3", "pretrain.epochz"),
        ("bogus=1", "bogus"),
        ("data.n=0", "data.n"),
        ("policy.algo=dqn", "policy.algo"),
        ("adapt.settings.epochz=3", "adapt.settings"),
        ("adapt.strategy=magic", "adapt.strategy"),
        ("adapt.curve.ks=[0,x]", "adapt.curve.ks"),
        ("target.randomization=5", "target.randomization"),
        ("policy.settings.n_stepz=3", "policy.settings.n_stepz"),
        ("scratch.settings.n_stepz=3", "scratch.settings.n_stepz"),
        ("scratch.settings.backbone=x", "scratch.settings"),
        ("run.episodes=-1", "run.episodes"),
        ("seed.x=1", "seed"),
        ("novalue", "novalue"),
    ],
)
def test_bad_setting_names_the_key(tmp_path: Path, override: str, named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        run_pipeline(DEMO_CONFIG, tmp_path, [override], tiny=True, progress=False)
    assert not any(tmp_path.iterdir())  # nothing ran


def test_configs_load_and_tiny_shrinks() -> None:
    full, tiny = load_config("demo"), load_config("demo", tiny=True)
    assert tiny.data.n < full.data.n and tiny.policy.steps < full.policy.steps
    kuka = load_config("kuka_cube", ["real=/some/where", "adapt.curve.ks=[0,2,all]"], tiny=True)
    assert kuka.scene == "kuka_cube" and kuka.policy.env_id == "Sim2Real/KukaCubeReach-v0"
    assert kuka.real == "/some/where" and kuka.adapt.curve.ks == [0, 2, "all"]
    with pytest.raises(ConfigError, match="pipelines preset 'nope' not found"):
        load_config("nope")


def test_parsers() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_demo_parser(sub)
    add_pipeline_parser(sub)
    args = parser.parse_args(["demo", "--tiny", "--real", "r", "--set", "a.b=1", "--from", "run"])
    assert (args.tiny, args.real, args.set, args.force_from) == (True, "r", ["a.b=1"], "run")
    args = parser.parse_args(["pipeline", "configs/pipelines/kuka_cube.yaml", "--to", "adapt"])
    assert args.config.endswith("kuka_cube.yaml") and args.stop_after == "adapt"


def test_auto_strategy_is_accepted_by_the_pipeline() -> None:
    from sim2real.pipeline.run import check_settings

    check_settings(load_config(DEMO_CONFIG, overrides=["adapt.strategy=auto"]))
    with pytest.raises(ConfigError, match=r"adapt\.strategy"):
        check_settings(load_config(DEMO_CONFIG, overrides=["adapt.strategy=bogus"]))


def test_scratch_trains_like_the_policy_from_a_fresh_cnn() -> None:
    """Stage ``scratch``: the policy's budget and RL settings, none of the encoder-only ones."""
    from sim2real.pipeline.config import ENCODER_ONLY

    given = ["policy.settings.trunk_dim=8", "policy.settings.cache_features=true"]
    cfg = load_config("demo", given)
    sc = cfg.scratch.train_config(cfg.policy, seed=cfg.seed)
    assert sc.mode == "scratch" and sc.encoder is None and sc.backbone == "nature_cnn"
    assert (sc.steps, sc.n_envs, sc.algo) == (cfg.policy.steps, cfg.policy.n_envs, cfg.policy.algo)
    assert sc.algo_kwargs == cfg.policy.settings["algo_kwargs"] and sc.pool == "flatten"
    assert "trunk_dim" in ENCODER_ONLY and sc.trunk_dim == 256 and sc.cache_features is None
    assert load_config("kuka_cube").scratch.enabled is False  # opt-in outside the demo


def test_target_scene_renders_the_held_out_lab(tmp_path: Path) -> None:
    """``target.scene``: the target frames come from another scene (the demo's fixed lab)."""
    given = ["target.scene=tabletop_panda_lab", "target.randomization=lab"]
    result = run_pipeline(DEMO_CONFIG, tmp_path, given, tiny=True, stop_after="target",
                          progress=False)  # fmt: skip
    target = result.results["target"]
    assert "scene 'tabletop_panda_lab'" in target["source"] and "'lab'" in target["source"]
    assert len(list((tmp_path / "target" / "test").glob("*.png"))) == 4
