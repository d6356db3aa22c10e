"""Generation driver: determinism across workers, resume after failures and kills, refusals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sim2real.data.generate import generate_dataset
from sim2real.data.shards import ShardedDataset, read_manifest
from sim2real.data.source import resolve_factory
from sim2real.errors import ConfigError, DataError
from tests.data import fake_source

ROOT = Path(__file__).resolve().parents[2]  # spawned workers import tests.data.fake_source
FACTORY = "tests.data.fake_source:make_source"
SPEC = {"size": 8, "renderer": "fake", "labels": ["image", "position"]}
N, SHARD = 23, 5


def _generate(out: Path, **kwargs: Any) -> Path:
    kwargs = {"shard_size": SHARD, "progress": False, **kwargs}
    factory = kwargs.pop("factory", FACTORY)
    return generate_dataset(factory, kwargs.pop("spec", SPEC), kwargs.pop("n", N), out, **kwargs)


def _contents(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory.mktemp("reference") / "data", workers=1)


@pytest.fixture
def copy(reference: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(reference, tmp_path / "copy"))


def test_same_seed_is_byte_identical_with_one_or_two_workers(reference: Path, tmp_path: Path):
    two = _generate(tmp_path / "two", workers=2)
    assert _contents(two) == _contents(reference)
    manifest = read_manifest(two)
    assert manifest["status"] == "complete" and len(manifest["shards"]) == 5
    other_seed = _generate(tmp_path / "seed1", seed=1)
    assert (other_seed / "shard-00000/image.npy").read_bytes() != (
        reference / "shard-00000/image.npy"
    ).read_bytes()


@pytest.mark.parametrize("workers", [1, 2])
def test_resume_after_a_failing_source_gives_exactly_n_samples(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
):
    out = tmp_path / "data"
    monkeypatch.setenv("FAKE_SOURCE_FAIL_AT", "12")
    with pytest.raises(RuntimeError, match=r"fake source failure at sample 1[25]"):
        _generate(out, workers=workers)
    manifest = read_manifest(out)
    assert manifest["status"] == "incomplete"
    assert 1 <= len(manifest["shards"]) <= 2
    assert not list(out.glob(".tmp-*"))
    with pytest.raises(DataError, match="incomplete"):
        ShardedDataset(out)
    partial = ShardedDataset(out, allow_incomplete=True)
    assert [int(partial[i]["index"]) for i in range(len(partial))] == [
        partial.sample_index(i) for i in range(len(partial))
    ]
    monkeypatch.delenv("FAKE_SOURCE_FAIL_AT")
    with pytest.raises(ConfigError, match="--resume"):
        _generate(out, workers=workers)
    _generate(out, workers=workers, resume=True)
    dataset = ShardedDataset(out)
    assert sorted(int(dataset[i]["index"]) for i in range(len(dataset))) == list(range(N))
    assert _contents(out) == _contents(reference)


def _start_generator(out: Path, workers: int) -> subprocess.Popen[str]:
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from sim2real.data.generate import generate_dataset\n"
        f"generate_dataset({FACTORY!r}, {SPEC!r}, {N}, sys.argv[1], workers={workers}, "
        f"shard_size={SHARD}, progress=False)\n"
    )
    # The first two shards come quickly; every later sample takes 2 s, so the run is still
    # going (>= 10 s left) when the test stops it after its first shard, however loaded the
    # machine is.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        "FAKE_SOURCE_DELAY": "0.15",
        "FAKE_SOURCE_SLOW_FROM": str(2 * SHARD),
        "FAKE_SOURCE_SLOW_DELAY": "2.0",
    }
    return subprocess.Popen(
        [sys.executable, "-c", script, str(out)], env=env, stderr=subprocess.PIPE, text=True
    )


def _wait_for_first_shard(process: subprocess.Popen[str], out: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "manifest.json").is_file() and read_manifest(out)["shards"]:
            return
        time.sleep(0.05)
    pytest.fail(f"the generator recorded no shard (exit code {process.poll()})")


@pytest.mark.parametrize(
    ("workers", "sig"),
    [(2, signal.SIGINT), (1, signal.SIGKILL)],
    ids=["ctrl-c-2-workers", "kill-9-1-worker"],
)
def test_killed_run_resumes_to_the_same_dataset(
    reference: Path, tmp_path: Path, workers: int, sig: signal.Signals
):
    out = tmp_path / "data"
    process = _start_generator(out, workers)
    _wait_for_first_shard(process, out)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    if sig == signal.SIGINT:  # Ctrl-C: workers stopped, tmp folders removed, hint logged
        assert "--resume" in stderr
        assert not list(out.glob(".tmp-*"))
    manifest = read_manifest(out)
    assert manifest["status"] == "incomplete" and len(manifest["shards"]) < 5
    _generate(out, workers=1, resume=True)
    assert _contents(out) == _contents(reference)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"spec": {**SPEC, "renderer": "other"}}, "spec.renderer differs"),
        ({"spec": {"size": 8}}, "spec.renderer differs: only the manifest has it"),
        ({"seed": 1}, "seed differs"),
        ({"n": N + 1}, "n differs"),
        ({"shard_size": SHARD + 1}, "shard_size differs"),
    ],
)
def test_resume_refuses_different_settings(copy: Path, change: dict[str, Any], message: str):
    with pytest.raises(ConfigError, match=message):
        _generate(copy, resume=True, **change)


def test_resume_of_a_complete_dataset_changes_nothing(copy: Path, reference: Path):
    _generate(copy, resume=True)
    assert _contents(copy) == _contents(reference)


def test_resume_redoes_a_corrupted_shard(copy: Path, reference: Path):
    path = copy / "shard-00002" / "image.npy"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    (copy / ".tmp-shard-00003-123").mkdir()  # debris of a killed writer
    _generate(copy, resume=True, workers=2)
    assert _contents(copy) == _contents(reference)


def test_non_empty_folder_without_resume_is_refused(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match="not empty; pass --resume"):
        _generate(tmp_path)
    with pytest.raises(ConfigError, match=r"no manifest\.json"):
        _generate(tmp_path, resume=True)


@pytest.mark.parametrize("workers", [1, 2])
def test_inconsistent_source_is_reported(tmp_path: Path, workers: int):
    factory = "tests.data.fake_source:make_shape_changing_source"
    with pytest.raises(DataError, match=r"sample 3: fields .*'shape': \[7, 8, 3\]"):
        _generate(tmp_path / "data", factory=factory, workers=workers)


def test_factory_can_be_a_function_or_a_string(tmp_path: Path):
    assert resolve_factory(FACTORY) is fake_source.make_source
    out = _generate(tmp_path / "data", factory=fake_source.make_source, n=6)
    assert read_manifest(out)["source"] == "tests.data.fake_source:make_source"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"factory": "tests.data.fake_source.make_source"}, "package.module:function"),
        ({"factory": "tests.data.fake_source:nope"}, "cannot import"),
        ({"factory": lambda spec: None, "workers": 2}, "module-level function"),
        ({"spec": {"size": object()}}, "JSON-serialisable"),
        ({"spec": {**SPEC, "seed": 3}}, "pass the seed once"),
        ({"n": 0}, "n: expected an integer >= 1"),
        ({"workers": 0}, "workers: expected an integer >= 1"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict[str, Any], message: str):
    with pytest.raises(ConfigError, match=message):
        _generate(tmp_path / "data", **kwargs)
