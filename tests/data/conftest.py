"""Fixtures for the real-frames tests: tiny image folders, videos and LeRobot v3 datasets."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

LEROBOT_FPS = 10
LEROBOT_FRONT = "observation.images.front"
LEROBOT_WRIST = "observation.images.wrist"
LEROBOT_EPISODE_LENGTHS = (4, 3)


def frame_red(k: int) -> int:
    """Red value of the k-th frame in a fixture video (steps of 30 survive mp4v)."""
    return 30 * k + 10


def _solid_bgr(k: int, size: tuple[int, int]) -> np.ndarray:
    """A solid frame, RGB = (frame_red(k), 100, 220 - 30k), as BGR for OpenCV."""
    w, h = size
    return np.full((h, w, 3), (220 - 30 * k, 100, frame_red(k)), dtype=np.uint8)


def _write_video(path: Path, n: int, size: tuple[int, int], fps: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for k in range(n):
        writer.write(_solid_bgr(k, size))
    writer.release()


@pytest.fixture
def real_frame_red() -> Callable[[int], int]:
    """The red value of frame k in the fixture videos and images."""
    return frame_red


@pytest.fixture
def write_real_images() -> Callable[..., list[Path]]:
    """Write small solid-colour images: ``f(folder, names, size=(32, 24)) -> paths``."""

    def write(folder: Path, names: Sequence[str], size: tuple[int, int] = (32, 24)) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for k, name in enumerate(names):
            path = folder / name
            assert cv2.imwrite(str(path), _solid_bgr(k % 7, size))
            paths.append(path)
        return paths

    return write


@pytest.fixture
def real_video_file(tmp_path: Path) -> Path:
    """A 7-frame 32x24 mp4v video whose frame k is red ``frame_red(k)``."""
    path = tmp_path / "clip.mp4"
    _write_video(path, 7, (32, 24), LEROBOT_FPS)
    return path


@pytest.fixture
def lerobot_v3_dir(tmp_path: Path) -> Path:
    """A tiny LeRobot v3 dataset: 2 episodes (4 + 3 frames) in one data file and one video
    per camera; front camera 32x24, wrist 16x12; state = [episode, frame], action = 3 values,
    ``observation.cube_pos`` = 3 values usable as labels."""
    root = tmp_path / "so_tiny"
    sizes = {LEROBOT_FRONT: (32, 24), LEROBOT_WRIST: (16, 12)}
    total = sum(LEROBOT_EPISODE_LENGTHS)
    for key, size in sizes.items():
        _write_video(root / "videos" / key / "chunk-000" / "file-000.mp4", total, size, LEROBOT_FPS)

    episode, frame, state, action, cube = [], [], [], [], []
    for ep, length in enumerate(LEROBOT_EPISODE_LENGTHS):
        for fi in range(length):
            episode.append(ep)
            frame.append(fi)
            state.append([float(ep), float(fi)])
            action.append([0.1 * fi, -0.1 * fi, float(ep)])
            cube.append([-1.0 + 0.1 * fi, 0.05 * ep, 0.33])
    data = pa.table(
        {
            "index": pa.array(range(total), pa.int64()),
            "episode_index": pa.array(episode, pa.int64()),
            "frame_index": pa.array(frame, pa.int64()),
            "timestamp": pa.array([f / LEROBOT_FPS for f in frame], pa.float32()),
            "task_index": pa.array([0] * total, pa.int64()),
            "observation.state": pa.array(state, pa.list_(pa.float32())),
            "action": pa.array(action, pa.list_(pa.float32())),
            "observation.cube_pos": pa.array(cube, pa.list_(pa.float32())),
        }
    )
    (root / "data" / "chunk-000").mkdir(parents=True)
    pq.write_table(data, root / "data" / "chunk-000" / "file-000.parquet")

    starts = np.cumsum((0, *LEROBOT_EPISODE_LENGTHS))
    episodes: dict[str, list] = {
        "episode_index": [0, 1],
        "length": list(LEROBOT_EPISODE_LENGTHS),
        "tasks": [["pick the cube"], ["pick the cube"]],
        "data/chunk_index": [0, 0],
        "data/file_index": [0, 0],
        "dataset_from_index": [int(s) for s in starts[:-1]],
        "dataset_to_index": [int(s) for s in starts[1:]],
    }
    for key in sizes:
        episodes[f"videos/{key}/chunk_index"] = [0, 0]
        episodes[f"videos/{key}/file_index"] = [0, 0]
        episodes[f"videos/{key}/from_timestamp"] = [s / LEROBOT_FPS for s in starts[:-1]]
        episodes[f"videos/{key}/to_timestamp"] = [s / LEROBOT_FPS for s in starts[1:]]
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    pq.write_table(
        pa.table(episodes), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    )

    vector = {"dtype": "float32", "names": None}
    features = {
        key: {
            "dtype": "video",
            "shape": [h, w, 3],
            "names": ["height", "width", "channels"],
            "info": {"video.fps": LEROBOT_FPS, "video.codec": "mp4v"},
        }
        for key, (w, h) in sizes.items()
    }
    features |= {
        "observation.state": {**vector, "shape": [2]},
        "action": {**vector, "shape": [3]},
        "observation.cube_pos": {**vector, "shape": [3]},
    }
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        dtype = "float32" if key == "timestamp" else "int64"
        features[key] = {"dtype": dtype, "shape": [1], "names": None}
    info = {
        "codebase_version": "v3.0",
        "robot_type": "so101_follower",
        "total_episodes": len(LEROBOT_EPISODE_LENGTHS),
        "total_frames": total,
        "total_tasks": 1,
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "fps": LEROBOT_FPS,
        "splits": {"train": f"0:{len(LEROBOT_EPISODE_LENGTHS)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": features,
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    return root
