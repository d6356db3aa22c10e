"""Real camera frames from a folder, a video file or a LeRobot v3 dataset, validated.

Every source becomes one :class:`RealFrames`: a sequence of :class:`RealFrame` records whose
``image`` is ``uint8`` ``(H, W, 3)`` in **RGB** order (never BGR), with the frame's source
id, its label position in metres (or ``None``), optional pixel ``uv`` and ``box`` labels and,
for recorded robot data, ``state`` and ``action``. Pixels load lazily; everything else is
checked when the source is opened, so a bad file fails at once with a :class:`DataError`
that names the file (and the ``labels.csv`` row) and says what was expected.

A folder holds ``.jpg``/``.jpeg``/``.png`` images plus an optional ``labels.csv``::

    file,x_m,y_m,z_m[,u,v][,x0,y0,x1,y1]

Images not listed there are unlabelled. A folder without images but with ``labelled/`` and
``unlabelled/`` subfolders loads both; frames in ``unlabelled/`` are never labelled.
Rows are counted like a spreadsheet: the header is row 1, the first frame row 2.

Resolution is never changed silently: by default every frame must match the first one (or
``size=(W, H)`` when given); ``resize="resize"`` with ``size`` resizes instead, scaling the
``uv`` and ``box`` labels with the image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from sim2real.data.frames import FrameRef, RealFrame, ResizePolicy, Size
from sim2real.data.labels import BOX_COLUMNS as BOX_COLUMNS  # re-exported
from sim2real.data.labels import LABELS_FILE, read_labels
from sim2real.data.labels import POSITION_COLUMNS as POSITION_COLUMNS  # re-exported
from sim2real.data.labels import UV_COLUMNS as UV_COLUMNS  # re-exported
from sim2real.data.video import VIDEO_SUFFIXES, _VideoReader, open_video
from sim2real.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

COLOUR_ORDER = "RGB"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
RESIZE_POLICIES = ("error", "resize")
TARGETS = ("position", "uv", "box")

Target = Literal["position", "uv", "box"]


class RealFrames:
    """Validated real frames from one source; images load lazily as RGB ``uint8``.

    Build one with :func:`open_real` (or :func:`open_folder`, :func:`open_video`,
    :func:`sim2real.data.lerobot.open_lerobot`).

    Example:
        >>> frames = open_real("real/kuka_cube")  # doctest: +SKIP
        >>> len(frames.labelled()), frames.positions.shape, frames[0].image.shape
        (12, (12, 3), (480, 640, 3))
    """

    colour_order: str = COLOUR_ORDER

    def __init__(
        self,
        refs: Sequence[FrameRef],
        *,
        size: Size,
        resize: bool = False,
        name: str = "",
        readers: dict[Path, _VideoReader] | None = None,
    ) -> None:
        self.refs: tuple[FrameRef, ...] = tuple(refs)
        self.size = size
        self.name = name
        self._resize = resize
        self._readers = readers if readers is not None else {}

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> RealFrame:
        ref = self.refs[index]
        image = cv2.cvtColor(self._read_bgr(ref), cv2.COLOR_BGR2RGB)
        values = {f.name: getattr(ref, f.name) for f in fields(ref)}
        return RealFrame(**values, image=image)

    def __iter__(self) -> Iterator[RealFrame]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        n_lab = sum(r.labelled for r in self.refs)
        w, h = self.size
        return f"RealFrames({self.name!r}, {len(self)} frames, {n_lab} labelled, {w}x{h} RGB)"

    @property
    def sources(self) -> list[str]:
        """Source ids of all frames, in order."""
        return [r.source for r in self.refs]

    @property
    def positions(self) -> np.ndarray:
        """Label positions of the labelled frames, ``float64`` ``(N_labelled, 3)``."""
        rows = [r.position for r in self.refs if r.position is not None]
        return np.stack(rows) if rows else np.zeros((0, 3))

    def select(self, indices: Sequence[int] | np.ndarray) -> RealFrames:
        """Return the frames at ``indices`` (e.g. a k-shot subset), sharing file readers."""
        return self._with([self.refs[int(i)] for i in indices])

    def labelled(self) -> RealFrames:
        """Return the frames that have a position label."""
        return self._with([r for r in self.refs if r.labelled])

    def unlabelled(self) -> RealFrames:
        """Return the frames without a position label."""
        return self._with([r for r in self.refs if not r.labelled])

    def torch(
        self,
        target: Target | None = "position",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> RealFramesDataset:
        """Return a torch Dataset view; see :class:`RealFramesDataset`."""
        return RealFramesDataset(self, target=target, transform=transform)

    def _with(self, refs: Sequence[FrameRef]) -> RealFrames:
        return RealFrames(
            refs, size=self.size, resize=self._resize, name=self.name, readers=self._readers
        )

    def _read_bgr(self, ref: FrameRef) -> np.ndarray:
        if ref.frame is None:
            image = read_image(ref.path)
        else:
            reader = self._readers.setdefault(ref.path, _VideoReader(ref.path))
            image = reader.read(ref.frame)
        w, h = self.size
        if image.shape[:2] != (h, w):
            if not self._resize:
                got = f"{image.shape[1]}x{image.shape[0]}"
                raise DataError(f"frame '{ref.source}' is {got}, expected {w}x{h} (WxH)")
            image = cv2.resize(image, (w, h), interpolation=_interpolation(image.shape, (w, h)))
        return image


class RealFramesDataset(Dataset):
    """Torch view of :class:`RealFrames`: ``(image, target)`` for frames with a target.

    Args:
        frames: the frames; those without the chosen target are left out.
        target: ``"position"`` (float32 ``(3,)``, metres), ``"uv"`` (``(2,)``), ``"box"``
            (``(4,)``), or ``None`` for all frames with an empty ``(0,)`` target
            (unsupervised adaptation).
        transform: optional function applied to the image tensor.

    Shape:
        - image: ``uint8`` ``(3, H, W)``, RGB.
        - target: ``float32`` ``(3,)``, ``(2,)``, ``(4,)`` or ``(0,)``.

    Example:
        >>> ds = open_real("real/kuka_cube").torch("position")  # doctest: +SKIP
        >>> image, target = ds[0]; image.shape, target.shape
        (torch.Size([3, 480, 640]), torch.Size([3]))
    """

    def __init__(
        self,
        frames: RealFrames,
        target: Target | None = "position",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if target is not None and target not in TARGETS:
            raise ConfigError(f"target is {target!r}, expected one of {[*TARGETS, None]}")
        if target is not None:
            frames = frames._with([r for r in frames.refs if getattr(r, target) is not None])
            if len(frames) == 0:
                raise DataError(f"{frames.name!r} has no frames with a {target!r} label")
        self.frames = frames
        self.target = target
        self.transform = transform

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        record = self.frames[index]
        image = torch.from_numpy(np.ascontiguousarray(record.image.transpose(2, 0, 1)))
        if self.transform is not None:
            image = self.transform(image)
        value = getattr(record, self.target) if self.target is not None else np.zeros(0)
        return image, torch.as_tensor(value, dtype=torch.float32)


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
        >>> frames = open_real("real/kuka_cube", size=(640, 480))  # doctest: +SKIP
        >>> len(frames.labelled()), len(frames.unlabelled())
        (12, 40)
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
    folder: str | Path, *, size: Size | None = None, resize: ResizePolicy = "error"
) -> RealFrames:
    """Open a folder of images with an optional ``labels.csv`` (see the module docstring).

    Args:
        folder: the folder, or a folder with ``labelled/`` and ``unlabelled/`` subfolders.
        size: required ``(W, H)``; ``None`` means "all like the first frame".
        resize: ``"error"`` (default) rejects frames of another size, ``"resize"`` resizes
            them to ``size`` (which is then required) and scales ``uv``/``box`` labels.

    Example:
        >>> frames = open_folder("real/kuka_cube/labelled")  # doctest: +SKIP
        >>> frames[0].source, frames[0].position
        ('07f092f9.jpg', array([-1.25, -0.44,  0.33]))
    """
    _check_policy(size, resize)
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"image folder '{root}' does not exist")
    refs = _folder_refs(root, prefix="")
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
            sub = _folder_refs(root / part, prefix=f"{part}/")
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


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to BGR ``uint8`` ``(H, W, 3)``; :class:`DataError` if it cannot."""
    if not path.is_file():
        raise DataError(f"image '{path}' does not exist")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise DataError(f"image '{path}' is unreadable or corrupt: expected a JPEG or PNG")
    return image


def fit_sizes(
    refs: Sequence[FrameRef], native: Sequence[Size], *, size: Size | None, resize: ResizePolicy
) -> tuple[list[FrameRef], Size]:
    """Apply the resize policy to frames of ``native`` sizes ``(W, H)``.

    Returns:
        The refs (``uv``/``box`` scaled where a frame will be resized) and the final size.

    Raises:
        DataError: a frame's size differs from the expected one and ``resize="error"``.
    """
    _check_policy(size, resize)
    size = (size[0], size[1]) if size is not None else None
    if resize == "error":
        want, like = (size, "the requested size") if size else (native[0], f"'{refs[0].source}'")
        for ref, got in zip(refs, native, strict=True):
            if got != want:
                raise DataError(
                    f"frame '{ref.source}' is {got[0]}x{got[1]} (WxH), expected "
                    f"{want[0]}x{want[1]} like {like}; pass size=(W, H) and resize='resize' "
                    "to resize"
                )
        return list(refs), want
    assert size is not None
    out = []
    for ref, got in zip(refs, native, strict=True):
        sx, sy = size[0] / got[0], size[1] / got[1]
        uv = ref.uv * np.array([sx, sy]) if ref.uv is not None else None
        box = ref.box * np.array([sx, sy, sx, sy]) if ref.box is not None else None
        out.append(replace(ref, uv=uv, box=box))
    return out, size


def _check_policy(size: Size | None, resize: str) -> None:
    if resize not in RESIZE_POLICIES:
        raise ConfigError(f"resize is {resize!r}, expected one of {list(RESIZE_POLICIES)}")
    if size is not None and not (
        len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)
    ):
        raise ConfigError(f"size is {size!r}, expected (W, H) with positive integers or None")
    if resize == "resize" and size is None:
        raise ConfigError("resize='resize' needs size=(W, H): the size to resize frames to")


def _interpolation(shape: tuple[int, ...], size: Size) -> int:
    return cv2.INTER_AREA if size[0] * size[1] < shape[0] * shape[1] else cv2.INTER_LINEAR


def _folder_refs(root: Path, prefix: str) -> list[FrameRef] | None:
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
    labels = read_labels(root / LABELS_FILE, names) if (root / LABELS_FILE).exists() else {}
    refs = []
    for name in names:
        ref = FrameRef(source=prefix + name, path=root / name)
        refs.append(replace(ref, **labels[name]) if name in labels else ref)
    return refs
