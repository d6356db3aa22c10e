"""Encoder training throughput on this machine: float32 vs bfloat16 autocast, memory formats.

Times full training steps (forward, the pretraining loss's heads, backward, AdamW) of the
default encoder on random uint8 batches, so it measures compute only (no data loading).
Modes, interleaved per repeat so machine noise hits all of them alike:

- ``fp32``: what ``pretrain`` does on CPU by default;
- ``fp32+cl``: float32, channels_last tensors;
- ``bf16``: ``torch.autocast("cpu", dtype=torch.bfloat16)`` (oneDNN; fast on CPUs with AMX
  or AVX512-BF16, slow elsewhere: the CPU flags are printed);
- ``bf16+cl``: both.

It prints the median images/s over ``--repeats`` and each mode's ratio to fp32; it asserts
nothing. ``--check`` also compares one bf16 step's loss with fp32's on the same batch.

    .venv/bin/python benchmarks/train_speed.py [--size 128x96] [--feature-stride 8 --dilated]
        [--batch-size 64] [--steps 5] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time

import torch

from sim2real.perception.encoder import Encoder
from sim2real.perception.train_config import PretrainConfig

MODES = ("fp32", "fp32+cl", "bf16", "bf16+cl")


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2")
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"


def build(args: argparse.Namespace, width: int, height: int) -> Encoder:
    kwargs = {"feature_stride": args.feature_stride}
    if args.dilated:
        kwargs["dilated"] = True
    heads = PretrainConfig(data="-", head="keypoint+position").heads()
    torch.manual_seed(0)
    enc = Encoder("efficientnet_lite0", heads, input_size=(width, height), backbone_kwargs=kwargs)
    enc.heads["position"].set_target_stats([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    return enc.train()


def step(enc: Encoder, opt: torch.optim.Optimizer, images: torch.Tensor, mode: str) -> float:
    x = enc.preprocessing.normalise(images)
    if mode.endswith("+cl"):
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if mode.startswith("bf16")
        else contextlib.nullcontext()
    )
    with ctx:
        fmap = enc.backbone(x)
        kp = enc.heads["keypoint"](fmap).float()
        pos = enc.heads["position"].forward_normalised(fmap).float()
    loss = kp.abs().mean() + pos.abs().mean()  # the scale does not matter for timing
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", default="128x96")
    ap.add_argument("--feature-stride", type=int, default=8)
    ap.add_argument("--dilated", action="store_true")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per mode and repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--check", action="store_true", help="compare one bf16 loss with fp32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    images = torch.randint(0, 256, (args.batch_size, height, width, 3), dtype=torch.uint8)

    models = {}
    for mode in args.modes:
        enc = build(args, width, height)
        if mode.endswith("+cl"):
            enc = enc.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(enc.parameters(), lr=1e-4)
        step(enc, opt, images, mode)  # warm-up (oneDNN primitive creation)
        models[mode] = (enc, opt)
    speeds: dict[str, list[float]] = {m: [] for m in args.modes}
    for _ in range(args.repeats):
        for mode in args.modes:
            enc, opt = models[mode]
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(enc, opt, images, mode)
            speeds[mode].append(args.steps * args.batch_size / (time.perf_counter() - t0))

    stride = f"stride {args.feature_stride}{' dilated' if args.dilated else ''}"
    print(f"\nefficientnet_lite0 training step, {width}x{height}, {stride}, batch "
          f"{args.batch_size}, {args.threads} threads, torch {torch.__version__}")  # fmt: skip
    print(f"CPU: {platform.processor() or platform.machine()}; flags: {cpu_flags()}")
    base = statistics.median(speeds[args.modes[0]])
    print(f"{'mode':10s} {'img/s (median)':>15s} {'x ' + args.modes[0]:>10s}   repeats")
    for mode in args.modes:
        med = statistics.median(speeds[mode])
        runs = " ".join(f"{s:.1f}" for s in speeds[mode])
        print(f"{mode:10s} {med:15.1f} {med / base:10.2f}   {runs}")
    if args.check:
        enc = build(args, width, height).eval()
        with torch.no_grad():
            x = enc.preprocessing.normalise(images[:8])
            ref = enc.heads["keypoint"](enc.backbone(x)).float()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = enc.heads["keypoint"](enc.backbone(x)).float()
        print(f"bf16 vs fp32 keypoint outputs (eval, same weights): max |diff| "
              f"{float((ref - low).abs().max()):.4f} (normalised units)")  # fmt: skip


if __name__ == "__main__":
    main()
