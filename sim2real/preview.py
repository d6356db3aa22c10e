"""Pictures a person looks at: randomised sample grids with labels overlaid, and the
simulated camera next to real photos so the framing can be matched by eye."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np

from sim2real.atomic import write_bytes
from sim2real.envs.camera import CameraGeometry, render
from sim2real.envs.core import TabletopEnv, connect
from sim2real.envs.scene import Scene, SceneConfig
from sim2real.errors import DataError

logger = logging.getLogger(__name__)


def draw_labels(
    rgb: np.ndarray,
    uv: np.ndarray | None = None,
    box: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    color: tuple[int, int, int] = (255, 255, 0),
) -> np.ndarray:
    """A copy of an RGB frame with the projected centre (cross), box and mask outline."""
    out = np.ascontiguousarray(rgb.copy())
    if mask is not None and mask.any():
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(out, contours, -1, (0, 255, 255), 1)
    if box is not None and np.all(np.isfinite(box)):
        x0, y0, x1, y1 = (round(b) for b in box)
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (255, 0, 255), 1)
    if uv is not None and np.all(np.isfinite(uv)):
        u, v = (round(x) for x in uv)
        size = max(2, out.shape[1] // 40)
        cv2.drawMarker(out, (u, v), color, cv2.MARKER_CROSS, size * 2, 1)
    return out


def _draw_box(rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(rgb.copy())
    x0, y0, x1, y1 = (round(float(b)) for b in box)
    cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (200, 200, 200), 1)
    return out


def tile(images: list[np.ndarray], cols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile equally sized RGB images into one grid image."""
    if not images:
        raise DataError("tile: no images to draw")
    h, w = images[0].shape[:2]
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = img
    return grid


def save_png(rgb: np.ndarray, out: str | Path) -> Path:
    """Write an RGB image atomically as PNG (:func:`sim2real.atomic.write_bytes`)."""
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise DataError(f"could not write image {out}: PNG encoding failed")
    return write_bytes(out, png.tobytes())


def preview_scene(
    scene: str | Path,
    out: str | Path,
    randomization: str = "default",
    n: int = 16,
    size: tuple[int, int] = (160, 120),
    seed: int = 0,
    scale: int = 2,
) -> Path:
    """A grid of ``n`` randomised episodes of a scene with labels overlaid.

    A scene without a robot (``robot: null``) has no env: its frames come from the dataset
    source (:mod:`sim2real.envs.sources`), as ``sim2real generate`` renders them.

    Example:
        >>> preview_scene("tabletop_panda", "runs/preview.png", n=4)  # doctest: +SKIP
    """
    cfg = SceneConfig.load(scene)
    if cfg.robot is None:
        frames = _camera_frames(scene, randomization, n, size, seed, scale)
        path = save_png(tile(frames), out)
        logger.info("wrote %s (%d randomised frames of %s, %s)", path, n, scene, randomization)
        return path
    env = TabletopEnv(scene=scene, randomization=randomization, image_size=size, labels="full")
    frames = []
    for i in range(n):
        _, info = env.reset(seed=seed + i)
        lab = env.frame_labels()
        img = env._frame.rgb
        if not env.scene_cfg.is_legacy:  # the other objects' boxes, thin and grey
            for name, obj in info["objects"].items():
                if name != env.scene.target and "box" in obj:
                    img = _draw_box(img, obj["box"])
        img = draw_labels(img, lab.uv, lab.box, lab.mask)
        frames.append(cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST))
    env.close()
    path = save_png(tile(frames), out)
    logger.info("wrote %s (%d randomised frames of %s, %s)", path, n, scene, randomization)
    return path


def _camera_frames(
    scene: str | Path, randomization: str, n: int, size: tuple[int, int], seed: int, scale: int
) -> list[np.ndarray]:
    """Frames of a camera-only scene from the dataset source, every object's box drawn (the
    targets' thick, with their centres; the distractors' thin and grey)."""
    from sim2real.envs.sources import make_source, scene_spec

    spec = scene_spec(str(scene), randomization, size=size)
    src = make_source({**spec, "seed": seed})
    names = {o["name"]: o["role"] for o in _instances(src.scene_cfg)}
    frames = []
    try:
        for i in range(n):
            s = src(i)
            img = np.asarray(s["image"])
            for name, role in names.items():
                box = np.asarray(s[f"objects.{name}.box"])
                if not bool(s[f"objects.{name}.present"]) or not np.isfinite(box).all():
                    continue
                if role == "target":
                    img = draw_labels(img, np.asarray(s[f"objects.{name}.uv"]), box)
                else:
                    img = _draw_box(img, box)
            frames.append(
                cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
            )
    finally:
        src.close()
    return frames


def _instances(cfg: SceneConfig) -> list[dict[str, str]]:
    return [{"name": n, "role": spec.role} for spec in cfg.objects for n in spec.instance_names]


def preview_side_by_side(
    scene: str | Path, real_dir: str | Path, out: str | Path, width: int = 320
) -> Path:
    """Render the scene (no randomisation) with the cube at each labelled real frame's
    position, beside the real photo; the label's projection is drawn on both.

    Args:
        scene: scene preset or YAML.
        real_dir: a folder with images and ``labels.csv`` (``file,x_m,y_m,z_m``).
        out: PNG path.
        width: width of each panel.
    """
    from sim2real.data.real import open_real

    cfg = SceneConfig.load(scene)
    frames = open_real(real_dir).labelled()
    if len(frames) == 0:
        raise DataError(
            f"{real_dir}: no labelled frames (expected labels.csv with file,x_m,y_m,z_m)"
        )
    client, renderer = connect("tiny")
    world = Scene(client, cfg)
    if world.robot is not None:
        world.robot.reset()
    panels = []
    for rec in frames:
        real = rec.image
        h = round(width * real.shape[0] / real.shape[1])
        geom = CameraGeometry.from_config(cfg.camera.resized(width, h))
        pos = np.asarray(rec.position, dtype=np.float64)
        if world.robot is None:  # a camera-only cell labels in the camera frame
            pos = (pos - geom.t) @ geom.R
        world.place_cube(pos[:2])
        sim = render(client, geom, light=_light(cfg), renderer=renderer).rgb
        uv = geom.project(pos)
        real_small = cv2.resize(real, (width, h), interpolation=cv2.INTER_AREA)
        pair = np.concatenate(
            [
                draw_labels(real_small, uv, color=(255, 0, 0)),
                draw_labels(sim, uv, color=(255, 0, 0)),
            ],
            axis=1,
        )
        cv2.putText(pair, str(rec.source), (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 0, 0), 1)
        panels.append(pair)
    client.disconnect()
    path = save_png(tile(panels, cols=2), out)
    logger.info("wrote %s (%d real | sim pairs)", path, len(panels))
    return path


def _light(cfg: SceneConfig) -> dict:
    lt = cfg.light
    return {
        "lightDirection": list(lt.direction),
        "lightColor": list(lt.color),
        "lightAmbientCoeff": lt.ambient,
        "lightDiffuseCoeff": lt.diffuse,
        "lightSpecularCoeff": lt.specular,
    }
