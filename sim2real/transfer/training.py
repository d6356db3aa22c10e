"""The loop the fine-tuning strategies share: frames in memory, targets, loss, ``fit``.

Real frames are few, so they are decoded once, resized to the encoder's input size and
kept as a :class:`FrameSet`. Each step samples a batch with replacement and applies the
pretraining's photometric augmentation (labels stay valid without any geometric change).
Simulated frames come from the shards through the pretraining's ``SimSamples``.

The loss is the pretraining's: smooth L1 on the standardised position for a ``position``
head, L1 on normalised pixel coordinates for a ``keypoint`` head. A real frame's keypoint
target is its labelled 3-D position projected through the camera in the encoder card.
The learning rate is constant, so the model after epoch ``e`` of a long run is the model a
run of ``e`` epochs gives: cross-validation can score every epoch count in one run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sim2real.data.frames import RealFrames
from sim2real.data.shards import ShardedDataset
from sim2real.errors import DataError
from sim2real.perception import geometry
from sim2real.perception.encoder import Encoder, resize_frames
from sim2real.perception.train_data import SimSamples, photometric_augmentation
from sim2real.transfer.adabn import batchnorm_layers
from sim2real.transfer.dann import DomainClassifier, dann_lambda
from sim2real.transfer.objects import (
    encoder_objects,
    frame_errors,
    frames_for,
    labelled_objects,
    object_errors,
    object_loss,
    object_positions,
    trainable_object_heads,
)

if TYPE_CHECKING:
    from sim2real.transfer.config import FinetuneConfig

logger = logging.getLogger(__name__)

ASPECT_TOLERANCE = 0.02
FRAME_INPUT = "uint8 (N, H, W, 3) RGB"


@dataclass(frozen=True)
class FrameSet:
    """Real frames held in memory at the encoder's input size.

    Attributes:
        images: uint8 ``(N, H, W, 3)`` RGB, already resized to the encoder input.
        positions: float64 ``(N, 3)`` labels in metres, ``(N, T, 3)`` for the ``objects``
            of a named-target encoder (NaN where a frame has no row for an object), or
            ``None`` (unlabelled).
        sources: one id per frame (file name), for predictions and reports.
        frame_size: ``(W, H)`` of the frames before resizing.
        name: where they came from.
        objects: the objects ``positions`` labels (``()``: the single target).
    """

    images: np.ndarray
    positions: np.ndarray | None
    sources: tuple[str, ...]
    frame_size: tuple[int, int]
    name: str = ""
    objects: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.images)

    def select(self, indices: Sequence[int] | np.ndarray) -> FrameSet:
        """The frames at ``indices``."""
        idx = np.asarray(indices, dtype=np.int64)
        positions = None if self.positions is None else self.positions[idx]
        sources = tuple(self.sources[i] for i in idx)
        return replace(self, images=self.images[idx], positions=positions, sources=sources)

    @classmethod
    def from_real(
        cls,
        frames: RealFrames,
        size: tuple[int, int],
        labels: bool,
        progress: bool = False,
        objects: Sequence[str] = (),
    ) -> FrameSet:
        """Decode ``frames`` and resize them to ``size = (W, H)``.

        Args:
            frames: opened real frames; with ``labels`` every one must carry a position.
            size: the encoder's input size.
            labels: keep the position labels (``False`` drops them: unlabelled use).
            progress: show a tqdm bar.
            objects: with ``labels``, the objects to read from a long ``labels.csv``
                (positions ``(N, T, 3)``, NaN where a frame has no row for one).

        Example:
            >>> real = open_real("real/kuka_cube").labelled()  # doctest: +SKIP
            >>> FrameSet.from_real(real, (128, 96), labels=True).images.shape  # doctest: +SKIP
            (12, 96, 128, 3)
        """
        if labels and not objects and any(not ref.labelled for ref in frames.refs):
            raise DataError(f"{frames.name!r}: expected only labelled frames, some have no label")
        images = np.empty((len(frames), size[1], size[0], 3), dtype=np.uint8)
        for i, frame in enumerate(tqdm(frames, desc="frames", disable=not progress, leave=False)):
            images[i] = resize_frames(frame.image, *size)[0].numpy()
        positions = frames.positions.astype(np.float64) if labels else None
        if labels and objects:
            positions = object_positions(frames, objects)
        kept = tuple(objects) if labels else ()
        return cls(images, positions, tuple(frames.sources), tuple(frames.size), frames.name, kept)


def as_frame_set(
    data: RealFrames | FrameSet | None, encoder: Encoder, role: str, labels: bool
) -> FrameSet | None:
    """Bring ``data`` to a :class:`FrameSet` at the encoder's input size; ``None`` stays.

    Raises:
        DataError: the frames' aspect ratio differs from the encoder input's (the encoder
            stretches frames, so the geometry learnt in simulation would not hold).
    """
    if data is None:
        return None
    size = (encoder.preprocessing.width, encoder.preprocessing.height)
    objects = encoder_objects(encoder)
    if isinstance(data, RealFrames):
        check_aspect(data.size, size, role)
        data = frames_for(data, encoder)
        if not labels:
            return FrameSet.from_real(data, size, labels)
        frames = labelled_objects(data, objects) if objects else data.labelled()
        return FrameSet.from_real(frames, size, labels, objects=objects)
    if not isinstance(data, FrameSet):
        raise DataError(f"{role} frames: expected RealFrames or FrameSet, got {type(data)}")
    check_aspect(data.frame_size, size, role)
    if labels and data.positions is None:
        raise DataError(f"{role} frames: expected position labels, the FrameSet has none")
    if labels and tuple(data.objects) != objects:
        raise DataError(
            f"{role} frames: labels for objects {list(data.objects)}, the encoder locates "
            f"{list(objects)}: expected a FrameSet made for this encoder (as_frame_set)"
        )
    if data.images.shape[1:3] != (size[1], size[0]):
        images = resize_frames(data.images, *size).numpy()
        data = replace(data, images=images)
    return data if labels else replace(data, positions=None)


def check_aspect(frame_size: Sequence[int], input_size: Sequence[int], role: str) -> None:
    """Raise :class:`DataError` when ``frame_size`` (W, H) and ``input_size`` differ in shape."""
    fw, fh = int(frame_size[0]), int(frame_size[1])
    iw, ih = int(input_size[0]), int(input_size[1])
    if abs((fw / fh) / (iw / ih) - 1.0) > ASPECT_TOLERANCE:
        raise DataError(
            f"{role} frames are {fw}x{fh} (aspect {fw / fh:.3f}) but the encoder input is "
            f"{iw}x{ih} (aspect {iw / ih:.3f}): frames are stretched to the input, so the "
            "camera geometry learnt in simulation would not hold; crop the frames to the "
            "encoder's aspect ratio or pretrain at the camera's"
        )


class SimStream:
    """Random augmented batches of simulated frames ``(images, positions, uv)`` from shards.

    Args:
        data: dataset folder written by ``sim2real generate`` (or an opened dataset).
        size: encoder input ``(W, H)``.
        seed: augmentation seed.

    Raises:
        DataError: the dataset lacks ``image``/``position``/``uv``, or its frames have
            another aspect ratio than the encoder input.
    """

    def __init__(
        self,
        data: str | ShardedDataset,
        size: tuple[int, int],
        seed: int,
        objects: Sequence[str] = (),
    ) -> None:
        path = data.path if isinstance(data, ShardedDataset) else data
        self.objects = tuple(objects)
        if self.objects:  # a named encoder: per-target labels (positions (n, T, 3))
            self._named(path, size, seed)
            return
        ds = ShardedDataset(path, fields=["image", "position", "uv"], verify="lazy")
        h, w = ds.fields["image"]["shape"][:2]
        check_aspect((w, h), size, f"simulated ({ds.path})")
        if len(ds) == 0:
            raise DataError(f"simulated dataset {ds.path} is empty")
        self.path = ds.path
        self.samples = SimSamples(ds, np.arange(len(ds)), size, augment=True, seed=seed)

    def __len__(self) -> int:
        return len(self.samples)

    def _named(self, path: Any, size: tuple[int, int], seed: int) -> None:
        from sim2real.perception.targets import resolve_targets
        from sim2real.perception.targets_data import TargetSamples, target_fields

        probe = ShardedDataset(path, verify=False)
        targets = resolve_targets(probe.manifest, probe.fields, list(self.objects))
        ds = ShardedDataset(path, fields=["image", *target_fields(targets)], verify="lazy")
        h, w = ds.fields["image"]["shape"][:2]
        check_aspect((w, h), size, f"simulated ({ds.path})")
        if len(ds) == 0:
            raise DataError(f"simulated dataset {ds.path} is empty")
        self.path = ds.path
        self.samples = TargetSamples(  # type: ignore[assignment]
            ds, np.arange(len(ds)), size, targets, augment=True, seed=seed
        )

    def batch(self, n: int, rng: np.random.Generator, step: int) -> tuple[torch.Tensor, ...]:
        """``n`` random samples: uint8 ``(n, H, W, 3)``, ``(n, 3)`` metres, ``(n, 2)`` uv;
        for ``objects``: ``(n, T, 3)`` and ``(n, T, 2)``, NaN where an object is absent."""
        items = [self.samples[(step, int(i))] for i in rng.integers(0, len(self), n)]
        parts = [torch.stack(p) for p in zip(*items, strict=True)]
        if not self.objects:
            return tuple(parts)
        images, pos, uv, present = parts[0], parts[1], parts[2], parts[6]
        absent = present < 0.5
        pos, uv = pos.clone(), uv.clone()
        pos[absent], uv[absent] = float("nan"), float("nan")
        return images, pos, uv


def keypoint_targets(card: dict, positions: np.ndarray) -> np.ndarray | None:
    """Normalised image coordinates of 3-D ``positions`` through the card's camera.

    Returns ``None`` when the card has no camera (the keypoint head then gets no real loss).

    Shape:
        - positions: ``(N, 3)``; returns ``(N, 2)`` in ``[-1, 1]`` (continuous pixels).
    """
    if not card.get("camera"):
        return None
    cam = geometry.PlaneCamera.from_card(card["camera"])
    uv = cam.project(np.asarray(positions, dtype=np.float64))
    return (2.0 * uv / np.array([cam.width, cam.height]) - 1.0).astype(np.float32)


def trainable_heads(encoder: Encoder) -> list[str]:
    """Heads the fine-tuning loss reaches: ``position``, and ``keypoint`` with a camera
    (a named encoder's per target: :func:`~sim2real.transfer.objects.trainable_object_heads`)."""
    if encoder_objects(encoder):
        return trainable_object_heads(encoder)
    names = [geometry.POSITION_HEAD] if geometry.POSITION_HEAD in encoder.heads else []
    if geometry.KEYPOINT_HEAD in encoder.heads and encoder.card.get("camera"):
        names.append(geometry.KEYPOINT_HEAD)
    return names


def task_loss(
    encoder: Encoder, fmap: torch.Tensor, position: torch.Tensor, uv: torch.Tensor | None
) -> torch.Tensor:
    """The pretraining loss on a feature map: position (smooth L1) + keypoint (L1).

    ``uv`` is in normalised coordinates of the whole frame; the keypoint head works in the
    network input's (the crop's), so the target is mapped there.

    Shape:
        - fmap: ``(B, C, h, w)``; position: ``(B, 3)`` metres; uv: ``(B, 2)`` or ``None``
          (a named encoder's: ``(B, T, 3)``, ``(B, T, 2)``, :func:`~sim2real.transfer.
          objects.object_loss`).
    """
    if encoder_objects(encoder):
        return object_loss(encoder, fmap, position, uv)
    losses = []
    if geometry.POSITION_HEAD in encoder.heads:
        head = encoder.heads[geometry.POSITION_HEAD]
        pred = head.forward_normalised(fmap).float()
        losses.append(F.smooth_l1_loss(pred, head.normalise(position)))
    if geometry.KEYPOINT_HEAD in encoder.heads and uv is not None:
        pred = encoder.heads[geometry.KEYPOINT_HEAD](fmap)[:, 0].float()
        losses.append(F.l1_loss(pred, encoder.preprocessing.to_input(uv)))
    assert losses, "no head to train; checked by the caller"
    return torch.stack(losses).sum()


@dataclass
class FitData:
    """What one fit trains on.

    Attributes:
        labelled: labelled real frames (``None``: none).
        unlabelled: unlabelled real frames (DANN's real domain).
        sim: simulated batches (DANN's source domain, or mixed into labelled strategies).
    """

    labelled: FrameSet | None = None
    unlabelled: FrameSet | None = None
    sim: SimStream | None = None


class _Augment:
    def __init__(self, enabled: bool) -> None:
        self.transform = photometric_augmentation() if enabled else None

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        if self.transform is None:
            return torch.from_numpy(np.ascontiguousarray(images))
        out = np.empty_like(images)
        for i, image in enumerate(images):
            self.transform.set_random_seed(int(rng.integers(2**31)))
            out[i] = self.transform(image=image)["image"]
        return torch.from_numpy(out)


def set_train_mode(encoder: Encoder, bn_mode: str) -> None:
    """Train mode; frozen blocks stay in eval, and every BatchNorm too when ``bn_mode='frozen'``."""
    encoder.train()
    if bn_mode == "frozen":
        for _, layer in batchnorm_layers(encoder):
            layer.eval()


def held_out_errors(encoder: Encoder, frames: FrameSet) -> np.ndarray:
    """Euclidean xy error in cm of each labelled frame, by the card's position route (the
    absolute ``keypoint_plane`` one when the card's needs the gripper's position, which
    labelled frames do not carry). Frames of several objects: each frame's mean over the
    objects it labels (:func:`~sim2real.transfer.objects.frame_errors`)."""
    assert frames.positions is not None
    if frames.objects:
        return frame_errors(object_errors(encoder, frames.images, frames.positions, frames.objects))
    route = "keypoint_plane" if encoder.card.get("position_route") in geometry.EE_ROUTES else None
    pred = geometry.predict_positions(encoder, frames.images, route=route)
    return geometry.position_errors_cm(pred, frames.positions)["xy"]


def fit(
    encoder: Encoder,
    cfg: FinetuneConfig,
    data: FitData,
    epochs: int,
    *,
    lr: float,
    dann: bool,
    seed: int,
    held_out: FrameSet | None = None,
    desc: str = "finetune",
    object_curve: list[dict[str, np.ndarray]] | None = None,
) -> list[np.ndarray]:
    """Train ``encoder`` in place for ``epochs * cfg.steps_per_epoch`` steps.

    Args:
        encoder: with its trainable blocks already chosen (``freeze_blocks``).
        cfg: the fine-tuning settings.
        data: the frames; ``labelled`` and/or ``sim`` provide the task loss.
        epochs: epochs to run now; the DANN schedule runs over ``cfg.epochs``.
        lr: the heads' learning rate (blocks get ``lr * cfg.lr_decay ** (n - i)``).
        dann: add the domain-adversarial loss (needs ``data.sim`` and ``data.unlabelled``).
        seed: batches, augmentation, dropout and the domain classifier's initialisation.
        held_out: labelled frames scored before training and after every epoch.
        desc: progress-bar label.
            object_curve: filled, for ``held_out`` frames of several objects, with the
            per-object errors (:func:`~sim2real.transfer.objects.object_errors`) per epoch.

    Returns:
        ``held_out`` xy errors in cm, ``(N_held_out,)`` per epoch from 0 to ``epochs``
        (empty without ``held_out``). The encoder ends in eval mode.
    """
    device = encoder.device
    curve: list[np.ndarray] = []

    def score() -> None:
        assert held_out is not None
        if held_out.objects and object_curve is not None:
            assert held_out.positions is not None
            errors = object_errors(encoder, held_out.images, held_out.positions, held_out.objects)
            object_curve.append(errors)
            curve.append(frame_errors(errors))
        else:
            curve.append(held_out_errors(encoder, held_out))

    if held_out is not None:
        score()
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        fitter = _Fitter(encoder, cfg, data, lr=lr, dann=dann, seed=seed)
        bar = tqdm(
            total=epochs * cfg.steps_per_epoch, desc=desc, disable=not cfg.progress, leave=False
        )
        with bar:
            for epoch in range(epochs):
                fitter.train_mode()
                for s in range(cfg.steps_per_epoch):
                    fitter.step(epoch * cfg.steps_per_epoch + s)
                    bar.update(1)
                if fitter.domain_accuracy is not None:
                    bar.set_postfix(domain_acc=f"{fitter.domain_accuracy:.2f}")
                if held_out is not None:
                    score()
    encoder.eval()
    return curve


class _Fitter:
    """One optimiser and the per-step loss of :func:`fit`."""

    def __init__(
        self, encoder: Encoder, cfg: FinetuneConfig, data: FitData, lr: float, dann: bool, seed: int
    ) -> None:
        self.encoder, self.cfg, self.data = encoder, cfg, data
        self.device = encoder.device
        self.rng = np.random.default_rng(seed)
        self.augment = _Augment(cfg.augment)
        labelled = data.labelled if data.labelled is not None and len(data.labelled) else None
        self.labelled = labelled
        self.kp = keypoint_targets(encoder.card, labelled.positions) if labelled else None
        self.sim_batch = cfg.sim_batch_size or (cfg.batch_size if dann else 0)
        if (dann or self.sim_batch) and data.sim is None:
            raise DataError("simulated frames are needed for dann / sim mixing; none were given")
        if dann and (data.unlabelled is None or len(data.unlabelled) == 0):
            raise DataError("dann needs unlabelled real frames; none were given")
        if labelled is None and not self.sim_batch:
            raise DataError("nothing to train on: no labelled real frames and no simulated frames")
        groups = encoder.param_groups(lr, decay=cfg.lr_decay)
        self.clf: DomainClassifier | None = None
        if dann:
            self.clf = DomainClassifier(encoder.feature_dim, cfg.dann_hidden).to(self.device)
            groups.append({"name": "domain", "params": list(self.clf.parameters()), "lr": lr})
        self.optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.weight_decay)
        self.params = [p for g in groups for p in g["params"]]
        self.backbone_grad = any(p.requires_grad for p in encoder.backbone.parameters())
        self.total = max(cfg.epochs * cfg.steps_per_epoch, 1)
        self.domain_accuracy: float | None = None

    def train_mode(self) -> None:
        set_train_mode(self.encoder, self.cfg.bn_mode)
        if self.clf is not None:
            self.clf.train()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.encoder.preprocessing.normalise(images.to(self.device))
        with torch.set_grad_enabled(self.backbone_grad):
            return self.encoder.backbone(x)

    def step(self, step: int) -> None:
        enc, cfg, rng = self.encoder, self.cfg, self.rng
        losses, real_feats, sim_feats = [], [], None
        if self.labelled is not None:
            assert self.labelled.positions is not None
            idx = rng.integers(0, len(self.labelled), cfg.batch_size)
            fmap = self.features(self.augment(self.labelled.images[idx], rng))
            pos = torch.as_tensor(self.labelled.positions[idx], dtype=torch.float32)
            uv = torch.as_tensor(self.kp[idx]).to(self.device) if self.kp is not None else None
            losses.append(task_loss(enc, fmap, pos.to(self.device), uv))
            real_feats.append(fmap.mean(dim=(2, 3)))
        if self.sim_batch:
            assert self.data.sim is not None
            images, pos, uv = self.data.sim.batch(self.sim_batch, rng, step)
            fmap = self.features(images)
            sim_loss = task_loss(enc, fmap, pos.to(self.device), uv.to(self.device))
            losses.append(cfg.sim_weight * sim_loss)
            sim_feats = fmap.mean(dim=(2, 3))
        if self.clf is not None and sim_feats is not None:
            assert self.data.unlabelled is not None
            idx = rng.integers(0, len(self.data.unlabelled), cfg.batch_size)
            real_feats.append(
                self.features(self.augment(self.data.unlabelled.images[idx], rng)).mean((2, 3))
            )
            self.clf.reverse.lambd = dann_lambda(step / self.total, cfg.dann_gamma)
            domain_loss, self.domain_accuracy = self.clf.loss(sim_feats, torch.cat(real_feats))
            losses.append(cfg.dann_weight * domain_loss)
        loss = torch.stack(losses).sum()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"fine-tuning loss is {float(loss)} at step {step}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 5.0)
        self.optimizer.step()
