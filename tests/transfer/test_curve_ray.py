"""The transfer curve's runs as Ray tasks: the journal stays the single source of truth, so
a curve started on one backend resumes on the other, and the figures match the local run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sim2real.perception import Encoder
from sim2real.sweep import SweepBackend
from sim2real.transfer.curve import JOURNAL, run_curve

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

TINY = {"epochs": 1, "steps_per_epoch": 1, "batch_size": 4, "cv_folds": 2, "device": "cpu"}
ARGS = {"ks": (0, 1, 2), "repeats": 2, "strategies": ("probe", "adabn"), "progress": False}


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error")
    yield
    ray.shutdown()


def _errors(out: Path) -> dict[tuple[str, str], np.ndarray]:
    entries = json.loads((out / "curve.json").read_text())["entries"]
    return {
        (name, k): np.asarray(point["errors"])
        for name, entry in entries.items()
        for k, point in entry["points"].items()
    }


def test_curve_on_ray_matches_local_and_resumes_across_backends(
    cluster: None, encoder: Encoder, real_dir: Path, tmp_path: Path
) -> None:
    encoder.save(tmp_path / "model")
    local = tmp_path / "local"
    run_curve(tmp_path / "model", real_dir, local, baselines=False, **ARGS, **TINY)
    on_ray = tmp_path / "ray"
    run_curve(
        tmp_path / "model", real_dir, on_ray, baselines=False, **ARGS, **TINY,
        backend=SweepBackend("ray", num_cpus=1),
    )  # fmt: skip
    a, b = _errors(local), _errors(on_ray)
    assert a.keys() == b.keys() and len(a) == 5  # zero-shot; probe k=0, 1, 2; adabn k=0
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-3, err_msg=str(key))
    lines = (on_ray / JOURNAL).read_text().splitlines()
    assert len(lines) == 1 + 6  # fingerprint; probe k=0, k=1 x2, k=2 x2; adabn k=0
    # cut the journal to 3 runs, resume locally: only the missing runs train
    (on_ray / JOURNAL).write_text("\n".join(lines[:4]) + "\n")
    run_curve(tmp_path / "model", real_dir, on_ray, baselines=False, **ARGS, **TINY)
    meta = json.loads((on_ray / "curve.json").read_text())["meta"]
    assert meta["resumed_runs"] == 3
    assert len((on_ray / JOURNAL).read_text().splitlines()) == 1 + 6
