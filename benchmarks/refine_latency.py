"""Latency of the coarse-to-fine keypoint refinement on ONE CPU thread, batch 1, 640x480 frame.

Without ``--encoder`` it builds the default architecture (random weights: they do not change
the cost): efficientnet_lite0 at 160x120 with the kuka table crop (0, 32, 160, 120) and a
keypoint head, plus a :class:`~sim2real.perception.refine.Refiner` (64 px crop, width 16) on
640x480 frames. Paths timed (``torch.set_num_threads(1)``, ORT ``intra_op_num_threads=1``):

- eager coarse: ``Encoder.predict(frame, refine=False)``;
- eager coarse + refine: ``Encoder.predict(frame)``;
- eager refiner only: ``Refiner.refine_frames(frame, centre)`` (resize check, crop, CNN);
- onnxruntime refiner only: the refiner as its own ONNX graph (frame + centre -> keypoint);
- onnxruntime coarse + refine: ``sim2real refine export``'s graph through ``ExportedKeypoints``.

Each path: a warm-up, then ``--calls`` calls, repeated ``--repeats`` times interleaved; the
table shows the median over repeats of each repeat's p50 and p99. Prints, never asserts.

    .venv/bin/python benchmarks/refine_latency.py [--encoder ENC] [--calls 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

CAMERA = (640, 480)


def build_default(folder: Path) -> Path:
    """Save the default encoder + refiner (random head weights) into ``folder``."""
    from sim2real.perception.encoder import Encoder
    from sim2real.perception.refine import Refiner, attach_refiner

    heads = {"keypoint": {"type": "keypoints", "names": ["cube"], "window": 3}}
    encoder = Encoder(
        "efficientnet_lite0", heads, input_size=(160, 120), crop=(0, 32, 160, 120), pretrained=False
    )
    pre = encoder.preprocessing
    attach_refiner(encoder, Refiner(64, 16, CAMERA, pre.mean, pre.std, pre.colour))
    return encoder.eval().save(folder)


def _time(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    fn()
    ms = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1000.0)
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def refiner_onnx(
    refiner: torch.nn.Module, path: Path
) -> Callable[[np.ndarray, np.ndarray], object]:
    """The refiner alone as an ONNX graph (uint8 frame, centre) -> keypoint; its runner."""
    import onnxruntime as ort

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.refiner = refiner

        def forward(self, image: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
            return self.refiner(image.permute(0, 3, 1, 2).float(), centre)

    example = (torch.zeros(1, CAMERA[1], CAMERA[0], 3, dtype=torch.uint8), torch.zeros(1, 2))
    with torch.no_grad():
        torch.onnx.export(Graph().eval(), example, str(path), dynamo=False, opset_version=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda image, centre: session.run(None, {names[0]: image, names[1]: centre})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default=None, help="encoder folder with a refiner")
    parser.add_argument("--calls", type=int, default=100, help="timed calls per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="repeats (median shown)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from sim2real.deploy.export_refine import ExportedKeypoints, export_keypoints
    from sim2real.perception.encoder import Encoder

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.encoder) if args.encoder else build_default(Path(tmp) / "enc")
        encoder = Encoder.load(folder)
        graph = export_keypoints(folder, Path(tmp) / "kp.onnx")
        exported = ExportedKeypoints(graph, threads=1)
        alone = refiner_onnx(encoder.refiner, Path(tmp) / "refiner.onnx")
        frame = np.random.default_rng(0).integers(0, 256, (1, CAMERA[1], CAMERA[0], 3), np.uint8)
        centre = np.zeros((1, 2), np.float32)
        paths = {
            "eager coarse (predict, refine=False)": lambda: encoder.predict(frame, refine=False),
            "eager coarse + refine (predict)": lambda: encoder.predict(frame),
            "eager refiner only": lambda: encoder.refiner.refine_frames(frame, centre),
            "onnxruntime refiner only": lambda: alone(frame, centre),
            "onnxruntime coarse + refine (export)": lambda: exported.predict(frame),
        }
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in paths}
        for _ in range(args.repeats):
            for name, fn in paths.items():
                runs[name].append(_time(fn, args.calls))
    cfg = encoder.refiner.config()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, 1 thread, batch 1, {CAMERA[0]}x{CAMERA[1]} uint8 frame; encoder "
        f"{encoder.backbone.name} {encoder.preprocessing.width}x{encoder.preprocessing.height} "
        f"crop {encoder.preprocessing.crop}; refiner crop {cfg['crop']} width {cfg['width']}; "
        f"{args.calls} calls x {args.repeats} repeats"
    )
    print(f"{'path':<40}{'p50 ms':>9}{'p99 ms':>9}")
    for name, values in runs.items():
        p50 = statistics.median(v[0] for v in values)
        p99 = statistics.median(v[1] for v in values)
        print(f"{name:<40}{p50:>9.2f}{p99:>9.2f}")


if __name__ == "__main__":
    main()
