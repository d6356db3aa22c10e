"""Real frames from folders and videos: loading, subsets, resize policy, validation errors."""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sim2real.data.frames import RealFrame, RealFrames
from sim2real.data.real import open_folder, open_real
from sim2real.data.video import open_video
from sim2real.errors import ConfigError, DataError

KUKA_CUBE = Path(__file__).resolve().parents[2].parent / "shared" / "real" / "kuka_cube"
HEADER = "file,x_m,y_m,z_m"


@pytest.fixture
def labelled_folder(tmp_path: Path, write_real_images: Callable[..., list[Path]]) -> Path:
    """a.png, b.png labelled with uv and box; c.png unlabelled."""
    folder = tmp_path / "set"
    write_real_images(folder, ["a.png", "b.png", "c.png"])
    (folder / "labels.csv").write_text(
        "file,x_m,y_m,z_m,u,v,x0,y0,x1,y1\n"
        "a.png,-1.0,0.2,0.33,16,12,8,6,24,18\n"
        "b.png,-0.5,-0.1,0.33,4,2,0,0,10,8\n"
    )
    (folder / "notes.txt").write_text("not an image, ignored")
    return folder


def test_folder_without_labels_is_all_unlabelled(
    tmp_path: Path, write_real_images: Callable[..., list[Path]]
) -> None:
    write_real_images(tmp_path / "set", ["b.jpg", "a.jpg", "c.JPEG"])
    frames = open_real(tmp_path / "set")
    assert isinstance(frames, RealFrames)
    assert (len(frames), len(frames.labelled()), len(frames.unlabelled())) == (3, 0, 3)
    assert frames.sources == ["a.jpg", "b.jpg", "c.JPEG"]
    assert frames.size == (32, 24)
    assert frames.positions.shape == (0, 3)
    record = frames[0]
    assert isinstance(record, RealFrame)
    assert record.image.dtype == np.uint8 and record.image.shape == (24, 32, 3)
    assert record.position is None and record.uv is None and record.state is None


def test_images_are_rgb(tmp_path: Path, write_real_images: Callable[..., list[Path]]) -> None:
    write_real_images(tmp_path / "set", ["a.png"])  # RGB (10, 100, 220)
    image = open_real(tmp_path / "set")[0].image
    assert open_real(tmp_path / "set").colour_order == "RGB"
    assert tuple(image[0, 0]) == (10, 100, 220)


def test_partially_labelled_folder(labelled_folder: Path) -> None:
    frames = open_folder(labelled_folder)
    assert len(frames) == 3
    labelled, unlabelled = frames.labelled(), frames.unlabelled()
    assert labelled.sources == ["a.png", "b.png"] and unlabelled.sources == ["c.png"]
    np.testing.assert_allclose(labelled.positions, [[-1.0, 0.2, 0.33], [-0.5, -0.1, 0.33]])
    first = labelled[0]
    np.testing.assert_allclose(first.uv, [16, 12])
    np.testing.assert_allclose(first.box, [8, 6, 24, 18])
    assert unlabelled[0].position is None and unlabelled[0].box is None
    assert [r.source for r in frames] == ["a.png", "b.png", "c.png"]
    assert frames.select([2, 0]).sources == ["c.png", "a.png"]
    assert frames[-1].source == "c.png"


def test_resize_policy_scales_pixel_labels(labelled_folder: Path) -> None:
    with pytest.raises(DataError, match=r"'a.png' is 32x24 \(WxH\), expected 64x48"):
        open_folder(labelled_folder, size=(64, 48))
    frames = open_folder(labelled_folder, size=(64, 48), resize="resize")
    assert frames.size == (64, 48)
    assert frames[0].image.shape == (48, 64, 3)
    np.testing.assert_allclose(frames[0].uv, [32, 24])
    np.testing.assert_allclose(frames[0].box, [16, 12, 48, 36])
    np.testing.assert_allclose(frames[0].position, [-1.0, 0.2, 0.33])  # metres unchanged


@pytest.mark.parametrize(
    ("opts", "match"),
    [
        ({"resize": "resize"}, r"resize='resize' needs size"),
        ({"resize": "stretch"}, r"resize is 'stretch', expected one of \['error', 'resize'\]"),
        ({"size": (64, 0)}, r"size is \(64, 0\), expected \(W, H\)"),
    ],
)
def test_bad_options(labelled_folder: Path, opts: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_real(labelled_folder, **opts)


def test_split_layout(tmp_path: Path, write_real_images: Callable[..., list[Path]]) -> None:
    write_real_images(tmp_path / "labelled", ["a.png", "b.png"])
    (tmp_path / "labelled" / "labels.csv").write_text(f"{HEADER}\na.png,1,2,3\nb.png,4,5,6\n")
    write_real_images(tmp_path / "unlabelled", ["c.png", "d.png", "e.png"])
    frames = open_real(tmp_path)
    assert (len(frames.labelled()), len(frames.unlabelled())) == (2, 3)
    assert frames.unlabelled().sources == [
        "unlabelled/c.png",
        "unlabelled/d.png",
        "unlabelled/e.png",
    ]
    np.testing.assert_allclose(frames.positions, [[1, 2, 3], [4, 5, 6]])


def _make(root: Path, files: dict[str, Any], write: Callable[..., list[Path]]) -> None:
    """Write ``files``: "img" (32x24 image), ("img", (W, H)), bytes or text."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if content == "img":
            write(root / Path(name).parent, [Path(name).name])
        elif isinstance(content, tuple):
            write(root / Path(name).parent, [Path(name).name], size=content[1])
        elif isinstance(content, bytes):
            (root / name).write_bytes(content)
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(content)


def _truncated_jpeg(tmp_path: Path, write: Callable[..., list[Path]]) -> bytes:
    (path,) = write(tmp_path / "src", ["full.jpg"], size=(64, 48))
    data = path.read_bytes()
    return data[: len(data) // 2]


IMG2 = {"a.png": "img", "b.png": "img"}
ERROR_CASES = {
    "empty folder": ({}, {}, r"folder '.*set' is empty"),
    "not an image": ({"a.jpg": b"not an image at all"}, {}, r"'.*a.jpg' is unreadable or corrupt"),
    "zero bytes": ({"a.png": "img", "b.png": b""}, {}, r"'.*b.png' is unreadable or corrupt"),
    "truncated jpeg": ({"t.jpg": "TRUNCATED"}, {}, r"'.*t.jpg' is unreadable or corrupt"),
    "mixed sizes": (
        {"a.png": "img", "b.png": ("img", (16, 12))},
        {},
        r"'b.png' is 16x12 \(WxH\), expected 32x24 like 'a.png'",
    ),
    "wrong requested size": (IMG2, {"size": (640, 480)}, r"expected 640x480 like the requested"),
    "unknown column": (
        {**IMG2, "labels.csv": f"{HEADER},depth\na.png,1,2,3,4\n"},
        {},
        r"unknown \['depth'\]",
    ),
    "missing column": (
        {**IMG2, "labels.csv": "file,x_m,y_m\na.png,1,2\n"},
        {},
        r"missing \['z_m'\]",
    ),
    "half uv": (
        {**IMG2, "labels.csv": f"{HEADER},u\na.png,1,2,3,4\n"},
        {},
        r"part of \['u', 'v'\]",
    ),
    "empty labels": ({**IMG2, "labels.csv": ""}, {}, r"labels.csv' is empty, expected a header"),
    "nan": (
        {**IMG2, "labels.csv": f"{HEADER}\na.png,1,2,3\nb.png,nan,2,3\n"},
        {},
        r"labels.csv row 3 \(file 'b.png'\): x_m is 'nan', expected a finite number",
    ),
    "inf": (
        {**IMG2, "labels.csv": f"{HEADER}\na.png,1,-inf,3\n"},
        {},
        r"labels.csv row 2 \(file 'a.png'\): y_m is '-inf', expected a finite number",
    ),
    "text": (
        {**IMG2, "labels.csv": f"{HEADER}\na.png,1,2,abc\n"},
        {},
        r"row 2 \(file 'a.png'\): z_m is 'abc', expected a finite number",
    ),
    "blank cell": (
        {**IMG2, "labels.csv": f"{HEADER}\na.png,1,,3\n"},
        {},
        r"row 2 \(file 'a.png'\): y_m is '', expected a finite number",
    ),
    "duplicate": (
        {**IMG2, "labels.csv": f"{HEADER}\na.png,1,2,3\nb.png,1,2,3\na.png,1,2,3\n"},
        {},
        r"labels.csv row 4 \(file 'a.png'\): duplicate of row 2",
    ),
    "absent file": (
        {**IMG2, "labels.csv": f"{HEADER}\na.png,1,2,3\nzz.png,1,2,3\n"},
        {},
        r"labels.csv row 3 \(file 'zz.png'\): no such image in",
    ),
    "field count": (
        {**IMG2, "labels.csv": f"{HEADER}\na.png,1,2\n"},
        {},
        r"labels.csv row 2: 3 fields, expected 4",
    ),
    "inverted box": (
        {**IMG2, "labels.csv": f"{HEADER},x0,y0,x1,y1\na.png,1,2,3,9,0,4,5\n"},
        {},
        r"row 2 \(file 'a.png'\): box is \[9.0, 0.0, 4.0, 5.0\], expected x0 < x1",
    ),
    "labels without images": ({"labels.csv": f"{HEADER}\n"}, {}, r"has a labels.csv but no images"),
    "labelled unlabelled": (
        {"labelled/a.png": "img", "unlabelled/b.png": "img", "unlabelled/labels.csv": HEADER},
        {},
        r"unlabelled/labels.csv' exists, expected none",
    ),
}


@pytest.mark.parametrize(("files", "opts", "match"), ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_validation_errors(
    tmp_path: Path,
    write_real_images: Callable[..., list[Path]],
    files: dict[str, Any],
    opts: dict[str, Any],
    match: str,
) -> None:
    if "t.jpg" in files:
        files = {"t.jpg": _truncated_jpeg(tmp_path, write_real_images)}
    _make(tmp_path / "set", files, write_real_images)
    with pytest.raises(DataError, match=match):
        open_real(tmp_path / "set", **opts)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("missing", None, r"real data path '.*missing' does not exist"),
        ("notes.txt", "hello", r"'.*notes.txt' is neither a folder nor a video"),
        ("broken.mp4", "not a video", r"video '.*broken.mp4' (cannot be opened|has no decodable)"),
    ],
)
def test_path_errors(tmp_path: Path, name: str, content: str | None, match: str) -> None:
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=match):
        open_real(tmp_path / name)


@pytest.mark.parametrize(("step", "expected"), [(1, list(range(7))), (3, [0, 3, 6]), (10, [0])])
def test_video_every_kth_frame(
    real_video_file: Path, real_frame_red: Callable[[int], int], step: int, expected: list[int]
) -> None:
    frames = open_real(real_video_file, step=step)
    assert frames.sources == [f"clip.mp4#frame={k}" for k in expected]
    assert len(frames.labelled()) == 0
    for k in reversed(range(len(frames))):  # backwards: the reader reopens and decodes forward
        red = int(frames[k].image[..., 0].mean())
        assert abs(red - real_frame_red(expected[k])) <= 8, (k, red)


def test_video_options_and_pickle(real_video_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"step is 0, expected an integer >= 1"):
        open_video(real_video_file, step=0)
    frames = open_video(real_video_file, size=(16, 12), resize="resize")
    assert frames[3].image.shape == (12, 16, 3)
    clone = pickle.loads(pickle.dumps(frames))  # DataLoader workers with spawn
    np.testing.assert_array_equal(clone[3].image, frames[3].image)


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method tested on Linux only")
def test_video_in_forked_workers(real_video_file: Path) -> None:
    frames = open_video(real_video_file, step=2)
    parent = frames[3].image  # the parent holds an open capture when workers fork
    loader = DataLoader(
        frames.torch(None), batch_size=2, num_workers=2, multiprocessing_context="fork"
    )
    images = torch.cat([batch[0] for batch in loader])
    assert images.shape == (4, 3, 24, 32)
    np.testing.assert_array_equal(images[3].permute(1, 2, 0).numpy(), parent)


def test_torch_view(labelled_folder: Path) -> None:
    frames = open_real(labelled_folder)
    ds = frames.torch("position")
    assert len(ds) == 2
    image, target = ds[1]
    assert image.dtype == torch.uint8 and image.shape == (3, 24, 32)
    assert target.dtype == torch.float32
    torch.testing.assert_close(target, torch.tensor([-0.5, -0.1, 0.33]))
    images, targets = next(iter(DataLoader(ds, batch_size=2)))
    assert images.shape == (2, 3, 24, 32) and targets.shape == (2, 3)
    assert frames.torch("box")[0][1].shape == (4,)
    unsupervised = frames.torch(None, transform=lambda x: x.float() / 255)
    assert len(unsupervised) == 3 and unsupervised[2][0].dtype == torch.float32
    with pytest.raises(DataError, match=r"no frames with a 'position' label"):
        frames.unlabelled().torch("position")
    with pytest.raises(ConfigError, match=r"target is 'depth'"):
        frames.torch("depth")  # type: ignore[arg-type]


needs_kuka = pytest.mark.skipif(
    not KUKA_CUBE.is_dir(), reason=f"real data not present at {KUKA_CUBE} (shared/real/kuka_cube)"
)


@needs_kuka
def test_kuka_cube_loads_12_labelled_and_40_unlabelled() -> None:
    frames = open_real(KUKA_CUBE)
    assert (len(frames), len(frames.labelled()), len(frames.unlabelled())) == (52, 12, 40)
    assert frames.size == (640, 480)
    assert all(s.startswith("unlabelled/") for s in frames.unlabelled().sources)
    assert all(r.position is None for r in frames.unlabelled().refs)
    labelled = frames.labelled()
    assert labelled.sources[0] == "labelled/07f092f9.jpg"
    np.testing.assert_allclose(labelled.positions[0], [-1.25, -0.44, 0.33])
    np.testing.assert_allclose(labelled.positions[-1], [-1.25, 0.01, 0.33])  # f026d9f9.jpg
    np.testing.assert_allclose(labelled.positions[:, 2], 0.33)
    assert labelled.positions[:, 0].min() == -1.25 and labelled.positions[:, 0].max() == -0.5
    assert labelled[0].image.shape == (480, 640, 3)


@needs_kuka
def test_kuka_cube_labelled_folder_alone() -> None:
    frames = open_real(KUKA_CUBE / "labelled")
    assert (len(frames), len(frames.labelled())) == (12, 12)
    assert frames.sources[0] == "07f092f9.jpg"
    by_file = dict(zip(frames.sources, frames.positions.tolist(), strict=True))
    np.testing.assert_allclose(by_file["c490900a.jpg"], [-0.5, 0.01, 0.33])
