"""Make ``docs/assets/demo_strip.png``, the README's and the docs' picture, from a demo run.

    .venv/bin/python tools/demo_strip.py runs/demo            # after `make demo`

Four panels from the demo's report folder, side by side at one height: randomised simulated
samples, held-out target frames with the adapted encoder's prediction, the transfer curve and
the policy's learning curve.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

PANELS = (
    ("data_grid.png", "simulated, randomised"),
    ("overlay_adapted.png", "held-out target: adapted prediction"),
    ("transfer_curve.png", "transfer curve"),
    ("learning_curve.png", "policy learning curve"),
)


def panel(path: Path, caption: str, height: int) -> np.ndarray:
    image = cv2.imread(str(path))
    if image is None:
        raise SystemExit(f"{path}: missing; run the demo first (make demo)")
    width = round(image.shape[1] * height / image.shape[0])
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    band = np.full((28, width, 3), 255, np.uint8)
    cv2.putText(
        band, caption, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (30, 30, 30), 1, cv2.LINE_AA
    )
    return np.vstack([band, image])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("demo", type=Path, help="the demo's output folder (runs/demo)")
    parser.add_argument("--out", type=Path, default=Path("docs/assets/demo_strip.png"))
    parser.add_argument("--height", type=int, default=240, help="panel height in pixels")
    args = parser.parse_args()
    report = args.demo / "report"
    tiles = [panel(report / name, caption, args.height) for name, caption in PANELS]
    gap = np.full((tiles[0].shape[0], 8, 3), 255, np.uint8)
    strip = np.hstack([t for tile in tiles for t in (tile, gap)][:-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), strip, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({strip.shape[1]}x{strip.shape[0]})")


if __name__ == "__main__":
    main()
