"""Stage ``target``: the held-out "real" domain as a real-frame folder, or a split of the
user's real frames (symbolic links: real data is never copied)."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sim2real.errors import DataError
from sim2real.pipeline.config import PipelineConfig
from sim2real.pipeline.engine import Context


# -- target ---------------------------------------------------------------------------------
def run_target(ctx: Context) -> dict[str, Any]:
    """The held-out target domain as a real-frame folder, or a split of the user's frames."""
    if ctx.cfg.real is not None:
        return _split_real(ctx, Path(ctx.cfg.real))
    return _render_target(ctx)


def _render_target(ctx: Context) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from sim2real.envs.sources import make_source, scene_spec

    cfg, sec = ctx.cfg, ctx.cfg.target
    scene = sec.scene or cfg.scene
    spec = scene_spec(scene, sec.randomization, cfg.image_size)  # type: ignore[arg-type]
    source = make_source({**spec, "seed": sec.seed})
    parts = {"labelled": sec.labelled, "test": sec.test, "unlabelled": sec.unlabelled}
    index, grid = 0, []
    try:
        with tqdm(
            total=sum(parts.values()), desc="target", unit="img", disable=not ctx.progress
        ) as bar:
            for part, count in parts.items():
                rows = []
                folder = ctx.dir / part
                folder.mkdir()
                for _ in range(count):
                    sample = source(index)
                    name = f"t{index:05d}.png"
                    image = np.asarray(sample["image"])
                    cv2.imwrite(str(folder / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                    rows.append([name, *(f"{v:.5f}" for v in np.asarray(sample["position"]))])
                    if len(grid) < 16:
                        grid.append(image)
                    index += 1
                    bar.update(1)
                if part != "unlabelled":
                    _write_labels(folder / "labels.csv", rows)
    finally:
        source.close()
    from sim2real.preview import save_png, tile

    picture = save_png(tile([_upscale(g) for g in grid]), ctx.dir / "samples.png")
    return {
        "source": f"simulated{_scene_text(sec.scene)}, randomization "
        f"{describe_randomization(sec.randomization)}, held out",
        "labelled": ctx.rel(ctx.dir / "labelled"),
        "test": ctx.rel(ctx.dir / "test"),
        "unlabelled": ctx.rel(ctx.dir / "unlabelled") if sec.unlabelled else None,
        "replay": ctx.rel(ctx.dir / ("unlabelled" if sec.unlabelled else "test")),
        "grid": ctx.rel(picture),
        "counts": parts,
    }


def _split_real(ctx: Context, real: Path) -> dict[str, Any]:
    """Split ``real``'s labelled frames into adaptation and test folders of symbolic links."""
    from sim2real.data.real import open_real
    from sim2real.preview import save_png, tile

    labelled_dir = real / "labelled" if (real / "labelled").is_dir() else real
    labels = labelled_dir / "labels.csv"
    if not labels.is_file():
        raise DataError(f"real={real}: expected labels.csv in {labelled_dir}")
    with labels.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    rows = [r for r in rows if r and r[0].strip()]
    if len(rows) < 3:
        raise DataError(f"{labels}: expected at least 3 labelled frames, got {len(rows)}")
    order = np.random.default_rng(ctx.cfg.target.seed).permutation(len(rows))
    n_test = min(len(rows) - 2, max(1, round(len(rows) * ctx.cfg.target.test_fraction)))
    split = {"test": order[:n_test], "labelled": order[n_test:]}
    for part, idx in split.items():
        folder = ctx.dir / part
        folder.mkdir()
        chosen = [rows[i] for i in sorted(idx)]
        for row in chosen:
            os.symlink((labelled_dir / row[0]).resolve(), folder / row[0])
        _write_labels(folder / "labels.csv", chosen, header)
    unlabelled = real / "unlabelled"
    frames = open_real(ctx.dir / "labelled", resize="resize", size=(160, 120))
    grid = [frames[i].image for i in range(min(16, len(frames)))]
    picture = save_png(tile(grid), ctx.dir / "samples.png")
    return {
        "source": f"real frames from {real}",
        "labelled": ctx.rel(ctx.dir / "labelled"),
        "test": ctx.rel(ctx.dir / "test"),
        "unlabelled": str(unlabelled.resolve()) if unlabelled.is_dir() else None,
        "replay": str((unlabelled if unlabelled.is_dir() else labelled_dir).resolve()),
        "grid": ctx.rel(picture),
        "counts": {"labelled": len(split["labelled"]), "test": n_test},
    }


def _write_labels(path: Path, rows: list[list[str]], header: list[str] | None = None) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header or ["file", "x_m", "y_m", "z_m"])
        writer.writerows(rows)


def _upscale(image: np.ndarray, width: int = 128) -> np.ndarray:
    scale = max(1, width // image.shape[1])
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def _scene_text(scene: str | None) -> str:
    return f" scene {scene!r}" if scene else ""


def describe_randomization(randomization: Any) -> str:
    """A preset name as ``'name'``; an inline mapping as ``custom``."""
    return repr(randomization) if isinstance(randomization, str) else "custom"


def real_inputs(cfg: PipelineConfig) -> list[Path]:
    """The user's real-frame folder, hashed into the target stage's fingerprint."""
    return [Path(cfg.real)] if cfg.real is not None else []
