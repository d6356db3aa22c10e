"""Settings of :func:`sim2real.perception.train.pretrain` (the card's ``training`` record).

:class:`PretrainConfig` is declared once and read by :func:`~sim2real.perception.train.
pretrain`, the CLI's ``sim2real pretrain`` (flags and ``--set KEY=VALUE``) and the pipeline's
``pretrain:`` section; the card's ``training`` record is its ``model_dump()``.

Example:
    >>> cfg = PretrainConfig(epochs=3, head="keypoint")
    >>> sorted(cfg.heads())
    ['keypoint']
    >>> PretrainConfig(mixstyle=1.5)
    Traceback (most recent call last):
    ...
    sim2real.errors.ConfigError: mixstyle=1.5: expected a number <= 1.0
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from sim2real.errors import ConfigError
from sim2real.settings import Settings

DEFAULT_STRIDES = {"efficientnet_lite0": 16, "resnet18": 16}
HEAD_CHOICES = ("position", "keypoint", "keypoint+position")
#: What the position routes locate: the cube centre (robot-base frame), or the cube centre
#: relative to the end effector (robot-base axes), which needs ``ee_position`` labels
#: (``sim2real generate --reach-poses``) and the gripper's position at inference. With
#: ``ee_relative`` the position head regresses the offset and the keypoint head finds two
#: points, the cube and the gripper (route ``keypoint_relative``).
POSITION_TARGETS = ("cube", "ee_relative")
METRIC_FIELDS = (
    "epoch", "step", "lr", "train_loss", "val_loss", "val_kp_px", "val_kp_gripper_px",
    "val_position_head_xy_cm", "val_position_head_xyz_cm",
    "val_keypoint_plane_xy_cm", "val_keypoint_plane_xyz_cm",
    "val_keypoint_relative_xy_cm", "val_keypoint_relative_xyz_cm",
    "val_position_head_near_xy_cm", "val_keypoint_plane_near_xy_cm",
    "val_keypoint_relative_near_xy_cm", "val_visible_err",
    "images_per_s", "train_seconds",
)  # fmt: skip


class PretrainConfig(Settings):
    """The settings of one pretraining run (the card's ``training``).

    ``feature_stride=None`` and ``crop="table"`` are resolved by :func:`~sim2real.perception.
    train.pretrain` (per backbone, from the dataset's scene) before training and in the card.

    Attributes:
        data: the dataset folder (``pretrain`` sets it from its ``data`` argument, resolved).
        backbone: backbone registry name.
        head: ``"position"``, ``"keypoint"`` or ``"keypoint+position"``.
        epochs: passes over the training split (upper bound when ``max_minutes`` is set).
        size: frame size ``(W, H)`` images are resized to; default: the dataset's image size.
        crop: region of interest ``(x0, y0, x1, y1)`` in pixels of the ``size`` frame (x1, y1
            exclusive) that the network sees, e.g. the table; stored in the card and applied
            to every frame at inference (:class:`~sim2real.perception.preprocessing.
            Preprocessing`). Keypoint labels and outputs stay whole-frame coordinates.
            ``"table"``: the scene's table as the nominal camera sees it
            (:func:`~sim2real.perception.geometry.table_crop`).
        batch_size: images per step.
        lr: peak AdamW learning rate (heads; backbone blocks get the same).
        weight_decay: AdamW weight decay.
        warmup_fraction: linear warm-up of the learning rate over this fraction of the
            training progress, then a cosine decay to 0.
        freeze_blocks: freeze the first N backbone blocks (faster on CPU).
        val_fraction: held-out fraction of the dataset (``ShardedDataset.split``).
        seed: the only source of randomness.
        max_minutes: wall-clock training budget; the cosine schedule then follows the
            elapsed fraction of the budget and training stops when it is spent.
        feature_stride: backbone output stride; ``None``: 16 for ``efficientnet_lite0`` and
            ``resnet18`` (a 8x6 map at 128x96 for the keypoint), else the backbone's default.
        dilated: ``efficientnet_lite0`` at ``feature_stride=8`` keeps its 112-channel stage,
            dilated (see :func:`~sim2real.perception.backbones.efficientnet_lite0`).
        position_pool: the position head's pooling, ``"mean"`` or ``"mean+points"`` (adds
            learnt feature points, see :class:`~sim2real.perception.heads.PositionHead`).
        position_target: ``"cube"`` (the cube centre, robot-base frame) or ``"ee_relative"``
            (cube centre minus the end effector's position: the card's position frame is then
            ``end_effector``, and a position needs the gripper's position at inference; the
            camera's pose cancels out of the offset, which is what a reaching policy needs).
            Needs ``head="position"`` and a dataset with ``ee_position`` labels.
        heatmap_weight: weight of the keypoint heatmap term (:func:`~sim2real.perception.heads.
            heatmap_kl`, a Gaussian of ``heatmap_sigma`` cells at the label) added to the L1 on
            the soft-argmax; 0 trains the keypoint by the L1 alone.
        heatmap_sigma: that Gaussian's standard deviation, in feature-map cells.
        shift_px: random translation of the training images by up to this many pixels (at
            network size), keypoint label moved along (:class:`~sim2real.perception.
            train_data.SimSamples`); the position label is not, so it is for the keypoint route.
        keypoint_window: the keypoint head's decoding in eval mode (validation, the card):
            soft-argmax over this many cells around the heatmap's peak, 0 over the whole map
            (:func:`~sim2real.perception.heads.spatial_soft_argmax`). Training always uses
            the whole map.
        mixstyle: probability per step and block that the feature statistics after each of
            the first ``mixstyle_blocks`` backbone blocks are mixed across the batch
            (:func:`~sim2real.perception.style.mix_style`, Beta(``mixstyle_alpha``)
            weights); training only, inference is unchanged. 0: off.
        mixstyle_alpha: the Beta distribution's concentration.
        mixstyle_blocks: how many leading backbone blocks get MixStyle after them.
        randconv: probability per step that the training images pass through a random
            convolution (:func:`~sim2real.perception.style.rand_conv`); training only. 0: off.
        exposure: half of the training images get a gain of up to ``1 + exposure``, clipped
            (overexposure; :func:`~sim2real.perception.train_data.photometric_augmentation`).
        visibility_weight: weight of the visibility head's loss, binary cross-entropy on
            the target's visible fraction (:mod:`sim2real.perception.scores`); > 0 adds the
            head (named ``visibility``), and then samples where no part of the target is
            seen leave the position and keypoint losses, and the validation position errors
            count only samples with a visible fraction >= 0.5. 0: no visibility head.
        visibility_object: the object whose visibility is learnt: the dataset's
            ``objects.<NAME>.visible_fraction``, or, in datasets without per-object labels,
            an estimate from the cube's ``uv``, ``visible_pixels`` and ``box``
            (:func:`~sim2real.perception.train_scores.derived_visible_fraction`).
        targets: the objects the encoder locates, by instance name (``"mug,duck"`` or a
            list): one keypoint map, one position and one visibility output per target on the
            shared backbone, plus a yaw output for targets whose object declares a symmetry
            (and whose dataset has ``objects.NAME.quaternion``): heads ``NAME/keypoint``,
            ``NAME/position``, ``NAME/visibility``, ``NAME/yaw``, and ``Encoder.predict``
            keyed by object name (:mod:`sim2real.perception.targets`). ``None``: the scene's
            ``role: target`` objects; when that is one object, the single-target heads
            ``keypoint``, ``position``, ``visibility`` of earlier versions (a legacy cube
            dataset: ``cube``).
        yaw_weight: weight of the yaw loss (:func:`~sim2real.perception.orientation.
            yaw_loss`) of named targets; 0: no yaw heads.
        ood_samples: at the end of the run, the feature statistics of up to this many
            training frames (and the distance reference of as many validation frames) go
            into the card (``ood``, ``scores``) for the out-of-distribution score and the
            confidence of :meth:`~sim2real.perception.encoder.Encoder.predict`. 0: none.
        pretrained: start from the backbone's ImageNet weights.
        init: start from the weights of this saved encoder folder instead (fine-tuning a
            trained encoder on new or more data, with a fresh optimiser and schedule); its
            architecture (backbone, heads, input size, crop) must be the one these settings
            build. Unlike ``resume``, the data and the schedule may differ.
    """

    settings_name: ClassVar[str] = "pretraining settings"

    data: str | None = Field(None, description="dataset folder (set by pretrain)")
    backbone: str = Field(
        "efficientnet_lite0", description="efficientnet_lite0 | resnet18 | a small CNN"
    )
    head: Literal["position", "keypoint", "keypoint+position"] = Field(
        "keypoint+position", description="the heads trained"
    )
    feature_stride: int | None = Field(
        None, ge=1, description="backbone output stride; None: 16 for lite0/resnet18"
    )
    dilated: bool = Field(False, description="lite0 stride 8 by dilation (112 channels)")
    position_pool: Literal["mean", "mean+points"] = Field(
        "mean", description="position head input: mean | mean+points"
    )
    position_target: Literal["cube", "ee_relative"] = Field(
        "cube", description="what the routes locate: the cube, or the cube minus the gripper"
    )
    heatmap_weight: float = Field(0.0, ge=0.0, description="keypoint heatmap KL term weight")
    heatmap_sigma: float = Field(1.0, gt=0.0, description="that Gaussian's sigma, in cells")
    shift_px: int = Field(0, ge=0, description="random image translation (keypoint route)")
    keypoint_window: int = Field(
        3, ge=0, description="eval-time soft-argmax window around the peak, cells (0: whole map)"
    )
    mixstyle: float = Field(0.0, ge=0.0, le=1.0, description="MixStyle probability per step")
    mixstyle_alpha: float = Field(0.1, gt=0.0, description="MixStyle Beta concentration")
    mixstyle_blocks: int = Field(3, ge=1, description="leading blocks with MixStyle after them")
    randconv: float = Field(0.0, ge=0.0, le=1.0, description="RandConv probability per step")
    exposure: float = Field(0.0, ge=0.0, le=3.0, description="overexposure gain up to 1+E")
    epochs: int = Field(10, ge=1, description="passes over the training split")
    size: tuple[int, int] | None = Field(None, description="(W, H); None: the dataset's")
    crop: tuple[int, int, int, int] | Literal["table"] | None = Field(
        None, description="x0, y0, x1, y1 region of interest in px of the size frame, or 'table'"
    )
    batch_size: int = Field(64, ge=1, description="images per step (per process)")
    lr: float = Field(1e-3, gt=0.0, description="peak AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0.0, description="AdamW weight decay")
    warmup_fraction: float = Field(
        0.03, ge=0.0, lt=1.0, description="linear warm-up, fraction of the training progress"
    )
    freeze_blocks: int = Field(0, ge=0, description="freeze the first N backbone blocks")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="held-out fraction")
    seed: int = Field(0, description="training seed, the only source of randomness")
    max_minutes: float | None = Field(None, gt=0.0, description="wall-clock budget in minutes")
    visibility_weight: float = Field(
        0.0, ge=0.0, description="visibility head BCE weight (> 0 adds the head)"
    )
    visibility_object: str = Field("cube", description="the object whose visibility is learnt")
    targets: tuple[str, ...] | None = Field(
        None, description="objects to locate, e.g. mug,duck (default: the scene's targets)"
    )
    yaw_weight: float = Field(1.0, ge=0.0, description="yaw loss weight of named targets")
    ood_samples: int = Field(
        512, ge=0, description="frames for the card's feature statistics (0: none)"
    )
    pretrained: bool = Field(True, description="start from the backbone's ImageNet weights")
    init: str | None = Field(
        None,
        description="start from this saved encoder's weights (same architecture settings) with "
        "a fresh optimiser and schedule: fine-tune it on new or more data",
    )

    @field_validator("data", "init", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("targets", mode="before")
    @classmethod
    def _targets(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",")]
        if isinstance(value, list | tuple):
            names = [str(v).strip() for v in value]
            if not names or any(not n for n in names) or len(set(names)) != len(names):
                raise ConfigError(
                    f"targets={value!r}: expected distinct, non-empty object names, e.g. mug,duck"
                )
            return tuple(names)
        return value

    @field_validator("crop", mode="before")
    @classmethod
    def _crop(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "table":
            raise ConfigError(f"crop={value!r}: expected (x0, y0, x1, y1) pixels, 'table' or None")
        if isinstance(value, list | tuple) and len(value) != 4:
            raise ConfigError(f"crop={value!r}: expected 4 integers x0, y0, x1, y1")
        return value

    @model_validator(mode="after")
    def _keypoint_settings(self) -> PretrainConfig:
        for name in ("heatmap_weight", "shift_px"):
            if getattr(self, name) and "keypoint" not in self.head:
                raise ConfigError(
                    f"{name}={getattr(self, name)!r} acts on the keypoint head, but "
                    f"head={self.head!r}: expected 'keypoint' or 'keypoint+position'"
                )
        return self

    @property
    def relative(self) -> bool:
        """Whether the routes locate the cube relative to the gripper (``ee_relative``)."""
        return self.position_target == "ee_relative"

    def heads(self) -> dict[str, dict[str, Any]]:
        """Head specs for :class:`Encoder`."""
        from sim2real.perception import geometry  # numpy; the CLI imports this module early

        specs: dict[str, dict[str, Any]] = {}
        if "keypoint" in self.head:
            specs[geometry.KEYPOINT_HEAD] = {
                "type": "keypoints",
                "names": ["cube", "gripper"] if self.relative else ["cube"],
                "hidden": 64,
                "window": self.keypoint_window,
            }
        if "position" in self.head:
            frame = "end_effector" if self.position_target == "ee_relative" else "robot_base"
            specs[geometry.POSITION_HEAD] = {"type": "position", "frame": frame}
            if self.position_pool != "mean":
                specs[geometry.POSITION_HEAD]["pool"] = self.position_pool
        if self.visibility_weight > 0:
            specs["visibility"] = {"type": "visibility", "object": self.visibility_object}
        return specs

    def resumable_with(self, other: PretrainConfig) -> list[str]:
        """Names of the settings that must match to resume but differ."""
        free = {"epochs", "max_minutes", "ood_samples"}
        mine, theirs = self.model_dump(), other.model_dump()
        return [k for k in mine if k not in free and mine[k] != theirs[k]]
