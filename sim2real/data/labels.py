"""Parsing and validation of a folder's ``labels.csv``.

The file has a header row and one row per labelled image::

    file,x_m,y_m,z_m[,u,v][,x0,y0,x1,y1][,visible]

``visible`` (1 or 0) says whether the target is in view. Rows are counted like a
spreadsheet: the header is row 1, the first frame row 2.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from sim2real.errors import DataError

LABELS_FILE = "labels.csv"
POSITION_COLUMNS = ("x_m", "y_m", "z_m")
UV_COLUMNS = ("u", "v")
BOX_COLUMNS = ("x0", "y0", "x1", "y1")
VISIBLE_COLUMN = "visible"


def read_labels(path: Path, images: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """Parse and validate a ``labels.csv``; returns ``{file: {"position": ..., ...}}``.

    Args:
        path: the ``labels.csv``.
        images: the image names present in its folder.

    Raises:
        DataError: naming the row and file, for unknown or missing columns, non-finite
            values, duplicates, inverted boxes or files absent from ``images``.
    """
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows or not any(c.strip() for c in rows[0]):
        raise DataError(f"'{path}' is empty, expected a header 'file,{','.join(POSITION_COLUMNS)}'")
    header = [c.strip() for c in rows[0]]
    known = ("file", *POSITION_COLUMNS, *UV_COLUMNS, *BOX_COLUMNS, VISIBLE_COLUMN)
    unknown = [c for c in header if c not in known]
    missing = [c for c in ("file", *POSITION_COLUMNS) if c not in header]
    if unknown or missing or len(set(header)) != len(header):
        raise DataError(
            f"'{path}' header is {header}: expected file,{','.join(POSITION_COLUMNS)} plus "
            f"optionally {','.join(UV_COLUMNS)}, {','.join(BOX_COLUMNS)} and {VISIBLE_COLUMN}; "
            f"unknown {unknown}, missing {missing}"
        )
    for group in (UV_COLUMNS, BOX_COLUMNS):
        if 0 < sum(c in header for c in group) < len(group):
            raise DataError(f"'{path}' header {header} has part of {list(group)}, expected all")
    present, out = set(images), {}
    for name, where, cells in csv_records(path, header, rows):
        if name not in present:
            raise DataError(
                f"{where}: no such image in '{path.parent}', expected one of its images"
            )
        label = {"position": finite_numbers(cells, POSITION_COLUMNS, where)}
        if UV_COLUMNS[0] in cells:
            label["uv"] = finite_numbers(cells, UV_COLUMNS, where)
        if BOX_COLUMNS[0] in cells:
            box = label["box"] = finite_numbers(cells, BOX_COLUMNS, where)
            if not (box[0] < box[2] and box[1] < box[3]):
                raise DataError(f"{where}: box is {box.tolist()}, expected x0 < x1 and y0 < y1")
        if VISIBLE_COLUMN in cells:
            text = cells[VISIBLE_COLUMN]
            if text not in ("0", "1"):
                raise DataError(f"{where}: visible is {text!r}, expected 1 or 0")
            label["visible"] = text == "1"
        out[name] = label
    return out


def csv_records(
    path: Path, header: list[str], rows: list[list[str]]
) -> Iterator[tuple[str, str, dict[str, str]]]:
    """Yield ``(file name, "labels.csv row N (file 'x')", cells)`` for each non-empty row.

    Checks what every per-file CSV shares: the field count matches the header, the file name
    is not empty and appears once. Rows are counted with the header as row 1.
    """
    seen: dict[str, int] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        where = f"{path.name} row {number}"
        if len(row) != len(header):
            raise DataError(f"{where}: {len(row)} fields, expected {len(header)} like the header")
        cells = dict(zip(header, (c.strip() for c in row), strict=True))
        name = cells["file"]
        where += f" (file '{name}')"
        if not name:
            raise DataError(f"{where}: empty file name, expected an image name")
        if name in seen:
            raise DataError(f"{where}: duplicate of row {seen[name]}, expected one row per file")
        seen[name] = number
        yield name, where, cells


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
