"""Stored vs per-frame BatchNorm statistics at inference, on sim validation and real frames.

A sim-trained encoder normally normalises with the BatchNorm running statistics of its sim
training data (``stored``). ``frame`` normalises every frame by its own feature statistics
(:func:`sim2real.perception.encoder.frame_statistics`): a fixed function of that one frame,
no other real frame, no label, nothing kept between frames. This prints both on the encoder's
own sim validation split (keypoint pixel error against the rendered label, and the time per
frame) and on the labelled real frames (xy error by the card's route).

    .venv/bin/python benchmarks/frame_batchnorm.py --model runs/kuka_bench_160crop/model \\
        --data runs/kuka_bench_160/data --real ../shared/real/kuka_cube
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sim2real.data.shards import ShardedDataset
from sim2real.perception import geometry
from sim2real.perception.encoder import BATCHNORM_MODES, Encoder
from sim2real.perception.evaluate import evaluate


def sim_keypoint_px(enc: Encoder, data: str, n: int, mode: str) -> tuple[np.ndarray, float]:
    """Keypoint pixel errors on the first ``n`` validation images, and seconds per frame.

    ``Encoder.predict`` resizes and crops as in training and gives pixels of the frames it
    is handed, so the rendered ``uv`` labels compare as they are.
    """
    if geometry.KEYPOINT_HEAD not in enc.heads:
        raise SystemExit("the encoder has no keypoint head: nothing to score on sim frames")
    ds = ShardedDataset(data, fields=["image", "uv"], verify=False)
    training = enc.card.get("training", {})
    _, val = ds.split(float(training.get("val_fraction", 0.1)), seed=int(training.get("seed", 0)))
    errors, seconds = [], 0.0
    for start in range(0, min(n, len(val)), 64):
        items = [ds[int(i)] for i in val[start : min(start + 64, n)]]
        t0 = time.perf_counter()
        out = enc.predict(np.stack([it["image"] for it in items]), batchnorm=mode)
        seconds += time.perf_counter() - t0
        px = out[f"{geometry.KEYPOINT_HEAD}_px"][:, 0]
        uv = np.stack([it["uv"] for it in items]).reshape(len(items), -1)[:, :2]
        errors.append(np.linalg.norm(px - uv, axis=1))
    out_px = np.concatenate(errors)
    return out_px, seconds / len(out_px)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="the sim dataset the model was trained on")
    ap.add_argument("--real", required=True, help="real folder with labelled frames")
    ap.add_argument("--n", type=int, default=500, help="sim validation images to score")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    enc = Encoder.load(args.model)
    results = {}
    print(f"per-frame BatchNorm benchmark: {args.model}")
    for mode in BATCHNORM_MODES:
        px, per_frame = sim_keypoint_px(enc, args.data, args.n, mode)
        real = evaluate(enc, args.real, batchnorm=mode)
        results[mode] = {
            "sim_val_kp_px": {"n": len(px), **geometry.summarise(px)},
            "ms_per_frame": 1000 * per_frame,
            "real_xy_cm": real["xy_cm"],
            "real_n": real["n"],
        }  # fmt: skip
        r = real["xy_cm"]
        print(f"  [{mode:6s}] sim val keypoint px (n={len(px)}): mean {px.mean():.2f} "
              f"median {np.median(px):.2f} p90 {np.percentile(px, 90):.2f}; "
              f"{1000 * per_frame:.1f} ms/frame | real xy cm (n={real['n']}): "
              f"mean {r['mean']:.2f} median {r['median']:.2f} p90 {r['p90']:.2f}")  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
