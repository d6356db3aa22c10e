"""The ``last`` checkpoint of :mod:`sim2real.perception.train`: weights, optimizer, counters.

Optimizer tensors go to ``train_state.safetensors``, everything else to ``train_state.json``;
nothing is pickled. The folder is written beside ``last`` and swapped in
(:func:`sim2real.atomic.swap_folder`).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sim2real.atomic import swap_folder, temp_path, write_json
from sim2real.perception.encoder import WEIGHTS_FILE, Encoder


@dataclass
class TrainState:
    """Counters saved with the ``last`` checkpoint (``train_state.json``)."""

    epoch: int = 0
    step: int = 0
    train_seconds: float = 0.0
    best_score: float = math.inf
    best_epoch: int = 0


STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"


def save_state(
    folder: Path,
    encoder: Encoder,
    optimizer: torch.optim.Optimizer,
    config: dict[str, Any],
    state: TrainState,
) -> None:
    """Write encoder + optimizer + counters into ``folder``, swapped in atomically.

    Optimizer tensors go to safetensors (``optim.<param>.<key>``), everything else to JSON.
    """
    tmp = temp_path(folder)  # .last.PID.TID.tmp beside it
    old = folder.parent / ".old-last"
    shutil.rmtree(tmp, ignore_errors=True)
    encoder.save(tmp)
    sd = optimizer.state_dict()
    tensors = {
        f"optim.{pid}.{key}": value.detach().contiguous().cpu()
        for pid, entry in sd["state"].items()
        for key, value in entry.items()
    }
    save_file(tensors, str(tmp / STATE_TENSORS))
    groups = [
        {k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
        for g in sd["param_groups"]
    ]
    meta = {"config": config, "state": asdict(state), "param_groups": groups}
    write_json(tmp / STATE_JSON, meta, indent=1, default=str)
    swap_folder(tmp, folder, old)


def load_state(
    folder: Path, encoder: Encoder, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], TrainState]:
    """Inverse of :func:`save_state`: loads weights and optimizer in place."""
    meta = json.loads((folder / STATE_JSON).read_text())
    weights = load_file(str(folder / WEIGHTS_FILE), device=str(encoder.device))
    encoder.load_state_dict(weights, strict=True)
    tensors = load_file(str(folder / STATE_TENSORS))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    config = dict(meta["config"])
    if config.get("size") is not None:
        config["size"] = tuple(config["size"])
    return config, TrainState(**meta["state"])
