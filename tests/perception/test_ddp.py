"""Pretraining under torchrun: 2 CPU processes on gloo, as a user would start them.

One 2-process run writes exactly one card and checkpoint and records its world size; its
weights after an epoch equal a single-process run whose batches are the union of the two
processes' batches; a run killed mid-way resumes to the same weights as an unbroken one; and
DDP's all-reduced gradients equal the single-process gradient of the union batch.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from sim2real.data.generate import generate_dataset
from sim2real.envs.sources import scene_spec
from sim2real.perception.distributed import Distributed, shard_order

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch built without torch.distributed"
)

SETTINGS = ["--backbone", "nature_cnn", "--device", "cpu", "--set", "pretrained=false"]
SETTINGS += ["val_fraction=0.25"]  # 24 training images: 3 steps of 8, or of 2 x 4


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = scene_spec("kuka_cube", "default", size=(64, 48))
    out = tmp_path_factory.mktemp("ddp") / "data"
    return generate_dataset(
        "sim2real.envs.sources:make_source", spec, n=32, out=out, shard_size=16, progress=False
    )


def _command(data: Path, out: Path, *, nproc: int, batch: int, epochs: int) -> list[str]:
    cli = ["-m", "sim2real", "pretrain", "--data", str(data), "--out", str(out)]
    cli += ["--epochs", str(epochs), "--batch-size", str(batch), *SETTINGS]
    if nproc == 1:
        return [sys.executable, *cli]
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*run, "--nproc_per_node", str(nproc), *cli]


def _run(cmd: list[str]) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "last" / "model.safetensors")


def _diffs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
    assert a.keys() == b.keys()
    return torch.cat([(a[k].double() - b[k].double()).abs().flatten() for k in a])


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return _diffs(a, b).max().item()


def _share_off(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The share of weights that differ by more than 1e-5."""
    return (_diffs(a, b) > 1e-5).double().mean().item()


@pytest.fixture(scope="module")
def single(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single") / "model"
    _run(_command(data, out, nproc=1, batch=8, epochs=1))
    return out


@pytest.fixture(scope="module")
def ddp(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("ddp2") / "model"
    return out, _run(_command(data, out, nproc=2, batch=4, epochs=1))


def test_two_processes_write_one_card_and_checkpoint(ddp: tuple[Path, str]) -> None:
    out, stdout = ddp
    assert stdout.count("encoder checkpoint:") == 1  # rank 1 prints nothing
    assert sorted(p.name for p in out.iterdir()) == [
        "card.json", "last", "metrics.csv", "model.safetensors", "tb",
    ]  # fmt: skip
    assert sorted(p.name for p in (out / "last").iterdir()) == [
        "card.json", "model.safetensors", "train_state.json", "train_state.safetensors",
    ]  # fmt: skip
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["world_size"] == 2
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2  # header + one epoch, written once


def test_ddp_epoch_equals_single_process_on_the_union_batches(
    single: Path, ddp: tuple[Path, str], data: Path, tmp_path: Path
) -> None:
    # After 3 AdamW steps all but a handful of the ~130k weights agree within 1e-5: the
    # gradients agree to float rounding (see the last test), and only where a gradient is
    # ~0 does Adam's division by sqrt(v) + eps grow that rounding (still < 1e-3).
    a, b = _weights(single), _weights(ddp[0])
    assert _share_off(a, b) < 1e-3 and _max_diff(a, b) < 1e-3
    other = tmp_path / "global16"  # 2 x 8 per step: not the single-process batching
    _run(_command(data, other, nproc=2, batch=8, epochs=1))
    assert _share_off(a, _weights(other)) > 0.5


def test_killed_ddp_run_resumes_to_the_unbroken_weights(data: Path, tmp_path: Path) -> None:
    unbroken = tmp_path / "unbroken"
    _run(_command(data, unbroken, nproc=2, batch=4, epochs=4))
    with (unbroken / "metrics.csv").open(newline="") as f:
        losses = [float(row["train_loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 4 and losses[-1] < losses[0]  # the 2-process run learns
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = _command(data, out, nproc=2, batch=4, epochs=4)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 180
    state = out / "last" / "train_state.json"
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    epoch = json.loads(state.read_text())["state"]["epoch"] if state.exists() else None
    if epoch is None or epoch >= 4:
        pytest.fail(f"the run was not killed mid-way (saved epoch {epoch})")
    _run([*cmd, "--resume"])
    assert _max_diff(_weights(unbroken), _weights(out)) == 0.0
    epochs = [line.split(",")[0] for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3", "4"]


def _grad_worker(rank: int, world: int, port: int, result: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank))
    os.environ.update(WORLD_SIZE=str(world), LOCAL_RANK=str(rank))  # as torchrun sets them
    dist = Distributed.from_env("cpu")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    x, y = torch.randn(8, 3, 8, 8), torch.randn(8, 2)
    reference = copy.deepcopy(model)
    mine = shard_order(torch.arange(8), rank, world)
    wrapped = dist.wrap(model, torch.device("cpu"))
    nn.functional.mse_loss(wrapped(x[mine]), y[mine]).backward()
    if rank == 0:
        grads = [p.grad for p in model.parameters()]
        nn.functional.mse_loss(reference(x), y).backward()
        pairs = zip(grads, reference.parameters(), strict=True)
        diff = max((g - p.grad).abs().max().item() for g, p in pairs)
        Path(result).write_text(str(diff))
    dist.close()


def test_ddp_gradient_equals_the_union_batch_gradient(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = tmp_path / "diff.txt"
    torch.multiprocessing.spawn(_grad_worker, args=(2, port, str(result)), nprocs=2)
    assert float(result.read_text()) < 1e-5
