"""LeRobot v3 datasets read without lerobot: frames, state/action, cameras and errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sim2real.data.lerobot import open_lerobot
from sim2real.data.real import open_real
from sim2real.errors import ConfigError, DataError

FRONT = "observation.images.front"
WRIST = "observation.images.wrist"


def _red(image: np.ndarray) -> int:
    return int(image[..., 0].mean())


def test_reads_frames_state_and_action(
    lerobot_v3_dir: Path, real_frame_red: Callable[[int], int]
) -> None:
    frames = open_real(lerobot_v3_dir)  # dispatch on meta/info.json; first camera
    assert len(frames) == 7 and len(frames.labelled()) == 0
    assert frames.size == (32, 24)
    assert frames.sources[4] == f"{FRONT}/episode_000001/frame_000000"
    for k, record in enumerate(frames):  # episode 1 starts at video frame 4 (from_timestamp)
        assert record.image.dtype == np.uint8 and record.image.shape == (24, 32, 3)
        assert abs(_red(record.image) - real_frame_red(k)) <= 8, (k, _red(record.image))
        assert record.image[..., 2].mean() > record.image[..., 0].mean() or k > 3  # RGB order
    record = frames[5]  # episode 1, frame 1
    np.testing.assert_allclose(record.state, [1.0, 1.0])
    np.testing.assert_allclose(record.action, [0.1, -0.1, 1.0], rtol=1e-6)
    assert record.state.dtype == np.float32


def test_camera_step_and_labels(lerobot_v3_dir: Path, real_frame_red: Callable[[int], int]) -> None:
    wrist = open_lerobot(lerobot_v3_dir, camera=WRIST, step=2)
    assert wrist.size == (16, 12) and len(wrist) == 4
    assert wrist.sources[2] == f"{WRIST}/episode_000001/frame_000000"
    assert abs(_red(wrist[3].image) - real_frame_red(6)) <= 8
    labelled = open_lerobot(lerobot_v3_dir, label_key="observation.cube_pos")
    assert len(labelled.labelled()) == 7
    np.testing.assert_allclose(labelled.positions[2], [-0.8, 0.0, 0.33], rtol=1e-6)
    image, target = labelled.torch("position")[6]
    assert tuple(image.shape) == (3, 24, 32) and tuple(target.shape) == (3,)
    resized = open_lerobot(lerobot_v3_dir, size=(64, 48), resize="resize")
    assert resized[0].image.shape == (48, 64, 3)


def _edit_info(root: Path, **changes: object) -> None:
    path = root / "meta" / "info.json"
    info = json.loads(path.read_text())
    path.write_text(json.dumps(info | changes))


def _break(root: Path, how: str) -> None:
    if how == "v2.1":
        _edit_info(root, codebase_version="v2.1")
    elif how == "no fps":
        info = json.loads((root / "meta" / "info.json").read_text())
        del info["fps"]
        (root / "meta" / "info.json").write_text(json.dumps(info))
    elif how == "bad json":
        (root / "meta" / "info.json").write_text("{not json")
    elif how == "no episodes":
        (root / "meta" / "episodes" / "chunk-000" / "file-000.parquet").unlink()
    elif how == "episodes column":
        path = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
        table = pq.read_table(path)
        pq.write_table(table.drop_columns([f"videos/{FRONT}/from_timestamp"]), path)
    elif how == "no data":
        (root / "data" / "chunk-000" / "file-000.parquet").unlink()
    elif how == "no video":
        (root / "videos" / FRONT / "chunk-000" / "file-000.mp4").unlink()
    elif how == "short video":
        path = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
        table = pq.read_table(path)
        column = f"videos/{FRONT}/from_timestamp"
        i = table.column_names.index(column)
        pq.write_table(table.set_column(i, column, [[0.0, 9.0]]), path)


@pytest.mark.parametrize(
    ("how", "opts", "match"),
    [
        ("v2.1", {}, r"codebase_version is 'v2.1', expected 'v3.x'"),
        ("no fps", {}, r"info.json' has no 'fps'"),
        ("bad json", {}, r"info.json' is not valid JSON"),
        ("no episodes", {}, r"meta/episodes' has no parquet files"),
        (
            "episodes column",
            {},
            r"lacks columns \['videos/observation.images.front/from_timestamp'\]",
        ),
        ("no data", {}, r"data file '.*file-000.parquet' does not exist"),
        ("no video", {}, r"video '.*front/chunk-000/file-000.mp4' does not exist"),
        ("short video", {}, r"row 4 \(episode 1, timestamp 0.000s\) maps to frame 90 of"),
        ("ok", {"camera": "observation.images.top"}, r"camera 'observation.images.top' is not"),
        ("ok", {"size": (64, 48)}, r"is 32x24 \(WxH\), expected 64x48"),
        ("ok", {"label_key": "observation.state"}, r"'observation.state' has 2 values, expected 3"),
        ("ok", {"label_key": "nope"}, r"lacks columns \['nope'\]"),
    ],
)
def test_errors(lerobot_v3_dir: Path, how: str, opts: dict[str, object], match: str) -> None:
    _break(lerobot_v3_dir, how)
    with pytest.raises(DataError, match=match):
        open_lerobot(lerobot_v3_dir, **opts)  # type: ignore[arg-type]


def test_bad_step(lerobot_v3_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"step is -1"):
        open_lerobot(lerobot_v3_dir, step=-1)
