"""Shard storage: round trip, memory mapping, verification of corrupt/truncated shards."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from sim2real.data.generate import generate_dataset
from sim2real.data.shards import ShardedDataset, read_manifest, write_manifest, write_shard
from sim2real.errors import ConfigError, DataError
from tests.data import fake_source

N, SHARD = 23, 5


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "data"
    spec = {"size": 8, "renderer": "fake"}
    return generate_dataset(
        fake_source.make_source, spec, N, out, seed=4, shard_size=SHARD, progress=False
    )


@pytest.fixture
def copy(dataset_path: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(dataset_path, tmp_path / "copy"))


def test_round_trip_keeps_fields_dtypes_and_values(dataset_path: Path):
    dataset = ShardedDataset(dataset_path)
    source = fake_source.make_source({"seed": 4, "size": 8})
    assert len(dataset) == N
    assert dataset.fields == {
        "image": {"dtype": "uint8", "shape": [8, 8, 3]},
        "position": {"dtype": "float32", "shape": [3]},
        "index": {"dtype": "int64", "shape": []},
        "params": {"dtype": "str", "shape": []},
    }
    for i in range(N):
        sample, expected = dataset[i], source(i)
        assert sample.keys() == expected.keys()
        assert sample["params"] == expected["params"]  # a str, non-ASCII kept
        for name in ("image", "position", "index"):
            assert sample[name].dtype == np.asarray(expected[name]).dtype
            np.testing.assert_array_equal(sample[name], expected[name])
    assert int(dataset[-1]["index"]) == N - 1
    with pytest.raises(IndexError):
        dataset[N]


def test_samples_come_from_memory_maps_as_writable_copies(dataset_path: Path):
    dataset = ShardedDataset(dataset_path, fields=["image"])
    sample = dataset[7]
    assert list(sample) == ["image"]
    assert sample["image"].flags.writeable and not isinstance(sample["image"], np.memmap)
    assert isinstance(dataset._maps[1]["image"], np.memmap)
    with pytest.raises(DataError, match=r"fields \['depth'\] not in the dataset"):
        ShardedDataset(dataset_path, fields=["depth"])


def test_manifest_records_settings_fields_and_checksums(dataset_path: Path):
    manifest = read_manifest(dataset_path)
    assert manifest["status"] == "complete"
    assert (manifest["n"], manifest["seed"], manifest["shard_size"]) == (N, 4, SHARD)
    assert manifest["spec"] == {"size": 8, "renderer": "fake"}
    assert manifest["code_version"]["sim2real"]
    assert list(manifest["shards"]) == [f"shard-{k:05d}" for k in range(5)]
    last = manifest["shards"]["shard-00004"]
    assert (last["start"], last["stop"]) == (20, 23)
    for file, entry in last["files"].items():
        data = (dataset_path / "shard-00004" / file).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


@pytest.mark.parametrize("verify", [True, "lazy"])
def test_corrupted_shard_is_reported_by_name(copy: Path, verify: bool | str):
    path = copy / "shard-00003" / "image.npy"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    message = "shard-00003/image.npy: sha256 mismatch"
    if verify is True:
        with pytest.raises(DataError, match=message):
            ShardedDataset(copy, verify=verify)
        ShardedDataset(copy, fields=["position"])  # other fields are not read
        return
    dataset = ShardedDataset(copy, verify=verify)
    dataset[0]
    with pytest.raises(DataError, match=message):
        dataset[16]


@pytest.mark.parametrize("verify", [True, "lazy", False])
def test_truncated_or_missing_file_is_reported_even_without_hashing(copy: Path, verify):
    path = copy / "shard-00001" / "position.npy"
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(DataError, match=r"shard-00001/position.npy: \d+ bytes, the manifest"):
        ShardedDataset(copy, verify=verify)
    (copy / "shard-00004" / "params.npy").unlink()
    with pytest.raises(DataError, match=r"shard-00004/params\.npy: missing"):
        ShardedDataset(copy, fields=["params"], verify=verify)


def test_incomplete_manifest_is_refused_unless_asked(copy: Path):
    manifest = read_manifest(copy)
    manifest["status"] = "incomplete"
    del manifest["shards"]["shard-00002"]
    write_manifest(copy, manifest)
    with pytest.raises(DataError, match=r"status is 'incomplete'.*4/5 shards done"):
        ShardedDataset(copy)
    partial = ShardedDataset(copy, allow_incomplete=True)
    assert len(partial) == N - SHARD
    assert partial.sample_index(10) == 15 and int(partial[10]["index"]) == 15


def test_not_a_dataset_is_refused(tmp_path: Path):
    with pytest.raises(DataError, match=r"manifest\.json: missing"):
        ShardedDataset(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="expected format 'sim2real-shards'"):
        ShardedDataset(tmp_path)


def test_split_is_deterministic_disjoint_and_complete(dataset_path: Path):
    dataset = ShardedDataset(dataset_path, verify=False)
    train, val = dataset.split(0.2)
    assert len(val) == round(0.2 * N) and len(train) + len(val) == N
    assert sorted({*train, *val}) == list(range(N))
    again = ShardedDataset(dataset_path, verify=False).split(0.2)
    np.testing.assert_array_equal(again[1], val)
    assert not np.array_equal(dataset.split(0.2, seed=99)[1], val)
    assert len(dataset.split(0.0)[1]) == 0
    with pytest.raises(ConfigError, match=r"val_fraction: expected a number in \[0, 1\)"):
        dataset.split(1.0)


def test_works_with_a_torch_dataloader_and_pickles(dataset_path: Path):
    torch = pytest.importorskip("torch")
    dataset = ShardedDataset(dataset_path)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert batch["image"].shape == (4, 8, 8, 3) and batch["image"].dtype == torch.uint8
    assert batch["index"].tolist() == [0, 1, 2, 3] and isinstance(batch["params"][0], str)
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._maps == {}
    np.testing.assert_array_equal(clone[9]["image"], dataset[9]["image"])


def test_write_shard_is_atomic_and_leaves_no_temporary_files(tmp_path: Path):
    arrays = {"x": np.arange(6, dtype=np.float32).reshape(3, 2), "s": np.array([b"a", b"bc", b""])}
    record = write_shard(tmp_path, 7, 35, arrays)
    assert (record["start"], record["stop"]) == (35, 38)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00007"]
    assert sorted(record["files"]) == ["s.npy", "x.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "shard-00007" / "x.npy"), arrays["x"])
