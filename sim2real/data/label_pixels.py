"""Pixel labels for real frames: click the object, or fill a CSV template by hand.

A pixel-label file is a CSV ``file,u,v`` (one row per image, names relative to the folder).
``u, v`` follow the project's continuous pixel convention (``sim2real.envs.camera``): pixel
``(i, j)`` covers ``[i, i+1) x [j, j+1)``, so the centre of the top-left pixel is
``(0.5, 0.5)``. A row whose ``u`` and ``v`` are both empty means "not labelled yet" (the
template) and is skipped by readers; anything else that is not a finite number is an error.

* :func:`label_pixels` opens a matplotlib window and records one click per frame when a
  display is available; without one it writes the template for the user to fill in.
* :func:`overlay_pixels` draws the labels on a grid of the frames, to check them by eye.
* :func:`read_pixel_labels` parses and validates such a file; :func:`load_correspondences`
  pairs it with the 3-D labels of ``labels.csv`` for camera calibration.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from sim2real.atomic import write_text
from sim2real.data.decode import IMAGE_SUFFIXES
from sim2real.data.labels import LABELS_FILE, csv_records, finite_numbers, read_labels
from sim2real.errors import DataError

logger = logging.getLogger(__name__)

PIXEL_COLUMNS = ("file", "u", "v")
PixelLabels = dict[str, np.ndarray | None]


def list_images(folder: str | Path) -> list[str]:
    """Sorted image names (``.jpg``/``.jpeg``/``.png``) directly inside ``folder``."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"image folder '{root}' does not exist, expected a folder of frames")
    names = sorted(p.name for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise DataError(f"folder '{root}' holds no .jpg/.jpeg/.png images, expected some")
    return names


def read_pixel_labels(path: str | Path) -> PixelLabels:
    """Parse a ``file,u,v`` CSV: ``{file: array([u, v])}``, or ``None`` for an empty row.

    Extra columns are ignored, so a ``labels.csv`` with ``u,v`` columns reads too.

    Raises:
        DataError: naming the file and row, for a missing file or column, a duplicate file,
            half-filled or non-finite ``u, v``.

    Example:
        >>> from sim2real.paths import CONFIGS
        >>> labels = read_pixel_labels(CONFIGS / "labels" / "kuka_cube_uv.csv")
        >>> labels["07f092f9.jpg"]
        array([602., 425.])
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pixel-label file '{path}' does not exist, expected a CSV file,u,v")
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    header = [c.strip() for c in rows[0]] if rows else []
    missing = [c for c in PIXEL_COLUMNS if c not in header]
    if missing:
        raise DataError(
            f"'{path}' header is {header}, expected columns file,u,v; missing {missing}"
        )
    out: PixelLabels = {}
    for name, where, cells in csv_records(path, header, rows):
        out[name] = _uv(cells["u"], cells["v"], where)
    return out


def _uv(u_text: str, v_text: str, where: str) -> np.ndarray | None:
    if not u_text and not v_text:
        return None
    return finite_numbers({"u": u_text, "v": v_text}, ("u", "v"), where)


def write_pixel_labels(path: str | Path, labels: Mapping[str, np.ndarray | None]) -> Path:
    """Write ``file,u,v`` atomically (empty ``u, v`` for ``None``); returns the path."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PIXEL_COLUMNS)
    for name, uv in labels.items():
        writer.writerow([name, *(["", ""] if uv is None else [f"{uv[0]:.2f}", f"{uv[1]:.2f}"])])
    return write_text(path, buffer.getvalue())


def display_available() -> bool:
    """True when matplotlib's backend is interactive and there is a screen to show it on."""
    import matplotlib

    backend = matplotlib.get_backend().lower()
    try:
        from matplotlib.backends import BackendFilter, backend_registry

        interactive = {b.lower() for b in backend_registry.list_builtin(BackendFilter.INTERACTIVE)}
    except ImportError:  # matplotlib < 3.9
        interactive = {b.lower() for b in matplotlib.rcsetup.interactive_bk}
    if backend not in interactive or backend in {"webagg", "nbagg", "notebook"}:
        return False
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def label_pixels(folder: str | Path, out_csv: str | Path, headless: bool | None = None) -> Path:
    """Label the object's pixel centre in every image of ``folder``.

    With a display, each frame opens in a matplotlib window: left-click the object centre
    (right-click undoes, Enter without a click skips the frame). Without one (or with
    ``headless=True``) a template ``file,u,v`` with empty ``u, v`` is written for the user to
    fill in with any image viewer; labels already in ``out_csv`` are kept in both modes.

    Args:
        folder: a folder of ``.jpg``/``.png`` frames.
        out_csv: where the ``file,u,v`` CSV goes.
        headless: ``True`` forces the template, ``False`` forces the window, ``None`` picks
            by :func:`display_available`.

    Returns:
        The written CSV path.

    Example:
        >>> label_pixels("real/labelled", "uv.csv", headless=True)  # doctest: +SKIP
        PosixPath('uv.csv')
    """
    names = list_images(folder)
    out_csv = Path(out_csv)
    labels: PixelLabels = dict.fromkeys(names)
    if out_csv.exists():
        previous = read_pixel_labels(out_csv)
        labels.update({k: v for k, v in previous.items() if k in labels and v is not None})
    if headless is None:
        headless = not display_available()
    if headless:
        write_pixel_labels(out_csv, labels)
        todo = sum(v is None for v in labels.values())
        logger.warning(
            "no display: wrote a template %s with %d of %d rows to fill in; put the object "
            "centre's pixel u (right) and v (down) in each row, continuous convention (the "
            "top-left pixel's centre is 0.5, 0.5), then check it with overlay_pixels",
            out_csv,
            todo,
            len(names),
        )
        return out_csv
    return _click_loop(Path(folder), names, labels, out_csv)


def _click_loop(folder: Path, names: list[str], labels: PixelLabels, out_csv: Path) -> Path:
    import matplotlib.pyplot as plt

    for k, name in enumerate(names):
        rgb = cv2.cvtColor(_read_bgr(folder / name), cv2.COLOR_BGR2RGB)
        fig, ax = plt.subplots(figsize=(10, 7.5))
        ax.imshow(rgb)
        old = labels[name]
        if old is not None:
            x, y = clicked_to_continuous(old, inverse=True)
            ax.plot([x], [y], "r+", markersize=14)
        ax.set_title(f"{name} ({k + 1}/{len(names)}): click the object centre; Enter skips")
        clicks = fig.ginput(1, timeout=0)
        plt.close(fig)
        if clicks:
            labels[name] = clicked_to_continuous(np.asarray(clicks[0], dtype=np.float64))
            write_pixel_labels(out_csv, labels)  # after every frame: an interrupt loses little
    write_pixel_labels(out_csv, labels)
    logger.info("wrote %d pixel labels to %s", sum(v is not None for v in labels.values()), out_csv)
    return out_csv


def clicked_to_continuous(xy: np.ndarray, inverse: bool = False) -> np.ndarray:
    """matplotlib ``imshow`` data coordinates (pixel centres at integers) to continuous
    pixel coordinates (centres at ``i + 0.5``), or back with ``inverse=True``."""
    return np.asarray(xy, dtype=np.float64) + (-0.5 if inverse else 0.5)


def overlay_pixels(
    folder: str | Path,
    csv_path: str | Path,
    out_png: str | Path,
    *,
    cols: int = 4,
    tile_width: int = 320,
) -> Path:
    """Draw the labelled pixels as crosses on a grid of the frames, to check them by eye.

    Args:
        folder: the frames' folder.
        csv_path: a ``file,u,v`` CSV (empty rows are shown as "no label").
        out_png: the grid image to write.
        cols: tiles per row.
        tile_width: width of each tile in pixels (height keeps the aspect ratio).

    Returns:
        ``out_png``.

    Example:
        >>> overlay_pixels("real/labelled", "uv.csv", "/tmp/uv.png")  # doctest: +SKIP
    """
    folder = Path(folder)
    labels = read_pixel_labels(csv_path)
    present = set(list_images(folder))
    absent = sorted(set(labels) - present)
    if absent:
        raise DataError(f"'{csv_path}' names files not in '{folder}': {absent}")
    tiles = [_tile(folder / name, name, uv, tile_width) for name, uv in labels.items()]
    if not tiles:
        raise DataError(f"'{csv_path}' has no rows, expected one per frame")
    h = max(t.shape[0] for t in tiles)
    tiles = [cv2.copyMakeBorder(t, 0, h - t.shape[0], 0, 0, cv2.BORDER_CONSTANT) for t in tiles]
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % cols)
    grid = np.vstack([np.hstack(tiles[i : i + cols]) for i in range(0, len(tiles), cols)])
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out_png), grid):
        raise DataError(f"cannot write '{out_png}', expected a writable .png path")
    logger.info("wrote %s (%d frames)", out_png, len(labels))
    return out_png


def _read_bgr(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"image '{path}' is missing or unreadable, expected a JPEG or PNG")
    return image


def _tile(path: Path, name: str, uv: np.ndarray | None, width: int) -> np.ndarray:
    image = _read_bgr(path)
    scale = width / image.shape[1]
    tile = cv2.resize(image, (width, round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    cv2.putText(tile, name, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3)
    cv2.putText(tile, name, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    if uv is None:
        cv2.putText(tile, "no label", (4, 34), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 255), 1)
        return tile
    # Continuous pixel coordinates scale directly; drawing takes pixel-centre indices, hence
    # the -0.5, at 1/16 px precision (shift=4).
    c = np.round((np.asarray(uv) * scale - 0.5) * 16).astype(int)
    arm = 8 * 16
    for colour, thick in (((0, 0, 0), 3), ((0, 0, 255), 1)):
        cv2.line(tile, (c[0] - arm, c[1]), (c[0] + arm, c[1]), colour, thick, cv2.LINE_AA, 4)
        cv2.line(tile, (c[0], c[1] - arm), (c[0], c[1] + arm), colour, thick, cv2.LINE_AA, 4)
    return tile


def load_correspondences(
    real_dir: str | Path, uv_csv: str | Path | None
) -> tuple[list[str], np.ndarray, np.ndarray, tuple[int, int]]:
    """Pair ``labels.csv`` positions with pixel labels for camera calibration.

    Args:
        real_dir: folder with the frames and ``labels.csv`` (``file,x_m,y_m,z_m[,u,v]``).
        uv_csv: a ``file,u,v`` CSV listing the same frames, or ``None`` for the ``u,v``
            columns of ``labels.csv``. Rows with empty ``u, v`` are left out (logged).

    Returns:
        Frame names, ``(N, 3)`` positions, ``(N, 2)`` pixels and the image size ``(W, H)``.

    Example:
        >>> files, xyz, uv, size = load_correspondences("real/labelled", "uv.csv")  # doctest: +SKIP
    """
    root = Path(real_dir)
    labels_path = root / LABELS_FILE
    if not labels_path.is_file():
        raise DataError(f"'{labels_path}' does not exist, expected file,x_m,y_m,z_m labels")
    images = sorted(p.name for p in root.iterdir() if p.is_file())
    labels = read_labels(labels_path, images)
    if any("position" not in v for v in labels.values()):
        raise DataError(
            f"'{labels_path}' labels several objects per frame, expected one target to "
            "calibrate with: the file,x_m,y_m,z_m layout or a file,object,... one naming one object"
        )
    if uv_csv is None:
        no_uv = sorted(k for k, v in labels.items() if "uv" not in v)
        if no_uv:
            raise DataError(
                f"'{labels_path}' has no u,v for {no_uv}: add u,v columns or pass a file,u,v CSV"
            )
        pixels = {k: v["uv"] for k, v in labels.items()}
    else:
        pixels = read_pixel_labels(uv_csv)
        only_3d = sorted(set(labels) - set(pixels))
        only_uv = sorted(set(pixels) - set(labels))
        if only_3d or only_uv:
            raise DataError(
                f"'{labels_path}' and '{uv_csv}' list different frames, expected the same: "
                f"only in {LABELS_FILE}: {only_3d}; only in {Path(uv_csv).name}: {only_uv}"
            )
    skipped = sorted(k for k, v in pixels.items() if v is None)
    if skipped:
        logger.warning("no pixel label for %s: left out of the calibration", skipped)
    files = [k for k in labels if pixels[k] is not None]
    if not files:
        raise DataError(f"no frame has a pixel label in '{uv_csv}', expected at least 4")
    size = _image_size(root, files)
    points = np.stack([labels[k]["position"] for k in files])
    uv = np.stack([pixels[k] for k in files])
    return files, points, uv, size


def _image_size(root: Path, files: list[str]) -> tuple[int, int]:
    sizes: dict[tuple[int, int], str] = {}
    for name in files:
        image = cv2.imread(str(root / name), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise DataError(f"image '{root / name}' is unreadable, expected a JPEG or PNG")
        sizes.setdefault((image.shape[1], image.shape[0]), name)
    if len(sizes) > 1:
        raise DataError(f"frames differ in size {sizes}, expected one camera resolution")
    return next(iter(sizes))
