"""Fixtures for the transfer tests: tiny sim shards, a tiny "real" folder, tiny encoders."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sim2real.data.generate import generate_dataset
from sim2real.data.shards import ShardedDataset
from sim2real.envs.sources import scene_spec
from sim2real.perception import Encoder
from sim2real.perception.geometry import nominal_camera
from sim2real.transfer import FinetuneConfig

SIZE = (64, 48)
N_SIM = 16
N_LABELLED = 5
N_UNLABELLED = 4
HEADS = {
    "position": {"type": "position", "frame": "robot_base", "hidden": 32},
    "keypoint": {"type": "keypoints", "names": ["cube"]},
}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread: on a shared 2-core machine, 2 threads can be 50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 rendered kuka_cube frames at 64x48."""
    out = tmp_path_factory.mktemp("transfer") / "sim"
    spec = scene_spec("kuka_cube", "default", SIZE)
    return generate_dataset(
        "sim2real.envs.sources:make_source", spec, n=N_SIM, out=out, progress=False
    )


def write_frames(folder: Path, images: np.ndarray, positions: np.ndarray | None) -> Path:
    """PNG frames ``f00.png...`` (RGB in, BGR on disk) and a labels.csv when labelled."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["file,x_m,y_m,z_m"]
    for i, image in enumerate(images):
        name = f"f{i:02d}.png"
        cv2.imwrite(str(folder / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if positions is not None:
            rows.append(f"{name}," + ",".join(f"{v:.4f}" for v in positions[i]))
    if positions is not None:
        (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture()
def frame_writer() -> Callable[[Path, np.ndarray, np.ndarray | None], Path]:
    """:func:`write_frames`: ``f(folder, images RGB, positions or None) -> folder``."""
    return write_frames


@pytest.fixture(scope="session")
def real_dir(sim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real-style folder: labelled/ (5 frames + labels.csv) and unlabelled/ (4 frames)."""
    ds = ShardedDataset(sim_dir)
    images = np.stack([ds[i]["image"] for i in range(N_LABELLED + N_UNLABELLED)])
    positions = np.stack([ds[i]["position"] for i in range(N_LABELLED)]).astype(np.float64)
    root = tmp_path_factory.mktemp("transfer") / "real"
    write_frames(root / "labelled", images[:N_LABELLED], positions)
    write_frames(root / "unlabelled", images[N_LABELLED:], None)
    return root


def make_encoder(backbone: str, sim_dir: Path) -> Encoder:
    kwargs = {"feature_stride": 16} if backbone == "efficientnet_lite0" else {}
    torch.manual_seed(0)
    enc = Encoder(backbone, HEADS, input_size=SIZE, pretrained=False, backbone_kwargs=kwargs)
    ds = ShardedDataset(sim_dir, fields=["position"])
    positions = np.stack([ds[i]["position"] for i in range(len(ds))])
    enc.heads["position"].set_target_stats(positions.mean(0), positions.std(0) + 0.05)
    enc.card["camera"] = nominal_camera(ds.manifest, *SIZE).to_card()
    enc.card["position_route"] = "position_head"
    return enc.eval()


@pytest.fixture(scope="session")
def _encoders(sim_dir: Path) -> dict[str, Encoder]:
    return {name: make_encoder(name, sim_dir) for name in ("efficientnet_lite0", "nature_cnn")}


@pytest.fixture()
def encoder(_encoders: dict[str, Encoder]) -> Encoder:
    """A tiny untrained EfficientNet-Lite0 encoder (BatchNorm) with both heads and a camera."""
    return copy.deepcopy(_encoders["efficientnet_lite0"])


@pytest.fixture()
def nature_encoder(_encoders: dict[str, Encoder]) -> Encoder:
    """The same with the Nature CNN (no BatchNorm)."""
    return copy.deepcopy(_encoders["nature_cnn"])


@pytest.fixture()
def cfg() -> FinetuneConfig:
    """A few optimiser steps, 2-fold CV, CPU, quiet."""
    return FinetuneConfig(
        epochs=2, steps_per_epoch=2, batch_size=4, cv_folds=2, device="cpu", progress=False
    )
