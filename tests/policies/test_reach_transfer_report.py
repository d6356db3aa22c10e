"""benchmarks/reach_transfer.py's report: runs that stopped early are shown as such."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "reach_transfer.py"


@pytest.fixture(scope="module")
def rt() -> Any:
    spec = importlib.util.spec_from_file_location("reach_transfer", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _history(last: int, rate: float) -> list[dict[str, float]]:
    return [{"timesteps": t, "success_rate": rate * t / last} for t in range(0, last + 1, 5000)]


def test_success_at_is_nan_past_the_last_evaluation(rt: Any) -> None:
    history = _history(10_000, 0.5)
    assert rt.success_at(history, 0) == 0.0
    assert rt.success_at(history, 7_000) == 0.25
    assert math.isnan(rt.success_at(history, 25_000))
    assert math.isnan(rt.success_at([], 0))


def test_table_marks_a_run_that_stopped_early(rt: Any, tmp_path: Path) -> None:
    summary = {"wall_s": 10.0, "env_steps_per_s": 5.0}
    results = {
        "a": [
            {"seed": 0, "history": _history(10_000, 0.2),
             "summary": {**summary, "env_steps": 10_240, "stopped": "time limit"}},
            {"seed": 1, "history": _history(40_000, 1.0),
             "summary": {**summary, "env_steps": 40_960, "stopped": "budget"}},
        ],
        "b": [
            {"seed": 0, "history": _history(10_000, 0.4),
             "summary": {**summary, "env_steps": 10_240, "stopped": "time limit"}},
        ],
    }  # fmt: skip
    text = rt.table(results, 40_000)
    row_a = next(line for line in text.splitlines() if line.startswith("| a |"))
    row_b = next(line for line in text.splitlines() if line.startswith("| b |"))
    assert "| 0.50 (- 0.50) |" in row_a  # @50%: seed 0 stopped at 10k, left out of the mean
    assert "| 0.40 (0.40) | not reached | not reached |" in row_b  # 10k reached, 20k, 40k not
    assert "seed 0 at 10240 of 40000 env steps (time limit)" in text
    rt.plot(results, 40_000, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_interrupted_runs_are_not_finished(rt: Any, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"seed": 0, "steps": 100}))
    (tmp_path / "summary.json").write_text(json.dumps({"stopped": "time limit"}))
    assert rt.finished(tmp_path, {"seed": 0})
    assert not rt.finished(tmp_path, {"seed": 1})
    (tmp_path / "summary.json").write_text(json.dumps({"stopped": "interrupted"}))
    assert not rt.finished(tmp_path, {"seed": 0})


def test_runs_short_of_the_budget_with_a_resume_state_are_resumed(rt: Any, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"seed": 0, "steps": 100, "minutes": 5}))
    assert not rt.resumable(tmp_path, {"seed": 0})  # no resume state: started over
    (tmp_path / "resume").mkdir()
    for name in ("state.json", "state.safetensors"):
        (tmp_path / "resume" / name).write_text("{}")
    assert rt.resumable(tmp_path, {"seed": 0, "minutes": 60})  # killed: no summary yet
    assert not rt.resumable(tmp_path, {"seed": 1})  # another configuration
    for stopped, expected in (("time limit", True), ("interrupted", True), ("budget", False)):
        (tmp_path / "summary.json").write_text(json.dumps({"stopped": stopped}))
        assert rt.resumable(tmp_path, {"seed": 0}) is expected, stopped
