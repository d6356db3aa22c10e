"""The epoch loop of pretraining (:class:`Trainer`): the cosine schedule on the training
progress, the loss of every head, validation per route, and what each epoch writes."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sim2real.atomic import write_text
from sim2real.data.shards import ShardedDataset
from sim2real.errors import ConfigError
from sim2real.perception import geometry
from sim2real.perception.device import autocast
from sim2real.perception.distributed import Distributed
from sim2real.perception.encoder import Encoder
from sim2real.perception.heads import heatmap_kl
from sim2real.perception.scores import VISIBILITY_HEAD
from sim2real.perception.style import mix_style, rand_conv
from sim2real.perception.train_config import METRIC_FIELDS, PretrainConfig
from sim2real.perception.train_data import SimSamples, epoch_loader
from sim2real.perception.train_state import TrainState, load_state, save_state

logger = logging.getLogger(__name__)


class LossModule(torch.nn.Module):
    """The encoder with the trainer's loss as its forward (what DDP wraps)."""

    def __init__(self, trainer: Trainer) -> None:
        super().__init__()
        self.encoder = trainer.encoder
        self._loss = trainer.loss

    def forward(self, batch: tuple[torch.Tensor, ...]) -> Any:
        return self._loss(batch)


#: Validation samples with the gripper within this distance (metres) of the point
#: ``NEAR_HOVER_M`` above the cube's top score an end-effector-relative model: its routes are
#: chosen where a reach ends, not on the arm far away (where the relative route's error grows
#: with the gripper's height above the cube).
NEAR_M = 0.10
#: The reach poses' centre above the cube's top (``sim2real.envs.sources.REACH_HOVER``, the
#: ReachCube target's hover).
NEAR_HOVER_M = 0.05


class Trainer:
    """The epoch loop of :func:`~sim2real.perception.train.pretrain`: schedule, training
    step, validation, and the per-epoch outputs (metrics, best model, ``last`` state)."""

    def __init__(
        self,
        cfg: PretrainConfig,
        encoder: Encoder,
        ds: ShardedDataset,
        split: tuple[np.ndarray, np.ndarray],
        root: Path,
        *,
        device: torch.device,
        workers: int | None = None,
        progress: bool = False,
        dist: Distributed | None = None,
    ) -> None:
        """``split``: the train and validation indices into ``ds``."""
        train_idx, val_idx = split
        self.cfg, self.root, self.device, self.progress = cfg, root, device, progress
        self.dist = dist or Distributed()
        self.encoder = encoder.to(device)
        if device.type == "cuda":
            self.encoder.to(memory_format=torch.channels_last)
        self.encoder.card["training"]["val_samples"] = len(val_idx)
        size = (encoder.preprocessing.width, encoder.preprocessing.height)
        self.train_set = SimSamples(
            ds,
            train_idx,
            size,
            augment=True,
            seed=cfg.seed,
            shift_px=cfg.shift_px,
            exposure=cfg.exposure,
            relative=cfg.position_target == "ee_relative",
            gripper_keypoint=cfg.relative and geometry.KEYPOINT_HEAD in encoder.heads,
            visibility=self.visibility_object(cfg, encoder),
        )
        self.val_set = SimSamples(
            ds,
            val_idx,
            size,
            augment=False,
            seed=cfg.seed,
            relative=cfg.position_target == "ee_relative",
            gripper_keypoint=cfg.relative and geometry.KEYPOINT_HEAD in encoder.heads,
            visibility=self.visibility_object(cfg, encoder),
        )
        cube = ds.manifest.get("spec", {}).get("scene", {}).get("cube", {}).get("size", 0.05)
        self.cube_half = 0.5 * float(np.atleast_1d(np.asarray(cube, dtype=np.float64))[-1])
        cpus = os.cpu_count() or 1
        self.workers = workers if workers is not None else (0 if cpus <= 2 else min(4, cpus // 2))
        world = self.dist.world_size  # batch_size is per process
        self.steps_per_epoch = math.ceil(math.ceil(len(train_idx) / world) / cfg.batch_size)
        self.optimizer = torch.optim.AdamW(
            encoder.param_groups(cfg.lr, decay=1.0), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        # the training step goes through this module, so DDP can average its gradients
        self.step_module = self.dist.wrap(LossModule(self), device)
        self.state = TrainState()

    @staticmethod
    def visibility_object(cfg: PretrainConfig, encoder: Encoder) -> str | None:
        """The object the samples carry the visible fraction of (None: no visibility head)."""
        return cfg.visibility_object if VISIBILITY_HEAD in encoder.heads else None

    # -------------------------------------------------------------- schedule
    def progress_fraction(self) -> float:
        by_steps = self.state.step / (self.cfg.epochs * self.steps_per_epoch)
        if self.cfg.max_minutes is None:
            return by_steps
        return max(by_steps, self.state.train_seconds / (60.0 * self.cfg.max_minutes))

    def lr_factor(self) -> float:
        """Linear warm-up then cosine decay to 0, on the training progress in [0, 1]."""
        p = min(self.progress_fraction(), 1.0)
        warm = self.cfg.warmup_fraction
        if p < warm:
            return max(p / warm, 1e-3)
        return 0.5 * (1.0 + math.cos(math.pi * (p - warm) / max(1.0 - warm, 1e-9)))

    def done(self) -> bool:
        return self.state.epoch >= self.cfg.epochs or self.progress_fraction() >= 1.0

    # -------------------------------------------------------------- loop
    def restore(self, last: Path) -> None:
        saved_cfg, state = load_state(last, self.encoder, self.optimizer)
        diff = self.cfg.resumable_with(PretrainConfig(**saved_cfg))
        if diff:
            raise ConfigError(
                f"cannot resume {self.root}: settings {diff} differ from the saved run "
                f"(saved {[saved_cfg[k] for k in diff]}); use the same settings or a new --out"
            )
        self.state = state
        best = self.root / "card.json"
        if best.is_file():
            saved = json.loads(best.read_text())
            self.encoder.card["metrics"] = saved.get("metrics", {})
            self.encoder.card["position_route"] = saved.get("position_route")
        logger.info("resuming %s after epoch %d (step %d)", self.root, state.epoch, state.step)

    def run(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.root.mkdir(parents=True, exist_ok=True)
        writer = (
            SummaryWriter(str(self.root / "tb"), purge_step=self.state.epoch + 1)
            if self.dist.is_main
            else None
        )
        try:
            while not self.done():
                started = time.perf_counter()
                train_loss, images = self.train_epoch()
                seconds = time.perf_counter() - started
                self.state.epoch += 1
                val = self.validate()
                row = {
                    "epoch": self.state.epoch,
                    "step": self.state.step,
                    "lr": self.cfg.lr * self.lr_factor(),
                    "train_loss": train_loss,
                    **val,
                    "images_per_s": images / max(seconds, 1e-9),
                    "train_seconds": self.state.train_seconds,
                }
                if self.dist.is_main:
                    self.log(row, writer)
                    self.checkpoint(val)
                self.dist.barrier()  # every rank resumes from what rank 0 wrote
        finally:
            if writer is not None:
                writer.close()

    def train_epoch(self) -> tuple[float, int]:
        enc, cfg = self.encoder, self.cfg
        enc.train()
        loader = epoch_loader(
            self.train_set, cfg.batch_size, self.state.epoch, self.workers, True,
            rank=self.dist.rank, world_size=self.dist.world_size,
        )  # fmt: skip
        total, images = 0.0, 0
        bar = tqdm(
            total=len(self.train_set), unit="img", desc=f"epoch {self.state.epoch + 1}",
            disable=not self.progress, leave=False,
        )  # fmt: skip
        with bar:
            t0 = time.perf_counter()
            for batch in loader:
                if self.done():
                    break
                for group in self.optimizer.param_groups:
                    group["lr"] = cfg.lr * self.lr_factor()
                loss, _ = self.step_module(batch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(f"training loss is {value} at step {self.state.step}")
                n = len(batch[0])
                total, images = total + value * n, images + n
                self.state.step += 1
                now = time.perf_counter()  # budget counts loading + step, not validation
                self.state.train_seconds, t0 = self.state.train_seconds + now - t0, now
                if self.dist.enabled:  # rank 0's clock, so every rank stops at the same step
                    self.state.train_seconds = self.dist.broadcast_float(self.state.train_seconds)
                bar.update(n)
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{group['lr']:.2e}")
        return self.dist.mean_float(total / max(images, 1)), images * self.dist.world_size

    def backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's feature map; in training, with the style augmentations switched on."""
        backbone, cfg = self.encoder.backbone, self.cfg
        if not backbone.training or not (cfg.mixstyle or cfg.randconv):
            return backbone(x)
        rng = np.random.default_rng([cfg.seed, self.state.step, 0x5717])
        if cfg.randconv:
            x = rand_conv(x, rng, p=cfg.randconv)
        if not cfg.mixstyle:
            return backbone(x)
        for i, block in enumerate(backbone.blocks):
            x = block(x)
            if i < cfg.mixstyle_blocks:
                x = mix_style(x, rng, p=cfg.mixstyle, alpha=cfg.mixstyle_alpha)
        return x

    def loss(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Summed head losses and the head outputs (position in metres, keypoint normalised).

        Position: smooth L1 on standardised targets; keypoint: L1 on normalised ``uv``, plus
        ``heatmap_weight`` times :func:`~sim2real.perception.heads.heatmap_kl` when set.
        """
        enc = self.encoder
        images, position, uv = (t.to(self.device, non_blocking=True) for t in batch[:3])
        x = enc.preprocessing.normalise(images)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        losses, outputs = [], {}
        seen = None  # with a visibility head: 1 where some of the target is seen, else 0
        with autocast(self.device):
            fmap = self.backbone_features(x)
            if VISIBILITY_HEAD in enc.heads:
                target = self.visibility_target(batch[-1].to(self.device), uv)
                logits = enc.heads[VISIBILITY_HEAD](fmap).float()
                bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
                losses.append(self.cfg.visibility_weight * bce)
                outputs[VISIBILITY_HEAD] = torch.sigmoid(logits)
                outputs["visibility_target"] = target
                seen = (target > 0).float()
            if geometry.POSITION_HEAD in enc.heads:
                head = enc.heads[geometry.POSITION_HEAD]
                pred = head.forward_normalised(fmap).float()
                if seen is None:
                    loss = torch.nn.functional.smooth_l1_loss(pred, head.normalise(position))
                else:
                    per = torch.nn.functional.smooth_l1_loss(
                        pred, head.normalise(position), reduction="none"
                    ).mean(dim=1)
                    loss = (per * seen).sum() / seen.sum().clamp(min=1.0)
                losses.append(loss)
                outputs[geometry.POSITION_HEAD] = pred * head.target_std + head.target_mean
            if geometry.KEYPOINT_HEAD in enc.heads:
                kp_head = enc.heads[geometry.KEYPOINT_HEAD]
                heat = kp_head.heatmaps(fmap)  # one pass for the coordinates and the KL term
                pred = kp_head.decode(heat).float()  # whole map in training, local in eval
                # (B, K, 2) in the crop's coordinates (no crop: uv); labels outside the frame
                # (a gripper above the image) are left out of the loss
                uv_in = enc.preprocessing.to_input(uv if uv.dim() == 3 else uv[:, None])
                inside = (uv_in.abs() <= 1.0).all(dim=-1).float()  # (B, K)
                if seen is not None:
                    inside = inside * seen[:, None]
                l1 = (pred - uv_in).abs().mean(dim=-1)
                losses.append((l1 * inside).sum() / inside.sum().clamp(min=1.0))
                if self.cfg.heatmap_weight > 0:
                    keep = slice(None) if seen is None else seen > 0
                    kl = heatmap_kl(
                        heat[keep],
                        uv_in[keep].clamp(-1.0, 1.0),
                        kp_head.temperature,
                        self.cfg.heatmap_sigma,
                    )
                    if seen is not None:  # a batch with nothing in view has no KL term
                        kl = torch.nan_to_num(kl)
                    losses.append(self.cfg.heatmap_weight * kl)
                outputs[geometry.KEYPOINT_HEAD] = enc.preprocessing.to_frame(pred)
        return torch.stack(losses).sum(), outputs

    def visibility_target(self, fraction: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        """The visible fraction, 0 where the target's centre is outside the crop (the
        network cannot see it there). Shape: ``(B,)``, uv ``(B, 2)`` or ``(B, K, 2)``."""
        target = fraction.float().clamp(0.0, 1.0)
        pre = self.encoder.preprocessing
        if pre.crop is None:
            return target
        centre = pre.to_input(uv if uv.dim() == 3 else uv[:, None])[:, 0]
        return target * (centre.abs() <= 1.0).all(dim=-1).float()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        enc = self.encoder
        enc.eval()
        loader = epoch_loader(self.val_set, self.cfg.batch_size, 0, self.workers, False)
        outs: dict[str, list[np.ndarray]] = {}
        targets, uvs, ees, total = [], [], [], 0.0
        for batch in loader:
            loss, out = self.loss(batch)
            total += float(loss) * len(batch[0])
            for name, value in out.items():
                outs.setdefault(name, []).append(value.float().cpu().numpy())
            targets.append(batch[1].numpy())
            uvs.append(batch[2].numpy())
            if self.val_set.relative:
                ees.append(batch[3].numpy())
        enc.train()
        outputs = {name: np.concatenate(v) for name, v in outs.items()}
        target = np.concatenate(targets)
        row: dict[str, float] = {"val_loss": total / len(target)}
        if VISIBILITY_HEAD in outputs:  # position errors where the target is in view
            truth = outputs.pop("visibility_target") >= 0.5
            claimed = outputs.pop(VISIBILITY_HEAD) >= 0.5
            row["val_visible_err"] = float((truth != claimed).mean())
            if truth.any():
                outputs = {k: v[truth] for k, v in outputs.items()}
                target, uvs = target[truth], [np.concatenate(uvs)[truth]]
                ees = [np.concatenate(ees)[truth]] if ees else []
        if geometry.KEYPOINT_HEAD in outputs:
            w, h = self.encoder.card["dataset"]["image_size"]
            uv = np.concatenate(uvs).reshape(len(target), -1, 2)
            err = np.linalg.norm((outputs[geometry.KEYPOINT_HEAD] - uv) / 2 * [w, h], axis=-1)
            row["val_kp_px"] = float(err[:, 0].mean())
            if uv.shape[1] > 1:  # the gripper, where it is in the frame
                inside = (np.abs(uv[:, 1]) <= 1.0).all(axis=-1)
                row["val_kp_gripper_px"] = float(err[inside, 1].mean()) if inside.any() else np.nan
        # end-effector-relative routes are scored on the cube's position, with the true
        # gripper position as the robot would report it (the targets here are offsets)
        ee = np.concatenate(ees) if ees else None
        near = None
        if ee is not None:  # target: cube - gripper; the reach ends at (0, 0, -lift)
            lift = np.array([0.0, 0.0, self.cube_half + NEAR_HOVER_M])
            near = np.linalg.norm(target + lift, axis=1) < NEAR_M
            target = target + ee
        for route, pred in geometry.route_positions(outputs, self.encoder.card, ee).items():
            errors = geometry.position_errors_cm(pred, target)
            row[f"val_{route}_xy_cm"] = float(np.nanmean(errors["xy"]))
            row[f"val_{route}_xyz_cm"] = float(np.nanmean(errors["xyz"]))
            if near is not None and near.any():
                row[f"val_{route}_near_xy_cm"] = float(np.nanmean(errors["xy"][near]))
        return row

    def write_scores(self) -> None:
        """The card's feature statistics and confidence reference, from the best model
        (:func:`~sim2real.perception.train_scores.write_scores`, ``cfg.ood_samples``)."""
        from sim2real.perception.train_scores import write_scores

        plain = [
            SimSamples(
                s.ds,
                s.indices,
                s.size,
                augment=False,
                seed=self.cfg.seed,
                relative=s.relative,
                gripper_keypoint=s.gripper_keypoint,
                visibility=s.visibility,
            )
            for s in (self.train_set, self.val_set)
        ]
        write_scores(self.root, plain[0], plain[1], self.cfg.ood_samples, self.cfg.batch_size)

    # -------------------------------------------------------------- output
    def metric_fields(self) -> tuple[str, ...]:
        """The columns of ``metrics.csv``."""
        return METRIC_FIELDS

    def log(self, row: dict[str, float], writer: Any) -> None:
        path = self.root / "metrics.csv"
        rows = []
        if path.is_file():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < row["epoch"]]
        fields = self.metric_fields()
        rows.append({k: row.get(k, "") for k in fields})
        text = io.StringIO(newline="")
        out = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
        out.writeheader()
        out.writerows(rows)
        write_text(path, text.getvalue())
        for key, value in row.items():
            if key not in ("epoch", "step"):
                writer.add_scalar(key, value, row["epoch"])
        writer.flush()
        shown = {k: round(v, 4) for k, v in row.items() if k.startswith("val_")}
        logger.info("epoch %d: train_loss %.4f %s", row["epoch"], row["train_loss"], shown)

    def checkpoint(self, val: dict[str, float]) -> None:
        routes = {
            r: {"xy_cm_mean": val[f"val_{r}_xy_cm"], "xyz_cm_mean": val[f"val_{r}_xyz_cm"]}
            for r in geometry.ROUTES
            if f"val_{r}_xy_cm" in val
        }
        # an end-effector-relative model is for reaching: it is scored where a reach ends
        key = "xy_cm_mean"
        if all(f"val_{r}_near_xy_cm" in val for r in routes):
            key = "near_xy_cm_mean"
            for r in routes:
                routes[r][key] = val[f"val_{r}_near_xy_cm"]
        best_route = min(routes, key=lambda r: routes[r][key])
        score = routes[best_route][key]
        card = self.encoder.card
        if score < self.state.best_score:
            self.state.best_score, self.state.best_epoch = score, self.state.epoch
            card["position_route"] = best_route
            card["metrics"] = {
                "sim_val": {**routes, "epoch": self.state.epoch, "loss": val["val_loss"]},
                "position_route": best_route,
            }
            if "val_kp_px" in val:
                card["metrics"]["sim_val"]["keypoint_px_mean"] = val["val_kp_px"]
            card["training"]["epochs_done"] = self.state.epoch
            self.encoder.save(self.root)  # each file atomically
        card["training"]["epochs_done"] = self.state.epoch
        save_state(
            self.root / "last", self.encoder, self.optimizer, self.cfg.model_dump(), self.state
        )
