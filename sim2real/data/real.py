"""Real camera frames from a folder, a video file or a LeRobot v3 dataset, validated.

Every source becomes one :class:`~sim2real.data.frames.RealFrames` (defined with its records
in :mod:`sim2real.data.frames`; videos in :mod:`sim2real.data.video`, LeRobot datasets in
:mod:`sim2real.data.lerobot`): a sequence of ``RealFrame`` records whose ``image`` is
``uint8`` ``(H, W, 3)`` in **RGB** order (never BGR), with the frame's source id, its label
position in metres (or ``None``), optional pixel ``uv`` and ``box`` labels and, for recorded
robot data, ``state`` and ``action``. Pixels load lazily; everything else is
checked when the source is opened, so a bad file fails at once with a :class:`DataError`
that names the file (and the ``labels.csv`` row) and says what was expected.

A folder holds ``.jpg``/``.jpeg``/``.png`` images plus an optional ``labels.csv``::

    file,x_m,y_m,z_m[,u,v][,x0,y0,x1,y1][,visible]

or, for several objects, one row per object and image (see :mod:`sim2real.data.labels`)::

    file,object,x_m,y_m,z_m[,yaw_deg][,u,v][,x0,y0,x1,y1][,visible]

Images not listed there are unlabelled. A folder without images but with ``labelled/`` and
``unlabelled/`` subfolders loads both; frames in ``unlabelled/`` are never labelled.
Rows are counted like a spreadsheet: the header is row 1, the first frame row 2.

Resolution is never changed silently: by default every frame must match the first one (or
``size=(W, H)`` when given); ``resize="resize"`` with ``size`` resizes instead, scaling the
``uv`` and ``box`` labels with the image.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sim2real.data.decode import IMAGE_SUFFIXES, VIDEO_SUFFIXES, read_image
from sim2real.data.frames import (
    FrameRef,
    RealFrames,
    ResizePolicy,
    Size,
    check_resize_policy,
    fit_sizes,
)
from sim2real.data.labels import LABELS_FILE, read_labels
from sim2real.data.video import open_video
from sim2real.errors import DataError

logger = logging.getLogger(__name__)


def open_real(path: str | Path, **opts: Any) -> RealFrames:
    """Open real frames from a folder, a video file or a LeRobot v3 dataset folder.

    A folder with ``meta/info.json`` is read as LeRobot v3, any other folder as images
    (:func:`open_folder`), a file with a video suffix as a video (:func:`open_video`).

    Args:
        path: the folder or video file.
        **opts: passed on: ``size``, ``resize`` for all; ``step`` for videos and LeRobot;
            ``camera``, ``label_key`` for LeRobot (see :func:`open_lerobot`).

    Raises:
        DataError: the path is missing, of an unknown kind, or its content is invalid.

    Example:
        >>> import tempfile, cv2, numpy as np
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name in ("a.png", "b.png", "c.png"):
        ...     assert cv2.imwrite(str(folder / name), np.zeros((24, 32, 3), np.uint8))
        >>> _ = (folder / "labels.csv").write_text("file,x_m,y_m,z_m\\na.png,-1.25,-0.44,0.33\\n")
        >>> frames = open_real(folder, size=(32, 24))
        >>> len(frames.labelled()), len(frames.unlabelled())
        (1, 2)
    """
    p = Path(path)
    if p.is_dir():
        if (p / "meta" / "info.json").is_file():
            from sim2real.data.lerobot import open_lerobot

            return open_lerobot(p, **opts)
        return open_folder(p, **opts)
    if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
        return open_video(p, **opts)
    if p.is_file():
        raise DataError(
            f"'{p}' is neither a folder nor a video: expected a folder of images, a LeRobot "
            f"v3 folder (with meta/info.json) or a video with suffix {sorted(VIDEO_SUFFIXES)}"
        )
    raise DataError(f"real data path '{p}' does not exist")


def open_folder(
    folder: str | Path,
    *,
    size: Size | None = None,
    resize: ResizePolicy = "error",
    objects: Collection[str] | None = None,
    require_labels: bool = False,
) -> RealFrames:
    """Open a folder of images with an optional ``labels.csv`` (see the module docstring).

    Args:
        folder: the folder, or a folder with ``labelled/`` and ``unlabelled/`` subfolders.
        size: required ``(W, H)``; ``None`` means "all like the first frame".
        resize: ``"error"`` (default) rejects frames of another size, ``"resize"`` resizes
            them to ``size`` (which is then required) and scales ``uv``/``box`` labels.
        objects: the object names a long ``labels.csv`` may use (``None``: any).
        require_labels: every image (outside ``unlabelled/``) must have a row.

    Example:
        >>> import tempfile, cv2, numpy as np
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name in ("a.png", "b.png", "c.png"):
        ...     assert cv2.imwrite(str(folder / name), np.zeros((24, 32, 3), np.uint8))
        >>> _ = (folder / "labels.csv").write_text("file,x_m,y_m,z_m\\na.png,-1.25,-0.44,0.33\\n")
        >>> frames = open_folder(folder)
        >>> frames[0].source, frames[0].position
        ('a.png', array([-1.25, -0.44,  0.33]))
    """
    check_resize_policy(size, resize)
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"image folder '{root}' does not exist")
    opts = {"objects": objects, "require_all": require_labels}
    refs = _folder_refs(root, prefix="", **opts)
    if refs is None:
        parts = [n for n in ("labelled", "unlabelled") if (root / n).is_dir()]
        if not parts:
            raise DataError(
                f"folder '{root}' is empty: expected {sorted(IMAGE_SUFFIXES)} images (with an "
                f"optional {LABELS_FILE}), or labelled/ and unlabelled/ subfolders"
            )
        refs = []
        for part in parts:
            if part == "unlabelled" and (root / part / LABELS_FILE).exists():
                raise DataError(
                    f"'{root / part / LABELS_FILE}' exists, expected none: frames in "
                    "unlabelled/ are never labelled; move labelled frames to labelled/"
                )
            sub = _folder_refs(root / part, prefix=f"{part}/", **opts)
            if sub is None:
                raise DataError(f"folder '{root / part}' holds no images, expected some")
            refs += sub
    checking = tqdm(refs, desc=f"checking {root.name}", disable=len(refs) < 500, leave=False)
    native = [read_image(r.path).shape[1::-1] for r in checking]
    refs, final = fit_sizes(refs, native, size=size, resize=resize)
    logger.info(
        "opened %s: %d frames (%d labelled)", root, len(refs), sum(r.labelled for r in refs)
    )
    return RealFrames(refs, size=final, resize=resize == "resize", name=str(root))


def _folder_refs(
    root: Path, prefix: str, *, objects: Collection[str] | None, require_all: bool
) -> list[FrameRef] | None:
    """Refs of the images directly in ``root`` with their labels; ``None`` if no images."""
    names = sorted(
        p.name
        for p in root.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if not names:
        if (root / LABELS_FILE).exists():
            raise DataError(f"folder '{root}' has a {LABELS_FILE} but no images, expected some")
        return None
    labels: dict[str, dict[str, Any]] = {}
    if (root / LABELS_FILE).exists():
        labels = read_labels(root / LABELS_FILE, names, objects=objects, require_all=require_all)
    elif require_all and prefix != "unlabelled/":
        raise DataError(f"folder '{root}' has no {LABELS_FILE}, expected every image labelled")
    refs = []
    for name in names:
        ref = FrameRef(source=prefix + name, path=root / name)
        refs.append(replace(ref, **labels[name]) if name in labels else ref)
    return refs
