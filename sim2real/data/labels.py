"""Parsing and validation of a folder's ``labels.csv``.

Two layouts. The **wide** one (one target) has one row per labelled image::

    file,x_m,y_m,z_m[,u,v][,x0,y0,x1,y1][,visible]

The **long** one (several objects), recognised by its ``object`` column, has one row per
object and image::

    file,object,x_m,y_m,z_m[,yaw_deg][,u,v][,x0,y0,x1,y1][,visible]

``visible`` (1 or 0) says whether the target (the row's object) is in view. In the long
layout ``yaw_deg`` (degrees about the table normal) and ``u, v`` may be left empty for an
object without a yaw (a cylinder) or out of view. Rows are counted like a spreadsheet: the
header is row 1, the first frame row 2.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.errors import DataError

LABELS_FILE = "labels.csv"
OBJECT_COLUMN = "object"
POSITION_COLUMNS = ("x_m", "y_m", "z_m")
YAW_COLUMN = "yaw_deg"
UV_COLUMNS = ("u", "v")
BOX_COLUMNS = ("x0", "y0", "x1", "y1")
VISIBLE_COLUMN = "visible"


@dataclass(frozen=True, eq=False, kw_only=True)
class ObjectLabel:
    """What a long ``labels.csv`` row says about one object in one frame.

    Attributes:
        position: ``(3,)`` metres.
        yaw_deg: yaw about the table normal in degrees, or ``None`` (column absent or empty).
        uv: pixel label ``(2,)``, or ``None``.
        box: box ``(4,)`` ``x0, y0, x1, y1`` in pixels, or ``None``.
        visible: whether the object is in view, or ``None`` when not labelled.
    """

    position: np.ndarray
    yaw_deg: float | None = None
    uv: np.ndarray | None = None
    box: np.ndarray | None = None
    visible: bool | None = None


def read_labels(
    path: Path,
    images: Sequence[str],
    *,
    objects: Collection[str] | None = None,
    require_all: bool = False,
) -> dict[str, dict[str, Any]]:
    """Parse and validate a ``labels.csv``; returns ``{file: {"position": ..., ...}}``.

    The values are :class:`~sim2real.data.frames.FrameRef` fields. A wide file gives
    ``position`` (and ``uv``, ``box``, ``visible`` where present). A long file gives
    ``objects``: ``{object name: ObjectLabel}``; when the whole file names one object, its
    ``position``, ``uv``, ``box`` and ``visible`` too (the single-target view).

    Args:
        path: the ``labels.csv``.
        images: the image names present in its folder.
        objects: the object names a long file may use (``None``: any); ignored for a wide
            file, whose one target has no name.
        require_all: every name in ``images`` must have a row.

    Raises:
        DataError: naming the row and file, for unknown or missing columns, non-finite
            values, duplicates, inverted boxes, files absent from ``images``, unknown
            objects, or (``require_all``) images without a row.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "labels.csv"
        >>> _ = path.write_text("file,object,x_m,y_m,z_m,yaw_deg\\n"
        ...     "a.png,cube,0.5,0,0.02,30\\na.png,mug,0.4,0.1,0.05,\\n")
        >>> labels = read_labels(path, ["a.png"], objects=["cube", "mug"])
        >>> sorted(labels["a.png"]["objects"]), labels["a.png"]["objects"]["cube"].yaw_deg
        (['cube', 'mug'], 30.0)
    """
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows or not any(c.strip() for c in rows[0]):
        raise DataError(f"'{path}' is empty, expected a header 'file,{','.join(POSITION_COLUMNS)}'")
    header = [c.strip() for c in rows[0]]
    if OBJECT_COLUMN in header:
        out = _read_long(path, header, rows, images, objects)
    else:
        out = _read_wide(path, header, rows, images)
    if require_all:
        unlabelled = [name for name in images if name not in out]
        if unlabelled:
            raise DataError(
                f"'{path}' has no row for {len(unlabelled)} image(s) of '{path.parent}': "
                f"{unlabelled[:10]}{' ...' if len(unlabelled) > 10 else ''}; expected every "
                "image labelled"
            )
    return out


def _read_wide(
    path: Path, header: list[str], rows: list[list[str]], images: Sequence[str]
) -> dict[str, dict[str, Any]]:
    known = ("file", *POSITION_COLUMNS, *UV_COLUMNS, *BOX_COLUMNS, VISIBLE_COLUMN)
    unknown = [c for c in header if c not in known]
    missing = [c for c in ("file", *POSITION_COLUMNS) if c not in header]
    if unknown or missing or len(set(header)) != len(header):
        raise DataError(
            f"'{path}' header is {header}: expected file,{','.join(POSITION_COLUMNS)} plus "
            f"optionally {','.join(UV_COLUMNS)}, {','.join(BOX_COLUMNS)} and {VISIBLE_COLUMN} "
            f"(or file,{OBJECT_COLUMN},... for several objects); unknown {unknown}, "
            f"missing {missing}"
        )
    _check_groups(path, header)
    present, out = set(images), {}
    for name, where, cells in csv_records(path, header, rows):
        _check_image(name, present, where, path)
        out[name] = _row_fields(cells, where, allow_empty=False)
    return out


def _read_long(
    path: Path,
    header: list[str],
    rows: list[list[str]],
    images: Sequence[str],
    objects: Collection[str] | None,
) -> dict[str, dict[str, Any]]:
    required = ("file", OBJECT_COLUMN, *POSITION_COLUMNS)
    known = (*required, YAW_COLUMN, *UV_COLUMNS, *BOX_COLUMNS, VISIBLE_COLUMN)
    unknown = [c for c in header if c not in known]
    missing = [c for c in required if c not in header]
    if unknown or missing or len(set(header)) != len(header):
        raise DataError(
            f"'{path}' row 1 (header) is {header}: expected {','.join(required)} plus "
            f"optionally {YAW_COLUMN}, {','.join(UV_COLUMNS)}, {','.join(BOX_COLUMNS)} and "
            f"{VISIBLE_COLUMN}, each once; unknown {unknown}, missing {missing}"
        )
    _check_groups(path, header)
    expected = sorted(set(objects)) if objects is not None else None
    present = set(images)
    per_file: dict[str, dict[str, ObjectLabel]] = {}
    for name, where, cells in csv_records(path, header, rows, keys=("file", OBJECT_COLUMN)):
        _check_image(name, present, where, path)
        obj = cells[OBJECT_COLUMN]
        if expected is not None and obj not in expected:
            raise DataError(f"{where}: unknown object {obj!r}, expected one of {expected}")
        fields = _row_fields(cells, where, allow_empty=True)
        yaw = _optional_number(cells, YAW_COLUMN, where)
        per_file.setdefault(name, {})[obj] = ObjectLabel(yaw_deg=yaw, **fields)
    names = {obj for labels in per_file.values() for obj in labels}
    out: dict[str, dict[str, Any]] = {}
    for name, labels in per_file.items():
        entry: dict[str, Any] = {"objects": labels}
        if len(names) == 1:
            (only,) = labels.values()
            entry |= {
                k: getattr(only, k)
                for k in ("position", "uv", "box", "visible")
                if getattr(only, k) is not None
            }
        out[name] = entry
    return out


def _check_groups(path: Path, header: list[str]) -> None:
    for group in (UV_COLUMNS, BOX_COLUMNS):
        if 0 < sum(c in header for c in group) < len(group):
            raise DataError(f"'{path}' header {header} has part of {list(group)}, expected all")


def _check_image(name: str, present: set[str], where: str, path: Path) -> None:
    if name not in present:
        raise DataError(f"{where}: no such image in '{path.parent}', expected one of its images")


def _row_fields(cells: dict[str, str], where: str, *, allow_empty: bool) -> dict[str, Any]:
    """``position`` and, where the columns exist, ``uv``, ``box`` and ``visible``.

    ``allow_empty``: empty ``u, v`` (both) or box cells mean "no such label" (long layout).
    """
    label: dict[str, Any] = {"position": finite_numbers(cells, POSITION_COLUMNS, where)}
    for key, group in (("uv", UV_COLUMNS), ("box", BOX_COLUMNS)):
        if group[0] not in cells:
            continue
        if allow_empty and not any(cells[c] for c in group):
            continue
        label[key] = finite_numbers(cells, group, where)
    box = label.get("box")
    if box is not None and not (box[0] < box[2] and box[1] < box[3]):
        raise DataError(f"{where}: box is {box.tolist()}, expected x0 < x1 and y0 < y1")
    if VISIBLE_COLUMN in cells:
        text = cells[VISIBLE_COLUMN]
        if text not in ("0", "1"):
            raise DataError(f"{where}: visible is {text!r}, expected 1 or 0")
        label["visible"] = text == "1"
    return label


def _optional_number(cells: dict[str, str], column: str, where: str) -> float | None:
    if not cells.get(column):
        return None
    return float(finite_numbers(cells, (column,), where)[0])


def csv_records(
    path: Path, header: list[str], rows: list[list[str]], *, keys: Sequence[str] = ("file",)
) -> Iterator[tuple[str, str, dict[str, str]]]:
    """Yield ``(file name, "labels.csv row N (file 'x')", cells)`` for each non-empty row.

    Checks what every per-file CSV shares: the field count matches the header, the ``keys``
    cells (default: the file name) are not empty and appear together once. Rows are counted
    with the header as row 1.
    """
    seen: dict[tuple[str, ...], int] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        where = f"{path.name} row {number}"
        if len(row) != len(header):
            raise DataError(f"{where}: {len(row)} fields, expected {len(header)} like the header")
        cells = dict(zip(header, (c.strip() for c in row), strict=True))
        key = tuple(cells[k] for k in keys)
        where += " (" + ", ".join(f"{k} '{v}'" for k, v in zip(keys, key, strict=True)) + ")"
        for k, value in zip(keys, key, strict=True):
            if not value:
                expected = {"file": "an image name", "object": "an object name"}.get(k, k)
                raise DataError(f"{where}: empty {k} name, expected {expected}")
        if key in seen:
            raise DataError(
                f"{where}: duplicate of row {seen[key]}, expected one row per {' and '.join(keys)}"
            )
        seen[key] = number
        yield cells["file"], where, cells


def finite_numbers(cells: dict[str, str], columns: Sequence[str], where: str) -> np.ndarray:
    """The ``columns`` of a CSV row as float64, or DataError naming ``where`` and the column."""
    values = []
    for column in columns:
        text = cells[column]
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise DataError(f"{where}: {column} is {text!r}, expected a finite number")
        values.append(value)
    return np.array(values, dtype=np.float64)
