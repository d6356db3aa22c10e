"""Pretraining with targets by name: one shared backbone, per-target heads (hard parameter
sharing), the loss summed over targets, validation per target and as their mean.

:func:`named_run` is what :func:`~sim2real.perception.train.pretrain` calls: it decides the
layout (:func:`uses_named_layout`), and for a named one builds the encoder
(:func:`build_named_encoder`) and the :class:`NamedTrainer`. Positions are scored by the
position heads (route ``position_head``); keypoint errors in pixels, yaw errors in degrees
modulo each target's symmetry (:func:`~sim2real.perception.orientation.yaw_error_deg`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from sim2real.data.shards import ShardedDataset
from sim2real.errors import ConfigError
from sim2real.perception import geometry
from sim2real.perception.device import autocast
from sim2real.perception.encoder import Encoder
from sim2real.perception.heads import heatmap_kl
from sim2real.perception.orientation import yaw_error_deg, yaw_loss
from sim2real.perception.targets import (
    NAMED_LAYOUT,
    Target,
    head_name,
    resolve_targets,
    target_head_specs,
    targets_card,
)
from sim2real.perception.targets_data import TargetSamples, target_fields
from sim2real.perception.train_config import METRIC_FIELDS, PretrainConfig
from sim2real.perception.train_data import epoch_loader
from sim2real.perception.train_model import fill_card, new_encoder
from sim2real.perception.trainer import Trainer

logger = logging.getLogger(__name__)

#: Mean-over-targets metrics of a named run (beside :data:`METRIC_FIELDS`'s).
MEAN_FIELDS = ("val_yaw_deg",)
PER_TARGET = ("kp_px", "position_head_xy_cm", "position_head_xyz_cm", "visible_err", "yaw_deg")


def uses_named_layout(cfg: PretrainConfig, targets: list[Target]) -> bool:
    """Per-target heads when targets are named (``cfg.targets``) or the scene has several."""
    return cfg.targets is not None or len(targets) > 1


def named_run(cfg: PretrainConfig) -> tuple[list[Target], ShardedDataset] | None:
    """The targets and the dataset (with their fields) of a named run, or None when ``cfg``
    trains the single-target heads.

    Raises:
        ConfigError: settings a named run does not support (``ee_relative``, ``shift_px``).
    """
    assert cfg.data is not None
    probe = ShardedDataset(cfg.data, verify=False)
    targets = resolve_targets(probe.manifest, probe.fields, cfg.targets)
    if not uses_named_layout(cfg, targets):
        return None
    for name, bad in (("position_target", cfg.relative), ("shift_px", cfg.shift_px > 0)):
        if bad:
            raise ConfigError(
                f"{name}={getattr(cfg, name)!r} with targets {[t.name for t in targets]}: "
                "per-target heads locate each object in the scene's frame without image "
                f"shifts; expected {name} at its default"
            )
    ds = ShardedDataset(cfg.data, fields=["image", *target_fields(targets)], verify="lazy")
    return targets, ds


def build_named_encoder(
    cfg: PretrainConfig,
    ds: ShardedDataset,
    targets: list[Target],
    train_idx: np.ndarray,
    size: tuple[int, int],
) -> Encoder:
    """The per-target encoder of ``cfg`` (see :func:`~sim2real.perception.targets.
    target_head_specs`), position statistics per target from the training split, and the
    card's ``targets`` and ``target_layout``."""
    specs = target_head_specs(
        targets, cfg.head, window=cfg.keypoint_window, pool=cfg.position_pool,
        visibility=cfg.visibility_weight > 0, yaw=cfg.yaw_weight > 0,
    )  # fmt: skip
    encoder = new_encoder(cfg, specs, *size)
    fields = [t.fields["position"] for t in targets]
    labels = ShardedDataset(ds.path, fields=sorted(set(fields)), verify=False)
    rows = [labels[int(i)] for i in train_idx]
    for t in targets:
        name = head_name(t.name, "position")
        if name not in encoder.heads:
            continue
        pos = np.stack([np.asarray(r[t.fields["position"]], dtype=np.float64) for r in rows])
        pos = pos[np.isfinite(pos).all(axis=1)]
        if len(pos) == 0:
            raise ConfigError(f"target {t.name!r}: no training sample has a position for it")
        std = pos.std(axis=0) if len(pos) > 1 else np.ones(3)
        encoder.heads[name].set_target_stats(pos.mean(axis=0), std)
    fill_card(encoder, cfg, ds, train_idx, *size)
    card = encoder.card
    card["target_layout"] = NAMED_LAYOUT
    card["targets"] = targets_card(targets, encoder.heads)
    card["target_names"] = [t.name for t in targets]
    card["position_frame"] = targets[0].frame if targets else "robot_base"
    return encoder


class NamedTrainer(Trainer):
    """:class:`~sim2real.perception.trainer.Trainer` for per-target heads: samples of
    :class:`~sim2real.perception.targets_data.TargetSamples`, the loss summed over targets,
    validation per target (``val_NAME_*``) and as the mean over targets."""

    def __init__(self, cfg: PretrainConfig, encoder: Encoder, ds: ShardedDataset,
                 split: tuple[np.ndarray, np.ndarray], root: Any, *, targets: list[Target],
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(cfg, encoder, ds, split, root, **kwargs)
        self.targets = targets
        size = (encoder.preprocessing.width, encoder.preprocessing.height)
        common = {"targets": targets, "seed": cfg.seed}
        self.train_set = TargetSamples(  # type: ignore[assignment]
            ds, split[0], size, augment=True, exposure=cfg.exposure, **common
        )
        self.val_set = TargetSamples(ds, split[1], size, augment=False, **common)  # type: ignore[assignment]

    def metric_fields(self) -> tuple[str, ...]:
        extra = [f"val_{t.name}_{k}" for t in self.targets for k in PER_TARGET]
        return (*METRIC_FIELDS[:-2], *MEAN_FIELDS, *extra, *METRIC_FIELDS[-2:])

    def loss(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Summed per-target losses and the outputs ``{head name: (B, ...)}``."""
        enc, cfg = self.encoder, self.cfg
        images, position, uv, visible, yaw, yaw_ok, present = (
            t.to(self.device, non_blocking=True) for t in batch[:7]
        )
        x = enc.preprocessing.normalise(images)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        losses, outputs = [], {}
        with autocast(self.device):
            fmap = self.backbone_features(x)
            for i, t in enumerate(self.targets):
                mask = present[:, i]
                heads = {k: head_name(t.name, k) for k in ("keypoint", "position", "visibility")}
                if heads["visibility"] in enc.heads:
                    target = self.visibility_target(visible[:, i], uv[:, i]) * mask
                    logits = enc.heads[heads["visibility"]](fmap).float()
                    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
                    losses.append(cfg.visibility_weight * bce)
                    outputs[heads["visibility"]] = torch.sigmoid(logits)
                    mask = mask * (target > 0).float()
                if heads["position"] in enc.heads:
                    head = enc.heads[heads["position"]]
                    pred = head.forward_normalised(fmap).float()
                    per = torch.nn.functional.smooth_l1_loss(
                        pred, head.normalise(position[:, i]), reduction="none"
                    ).mean(dim=1)
                    losses.append((per * mask).sum() / mask.sum().clamp(min=1.0))
                    outputs[heads["position"]] = pred * head.target_std + head.target_mean
                if heads["keypoint"] in enc.heads:
                    outputs[heads["keypoint"]] = self._keypoint(
                        fmap, heads["keypoint"], uv[:, i], mask, losses
                    )
                name = head_name(t.name, "yaw")
                if name in enc.heads:
                    pred = enc.heads[name](fmap).float()
                    keep = yaw_ok[:, i] * mask
                    per = yaw_loss(pred, yaw[:, i].float(), t.order, reduction="none")
                    losses.append(cfg.yaw_weight * (per * keep).sum() / keep.sum().clamp(min=1.0))
                    outputs[name] = pred
        return torch.stack(losses).sum(), outputs

    def _keypoint(
        self, fmap: torch.Tensor, name: str, uv: torch.Tensor, mask: torch.Tensor, losses: list
    ) -> torch.Tensor:
        """One target's keypoint loss terms (appended to ``losses``); returns its prediction
        in whole-frame normalised coordinates ``(B, 1, 2)``."""
        enc = self.encoder
        head = enc.heads[name]
        heat = head.heatmaps(fmap)
        pred = head.decode(heat).float()
        uv_in = enc.preprocessing.to_input(uv[:, None])
        inside = (uv_in.abs() <= 1.0).all(dim=-1).float() * mask[:, None]
        l1 = (pred - uv_in).abs().mean(dim=-1)
        losses.append((l1 * inside).sum() / inside.sum().clamp(min=1.0))
        if self.cfg.heatmap_weight > 0:
            keep = mask > 0
            kl = heatmap_kl(heat[keep], uv_in[keep].clamp(-1.0, 1.0), head.temperature,
                            self.cfg.heatmap_sigma)  # fmt: skip
            losses.append(self.cfg.heatmap_weight * torch.nan_to_num(kl))
        return enc.preprocessing.to_frame(pred)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        enc = self.encoder
        enc.eval()
        loader = epoch_loader(self.val_set, self.cfg.batch_size, 0, self.workers, False)
        outs: dict[str, list[np.ndarray]] = {}
        labels: list[list[np.ndarray]] = []
        total = 0.0
        for batch in loader:
            loss, out = self.loss(batch)
            total += float(loss) * len(batch[0])
            for name, value in out.items():
                outs.setdefault(name, []).append(value.float().cpu().numpy())
            labels.append([b.numpy() for b in batch[1:7]])
        enc.train()
        outputs = {name: np.concatenate(v) for name, v in outs.items()}
        position, uv, visible, yaw, yaw_ok, present = (
            np.concatenate([b[k] for b in labels]) for k in range(6)
        )
        row: dict[str, float] = {"val_loss": total / len(position)}
        w, h = enc.card["dataset"]["image_size"]
        for i, t in enumerate(self.targets):
            key = f"val_{t.name}_"
            seen = present[:, i] > 0
            vis_name = head_name(t.name, "visibility")
            if vis_name in outputs:
                truth = (visible[:, i] >= 0.5) & seen
                row[key + "visible_err"] = float(((outputs[vis_name] >= 0.5) != truth).mean())
                seen = truth
            kp = outputs.get(head_name(t.name, "keypoint"))
            if kp is not None:
                err = np.linalg.norm((kp[:, 0] - uv[:, i]) / 2 * [w, h], axis=-1)
                inside = seen & (np.abs(uv[:, i]) <= 1.0).all(axis=-1)
                row[key + "kp_px"] = _mean(err[inside])
            pos = outputs.get(head_name(t.name, "position"))
            if pos is not None:
                errors = geometry.position_errors_cm(pos[seen], position[seen, i])
                row[key + "position_head_xy_cm"] = _mean(errors["xy"])
                row[key + "position_head_xyz_cm"] = _mean(errors["xyz"])
            cos_sin = outputs.get(head_name(t.name, "yaw"))
            if cos_sin is not None:
                ok = seen & (yaw_ok[:, i] > 0)
                pred = np.arctan2(cos_sin[ok, 1], cos_sin[ok, 0]) / t.order
                row[key + "yaw_deg"] = _mean(yaw_error_deg(pred, yaw[ok, i], t.order))
        for k in PER_TARGET:  # the mean over the targets that have the output
            values = [row[f"val_{t.name}_{k}"] for t in self.targets if f"val_{t.name}_{k}" in row]
            finite = [v for v in values if np.isfinite(v)]
            if values:
                row[f"val_{k}"] = float(np.mean(finite)) if finite else float("nan")
        return row

    def checkpoint(self, val: dict[str, float]) -> None:
        has_position = "val_position_head_xy_cm" in val
        score = val["val_position_head_xy_cm"] if has_position else val.get("val_kp_px", np.nan)
        card = self.encoder.card
        first = self.state.best_epoch <= 0  # nothing in view yet: keep the first epoch
        if (np.isfinite(score) and score < self.state.best_score) or first:
            best = score if np.isfinite(score) else float("inf")
            self.state.best_score, self.state.best_epoch = best, self.state.epoch
            sim_val: dict[str, Any] = {"epoch": self.state.epoch, "loss": val["val_loss"]}
            if has_position:
                card["position_route"] = "position_head"
                sim_val["position_head"] = {
                    "xy_cm_mean": val["val_position_head_xy_cm"],
                    "xyz_cm_mean": val["val_position_head_xyz_cm"],
                }
            for key, name in (("val_kp_px", "keypoint_px_mean"), ("val_yaw_deg", "yaw_deg_mean")):
                if key in val:
                    sim_val[name] = val[key]
            sim_val["objects"] = {
                t.name: {k: val[f"val_{t.name}_{k}"] for k in PER_TARGET
                         if f"val_{t.name}_{k}" in val}
                for t in self.targets
            }  # fmt: skip
            card["metrics"] = {"sim_val": sim_val, "position_route": card.get("position_route")}
            card["training"]["epochs_done"] = self.state.epoch
            self.encoder.save(self.root)
        card["training"]["epochs_done"] = self.state.epoch
        from sim2real.perception.train_state import save_state

        save_state(
            self.root / "last", self.encoder, self.optimizer, self.cfg.model_dump(), self.state
        )

    def write_scores(self) -> None:
        """The card's feature statistics (no keypoint sharpness: per target, not per frame)."""
        from sim2real.perception.train_scores import write_scores

        size = (self.encoder.preprocessing.width, self.encoder.preprocessing.height)
        plain = [
            TargetSamples(s.ds, s.indices, size, self.targets, augment=False, seed=self.cfg.seed)
            for s in (self.train_set, self.val_set)
        ]
        write_scores(self.root, plain[0], plain[1], self.cfg.ood_samples, self.cfg.batch_size)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")
