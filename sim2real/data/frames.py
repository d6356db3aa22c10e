"""What the real-data readers return: frame records and the validated frames of one source.

:class:`FrameRef` describes a frame without its pixels; :class:`RealFrame` adds the image;
:class:`RealFrames` is the lazily-loading sequence every reader (:mod:`sim2real.data.real`,
:mod:`sim2real.data.video`, :mod:`sim2real.data.lerobot`) builds, with
:class:`RealFramesDataset` its torch view and :func:`fit_sizes` the resize policy they share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from sim2real.data.decode import VideoReader, read_image
from sim2real.data.labels import ObjectLabel
from sim2real.errors import ConfigError, DataError

COLOUR_ORDER = "RGB"
RESIZE_POLICIES = ("error", "resize")
TARGETS = ("position", "uv", "box")
#: The FrameRef fields an :class:`ObjectLabel` fills in the single-target view.
SINGLE_FIELDS = ("position", "uv", "box", "visible")

ResizePolicy = Literal["error", "resize"]
Size = tuple[int, int]
Target = Literal["position", "uv", "box"]


@dataclass(frozen=True, eq=False, kw_only=True)
class FrameRef:
    """Where one frame lives and what is known about it, without its pixels.

    Attributes:
        source: id of the frame: a file name relative to the opened folder, or
            ``"<video name>#frame=<n>"``, or ``"<camera>/episode_<e>/frame_<i>"``.
        path: the image or video file holding the pixels.
        frame: frame number inside a video file; ``None`` for an image file.
        position: label position ``(3,)`` in metres, or ``None`` when unlabelled.
        uv: pixel label ``(2,)`` in the (possibly resized) image, or ``None``.
        box: box label ``(4,)`` ``x0, y0, x1, y1`` in pixels, or ``None``.
        state: robot state ``(S,)`` (LeRobot ``observation.state``), or ``None``.
        action: robot action ``(A,)`` (LeRobot ``action``), or ``None``.
        visible: whether the target is in view (a ``visible`` column of ``labels.csv``: 1 or
            0), or ``None`` when not labelled.
        objects: per-object labels of a long ``labels.csv`` (``file,object,...``) keyed by
            object name, or ``None`` (a wide file's single target, or unlabelled). The fields
            above hold the single-target view: set from the one object when the file names
            one, ``None`` when it names several (see :meth:`RealFrames.for_object`).
    """

    source: str
    path: Path
    frame: int | None = None
    position: np.ndarray | None = None
    uv: np.ndarray | None = None
    box: np.ndarray | None = None
    state: np.ndarray | None = None
    action: np.ndarray | None = None
    visible: bool | None = None
    objects: Mapping[str, ObjectLabel] | None = None

    @property
    def labelled(self) -> bool:
        """Whether the frame has a position label."""
        return self.position is not None


@dataclass(frozen=True, eq=False, kw_only=True)
class RealFrame(FrameRef):
    """One real frame: :class:`FrameRef` plus ``image``, ``uint8`` ``(H, W, 3)`` RGB."""

    image: np.ndarray


class RealFrames:
    """Validated real frames from one source; images load lazily as RGB ``uint8``.

    Build one with :func:`open_real` (or :func:`open_folder`, :func:`open_video`,
    :func:`sim2real.data.lerobot.open_lerobot`).

    Example:
        >>> from sim2real.data.real import open_real
        >>> import tempfile, cv2, numpy as np
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name in ("a.png", "b.png", "c.png"):
        ...     assert cv2.imwrite(str(folder / name), np.zeros((24, 32, 3), np.uint8))
        >>> _ = (folder / "labels.csv").write_text("file,x_m,y_m,z_m\\na.png,-1.25,-0.44,0.33\\n")
        >>> frames = open_real(folder)
        >>> len(frames.labelled()), frames.positions.shape, frames[0].image.shape
        (1, (1, 3), (24, 32, 3))
    """

    colour_order: str = COLOUR_ORDER

    def __init__(
        self,
        refs: Sequence[FrameRef],
        *,
        size: Size,
        resize: bool = False,
        name: str = "",
        readers: dict[Path, VideoReader] | None = None,
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

    @property
    def object_names(self) -> list[str]:
        """Sorted names of the objects with a label in any frame (empty for a wide file)."""
        return sorted({name for r in self.refs for name in (r.objects or {})})

    def for_object(self, name: str) -> RealFrames:
        """All frames, with the single-target fields set to object ``name``'s labels.

        Frames without a row for ``name`` become unlabelled, so the single-target code
        (``labelled()``, ``positions``, :meth:`torch`) evaluates that one object.

        Raises:
            DataError: no frame has a label for ``name``.

        Example:
            >>> import tempfile, cv2, numpy as np
            >>> from sim2real.data.real import open_real
            >>> folder = Path(tempfile.mkdtemp())
            >>> for name in ("a.png", "b.png"):
            ...     assert cv2.imwrite(str(folder / name), np.zeros((24, 32, 3), np.uint8))
            >>> _ = (folder / "labels.csv").write_text("file,object,x_m,y_m,z_m\\n"
            ...     "a.png,cube,0.5,0,0.02\\na.png,mug,0.4,0.1,0.05\\nb.png,mug,0.3,0,0.05\\n")
            >>> frames = open_real(folder)
            >>> mug = frames.for_object("mug")
            >>> frames.object_names, len(frames.labelled()), len(mug.labelled())
            (['cube', 'mug'], 0, 2)
        """
        if name not in self.object_names:
            raise DataError(
                f"{self.name!r} has no labels for object {name!r}, expected one of "
                f"{self.object_names}"
            )
        refs = []
        for ref in self.refs:
            label = (ref.objects or {}).get(name)
            values = {k: getattr(label, k) if label else None for k in SINGLE_FIELDS}
            refs.append(replace(ref, **values))
        return self._with(refs)

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
            reader = self._readers.setdefault(ref.path, VideoReader(ref.path))
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
        >>> from sim2real.data.real import open_real
        >>> import tempfile, cv2, numpy as np
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name in ("a.png", "b.png", "c.png"):
        ...     assert cv2.imwrite(str(folder / name), np.zeros((24, 32, 3), np.uint8))
        >>> _ = (folder / "labels.csv").write_text("file,x_m,y_m,z_m\\na.png,-1.25,-0.44,0.33\\n")
        >>> ds = open_real(folder).torch("position")
        >>> image, target = ds[0]
        >>> len(ds), image.shape, target.shape
        (1, torch.Size([3, 24, 32]), torch.Size([3]))
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


def fit_sizes(
    refs: Sequence[FrameRef], native: Sequence[Size], *, size: Size | None, resize: ResizePolicy
) -> tuple[list[FrameRef], Size]:
    """Apply the resize policy to frames of ``native`` sizes ``(W, H)``.

    Returns:
        The refs (``uv``/``box`` scaled where a frame will be resized) and the final size.

    Raises:
        DataError: a frame's size differs from the expected one and ``resize="error"``.
    """
    check_resize_policy(size, resize)
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
        objects = None
        if ref.objects is not None:
            objects = {k: _scaled(label, sx, sy) for k, label in ref.objects.items()}
        out.append(replace(ref, uv=uv, box=box, objects=objects))
    return out, size


def _scaled(label: ObjectLabel, sx: float, sy: float) -> ObjectLabel:
    uv = label.uv * np.array([sx, sy]) if label.uv is not None else None
    box = label.box * np.array([sx, sy, sx, sy]) if label.box is not None else None
    return replace(label, uv=uv, box=box)


def check_resize_policy(size: Size | None, resize: str) -> None:
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
