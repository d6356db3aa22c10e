"""The perception encoder: backbone + named heads + the preprocessing that goes with them.

The encoder checkpoint is a folder holding ``model.safetensors`` and ``card.json``; the card
says everything needed to rebuild the model (backbone, heads, preprocessing) and carries what
later stages add (training config, metrics, camera geometry). Nothing is unpickled.

Preprocessing is one path for training and inference: :func:`resize_frames` (torch bilinear
with antialiasing on float values, rounded back to uint8) then :meth:`Preprocessing.normalise`;
both live in :mod:`sim2real.perception.preprocessing` and are re-exported here.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from sim2real.atomic import write_bytes, write_text
from sim2real.errors import CheckpointError, ConfigError
from sim2real.perception.backbones import DEFAULT_BACKBONE, Backbone, build_backbone
from sim2real.perception.heads import build_head, normalised_to_pixels
from sim2real.perception.preprocessing import RESIZE_METHOD, Frames, Preprocessing, as_frames
from sim2real.perception.preprocessing import RESIZE_POLICIES as RESIZE_POLICIES  # re-exported
from sim2real.perception.preprocessing import resize_frames as resize_frames  # re-exported
from sim2real.perception.refine import (
    refine_enabled,
    refine_outputs,
    refined_names,
    restore_refiner,
    store_refiner,
)
from sim2real.perception.scores import VISIBILITY_HEAD, frame_scores, keypoint_sharpness
from sim2real.perception.targets import by_object, card_targets, is_named
from sim2real.version import __version__

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
CARD_FORMAT = "sim2real.encoder/1"
BATCHNORM_MODES = ("stored", "frame")


@contextlib.contextmanager
def frame_statistics(module: nn.Module) -> Iterator[None]:
    """Inside the block, every BatchNorm layer of ``module`` normalises with the statistics of
    the batch it is given instead of its running ones; nothing is updated or kept.

    Fed one frame at a time, that is per-frame normalisation: each frame is normalised by
    its own feature statistics (test-time BatchNorm, a single-frame AdaBN), a fixed function
    of that frame alone. The running statistics are restored bit-identically on exit.
    """
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.running_mean, m.running_var) for m in layers]
    try:
        for m in layers:  # eval mode + no running buffers -> batch statistics, no update
            m.running_mean, m.running_var = None, None
        yield
    finally:
        for m, (mean, var) in zip(layers, saved, strict=True):
            m.running_mean, m.running_var = mean, var


class Encoder(nn.Module):
    """Backbone + dict of heads + preprocessing, saved as safetensors + a JSON card.

    Args:
        backbone: registry name (see ``available_backbones()``).
        heads: ``{name: {"type": "position" | "keypoints" | "box" | "mask" | "visibility",
            **options}}``.
        input_size: frame size ``(W, H)`` frames are resized to (the network input without
            ``crop``).
        colour: channel order of the frames it is trained on.
        mean: normalisation mean (0-1 units); default: the backbone's.
        std: normalisation std; default: the backbone's.
        resize: resize policy (``stretch``).
        backbone_kwargs: backbone options, e.g. ``{"feature_stride": 16}``.
        pretrained: load the backbone's ImageNet weights.
        crop: region of interest ``(x0, y0, x1, y1)`` in pixels of the ``input_size`` frame
            (see :class:`Preprocessing`); ``forward`` gives keypoints in the crop's normalised
            coordinates, :meth:`predict` in the whole frame's.

    Example:
        >>> enc = Encoder("nature_cnn", {"position": {"type": "position"}}, input_size=(84, 84))
        >>> enc.predict(np.zeros((480, 640, 3), np.uint8))["position"].shape
        (1, 3)
    """

    #: optional :class:`~sim2real.perception.refine.Refiner`; not a submodule (own file)
    refiner: Any = None

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        heads: Mapping[str, Mapping[str, Any]] | None = None,
        input_size: tuple[int, int] = (128, 96),
        colour: str = "RGB",
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        resize: str = "stretch",
        backbone_kwargs: Mapping[str, Any] | None = None,
        pretrained: bool = True,
        crop: tuple[int, int, int, int] | None = None,
    ) -> None:
        super().__init__()
        self._n_frozen = 0
        self.backbone: Backbone = build_backbone(
            backbone, pretrained=pretrained, **dict(backbone_kwargs or {})
        )
        self.preprocessing = Preprocessing(
            width=int(input_size[0]),
            height=int(input_size[1]),
            colour=colour,
            mean=self.backbone.default_mean if mean is None else mean,
            std=self.backbone.default_std if std is None else std,
            resize=resize,
            crop=crop,
        )
        self.heads = nn.ModuleDict()
        for name, spec in (heads or {}).items():
            self.add_head(name, **spec)
        self.card: dict[str, Any] = {"training": {}, "metrics": {}}

    # ------------------------------------------------------------------ structure
    def add_head(self, name: str, type: str, **options: Any) -> nn.Module:
        """Attach a head ``type`` under ``name`` (see ``heads.HEADS``) and return it."""
        if name in self.heads:
            raise ConfigError(f"head {name!r} already exists; heads: {list(self.heads)}")
        head = build_head(type, self.backbone.out_channels, **options)
        self.heads[name] = head.to(self.device)
        return head

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device

    @property
    def feature_dim(self) -> int:
        """Size ``D`` of :meth:`features`."""
        return self.backbone.out_channels

    # ------------------------------------------------------------------ compute
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run every head on preprocessed input.

        Keypoints are in normalised coordinates of ``x`` (the crop, when the preprocessing has
        one); :meth:`Preprocessing.to_frame` maps them to the whole frame.

        Shape:
            - x: ``(B, 3, H, W)`` normalised; returns ``{name: (B, ...)}``.
        """
        fmap = self.backbone(x)
        return {name: head(fmap) for name, head in self.heads.items()}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled backbone features (for RL and DANN).

        Shape:
            - x: ``(B, 3, H, W)`` normalised; returns ``(B, feature_dim)``.
        """
        return self.backbone(x).mean(dim=(2, 3))

    def block_features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Every backbone block's mean-pooled output and the last feature map (what
        :meth:`forward`'s backbone pass computes, the same operations).

        Shape:
            - x: ``(B, 3, H, W)`` normalised; returns ``([(B, C_l)] per block, (B, C, h, w))``.
        """
        pooled, fmap = [], x
        for block in self.backbone.blocks:
            fmap = block(fmap)
            pooled.append(fmap.float().mean(dim=(2, 3)))
        return pooled, fmap

    def preprocess(self, frames: Frames, colour: str | None = None) -> torch.Tensor:
        """uint8 frames at any resolution -> normalised input on this encoder's device.

        Args:
            frames: ``(H, W, 3)`` or ``(N, H, W, 3)`` uint8, numpy or torch.
            colour: channel order of ``frames`` (``RGB``/``BGR``); default: the encoder's.

        Shape:
            - returns ``(N, 3, h, w)`` float32, ``(w, h)`` the preprocessing's ``input_size``
              (the crop's size, or the frame size without a crop).
        """
        return self.preprocessing(frames, colour=colour, device=self.device)

    @property
    def batchnorm(self) -> str:
        """How :meth:`predict` normalises: ``"stored"`` (running statistics, the default) or
        ``"frame"`` (each frame by its own statistics, see :func:`frame_statistics`); kept in
        the card (``inference.batchnorm``)."""
        return str(self.card.get("inference", {}).get("batchnorm", "stored"))

    def set_batchnorm(self, mode: str) -> None:
        """Set :attr:`batchnorm` (saved with the card).

        Raises:
            ConfigError: ``mode`` is not one of ``BATCHNORM_MODES``.
        """
        if mode not in BATCHNORM_MODES:
            raise ConfigError(f"batchnorm={mode!r}: expected one of {list(BATCHNORM_MODES)}")
        self.card.setdefault("inference", {})["batchnorm"] = mode

    @torch.no_grad()
    def predict(
        self,
        frames: Frames,
        colour: str = "RGB",
        batch_size: int = 64,
        batchnorm: str | None = None,
        refine: bool | None = None,
    ) -> dict[str, np.ndarray] | dict[str, dict[str, np.ndarray]]:
        """Predict every head on raw frames, in eval mode, in batches.

        Keypoints are normalised coordinates of the whole frame (a crop is undone), and
        keypoint heads also give ``"<name>_px"``: pixel coordinates in the given frames.
        An encoder with a ``position``, ``keypoint`` or ``visibility`` head also gives, per
        frame, ``"visibility"`` (the target's estimated visible fraction; 1 without a
        visibility head), ``"visible"`` (bool), ``"confidence"`` in ``[0, 1]`` (below 0.5: do
        not act on the position) and ``"ood"`` (distance to the simulated training features;
        NaN when the card has no statistics): see :mod:`sim2real.perception.scores`.

        Args:
            frames: uint8 ``(H, W, 3)`` or ``(N, H, W, 3)``.
            colour: channel order of ``frames``.
            batch_size: frames per forward pass (1 with ``batchnorm="frame"``).
            batchnorm: ``"stored"`` or ``"frame"``; default: :attr:`batchnorm`.
            refine: with a :attr:`refiner`, refine the ``keypoint`` head's first keypoint on
                the full-resolution frames, the coarse one kept as ``keypoint_coarse``
                (:mod:`sim2real.perception.refine`); default: the card's, on.

        An encoder with per-target heads (``pretrain --targets``, :mod:`sim2real.perception.
        targets`) returns its outputs keyed by object name instead:
        ``{object: {"position", "keypoint", "keypoint_px", "visibility", "visible", "yaw",
        ...}}`` (:func:`~sim2real.perception.targets.by_object`).

        Returns:
            ``{name: (N, ...) float32 array}`` (``visible``: bool); per-target encoders:
            ``{object: {name: array}}``.

        Example:
            >>> enc = Encoder("impala_cnn", {"kp": {"type": "keypoints"}}, pretrained=False)
            >>> sorted(enc.predict(np.zeros((2, 60, 80, 3), np.uint8)))
            ['kp', 'kp_px']
        """
        mode = self.batchnorm if batchnorm is None else batchnorm
        if mode not in BATCHNORM_MODES:
            raise ConfigError(f"batchnorm={mode!r}: expected one of {list(BATCHNORM_MODES)}")
        batch = as_frames(frames)
        step = 1 if mode == "frame" else batch_size
        was_training = self.training
        self.eval()
        try:
            with frame_statistics(self) if mode == "frame" else contextlib.nullcontext():
                chunks = [
                    self.scored_forward(self.preprocess(batch[i : i + step], colour))
                    for i in range(0, len(batch), step)
                ]
        finally:
            self.train(was_training)
        out = {name: torch.cat([c[name] for c in chunks]).float().cpu() for name in chunks[0]}
        height, width = batch.shape[1], batch.shape[2]
        for name, head in self.heads.items():
            if getattr(head, "kind", None) == "keypoints":
                out[name] = self.preprocessing.to_frame(out[name])
                out[f"{name}_px"] = normalised_to_pixels(out[name], width, height)
        if refine_enabled(self, refine) and "keypoint" in out:
            refine_outputs(self, batch, out, colour)
            for name in refined_names():
                out[f"{name}_px"] = normalised_to_pixels(out[name], width, height)
        arrays = {k: v.numpy() for k, v in out.items()}
        if "visible" in arrays:
            arrays["visible"] = arrays["visible"] > 0.5
        return by_object(self.card, arrays) if is_named(self.card) else arrays

    @property
    def targets(self) -> dict[str, dict[str, Any]]:
        """The objects this encoder locates, ``{name: {"frame", "symmetry", "yaw", "heads"}}``
        (:func:`~sim2real.perception.targets.card_targets`; one target for a single-target
        encoder)."""
        return card_targets(self.card)

    @property
    def scored(self) -> bool:
        """Whether :meth:`predict` adds the scores (``visibility``, ``visible``,
        ``confidence``, ``ood``; :mod:`sim2real.perception.scores`): when the encoder has a
        ``position``, ``keypoint`` or ``visibility`` head, i.e. gives a target position."""
        return bool({"position", "keypoint", VISIBILITY_HEAD} & set(self.heads))

    def scored_forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`forward` plus, when :attr:`scored`, the scores of
        :func:`~sim2real.perception.scores.frame_scores` (``(B,)`` each; ``visibility``
        replaces the visibility head's logits by their sigmoid).

        Shape:
            - x: ``(B, 3, H, W)`` normalised; returns ``{name: (B, ...)}``.
        """
        if not self.scored:
            return self(x)
        pooled, fmap = self.block_features(x)
        out, sharpness = {}, None
        for name, head in self.heads.items():
            if name == "keypoint" and getattr(head, "kind", None) == "keypoints":
                heat = head.heatmaps(fmap)
                out[name] = head.decode(heat)
                sharpness = keypoint_sharpness(heat, head.temperature)[:, 0]
            else:
                out[name] = head(fmap)
        logits = out.get(VISIBILITY_HEAD)
        out.update(frame_scores(self.card, logits, sharpness, pooled))
        return out

    # ------------------------------------------------------------------ fine-tuning helpers
    def freeze_blocks(self, n_first: int) -> None:
        """Freeze the first ``n_first`` backbone blocks (no grad, BatchNorm kept in eval mode).

        ``n_first=0`` unfreezes everything. Heads stay trainable.
        """
        n = len(self.backbone.blocks)
        if not 0 <= n_first <= n:
            raise ConfigError(
                f"freeze_blocks: n_first={n_first} outside [0, {n}] (backbone blocks)"
            )
        for i, block in enumerate(self.backbone.blocks):
            block.requires_grad_(i >= n_first)
        self._n_frozen = n_first
        self.train(self.training)

    def trainable_blocks(self, k_last: int) -> None:
        """Train only the last ``k_last`` backbone blocks (and the heads); freeze the rest."""
        n = len(self.backbone.blocks)
        if not 0 <= k_last <= n:
            raise ConfigError(
                f"trainable_blocks: k_last={k_last} outside [0, {n}] (backbone blocks)"
            )
        self.freeze_blocks(n - k_last)

    def train(self, mode: bool = True) -> Encoder:
        """Like ``nn.Module.train`` but frozen blocks stay in eval mode (BatchNorm statistics)."""
        super().train(mode)
        for block in list(self.backbone.blocks)[: self._n_frozen]:
            block.eval()
        return self

    def param_groups(self, base_lr: float, decay: float = 0.5) -> list[dict[str, Any]]:
        """Optimizer groups with discriminative learning rates, trainable parameters only.

        Heads get ``base_lr``; backbone block ``i`` of ``n`` gets ``base_lr * decay**(n - i)``.

        Example:
            >>> enc = Encoder("nature_cnn", {"p": {"type": "position"}}, pretrained=False)
            >>> [g["name"] for g in enc.param_groups(1e-3)]
            ['block0', 'block1', 'block2', 'heads']
        """
        n = len(self.backbone.blocks)
        named = [
            (f"block{i}", b, base_lr * decay ** (n - i)) for i, b in enumerate(self.backbone.blocks)
        ]
        named.append(("heads", self.heads, base_lr))
        groups = [
            {"name": name, "params": [p for p in m.parameters() if p.requires_grad], "lr": lr}
            for name, m, lr in named
        ]
        return [g for g in groups if g["params"]]

    # ------------------------------------------------------------------ checkpoint
    def structure(self) -> dict[str, Any]:
        """The card entries that describe how to rebuild this encoder."""
        heads = {name: {"type": head.kind, **head.config()} for name, head in self.heads.items()}
        old = self.card.get("backbone", {})
        frames = sorted(
            {h.frame for h in self.heads.values() if getattr(h, "kind", "") == "position"}
        )
        return {
            "format": CARD_FORMAT,
            "code_version": __version__,
            "backbone": {
                "name": self.backbone.name,
                "kwargs": self.backbone.kwargs,
                "imagenet_init": bool(self.backbone.pretrained or old.get("imagenet_init")),
            },
            "resize_method": RESIZE_METHOD,
            "feature_dim": self.feature_dim,
            "feature_stride": self.backbone.stride,
            "preprocessing": self.preprocessing.to_dict(),
            "heads": heads,
            "label_schema": {name: head.schema() for name, head in self.heads.items()},
            "position_frame": frames[0] if len(frames) == 1 else frames or None,
        }

    def save(self, path: str | Path) -> Path:
        """Write ``path/model.safetensors`` and ``path/card.json`` (each atomically, through
        :mod:`sim2real.atomic`); returns the folder.

        Example:
            >>> Encoder("nature_cnn", pretrained=False).save("runs/tmp/encoder")  # doctest: +SKIP
        """
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.card.update(self.structure())
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        store_refiner(self, folder)  # refiner.safetensors + the card's "refiner", when attached
        # each file atomically (a killed run leaves the old file or the new one, never half)
        write_bytes(folder / WEIGHTS_FILE, safetensors_bytes(state, {"format": CARD_FORMAT}))
        write_text(folder / CARD_FILE, json.dumps(self.card, indent=2, sort_keys=True) + "\n")
        logger.info("saved encoder (%d tensors) to %s", len(state), folder)
        return folder

    @classmethod
    def from_card(cls, card: Mapping[str, Any], pretrained: bool = False) -> Encoder:
        """Rebuild the architecture from a card (weights not loaded)."""
        try:
            pre = Preprocessing.from_dict(card["preprocessing"])
            encoder = cls(
                backbone=card["backbone"]["name"],
                heads=card["heads"],
                input_size=(pre.width, pre.height),
                colour=pre.colour,
                mean=pre.mean,
                std=pre.std,
                resize=pre.resize,
                backbone_kwargs=card["backbone"].get("kwargs", {}),
                pretrained=pretrained,
                crop=pre.crop,
            )
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"encoder card is missing or has a bad entry: {exc!r}") from exc
        encoder.card = dict(card)
        return encoder

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Encoder:
        """Load an encoder folder written by :meth:`save` (no unpickling).

        Args:
            path: the folder.
            device: ``"cpu"``, ``"cuda"``, ``"auto"`` (CUDA when available) or a torch device.

        Raises:
            CheckpointError: missing/unreadable files, a card from another format, missing or
                extra tensors, or shapes that do not match the card.

        Example:
            >>> enc = Encoder.load("runs/kuka/encoder", device="auto")  # doctest: +SKIP
        """
        folder = Path(path)
        card_path, weights_path = folder / CARD_FILE, folder / WEIGHTS_FILE
        for f in (card_path, weights_path):
            if not f.is_file():
                raise CheckpointError(f"encoder checkpoint incomplete: {f} not found")
        try:
            card = json.loads(card_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{card_path}: not valid JSON ({exc})") from exc
        if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
            got = card.get("format") if isinstance(card, dict) else type(card).__name__
            raise CheckpointError(f"{card_path}: expected format {CARD_FORMAT!r}, got {got!r}")
        try:
            encoder = cls.from_card(card)
        except (CheckpointError, ConfigError) as exc:
            raise CheckpointError(f"{card_path}: {exc}") from exc
        try:
            state = load_file(str(weights_path))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{weights_path}: cannot read safetensors ({exc})") from exc
        _check_state(encoder.state_dict(), state, weights_path)
        encoder.load_state_dict(state, strict=True)
        if str(device) == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        encoder = encoder.to(device).eval()
        restore_refiner(encoder, folder)  # none unless the card has a "refiner" entry
        return encoder


def _check_state(
    expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor], origin: Path
) -> None:
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{origin}: tensors do not match the card: {len(missing)} missing {missing[:5]}, "
            f"{len(extra)} extra {extra[:5]}"
        )
    for key, ref in expected.items():
        if got[key].shape != ref.shape:
            shapes = f"{tuple(got[key].shape)}, card implies {tuple(ref.shape)}"
            raise CheckpointError(f"{origin}: tensor {key!r} has shape {shapes}")
