"""Generation on Ray (a local cluster started here): the same bytes as the local backend,
retries of a killed worker, resume across backends, the missing-extra error."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from sim2real.data.generate import Backend, generate_dataset
from sim2real.data.shards import ShardedDataset, read_manifest
from sim2real.errors import ConfigError, DataError

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

ROOT = Path(__file__).resolve().parents[2]  # Ray workers import tests.data.fake_source
FACTORY = "tests.data.fake_source:make_source"
SPEC = {"size": 8, "renderer": "fake", "labels": ["image", "position"]}
N, SHARD = 23, 5


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Any:
    """One local Ray cluster (2 CPUs) for the module; its workers import the fake source."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), old) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error")
    yield
    ray.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


def _generate(out: Path, spec: dict[str, Any] | None = None, **kwargs: Any) -> Path:
    kwargs = {"shard_size": SHARD, "progress": False, "workers": 2, **kwargs}
    return generate_dataset(FACTORY, spec or SPEC, N, out, **kwargs)


def _shard_bytes(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.glob("shard-*/*.npy"))
    }


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory.mktemp("local") / "data", workers=1)


@pytest.mark.parametrize("output", ["driver", "shared"])
def test_ray_is_byte_identical_to_local(local_reference: Path, tmp_path: Path, output: str):
    out = _generate(tmp_path / "ray", backend=Backend("ray", ray_output=output))
    assert _shard_bytes(out) == _shard_bytes(local_reference)
    assert read_manifest(out)["shards"] == read_manifest(local_reference)["shards"]
    assert len(ShardedDataset(out)) == N


def test_a_worker_killed_mid_shard_is_retried(local_reference: Path, tmp_path: Path):
    marker = tmp_path / "killed-once"
    spec = {**SPEC, "exit_once_at": 7, "marker": str(marker)}
    out = _generate(tmp_path / "ray", spec=spec, backend="ray")
    assert marker.exists()  # the worker did die at sample 7
    assert _shard_bytes(out) == _shard_bytes(local_reference)
    ShardedDataset(out)  # verifies every checksum


@pytest.mark.parametrize(("first", "then"), [("ray", "local"), ("local", "ray")])
def test_resume_across_backends(local_reference: Path, tmp_path: Path, first: str, then: str):
    unless = tmp_path / "healthy"
    spec = {**SPEC, "fail_at": 12, "unless": str(unless)}
    out = tmp_path / "data"
    with pytest.raises(RuntimeError, match="fake source failure at sample 12"):
        _generate(out, spec=spec, backend=first, workers=1)
    assert read_manifest(out)["status"] == "incomplete"
    assert not list(out.glob(".tmp-*"))
    unless.touch()
    _generate(out, spec=spec, backend=then, resume=True)
    assert read_manifest(out)["status"] == "complete"
    assert _shard_bytes(out) == _shard_bytes(local_reference)


def test_a_shard_the_driver_cannot_see_is_an_error(tmp_path: Path):
    from sim2real.data.ray_backend import check_shared_shard

    with pytest.raises(DataError, match="filesystem every node shares"):
        check_shared_shard(tmp_path, 3, {"start": 15, "stop": 20, "files": {}})


def test_bad_backend_and_output_are_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="expected 'local' or 'ray'"):
        _generate(tmp_path / "a", backend="slurm")
    with pytest.raises(ConfigError, match="expected 'driver' or 'shared'"):
        _generate(tmp_path / "b", backend=Backend("ray", ray_output="nfs"))


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'sim2real\[ray\]'"):
        _generate(tmp_path / "c", backend="ray")
