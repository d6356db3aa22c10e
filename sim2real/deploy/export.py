"""Export a policy bundle as one graph (ONNX or TorchScript): uint8 image + proprio -> action.

The graph holds everything after the camera: uint8 -> float, the encoder resize (when the
encoder's input size differs from the observation size), colour order, normalisation, the
encoder, the actor head and the action squash (``clip`` for PPO, ``tanh`` + rescale for SAC).

Resizing inside the graph is done with fixed matrices: :func:`resize_matrix` holds exactly the
weights of :func:`~sim2real.perception.preprocessing.resize_frames` (torch bilinear with
antialiasing), so the graph matches the eager path to float rounding. ONNX's own ``Resize`` with
``antialias=1`` does not (up to 17 grey levels apart on 640x480 -> 84x84), and the TorchScript
exporter has no symbolic for torch's antialiased resize, so the graph takes a **fixed** frame
size: the observation size by default (frames of another size are resized by the caller with
``resize_frames``), or a camera size given with ``input_size``.

Files: ``FILE`` and its contract ``FILE.json`` beside it (``policy.onnx`` -> ``policy.onnx.json``).
ONNX uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``, opset 17),
which needs ``onnx`` but not ``onnxscript``.

Example:
    >>> export_bundle("runs/reach", "onnx", "runs/reach/policy.onnx")  # doctest: +SKIP
    >>> load_exported("runs/reach/policy.onnx").act(frame_84x84, proprio)  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sim2real.atomic import temp_path, write_json
from sim2real.deploy.exported import (
    EXPORT_FORMAT,
    FORMATS,
    INPUT_NAMES,
    OUTPUT_NAME,
    ExportedPolicy,
    contract_path,
    load_exported,
    require_onnx,
)
from sim2real.errors import CheckpointError, ConfigError
from sim2real.perception.preprocessing import RESIZE_METHOD, resize_frames
from sim2real.policies.bundle import CONTRACT_FILE, BundleActor, load_bundle

__all__ = [
    "DEFAULT_OPSET",
    "ExportGraph",
    "ExportedPolicy",
    "cmd_export",
    "eager_actions",
    "export_bundle",
    "load_exported",
    "observation_size",
    "resize_matrix",
]

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
PARITY_TOL = 1e-4
CALLER_RESIZE = "caller resizes with sim2real.perception.preprocessing.resize_frames"


def resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """The weights of ``resize_frames`` along one axis, as an ``(n_out, n_in)`` matrix.

    Read off torch's own antialiased bilinear kernel by resizing an identity image (two
    columns wide: torch's kernel misbehaves on width-1 outputs).

    Shape:
        - returns ``(n_out, n_in)`` float32; rows sum to 1.

    Example:
        >>> resize_matrix(4, 2)
        tensor([[0.4286, 0.4286, 0.1429, 0.0000],
                [0.0000, 0.1429, 0.4286, 0.4286]])
    """
    eye = torch.eye(n_in).reshape(1, n_in, n_in, 1).expand(1, n_in, n_in, 2)
    out = F.interpolate(eye, size=(n_out, 2), mode="bilinear", align_corners=False, antialias=True)
    return out[0, :, :, 0].T.contiguous()


class _Resize(nn.Module):
    """Fixed-size ``resize_frames`` on float NCHW pixel values, rounded like uint8."""

    def __init__(self, size_in: tuple[int, int], size_out: tuple[int, int]) -> None:
        super().__init__()
        (w_in, h_in), (w_out, h_out) = size_in, size_out
        self.register_buffer("rows", resize_matrix(h_in, h_out))  # (h_out, h_in)
        self.register_buffer("cols", resize_matrix(w_in, w_out).T.contiguous())  # (w_in, w_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.rows, torch.matmul(x, self.cols)).round().clamp(0.0, 255.0)


class ExportGraph(nn.Module):
    """uint8 frames + proprio -> action: the whole bundle in one module, ready to export.

    Args:
        actor: the eager policy (encoder inside), in eval mode.
        observation_size: ``(W, H)`` of the policy's observation (the contract's image).
        input_size: ``(W, H)`` of the frames the graph takes; default ``observation_size``.
        colour: channel order of the input frames.

    Shape:
        - image: ``(N, H, W, 3)`` uint8; proprio: ``(N, P)`` float32; returns ``(N, A)``.

    Example:
        >>> encoder, actor, contract = load_bundle("runs/reach")  # doctest: +SKIP
        >>> ExportGraph(actor, (84, 84))(torch.zeros(1, 84, 84, 3, dtype=torch.uint8),
        ...                              torch.zeros(1, 10))  # doctest: +SKIP
    """

    def __init__(
        self,
        actor: BundleActor,
        observation_size: tuple[int, int],
        input_size: tuple[int, int] | None = None,
        colour: str = "RGB",
    ) -> None:
        super().__init__()
        pre = actor.encoder.preprocessing
        self.actor = actor.eval()
        self.input_size = tuple(input_size or observation_size)
        self.observation_size = tuple(observation_size)
        # the eager chain: frame -> observation size -> encoder input size, uint8 between.
        steps = [self.input_size, self.observation_size, (pre.width, pre.height)]
        self.resize_steps = [(a, b) for a, b in itertools.pairwise(steps) if a != b]
        self.resizes = nn.ModuleList(_Resize(a, b) for a, b in self.resize_steps)
        self.flip = colour != pre.colour
        self.register_buffer("mean", torch.tensor(pre.mean).mul(255.0).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(pre.std).mul(255.0).reshape(1, 3, 1, 1))

    def forward(self, image: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float()
        for resize in self.resizes:
            x = resize(x)
        if self.flip:
            x = x[:, [2, 1, 0]]
        return self.actor((x - self.mean) / self.std, proprio.float())


def observation_size(contract: dict[str, Any], actor: BundleActor) -> tuple[int, int]:
    """``(W, H)`` of the bundle's observation image (CHW in the contract), else the encoder's."""
    shape = contract.get("observation", {}).get("image", {}).get("shape")
    if shape and len(shape) == 3:
        return int(shape[2]), int(shape[1])
    pre = actor.encoder.preprocessing
    return pre.width, pre.height


@torch.no_grad()
def eager_actions(
    actor: BundleActor,
    frames: np.ndarray | torch.Tensor,
    proprio: np.ndarray,
    obs_size: tuple[int, int],
    colour: str = "RGB",
) -> np.ndarray:
    """The eager reference: ``resize_frames`` to the observation size, then ``BundleActor``.

    Shape:
        - frames: ``(N, H, W, 3)`` uint8; proprio ``(N, P)``; returns ``(N, A)``.
    """
    x = actor.encoder.preprocess(resize_frames(frames, *obs_size), colour=colour)
    p = torch.as_tensor(np.asarray(proprio, dtype=np.float32)).reshape(len(x), -1)
    return actor.eval()(x, p).numpy()


def _write_graph(graph: ExportGraph, fmt: str, path: Path, example: tuple, opset: int) -> None:
    tmp = temp_path(path)  # the exporters write to a path: unique name, then os.replace
    try:
        if fmt == "torchscript":
            with warnings.catch_warnings():  # torch 2.10+ marks torch.jit deprecated
                warnings.simplefilter("ignore", FutureWarning)
                traced = torch.jit.trace(graph, example, check_trace=False)
                torch.jit.save(traced, str(tmp))
        else:
            with warnings.catch_warnings():  # dynamo=False is deprecated, still supported
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                torch.onnx.export(
                    graph,
                    example,
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    input_names=list(INPUT_NAMES),
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={"image": {0: "N"}, "proprio": {0: "N"}, OUTPUT_NAME: {0: "N"}},
                )
            import onnx

            onnx.checker.check_model(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _contract(
    graph: ExportGraph, fmt: str, out: Path, opset: int, bundle: Path, source: dict[str, Any]
) -> dict[str, Any]:
    (w, h), (ow, oh) = graph.input_size, graph.observation_size
    head = graph.actor.head
    pre = graph.actor.encoder.preprocessing
    proprio = {"name": "proprio", "shape": ["N", head.proprio_dim], "dtype": "float32"}
    described = source.get("observation", {}).get("proprio", {})
    proprio.update({k: described[k] for k in ("names", "units", "description") if k in described})
    exporter = "torch.jit.trace" if fmt == "torchscript" else "torch.onnx.export(dynamo=False)"
    contract: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "graph_format": fmt,
        "file": out.name,
        "exporter": exporter,
        "torch_version": torch.__version__,
        "inputs": [
            {
                "name": "image",
                "shape": ["N", h, w, 3],
                "dtype": "uint8",
                "layout": "NHWC",
                "colour": "RGB",
                "range": [0, 255],
            },
            proprio,
        ],
        "outputs": [
            {"name": OUTPUT_NAME, "shape": ["N", len(head.action_low)], "dtype": "float32"}
        ],
        "resize": {
            "input_size": [w, h],
            "observation_size": [ow, oh],
            "encoder_input_size": [pre.width, pre.height],
            "in_graph": [[list(a), list(b)] for a, b in graph.resize_steps],
            "method": RESIZE_METHOD,
            "caller": f"frames of another size: {CALLER_RESIZE}(frames, {w}, {h})",
        },
        "preprocessing": pre.to_dict(),
        "action": {
            "low": head.action_low.tolist(),
            "high": head.action_high.tolist(),
            "squash": head.squash,
            "postprocess": "tanh then rescale" if head.squash == "tanh" else "clip",
        },
        "source_bundle": {"path": str(bundle), "contract": source},
    }
    if fmt == "onnx":
        import onnx

        contract.update(opset=opset, onnx_version=onnx.__version__)
    return contract


def export_bundle(
    bundle: str | Path,
    fmt: str,
    out: str | Path,
    opset: int = DEFAULT_OPSET,
    input_size: tuple[int, int] | None = None,
    check: bool = True,
) -> Path:
    """Write a bundle as one graph ``out`` plus its contract ``out.json``; returns ``out``.

    Args:
        bundle: a bundle folder or a run folder containing ``bundle/``.
        fmt: ``onnx`` or ``torchscript``.
        out: the graph file to write (``.onnx`` / ``.pt`` by convention).
        opset: ONNX opset (ignored for TorchScript).
        input_size: ``(W, H)`` of the frames the graph takes; default the observation size.
        check: run the graph and the eager policy on 4 random frames and record the largest
            action difference in the contract (``parity``); a warning above 1e-4.

    Raises:
        ConfigError: unknown ``fmt``, or ONNX asked for without ``onnx``/``onnxruntime``.
        CheckpointError: the bundle is missing or broken.

    Example:
        >>> export_bundle("runs/reach", "torchscript", "runs/reach/policy.pt")  # doctest: +SKIP
        PosixPath('runs/reach/policy.pt')
    """
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r}: expected one of {list(FORMATS)}")
    if fmt == "onnx":
        require_onnx("onnx", *(("onnxruntime",) if check else ()))
    bundle, out = Path(bundle), Path(out)
    if not bundle.exists():
        raise CheckpointError(f"bundle {bundle} not found (expected a folder with {CONTRACT_FILE})")
    _, actor, source = load_bundle(bundle, device="cpu")
    graph = ExportGraph(actor, observation_size(source, actor), input_size)
    w, h = graph.input_size
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, h, w, 3), dtype=np.uint8)
    proprio = rng.normal(size=(4, actor.head.proprio_dim)).astype(np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = (torch.from_numpy(frames[:2]), torch.from_numpy(proprio[:2]))
    with torch.no_grad():
        _write_graph(graph, fmt, out, example, opset)
    contract = _contract(graph, fmt, out, opset, bundle, source)
    cpath = contract_path(out)
    write_json(cpath, contract)
    if check:
        want = eager_actions(actor, frames, proprio, graph.observation_size)
        diff = float(np.abs(load_exported(out).act(frames, proprio) - want).max())
        contract["parity"] = {"max_abs_diff": diff, "tolerance": PARITY_TOL, "frames": "4 random"}
        if diff > PARITY_TOL:
            logger.warning("exported %s differs from the eager policy by %.2g", out, diff)
        write_json(cpath, contract)
    logger.info("exported %s as %s (%dx%d uint8 input) to %s", bundle, fmt, w, h, out)
    return out


def cmd_export(args: argparse.Namespace) -> int:
    """``sim2real export``: write the graph and its contract, print where and the parity."""
    size = tuple(args.input_size) if args.input_size else None
    out = export_bundle(args.bundle, args.format, args.out, opset=args.opset, input_size=size)
    contract = json.loads(contract_path(out).read_text())
    w, h = contract["resize"]["input_size"]
    print(f"wrote {out} and {contract_path(out).name} ({args.format}, {w}x{h} uint8 RGB input)")
    if "parity" in contract:
        print(f"max |action - eager| on random frames: {contract['parity']['max_abs_diff']:.2g}")
    return 0
