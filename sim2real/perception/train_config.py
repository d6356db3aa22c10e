"""Settings of :func:`sim2real.perception.train.pretrain` (the card's ``training`` record)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sim2real.errors import ConfigError
from sim2real.perception import geometry
from sim2real.perception.heads import POSITION_POOLS

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
    "val_keypoint_relative_near_xy_cm",
    "images_per_s", "train_seconds",
)  # fmt: skip


@dataclass(frozen=True)
class PretrainConfig:
    """The settings of one pretraining run (the card's ``training``)."""

    data: str
    backbone: str = "efficientnet_lite0"
    head: str = "keypoint+position"
    feature_stride: int | None = None
    dilated: bool = False
    position_pool: str = "mean"
    position_target: str = "cube"
    heatmap_weight: float = 0.0
    heatmap_sigma: float = 1.0
    shift_px: int = 0
    keypoint_window: int = 3
    mixstyle: float = 0.0
    mixstyle_alpha: float = 0.1
    mixstyle_blocks: int = 3
    randconv: float = 0.0
    exposure: float = 0.0
    epochs: int = 10
    size: tuple[int, int] | None = None
    crop: tuple[int, int, int, int] | None = None
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.03
    freeze_blocks: int = 0
    val_fraction: float = 0.1
    seed: int = 0
    max_minutes: float | None = None
    pretrained: bool = True
    init: str | None = None

    def __post_init__(self) -> None:
        if self.position_pool not in POSITION_POOLS:
            raise ConfigError(
                f"position_pool={self.position_pool!r}: expected one of {list(POSITION_POOLS)}"
            )
        if not self.heatmap_weight >= 0:
            raise ConfigError(f"heatmap_weight={self.heatmap_weight!r}: expected a number >= 0")
        if not self.heatmap_sigma > 0:
            raise ConfigError(f"heatmap_sigma={self.heatmap_sigma!r}: expected a number > 0")
        if int(self.shift_px) < 0:
            raise ConfigError(f"shift_px={self.shift_px!r}: expected an integer >= 0")
        if int(self.keypoint_window) < 0:
            raise ConfigError(
                f"keypoint_window={self.keypoint_window!r}: expected an integer >= 0 "
                "(0: soft-argmax over the whole map)"
            )
        if not 0.0 <= self.mixstyle <= 1.0:
            raise ConfigError(f"mixstyle={self.mixstyle!r}: expected a probability in [0, 1]")
        if not self.mixstyle_alpha > 0:
            raise ConfigError(f"mixstyle_alpha={self.mixstyle_alpha!r}: expected a number > 0")
        if not 0.0 <= self.randconv <= 1.0:
            raise ConfigError(f"randconv={self.randconv!r}: expected a probability in [0, 1]")
        if not 0.0 <= self.exposure <= 3.0:
            raise ConfigError(f"exposure={self.exposure!r}: expected an extra gain in [0, 3]")
        if int(self.mixstyle_blocks) < 1:
            raise ConfigError(f"mixstyle_blocks={self.mixstyle_blocks!r}: expected an integer >= 1")
        if self.crop is not None:
            crop = tuple(int(c) for c in self.crop)
            if len(crop) != 4:
                raise ConfigError(f"crop={self.crop!r}: expected 4 integers x0, y0, x1, y1")
            object.__setattr__(self, "crop", crop)  # a JSON list (resume) compares equal
        if self.head not in HEAD_CHOICES:
            raise ConfigError(f"head={self.head!r}: expected one of {list(HEAD_CHOICES)}")
        if self.position_target not in POSITION_TARGETS:
            raise ConfigError(
                f"position_target={self.position_target!r}: expected one of "
                f"{list(POSITION_TARGETS)}"
            )
        for name in ("heatmap_weight", "shift_px"):
            if getattr(self, name) and "keypoint" not in self.head:
                raise ConfigError(
                    f"{name}={getattr(self, name)!r} acts on the keypoint head, but "
                    f"head={self.head!r}: expected 'keypoint' or 'keypoint+position'"
                )
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r}: expected an integer >= 1")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr!r}: expected a positive number")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"max_minutes={self.max_minutes!r}: expected > 0 or None")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction={self.val_fraction!r}: expected in (0, 1)")

    @property
    def relative(self) -> bool:
        """Whether the routes locate the cube relative to the gripper (``ee_relative``)."""
        return self.position_target == "ee_relative"

    def heads(self) -> dict[str, dict[str, Any]]:
        """Head specs for :class:`Encoder`."""
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
        return specs

    def resumable_with(self, other: PretrainConfig) -> list[str]:
        """Names of the settings that must match to resume but differ."""
        free = {"epochs", "max_minutes"}
        mine, theirs = asdict(self), asdict(other)
        return [k for k in mine if k not in free and mine[k] != theirs[k]]
