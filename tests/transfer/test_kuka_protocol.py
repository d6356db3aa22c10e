"""The kuka_cube benchmarks' protocol (benchmarks/kuka_cube_protocol.py): seeds, the fixed
judge/report split, and a tiny end-to-end run of both benchmarks on the real frames."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
KUKA_CUBE = ROOT.parent / "shared" / "real" / "kuka_cube"
needs_kuka = pytest.mark.skipif(
    not (KUKA_CUBE / "labelled").is_dir(),
    reason=f"real kuka_cube frames not present at {KUKA_CUBE} (shared/real/kuka_cube)",
)


@pytest.fixture(scope="module")
def protocol() -> Any:
    spec = importlib.util.spec_from_file_location(
        "kuka_cube_protocol", BENCH / "kuka_cube_protocol.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seeds_and_spread(protocol: Any) -> None:
    assert protocol.parse_seeds("0,1,2") == [0, 1, 2]
    for bad in ("", "0,0", "a", "-1"):
        with pytest.raises(SystemExit, match="seeds"):
            protocol.parse_seeds(bad)
    assert protocol.spread([2.0]).startswith("2.00 +- 0.00")
    assert protocol.spread([]) == "n/a"


def test_judge_split_is_fixed_and_disjoint(protocol: Any) -> None:
    names = [f"labelled/f{i:02d}.jpg" for i in range(12)]
    judge, report = protocol.judge_split(names, 6)
    assert (judge, report) == protocol.judge_split(list(reversed(names)), 6)  # order-free
    assert not set(judge) & set(report) and sorted(judge + report) == names
    assert protocol.judge_split(names, 0) == ([], names)
    with pytest.raises(SystemExit, match="judge"):
        protocol.judge_split(names, 13)


def _predictions(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and {"file", "x_m", "y_m", "z_m"} <= set(rows[0])  # more columns may follow
    return rows


@needs_kuka
@pytest.mark.slow
def test_both_benchmarks_run_end_to_end_tiny(tmp_path: Path) -> None:
    n_unlabelled = len(list((KUKA_CUBE / "unlabelled").glob("*.jpg")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    real = ["--real", str(KUKA_CUBE)]
    out = subprocess.run(
        [sys.executable, str(BENCH / "kuka_cube_transfer.py"), "--smoke", "--seeds", "0,1",
         "--ks", "0,all", "--repeats", "1", "--no-baselines", "--strategies", "adabn,auto",
         "--threads", "1", "--set", "candidates=sim-only,adabn,adabn+probe",
         "--out", str(tmp_path / "transfer"), *real],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "nested CV: outer folds" in out.stdout and "over 2 training seed(s)" in out.stdout
    for seed in (0, 1):
        for name in ("sim_only", "adapted"):
            rows = _predictions(
                tmp_path / "transfer" / f"seed{seed}" / "predictions" / f"{name}.csv"
            )
            assert len(rows) == n_unlabelled
    out = subprocess.run(
        [sys.executable, str(BENCH / "kuka_cube_real.py"), "--tiny", "--seeds", "0",
         "--device", "cpu", "--out", str(tmp_path / "real"), *real],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "judge  ( 6 frames)" in out.stdout and "chosen on the judge frames" in out.stdout
    assert (
        len(_predictions(tmp_path / "real" / "seed0" / "predictions" / "adabn.csv")) == n_unlabelled
    )
