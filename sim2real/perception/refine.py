"""Coarse-to-fine keypoints: a second look at a full-resolution crop around the first estimate.

The encoder sees the camera frame shrunk to its input size (160x120 for a 640x480 camera: one
input pixel is four camera pixels, ~1.3 cm of the kuka table), so its keypoint is only as fine
as that. A :class:`Refiner` cuts a ``crop x crop`` window of the **full-resolution** frame
centred on the coarse keypoint (bilinear sampling, ``grid_sample`` with border padding, so the
centre may be sub-pixel and the window may hang over the frame's edge), runs a small CNN on it
and reads a heatmap with a spatial soft-argmax (DSNT-style, sub-pixel): the offset from the
window's centre to the target, in the window's normalised coordinates. The refined keypoint
is ``centre + offset * crop / frame_size`` (normalised frame coordinates, ``align_corners=
False``, as the keypoint heads); ``iterations > 1`` repeats the look around the new estimate.

It is trained in simulation (:mod:`sim2real.perception.refine_train`) on windows whose centre
is the true keypoint plus a random jitter (and the coarse encoder's own estimates), so it
learns to correct the coarse error; it has its own weights and never touches the encoder's.

Storage: ``refiner.safetensors`` beside the encoder's ``model.safetensors`` and the
constructor arguments under the card's ``refiner`` entry. An encoder folder without one loads
and predicts exactly as before; with one, :meth:`Encoder.predict
<sim2real.perception.encoder.Encoder.predict>` refines the ``keypoint`` head's first keypoint
(``refine=False`` or :func:`set_refine` turn it off) and keeps the coarse one as
``keypoint_coarse``.

Example:
    >>> refiner = Refiner(crop=32, width=8, frame_size=(64, 48))
    >>> frames = np.zeros((2, 48, 64, 3), np.uint8)
    >>> refiner.refine_frames(frames, np.zeros((2, 2), np.float32)).shape
    (2, 2)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from sim2real.atomic import write_bytes
from sim2real.errors import CheckpointError, ConfigError, InputError
from sim2real.images import COLOUR_ORDERS
from sim2real.perception.heads import spatial_soft_argmax
from sim2real.perception.preprocessing import Frames, as_frames, resize_frames

logger = logging.getLogger(__name__)

REFINER_FILE = "refiner.safetensors"
REFINER_FORMAT = "sim2real.refiner/1"
CARD_KEY = "refiner"
#: The encoder head whose first keypoint is refined.
REFINED_HEAD = "keypoint"
COARSE_SUFFIX = "_coarse"


def crop_grid(centre: torch.Tensor, crop: int, frame_wh: tuple[int, int]) -> torch.Tensor:
    """The ``grid_sample`` grid of a ``crop x crop`` window of one-pixel spacing centred on
    ``centre`` (normalised frame coordinates, ``align_corners=False``).

    Window pixel ``j`` samples the continuous frame position ``u + j + 0.5 - crop / 2`` (``u``
    the centre in pixels), so the window's own normalised coordinates map to the frame's by
    ``frame = centre + window * crop / frame_size``.

    Shape:
        - centre: ``(N, 2)``; returns ``(N, crop, crop, 2)``.

    Example:
        >>> crop_grid(torch.zeros(1, 2), 2, (4, 4))[0, 0].tolist()
        [[-0.25, -0.25], [0.25, -0.25]]
    """
    steps = torch.arange(crop, dtype=centre.dtype, device=centre.device) + 0.5 - crop / 2.0
    w, h = frame_wh
    gx = centre[:, 0, None, None] + (2.0 / w) * steps.view(1, 1, crop)
    gy = centre[:, 1, None, None] + (2.0 / h) * steps.view(1, crop, 1)
    return torch.stack(torch.broadcast_tensors(gx, gy), dim=-1)


def crop_pixels(pixels: torch.Tensor, centre: torch.Tensor, crop: int) -> torch.Tensor:
    """Bilinear ``crop x crop`` windows of float NCHW ``pixels`` around ``centre`` (border
    padding: outside the frame is the nearest edge pixel).

    Shape:
        - pixels: ``(N, 3, H, W)``; centre: ``(N, 2)`` normalised; returns ``(N, 3, crop, crop)``.
    """
    grid = crop_grid(centre, crop, (pixels.shape[3], pixels.shape[2]))
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class Refiner(nn.Module):
    """Full-resolution window around a coarse keypoint -> the refined keypoint.

    Args:
        crop: window side in full-resolution pixels (a multiple of 4).
        width: channels of the first stage (the next ones have 2x and 2x).
        frame_size: ``(W, H)`` of the frames it was trained on; other sizes are resized to it
            (:func:`~sim2real.perception.preprocessing.resize_frames`) first.
        mean: per-channel mean (0-1 units) the window is normalised with.
        std: per-channel std (0-1 units).
        colour: channel order it was trained on.
        iterations: looks per call (each re-centred on the last estimate).

    Shape:
        - forward: pixels ``(N, 3, H, W)`` float 0-255 in :attr:`colour` order, centre ``(N,
          2)`` normalised; returns ``(N, 2)`` normalised frame coordinates.

    Example:
        >>> r = Refiner(crop=16, width=4, frame_size=(32, 24))
        >>> r(torch.zeros(1, 3, 24, 32), torch.zeros(1, 2)).shape
        torch.Size([1, 2])
    """

    def __init__(
        self,
        crop: int = 64,
        width: int = 16,
        frame_size: tuple[int, int] = (640, 480),
        mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        std: tuple[float, float, float] = (0.25, 0.25, 0.25),
        colour: str = "RGB",
        iterations: int = 1,
    ) -> None:
        super().__init__()
        if int(crop) < 8 or int(crop) % 4:
            raise ConfigError(f"refiner crop={crop!r}: expected a multiple of 4, at least 8")
        if int(width) < 1 or int(iterations) < 1:
            raise ConfigError(f"refiner: width={width!r}, iterations={iterations!r}: expected >= 1")
        if colour not in COLOUR_ORDERS:
            raise ConfigError(f"refiner colour={colour!r}: expected one of {list(COLOUR_ORDERS)}")
        fw, fh = (int(v) for v in frame_size)
        if fw < crop or fh < crop:
            raise ConfigError(
                f"refiner frame_size={frame_size!r}: expected at least the crop {crop}"
            )
        self.crop, self.width, self.iterations = int(crop), int(width), int(iterations)
        self.frame_size, self.colour = (fw, fh), colour
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.register_buffer("_mean", torch.tensor(self.mean).mul(255.0).view(1, 3, 1, 1))
        self.register_buffer("_std", torch.tensor(self.std).mul(255.0).view(1, 3, 1, 1))
        w = self.width
        self.net = nn.Sequential(
            *_block(3, w, 1),
            *_block(w, 2 * w, 2),
            *_block(2 * w, 2 * w, 1),
            *_block(2 * w, 4 * w, 2),
            *_block(4 * w, 4 * w, 1),
            nn.Conv2d(4 * w, 4 * w, 3, padding=2, dilation=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(4 * w, 1, 1),
        )

    def heatmap(self, window: torch.Tensor) -> torch.Tensor:
        """Heatmap logits of float 0-255 windows: ``(N, 3, c, c)`` -> ``(N, 1, c/4, c/4)``."""
        return self.net((window - self._mean) / self._std)

    def offsets(self, window: torch.Tensor) -> torch.Tensor:
        """The target's offset from each window's centre, in the window's normalised units
        (``[-1, 1]``: the window's edges). ``(N, 3, c, c)`` -> ``(N, 2)``."""
        return spatial_soft_argmax(self.heatmap(window))[:, 0]

    def step(self, pixels: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """One look: window around ``centre`` -> refined centre (normalised frame coords)."""
        scale = torch.tensor(
            [self.crop / pixels.shape[3], self.crop / pixels.shape[2]],
            dtype=centre.dtype,
            device=centre.device,
        )
        return centre + self.offsets(crop_pixels(pixels, centre, self.crop)) * scale

    def forward(self, pixels: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        for _ in range(self.iterations):
            centre = self.step(pixels, centre)
        return centre

    def pixels(self, frames: Frames, colour: str = "RGB") -> torch.Tensor:
        """uint8 frames -> float 0-255 NCHW at :attr:`frame_size` in :attr:`colour` order."""
        if colour not in COLOUR_ORDERS:
            raise InputError(f"colour={colour!r}: expected one of {list(COLOUR_ORDERS)}")
        device = self._mean.device
        x = resize_frames(as_frames(frames).to(device), *self.frame_size)
        if colour != self.colour:
            x = x.flip(-1)
        return x.permute(0, 3, 1, 2).float()

    @torch.no_grad()
    def refine_frames(
        self, frames: Frames, centre: Any, colour: str = "RGB", batch_size: int = 64
    ) -> np.ndarray:
        """Refine normalised keypoints ``centre`` ``(N, 2)`` of uint8 frames, in eval mode.

        Returns:
            ``(N, 2)`` float32 normalised frame coordinates.
        """
        batch = as_frames(frames)
        c = torch.as_tensor(np.asarray(centre, dtype=np.float32)).reshape(-1, 2)
        if len(c) != len(batch):
            raise InputError(f"refine: {len(batch)} frames but {len(c)} centres")
        was_training = self.training
        self.eval()
        try:
            out = [
                self(
                    self.pixels(batch[i : i + batch_size], colour),
                    c[i : i + batch_size].to(self._mean.device),
                ).cpu()
                for i in range(0, len(batch), batch_size)
            ]
        finally:
            self.train(was_training)
        return torch.cat(out).numpy().astype(np.float32)

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable): the card's ``refiner`` entry."""
        return {
            "crop": self.crop,
            "width": self.width,
            "frame_size": list(self.frame_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "colour": self.colour,
            "iterations": self.iterations,
        }


# ---------------------------------------------------------------------- storage, encoder hooks
def save_refiner(refiner: Refiner, folder: str | Path) -> Path:
    """Write ``folder/refiner.safetensors`` atomically; returns its path (the card entry is
    :meth:`Refiner.config`, written by the encoder's save)."""
    path = Path(folder) / REFINER_FILE
    state = {k: v.detach().contiguous().cpu() for k, v in refiner.state_dict().items()}
    meta = {"format": REFINER_FORMAT, "config": json.dumps(refiner.config(), sort_keys=True)}
    write_bytes(path, safetensors_bytes(state, meta))
    return path


def load_refiner(folder: str | Path, config: Mapping[str, Any]) -> Refiner:
    """Rebuild a refiner from its card entry and load ``folder/refiner.safetensors``.

    Raises:
        CheckpointError: missing file, a bad card entry, or tensors that do not match it.
    """
    path = Path(folder) / REFINER_FILE
    if not path.is_file():
        raise CheckpointError(f"the card has a 'refiner' entry but {path} is not there")
    try:
        refiner = Refiner(**{**config, "frame_size": tuple(config["frame_size"])})
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"card 'refiner' entry: {exc!r}") from exc
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: cannot read safetensors ({exc})") from exc
    expected = refiner.state_dict()
    bad = sorted(set(expected) ^ set(state)) or [
        k for k in expected if expected[k].shape != state[k].shape
    ]
    if bad:
        raise CheckpointError(f"{path}: tensors do not match the card's refiner entry: {bad[:5]}")
    refiner.load_state_dict(state, strict=True)
    return refiner.eval()


def attach_refiner(encoder: Any, refiner: Refiner | None) -> None:
    """Give ``encoder`` a refiner (``None`` removes it) without making it a submodule: the
    encoder's ``state_dict``, parameters and training are unchanged; the refiner is saved
    beside it (:func:`save_refiner`) and its config goes in the card."""
    object.__setattr__(encoder, "refiner", refiner)
    if refiner is None:
        encoder.card.pop(CARD_KEY, None)
    else:
        encoder.card[CARD_KEY] = refiner.config()


def set_refine(encoder: Any, enabled: bool) -> None:
    """Turn the refinement in :meth:`Encoder.predict` on or off (kept in the card's
    ``inference.refine``; on by default when a refiner is attached)."""
    encoder.card.setdefault("inference", {})["refine"] = bool(enabled)


def refine_enabled(encoder: Any, refine: bool | None = None) -> bool:
    """Whether ``predict`` refines: a refiner is attached and neither ``refine=False`` nor
    the card's ``inference.refine`` turns it off."""
    if getattr(encoder, "refiner", None) is None:
        return False
    if refine is not None:
        return bool(refine)
    return bool(encoder.card.get("inference", {}).get("refine", True))


def restore_refiner(encoder: Any, folder: str | Path) -> None:
    """At load: attach the refiner the card names (nothing when it names none)."""
    config = encoder.card.get(CARD_KEY)
    if config:
        attach_refiner(encoder, load_refiner(folder, config).to(encoder.device))


def store_refiner(encoder: Any, folder: str | Path) -> None:
    """At save: write the attached refiner beside the encoder (and its card entry)."""
    refiner = getattr(encoder, "refiner", None)
    if refiner is None:
        encoder.card.pop(CARD_KEY, None)
    else:
        encoder.card[CARD_KEY] = refiner.config()
        save_refiner(refiner, folder)


def refine_outputs(
    encoder: Any, frames: torch.Tensor, out: dict[str, torch.Tensor], colour: str
) -> None:
    """In ``predict``: replace ``out["keypoint"][:, 0]`` (normalised, whole frame) by the
    refiner's estimate and keep the coarse one as ``keypoint_coarse``. In place."""
    coarse = out[REFINED_HEAD]
    refined = encoder.refiner.refine_frames(frames, coarse[:, 0].numpy(), colour=colour)
    out[REFINED_HEAD + COARSE_SUFFIX] = coarse.clone()
    out[REFINED_HEAD] = coarse.clone()
    out[REFINED_HEAD][:, 0] = torch.from_numpy(refined).to(coarse.dtype)


def refined_names() -> tuple[str, str]:
    """The ``predict`` outputs the refinement writes: the refined head and its coarse copy."""
    return REFINED_HEAD, REFINED_HEAD + COARSE_SUFFIX


def perceived_keypoints(
    encoder: Any, frame: np.ndarray, outputs: Mapping[str, torch.Tensor], colour: str
) -> dict[str, list[float]]:
    """For :meth:`Policy.perceive <sim2real.deploy.policy.Policy.perceive>`: the refined and
    coarse target keypoints (normalised whole-frame coordinates) of one full-resolution
    ``frame``, from the encoder's ``outputs`` on its network input; ``{}`` without a refiner
    (or with refinement turned off) or a ``keypoint`` head."""
    if not refine_enabled(encoder) or REFINED_HEAD not in outputs:
        return {}
    coarse = encoder.preprocessing.to_frame(outputs[REFINED_HEAD][:, 0].float().cpu())
    refined = encoder.refiner.refine_frames(frame, coarse.numpy(), colour=colour)
    return {
        REFINED_HEAD: [float(v) for v in refined[0]],
        REFINED_HEAD + COARSE_SUFFIX: [float(v) for v in coarse[0]],
    }
