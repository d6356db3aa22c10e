"""Export an encoder's coarse-to-fine keypoint pass as one graph: camera frame -> keypoints.

The graph takes uint8 frames at the refiner's full resolution (``N, H, W, 3``, NHWC) and holds
the whole chain: the encoder's resize (fixed matrices, :func:`~sim2real.deploy.export.
resize_matrix`, as the policy export), crop and normalisation, backbone and ``keypoint``
head (the coarse keypoint), then the refiner's full-resolution window (``GridSample``,
opset >= 16) and its soft-argmax. Outputs, in normalised whole-frame coordinates
(``align_corners=False``): ``keypoint_coarse`` and ``keypoint`` (refined), each ``(N, 2)``.
The contract ``FILE.json`` carries the card's camera, so :class:`ExportedKeypoints` also gives
the ``keypoint_plane`` position without torch.

Example:
    >>> export_keypoints("runs/kuka_encoder", "runs/kuka_encoder/keypoints.onnx")  # doctest: +SKIP
    >>> ExportedKeypoints("runs/kuka_encoder/keypoints.onnx").predict(frame)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sim2real.atomic import temp_path, write_json
from sim2real.deploy.export import DEFAULT_OPSET, PARITY_TOL, _Resize
from sim2real.deploy.exported import contract_path, require_onnx
from sim2real.errors import CheckpointError, ConfigError
from sim2real.perception.encoder import Encoder
from sim2real.perception.geometry import PlaneCamera
from sim2real.perception.preprocessing import RESIZE_METHOD, resize_frames
from sim2real.perception.refine import REFINED_HEAD

logger = logging.getLogger(__name__)

KEYPOINTS_FORMAT = "sim2real.keypoints-export/1"
OUTPUTS = ("keypoint_coarse", "keypoint")


class KeypointGraph(nn.Module):
    """uint8 full-resolution frames -> ``(coarse, refined)`` keypoints, normalised.

    Args:
        encoder: an encoder with a ``keypoint`` head and a refiner attached, in eval mode.

    Shape:
        - image: ``(N, H, W, 3)`` uint8, ``(W, H)`` the refiner's ``frame_size``, in the
          encoder's colour order; returns two ``(N, 2)`` float32.
    """

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        if encoder.refiner is None or REFINED_HEAD not in encoder.heads:
            raise ConfigError(
                f"export keypoints: expected an encoder with a {REFINED_HEAD!r} head and a "
                f"refiner; heads {sorted(encoder.heads)}, refiner: {encoder.refiner is not None}"
            )
        pre = encoder.preprocessing
        self.backbone, self.head = encoder.backbone.eval(), encoder.heads[REFINED_HEAD].eval()
        self.refiner = encoder.refiner.eval()
        self.frame_size = self.refiner.frame_size
        size = (pre.width, pre.height)
        self.resize = _Resize(self.frame_size, size) if tuple(self.frame_size) != size else None
        self.crop = pre.crop
        self.register_buffer("mean", torch.tensor(pre.mean).mul(255.0).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(pre.std).mul(255.0).reshape(1, 3, 1, 1))
        scale, offset = pre._affine(torch.zeros(2))
        self.register_buffer("scale", scale.float())
        self.register_buffer("offset", offset.float())

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = image.permute(0, 3, 1, 2).float()
        x = raw if self.resize is None else self.resize(raw)
        if self.crop is not None:
            x0, y0, x1, y1 = self.crop
            x = x[:, :, y0:y1, x0:x1]
        coarse = self.head(self.backbone((x - self.mean) / self.std))[:, 0]
        coarse = coarse * self.scale + self.offset
        return coarse, self.refiner(raw, coarse)


def export_keypoints(
    encoder_dir: str | Path,
    out: str | Path,
    fmt: str = "onnx",
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    frames: np.ndarray | None = None,
) -> Path:
    """Write the coarse-to-fine keypoint graph ``out`` and its contract ``out.json``.

    Args:
        encoder_dir: an encoder folder with a refiner (``sim2real refine train``).
        out: the graph file (``.onnx`` or ``.pt``).
        fmt: ``onnx`` or ``torchscript``.
        opset: ONNX opset (>= 16: ``GridSample``).
        check: compare the graph with ``Encoder.predict`` and record in the contract
            (``parity``) the largest difference of the outputs (``max_abs_diff``) and of the
            refiner stage given the graph's own coarse keypoint (``refiner_max_abs_diff``: on
            frames of noise the refiner's soft-argmax can turn the coarse keypoint's 1e-7
            float differences into 1e-4); a warning when either is above 1e-4.
        frames: uint8 ``(N, H, W, 3)`` frames at the refiner's size to check on (e.g.
            simulated ones); default: 4 frames of uniform noise.

    Raises:
        ConfigError: unknown format, opset < 16, ONNX without ``onnx``/``onnxruntime``, or an
            encoder without a refiner.
    """
    if fmt not in ("onnx", "torchscript"):
        raise ConfigError(f"format {fmt!r}: expected 'onnx' or 'torchscript'")
    if fmt == "onnx":
        if opset < 16:
            raise ConfigError(f"opset={opset}: expected >= 16 (GridSample)")
        require_onnx("onnx", *(("onnxruntime",) if check else ()))
    encoder = Encoder.load(encoder_dir, device="cpu")
    graph = KeypointGraph(encoder).eval()
    w, h = graph.frame_size
    source = "supplied" if frames is not None else "uniform noise"
    if frames is None:
        frames = np.random.default_rng(0).integers(0, 256, (4, h, w, 3), dtype=np.uint8)
    frames = resize_frames(frames, w, h).numpy()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        _write(graph, fmt, out, torch.from_numpy(frames[:2]), opset)
    contract = _contract(encoder, fmt, out, opset, Path(encoder_dir))
    cpath = contract_path(out)
    write_json(cpath, contract)
    if check:
        colour = encoder.preprocessing.colour
        eager = encoder.predict(frames, colour=colour)
        got = ExportedKeypoints(out).predict(frames)
        diff = max(float(np.abs(got[name] - eager[name][:, 0]).max()) for name in OUTPUTS)
        stage = encoder.refiner.refine_frames(frames, got["keypoint_coarse"], colour=colour)
        stage_diff = float(np.abs(got["keypoint"] - stage).max())
        contract["parity"] = {
            "max_abs_diff": diff,
            "refiner_max_abs_diff": stage_diff,
            "tolerance": PARITY_TOL,
            "frames": f"{len(frames)} {source}",
        }
        if max(diff, stage_diff) > PARITY_TOL:
            logger.warning(
                "exported %s differs from Encoder.predict by %.2g (refiner stage %.2g)",
                out, diff, stage_diff,
            )  # fmt: skip
        write_json(cpath, contract)
    return out


def _write(graph: nn.Module, fmt: str, path: Path, example: torch.Tensor, opset: int) -> None:
    tmp = temp_path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # fixed frame size
            if fmt == "torchscript":
                torch.jit.save(torch.jit.trace(graph, (example,), check_trace=False), str(tmp))
            else:
                torch.onnx.export(
                    graph,
                    (example,),
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    input_names=["image"],
                    output_names=list(OUTPUTS),
                    dynamic_axes={"image": {0: "N"}, **{o: {0: "N"} for o in OUTPUTS}},
                )
                import onnx

                onnx.checker.check_model(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _contract(encoder: Encoder, fmt: str, out: Path, opset: int, source: Path) -> dict[str, Any]:
    w, h = encoder.refiner.frame_size
    pre = encoder.preprocessing
    contract: dict[str, Any] = {
        "format": KEYPOINTS_FORMAT,
        "graph_format": fmt,
        "file": out.name,
        "torch_version": torch.__version__,
        "inputs": [
            {
                "name": "image",
                "shape": ["N", h, w, 3],
                "dtype": "uint8",
                "layout": "NHWC",
                "colour": pre.colour,
                "range": [0, 255],
            },
        ],
        "outputs": [
            {
                "name": name,
                "shape": ["N", 2],
                "dtype": "float32",
                "units": "normalised whole-frame coordinates, align_corners=False",
            }
            for name in OUTPUTS
        ],
        "resize": {
            "frame_size": [w, h],
            "encoder_input_size": [pre.width, pre.height],
            "method": RESIZE_METHOD,
            "caller": f"frames of another size: resize_frames(frames, {w}, {h})",
        },
        "preprocessing": pre.to_dict(),
        "refiner": encoder.refiner.config(),
        "camera": encoder.card.get("camera"),
        "source_encoder": str(source),
    }
    if fmt == "onnx":
        contract["opset"] = opset
    return contract


class ExportedKeypoints:
    """Run an exported keypoint graph (ONNX Runtime or TorchScript), no encoder code needed.

    Args:
        path: the graph file; its contract ``path.json`` beside it.
        threads: intra-op threads (ONNX Runtime and TorchScript); default: theirs.

    Example:
        >>> ExportedKeypoints("keypoints.onnx", threads=1).predict(frame)["keypoint_px"]
        ... # doctest: +SKIP
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        cpath = contract_path(self.path)
        if not self.path.is_file() or not cpath.is_file():
            raise CheckpointError(f"exported keypoints incomplete: {self.path} or {cpath} missing")
        self.contract = json.loads(cpath.read_text())
        if self.contract.get("format") != KEYPOINTS_FORMAT:
            got = self.contract.get("format")
            raise CheckpointError(f"{cpath}: expected format {KEYPOINTS_FORMAT!r}, got {got!r}")
        self.frame_size = tuple(self.contract["resize"]["frame_size"])
        if self.contract["graph_format"] == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = options.inter_op_num_threads = int(threads)
            session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
            self._run = lambda x: session.run(list(OUTPUTS), {"image": x})
        else:
            if threads:
                torch.set_num_threads(int(threads))
            module = torch.jit.load(str(self.path), map_location="cpu").eval()

            def run(x: np.ndarray) -> list[np.ndarray]:
                with torch.no_grad():
                    return [t.numpy() for t in module(torch.from_numpy(x))]

            self._run = run
        camera = self.contract.get("camera")
        self.camera = PlaneCamera.from_card(camera) if camera else None

    def predict(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 ``(H, W, 3)`` / ``(N, H, W, 3)`` frames in the contract's colour order ->
        ``keypoint_coarse``, ``keypoint`` ``(N, 2)`` normalised, ``keypoint_px`` (pixels of the
        given frames, pixel-centre convention as ``Encoder.predict``) and, with a camera in
        the contract, ``position`` ``(N, 3)`` (``keypoint_plane``, metres)."""
        batch = resize_frames(frames, *self.frame_size).numpy()
        coarse, refined = self._run(np.ascontiguousarray(batch))
        h, w = np.shape(frames)[-3:-1]
        out = {"keypoint_coarse": coarse, "keypoint": refined}
        out["keypoint_px"] = (refined + 1.0) * 0.5 * np.array([w, h], np.float32) - 0.5
        if self.camera is not None:
            out["position"] = self.camera.backproject_normalised(refined)
        return out
