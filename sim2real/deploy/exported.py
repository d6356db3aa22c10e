"""Run an exported policy graph (ONNX Runtime or TorchScript) with the eager path's checks.

:func:`sim2real.deploy.export.export_bundle` writes ``FILE`` (``policy.onnx`` or
``policy.pt``) and its contract ``FILE.json`` beside it (e.g. ``policy.onnx.json``). The graph
maps uint8 frames ``(N, H, W, 3)`` at the contract's input size and proprioception
``(N, P)`` to actions ``(N, A)``, normalisation and action squashing inside; frames of another
size are resized by the caller with :func:`sim2real.perception.preprocessing.resize_frames`.

Example:
    >>> policy = load_exported("runs/reach/policy.onnx", threads=1)  # doctest: +SKIP
    >>> policy.act(frame_84x84_rgb, proprio)  # (A,) float32 in the action bounds  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sim2real.errors import CheckpointError, ConfigError, InputError
from sim2real.images import COLOUR_ORDERS
from sim2real.perception.preprocessing import as_frames

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "sim2real.exported_policy/1"
FORMATS = ("onnx", "torchscript")
CONTRACT_SUFFIX = ".json"  # the contract of FILE is FILE + ".json", e.g. policy.onnx.json
INPUT_NAMES = ("image", "proprio")
OUTPUT_NAME = "action"


def contract_path(path: str | Path) -> Path:
    """Where the contract of an exported graph lives: ``FILE`` + ``.json``."""
    path = Path(path)
    return path.with_name(path.name + CONTRACT_SUFFIX)


def require_onnx(*modules: str) -> None:
    """Raise a :class:`ConfigError` naming the extra to install when a module is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"ONNX export/runtime needs {', '.join(missing)}, which is not installed: "
            "pip install 'sim2real[onnx]'"
        )


class ExportedPolicy:
    """An exported policy graph and its contract; :meth:`act` validates like the eager path.

    Args:
        path: the graph file (its contract ``FILE.json`` must be beside it).
        threads: CPU threads for ONNX Runtime's intra-op pool (``None``: its default). For
            TorchScript this sets nothing; use ``torch.set_num_threads``.

    Example:
        >>> policy = ExportedPolicy("runs/reach/policy.pt")  # doctest: +SKIP
        >>> policy.act(np.zeros((84, 84, 3), np.uint8), np.zeros(10, np.float32))  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        cpath = contract_path(self.path)
        for f in (self.path, cpath):
            if not f.is_file():
                raise CheckpointError(f"exported policy incomplete: {f} not found")
        try:
            self.contract: dict[str, Any] = json.loads(cpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{cpath}: not valid JSON ({exc})") from exc
        if self.contract.get("format") != EXPORT_FORMAT:
            got = self.contract.get("format")
            raise CheckpointError(f"{cpath}: expected format {EXPORT_FORMAT!r}, got {got!r}")
        self.graph_format: str = self.contract["graph_format"]
        image, proprio = self.contract["inputs"]
        self.height, self.width = int(image["shape"][1]), int(image["shape"][2])
        self.colour: str = image["colour"]
        self.proprio_dim = int(proprio["shape"][1])
        self.action_low = np.asarray(self.contract["action"]["low"], dtype=np.float32)
        self.action_high = np.asarray(self.contract["action"]["high"], dtype=np.float32)
        if self.graph_format == "onnx":
            self._run = self._onnx_runner(threads)
        elif self.graph_format == "torchscript":
            with warnings.catch_warnings():  # torch 2.10+ marks torch.jit deprecated
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(self.path), map_location="cpu").eval()

            def run(image: np.ndarray, proprio: np.ndarray) -> np.ndarray:
                with torch.inference_mode():
                    out = module(torch.from_numpy(image), torch.from_numpy(proprio))
                return out.numpy()

            self._run = run
        else:
            raise CheckpointError(
                f"{cpath}: graph_format {self.graph_format!r}, expected one of {list(FORMATS)}"
            )

    def _onnx_runner(self, threads: int | None) -> Any:
        require_onnx("onnxruntime")
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

        def run(image: np.ndarray, proprio: np.ndarray) -> np.ndarray:
            return session.run([OUTPUT_NAME], {"image": image, "proprio": proprio})[0]

        return run

    @property
    def input_size(self) -> tuple[int, int]:
        """Frame size the graph takes, ``(W, H)``."""
        return self.width, self.height

    def check_inputs(
        self, frames: np.ndarray | torch.Tensor, proprio: Any, colour: str = "RGB"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Validate and convert to the graph's inputs (contiguous uint8 NHWC, float32 NxP).

        Raises:
            InputError: wrong dtype, shape, channel count, frame size, colour, proprio length,
                or non-finite proprio values.

        Shape:
            - frames: ``(H, W, 3)`` or ``(N, H, W, 3)``; proprio: ``(P,)`` or ``(N, P)``.
        """
        if colour not in COLOUR_ORDERS:
            raise InputError(f"colour={colour!r}: expected one of {list(COLOUR_ORDERS)}")
        x = as_frames(frames)
        if tuple(x.shape[1:3]) != (self.height, self.width):
            raise InputError(
                f"frames: expected {self.width}x{self.height} (W x H), got "
                f"{x.shape[2]}x{x.shape[1]}; resize with "
                "sim2real.perception.preprocessing.resize_frames(frames, "
                f"{self.width}, {self.height}) or use sim2real.deploy.policy.Policy"
            )
        image = x.cpu().numpy()
        if colour != self.colour:
            image = image[..., ::-1]
        try:
            p = np.asarray(proprio, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InputError(f"proprio: expected numbers, got {type(proprio).__name__}") from exc
        if p.ndim not in (1, 2) or p.shape[-1] != self.proprio_dim:
            raise InputError(
                f"proprio: expected ({self.proprio_dim},) or (N, {self.proprio_dim}), "
                f"got shape {p.shape}"
            )
        p = p.reshape(-1, self.proprio_dim)
        if len(p) != len(image):
            raise InputError(f"{len(image)} frames but {len(p)} proprio rows")
        if not np.isfinite(p).all():
            raise InputError(f"proprio: expected finite values, got {p.tolist()}")
        return np.ascontiguousarray(image), np.ascontiguousarray(p)

    def act(self, frames: np.ndarray | torch.Tensor, proprio: Any, colour: str = "RGB") -> Any:
        """uint8 frames + proprio -> actions: ``(A,)`` for one frame, ``(N, A)`` for a batch.

        Example:
            >>> policy.act(frames_rgb, proprio_rows).shape  # doctest: +SKIP
            (4, 3)
        """
        image, p = self.check_inputs(frames, proprio, colour)
        out = np.asarray(self._run(image, p), dtype=np.float32)
        return out[0] if getattr(frames, "ndim", None) == 3 else out


def load_exported(path: str | Path, threads: int | None = None) -> ExportedPolicy:
    """Load ``FILE`` written by ``export_bundle`` (format read from ``FILE.json``).

    Args:
        path: the ``.onnx`` / ``.pt`` file.
        threads: ONNX Runtime intra-op threads (``None``: its default).

    Raises:
        CheckpointError: the file or its contract is missing or of another format.
        ConfigError: an ONNX graph but ``onnxruntime`` is not installed.

    Example:
        >>> load_exported("runs/reach/policy.onnx").act(frame, proprio)  # doctest: +SKIP
    """
    return ExportedPolicy(path, threads=threads)
