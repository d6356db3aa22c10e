"""The long ``labels.csv`` layout (``file,object,...``): several objects per frame, errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sim2real.data.labels import ObjectLabel, read_labels
from sim2real.data.real import open_folder, open_real
from sim2real.errors import DataError

LONG = "file,object,x_m,y_m,z_m"
TWO_OBJECTS = (
    "file,object,x_m,y_m,z_m,yaw_deg,u,v,visible\n"
    "a.png,cube,0.5,0.0,0.02,30,16,12,1\n"
    "a.png,mug,0.4,0.1,0.05,,,,0\n"
    "b.png,mug,0.3,-0.1,0.05,90,4,2,1\n"
)


@pytest.fixture
def folder(tmp_path: Path, write_real_images: Callable[..., list[Path]]) -> Path:
    """a.png, b.png, c.png (32x24), no labels yet."""
    root = tmp_path / "set"
    write_real_images(root, ["a.png", "b.png", "c.png"])
    return root


def _labels(folder: Path, text: str) -> Path:
    path = folder / "labels.csv"
    path.write_text(text)
    return folder


def test_two_objects_per_object_labels(folder: Path) -> None:
    frames = open_real(_labels(folder, TWO_OBJECTS))
    assert frames.object_names == ["cube", "mug"]
    a, b, c = frames.refs
    assert a.objects is not None and sorted(a.objects) == ["cube", "mug"]
    cube, mug = a.objects["cube"], a.objects["mug"]
    assert isinstance(cube, ObjectLabel)
    np.testing.assert_allclose(cube.position, [0.5, 0.0, 0.02])
    np.testing.assert_allclose(cube.uv, [16, 12])
    assert (cube.yaw_deg, cube.visible) == (30.0, True)
    assert (mug.yaw_deg, mug.uv, mug.visible) == (None, None, False)
    assert b.objects is not None and list(b.objects) == ["mug"] and c.objects is None
    # several objects: no single-target view
    assert a.position is None and not a.labelled and len(frames.labelled()) == 0
    assert frames.positions.shape == (0, 3)


def test_for_object_is_the_single_target_view(folder: Path) -> None:
    frames = open_real(_labels(folder, TWO_OBJECTS))
    mug = frames.for_object("mug")
    assert mug.labelled().sources == ["a.png", "b.png"]
    np.testing.assert_allclose(mug.positions, [[0.4, 0.1, 0.05], [0.3, -0.1, 0.05]])
    assert [r.visible for r in mug.refs] == [False, True, None]
    cube = frames.for_object("cube")
    assert cube.labelled().sources == ["a.png"]
    image, target = cube.torch("position")[0]
    assert tuple(image.shape) == (3, 24, 32)
    np.testing.assert_allclose(target.numpy(), [0.5, 0.0, 0.02], rtol=1e-6)
    assert len(cube.torch("uv")) == 1 and len(mug.torch("uv")) == 1
    with pytest.raises(DataError, match=r"no labels for object 'duck', expected one of"):
        frames.for_object("duck")


def test_long_file_with_one_object_keeps_single_accessors(folder: Path) -> None:
    text = f"{LONG},u,v\na.png,cube,0.5,0.0,0.02,16,12\nc.png,cube,0.6,0.1,0.02,8,6\n"
    frames = open_real(_labels(folder, text))
    assert frames.labelled().sources == ["a.png", "c.png"]
    np.testing.assert_allclose(frames.positions, [[0.5, 0.0, 0.02], [0.6, 0.1, 0.02]])
    np.testing.assert_allclose(frames.refs[0].uv, [16, 12])
    assert frames.object_names == ["cube"]
    assert len(frames.torch("position")) == 2


def test_wide_format_still_reads_as_single_target(folder: Path) -> None:
    frames = open_real(_labels(folder, "file,x_m,y_m,z_m\na.png,1,2,3\n"))
    assert frames.object_names == [] and frames.refs[0].objects is None
    np.testing.assert_allclose(frames.positions, [[1, 2, 3]])
    with pytest.raises(DataError, match=r"no labels for object 'cube'"):
        frames.for_object("cube")


def test_resize_scales_per_object_pixels(folder: Path) -> None:
    frames = open_folder(_labels(folder, TWO_OBJECTS), size=(64, 48), resize="resize")
    a = frames.refs[0]
    assert a.objects is not None
    np.testing.assert_allclose(a.objects["cube"].uv, [32, 24])
    assert a.objects["mug"].uv is None
    np.testing.assert_allclose(frames.for_object("mug").refs[1].uv, [8, 4])


def test_expected_objects_and_every_frame_labelled(folder: Path) -> None:
    _labels(folder, TWO_OBJECTS)
    assert open_folder(folder, objects=["cube", "mug", "duck"]).object_names == ["cube", "mug"]
    path = folder / "labels.csv"
    assert set(read_labels(path, ["a.png", "b.png"], require_all=True)) == {"a.png", "b.png"}


ERRORS: dict[str, tuple[str, dict[str, Any], str]] = {
    "unknown object": (
        f"{LONG}\na.png,cube,1,2,3\nb.png,mugg,1,2,3\n",
        {"objects": ["cube", "mug"]},
        r"labels.csv row 3 \(file 'b.png', object 'mugg'\): unknown object 'mugg', "
        r"expected one of \['cube', 'mug'\]",
    ),
    "duplicate": (
        f"{LONG}\na.png,cube,1,2,3\na.png,mug,1,2,3\na.png,cube,4,5,6\n",
        {},
        r"labels.csv row 4 \(file 'a.png', object 'cube'\): duplicate of row 2, "
        r"expected one row per file and object",
    ),
    "frames without rows": (
        f"{LONG}\na.png,cube,1,2,3\n",
        {"require_labels": True},
        r"labels.csv' has no row for 2 image\(s\) of '.*set': \['b.png', 'c.png'\]; "
        r"expected every image labelled",
    ),
    "frames without rows (wide)": (
        "file,x_m,y_m,z_m\na.png,1,2,3\nb.png,1,2,3\n",
        {"require_labels": True},
        r"has no row for 1 image\(s\) of '.*set': \['c.png'\]",
    ),
    "bad number": (
        f"{LONG}\na.png,cube,1,2,3\na.png,mug,1,x,3\n",
        {},
        r"labels.csv row 3 \(file 'a.png', object 'mug'\): y_m is 'x', expected a finite",
    ),
    "bad yaw": (
        f"{LONG},yaw_deg\na.png,cube,1,2,3,inf\n",
        {},
        r"row 2 \(file 'a.png', object 'cube'\): yaw_deg is 'inf', expected a finite number",
    ),
    "half uv": (
        f"{LONG},u,v\na.png,cube,1,2,3,4,\n",
        {},
        r"row 2 \(file 'a.png', object 'cube'\): v is '', expected a finite number",
    ),
    "bad visible": (
        f"{LONG},visible\na.png,cube,1,2,3,yes\n",
        {},
        r"row 2 \(file 'a.png', object 'cube'\): visible is 'yes', expected 1 or 0",
    ),
    "missing column": (
        "file,object,x_m,y_m\na.png,cube,1,2\n",
        {},
        r"labels.csv' row 1 \(header\) is .*missing \['z_m'\]",
    ),
    "unknown column": (
        f"{LONG},depth\na.png,cube,1,2,3,4\n",
        {},
        r"row 1 \(header\) is .*unknown \['depth'\]",
    ),
    "yaw in the wide layout": (
        "file,x_m,y_m,z_m,yaw_deg\na.png,1,2,3,4\n",
        {},
        r"unknown \['yaw_deg'\]",
    ),
    "empty object": (
        f"{LONG}\na.png,,1,2,3\n",
        {},
        r"row 2 \(file 'a.png', object ''\): empty object name, expected an object name",
    ),
    "absent file": (
        f"{LONG}\nzz.png,cube,1,2,3\n",
        {},
        r"row 2 \(file 'zz.png', object 'cube'\): no such image in",
    ),
    "field count": (f"{LONG}\na.png,cube,1,2\n", {}, r"labels.csv row 2: 4 fields, expected 5"),
}


@pytest.mark.parametrize(("text", "opts", "match"), ERRORS.values(), ids=ERRORS.keys())
def test_long_format_errors(folder: Path, text: str, opts: dict[str, Any], match: str) -> None:
    with pytest.raises(DataError, match=match):
        open_real(_labels(folder, text), **opts)


def test_require_labels_without_labels_file(folder: Path) -> None:
    with pytest.raises(DataError, match=r"has no labels.csv, expected every image labelled"):
        open_folder(folder, require_labels=True)


def test_calibration_needs_one_target(folder: Path) -> None:
    from sim2real.data.label_pixels import load_correspondences

    with pytest.raises(DataError, match=r"labels several objects per frame, expected one target"):
        load_correspondences(_labels(folder, TWO_OBJECTS), None)
    text = f"{LONG},u,v\na.png,cube,0.5,0.0,0.02,16,12\nb.png,cube,0.6,0.1,0.02,8,6\n"
    files, xyz, uv, size = load_correspondences(_labels(folder, text), None)
    assert files == ["a.png", "b.png"] and xyz.shape == (2, 3) and size == (32, 24)
    np.testing.assert_allclose(uv, [[16, 12], [8, 6]])
