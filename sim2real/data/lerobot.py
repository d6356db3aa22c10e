"""Recorded robot data in the LeRobot dataset v3 layout, read with pyarrow and OpenCV.

No dependency on the ``lerobot`` package. The layout (LeRobot ``CODEBASE_VERSION`` v3.0)::

    meta/info.json                                   fps, features, data_path, video_path
    meta/episodes/chunk-000/file-000.parquet         one row per episode
    data/chunk-000/file-000.parquet                  one row per frame, many episodes
    videos/<camera key>/chunk-000/file-000.mp4       many episodes back to back

An episode's frame with in-episode ``timestamp`` t sits at time
``videos/<camera>/from_timestamp + t`` of the video file named by the episode's
``videos/<camera>/chunk_index`` and ``file_index``; we decode frame ``round(time * fps)``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sim2real.data.frames import FrameRef, RealFrames, ResizePolicy, Size, fit_sizes
from sim2real.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

DEFAULT_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DEFAULT_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
STATE_KEY = "observation.state"
ACTION_KEY = "action"


def open_lerobot(
    root: str | Path,
    *,
    camera: str | None = None,
    step: int = 1,
    size: Size | None = None,
    resize: ResizePolicy = "error",
    label_key: str | None = None,
) -> RealFrames:
    """Open a LeRobot v3 dataset folder as :class:`RealFrames` (one camera).

    Args:
        root: the dataset folder (holding ``meta/info.json``).
        camera: a video feature key, e.g. ``"observation.images.front"``; ``None`` takes the
            first one in ``info.json``.
        step: keep every ``step``-th row of the data files (in file order).
        size: required frame size ``(W, H)``, or ``None`` for the videos' own size.
        resize: ``"error"`` or ``"resize"``, as in :func:`sim2real.data.real.open_folder`.
        label_key: a data column of 3 floats to use as the label position (metres), e.g. an
            object position recorded in simulation; ``None`` leaves frames unlabelled.

    Returns:
        Frames with ``state`` (``observation.state``) and ``action`` where those columns exist.

    Example:
        On a recorded dataset (``so101_pick/`` with a ``top`` camera and 6 joints)::

            frames = open_lerobot("so101_pick", camera="observation.images.top")
            rec = frames[0]  # rec.image (480, 640, 3), rec.state (6,),
            rec.source       # 'observation.images.top/episode_000000/frame_000000'

        A folder that is not a LeRobot v3 dataset is refused by name:

        >>> import tempfile
        >>> open_lerobot(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sim2real.errors.DataError: '.../meta/info.json' does not exist, expected a LeRobot v3 ...
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ConfigError(f"step is {step!r}, expected an integer >= 1")
    root = Path(root)
    info = _read_info(root)
    fps = float(info["fps"])
    videos = [k for k, ft in info["features"].items() if ft.get("dtype") == "video"]
    if not videos:
        raise DataError(f"'{root / 'meta/info.json'}' has no video feature, expected at least one")
    camera = videos[0] if camera is None else camera
    if camera not in videos:
        raise DataError(f"camera {camera!r} is not in '{root}', expected one of {videos}")
    episodes = _read_episodes(root, camera)
    data_tmpl = info.get("data_path", DEFAULT_DATA_PATH)
    video_tmpl = info.get("video_path", DEFAULT_VIDEO_PATH)

    refs: list[FrameRef] = []
    native: list[Size] = []
    video_meta: dict[Path, tuple[Size, int]] = {}
    data_files = sorted({(e["data/chunk_index"], e["data/file_index"]) for e in episodes.values()})
    for chunk, file in data_files:
        path = root / data_tmpl.format(chunk_index=chunk, file_index=file)
        table = _read_data(path, label_key)
        n = table.num_rows
        ep_col = table.column("episode_index").to_numpy()
        ts_col = table.column("timestamp").to_numpy()
        fi_col = (
            table.column("frame_index").to_numpy() if "frame_index" in table.column_names else None
        )
        state = _vectors(table, STATE_KEY, path)
        action = _vectors(table, ACTION_KEY, path)
        label = _vectors(table, label_key, path) if label_key else None
        if label is not None and label.shape[1] != 3:
            raise DataError(
                f"'{path}' column {label_key!r} has {label.shape[1]} values, expected 3"
            )
        for row in range(0, n, step):
            ep = int(ep_col[row])
            if ep not in episodes:
                raise DataError(f"'{path}' row {row}: episode {ep} is not in meta/episodes")
            meta = episodes[ep]
            video = root / video_tmpl.format(
                video_key=camera, chunk_index=meta["chunk"], file_index=meta["file"]
            )
            if video not in video_meta:
                video_meta[video] = _probe_video(video)
            (w, h), count = video_meta[video]
            frame = round((meta["from_ts"] + float(ts_col[row])) * fps)
            if not 0 <= frame < count:
                raise DataError(
                    f"'{path}' row {row} (episode {ep}, timestamp {float(ts_col[row]):.3f}s) "
                    f"maps to frame {frame} of '{video}', expected 0..{count - 1}"
                )
            fi = int(fi_col[row]) if fi_col is not None else row
            refs.append(
                FrameRef(
                    source=f"{camera}/episode_{ep:06d}/frame_{fi:06d}",
                    path=video,
                    frame=frame,
                    position=label[row].astype(np.float64) if label is not None else None,
                    state=state[row] if state is not None else None,
                    action=action[row] if action is not None else None,
                )
            )
            native.append((w, h))
    if not refs:
        raise DataError(f"LeRobot dataset '{root}' has no frames, expected at least one")
    refs, final = fit_sizes(refs, native, size=size, resize=resize)
    logger.info("opened LeRobot %s (%s): %d frames", root, camera, len(refs))
    return RealFrames(refs, size=final, resize=resize == "resize", name=f"{root}:{camera}")


def _read_info(root: Path) -> dict[str, Any]:
    path = root / "meta" / "info.json"
    if not path.is_file():
        raise DataError(f"'{path}' does not exist, expected a LeRobot v3 dataset folder")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"'{path}' is not valid JSON: {err}") from err
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise DataError(
            f"'{path}' codebase_version is {version!r}, expected 'v3.x' (v2.x stores one file per "
            "episode; convert with lerobot's convert_dataset_v21_to_v30)"
        )
    for key in ("fps", "features"):
        if key not in info:
            raise DataError(f"'{path}' has no {key!r}, expected it in a LeRobot v3 info.json")
    return info


def _read_episodes(root: Path, camera: str) -> dict[int, dict[str, Any]]:
    """``{episode_index: {data/chunk_index, data/file_index, chunk, file, from_ts}}``."""
    files = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    if not files:
        raise DataError(
            f"'{root / 'meta/episodes'}' has no parquet files, expected "
            "meta/episodes/chunk-000/file-000.parquet (LeRobot v3)"
        )
    prefix = f"videos/{camera}/"
    needed = {
        "episode_index": "episode_index",
        "data/chunk_index": "data/chunk_index",
        "data/file_index": "data/file_index",
        "chunk": prefix + "chunk_index",
        "file": prefix + "file_index",
        "from_ts": prefix + "from_timestamp",
    }
    out: dict[int, dict[str, Any]] = {}
    for path in files:
        names = pq.read_schema(path).names
        missing = [c for c in needed.values() if c not in names]
        if missing:
            raise DataError(f"'{path}' lacks columns {missing}, expected LeRobot v3 episodes")
        table = pq.read_table(path, columns=list(needed.values())).to_pydict()
        for i in range(len(table["episode_index"])):
            row = {key: table[col][i] for key, col in needed.items()}
            out[int(row["episode_index"])] = row
    return out


def _read_data(path: Path, label_key: str | None) -> pa.Table:
    if not path.is_file():
        raise DataError(f"data file '{path}' does not exist, expected by meta/episodes")
    names = pq.read_schema(path).names
    missing = [c for c in ("episode_index", "timestamp") if c not in names]
    if label_key is not None and label_key not in names:
        missing.append(label_key)
    if missing:
        raise DataError(f"'{path}' lacks columns {missing}; it has {names}")
    wanted = ["episode_index", "timestamp", "frame_index", STATE_KEY, ACTION_KEY, label_key]
    return pq.read_table(path, columns=[c for c in dict.fromkeys(wanted) if c in names])


def _vectors(table: pa.Table, column: str | None, path: Path) -> np.ndarray | None:
    """A list column as ``float32`` ``(N, D)``, or ``None`` when absent."""
    if column is None or column not in table.column_names:
        return None
    values = table.column(column).combine_chunks()
    if pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
        flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        if len(flat) % max(len(values), 1):
            raise DataError(f"'{path}' column {column!r} has rows of different lengths")
        return flat.reshape(len(values), -1)
    return values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, 1)


def _probe_video(path: Path) -> tuple[Size, int]:
    """``((W, H), frame count)`` from the container, without decoding every frame."""
    if not path.is_file():
        raise DataError(f"video '{path}' does not exist, expected by meta/episodes")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DataError(f"video '{path}' cannot be opened by OpenCV: corrupt or unknown codec")
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    if count <= 0 or min(size) <= 0:
        raise DataError(f"video '{path}' reports {count} frames of {size}, expected some frames")
    return size, count
