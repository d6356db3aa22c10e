"""Resume state: what ``train(..., resume=True)`` needs to go on where a run stopped.

``RUN/resume/`` holds::

    state.safetensors   the SB3 model's torch state: the policy (encoder included), the
                        tensors of every optimizer (Adam moments and step counts), SAC's
                        entropy coefficient
    state.json          format, env steps, update and episode counts, the optimizers'
                        hyper-parameters (param_groups), and what ``train`` adds (wall time)
    replay/*.npy        SAC only: the filled part of the replay buffer (``np.save``, loaded
                        with ``allow_pickle=False``); with pixels this is the big part (84x84
                        RGB, observation and next observation: ~42 kB per transition)

The names come from SB3's own ``_get_torch_save_params`` (PPO: ``policy``,
``policy.optimizer``; SAC: ``policy``, ``actor.optimizer``, ``critic.optimizer``,
``ent_coef_optimizer`` and ``log_ent_coef``), so nothing is pickled, unlike ``model.save``.
The folder is written as ``resume.tmp/`` (files fsynced), then swapped in through
``resume.old``: a run killed at any point while saving keeps a complete state, the new one or
the previous one (:func:`find_resume_state` looks for both).

A resumed run is not bit-identical to an uninterrupted one: the envs start new episodes (a
PPO rollout in progress at the stop is dropped, its steps still counted), the random streams
(SB3's, the envs', DrQ shifts, the auxiliary loss's sampling) are reseeded with
``seed + env steps``, and the auxiliary position loss restarts its frame FIFO and Adam state.
A replay buffer loaded into one of another size keeps its most recent transitions. SB3's
``optimize_memory_usage`` buffers lose the next observation of the newest transition.

Example:
    >>> save_resume_state(model, "runs/ppo/resume", {"wall_s": 812.0})  # doctest: +SKIP
    >>> load_resume_state(model, "runs/ppo/resume")["wall_s"]  # doctest: +SKIP
    812.0
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from stable_baselines3.common.base_class import BaseAlgorithm

from sim2real.atomic import swap_folder
from sim2real.errors import CheckpointError

logger = logging.getLogger(__name__)

RESUME_FORMAT = "sim2real.resume/1"
STATE_FILE = "state.safetensors"
META_FILE = "state.json"
REPLAY_DIR = "replay"


def _attr(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _tensor(t: torch.Tensor) -> torch.Tensor:
    """A CPU copy that shares storage with nothing (safetensors refuses shared tensors)."""
    return t.detach().to("cpu", copy=True).contiguous()


def _torch_state(model: BaseAlgorithm) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state_dicts, variables = model._get_torch_save_params()
    tensors: dict[str, torch.Tensor] = {}
    optimizers: dict[str, Any] = {}
    for name in state_dicts:
        obj = _attr(model, name)
        if isinstance(obj, torch.optim.Optimizer):
            sd = obj.state_dict()
            scalars: dict[str, dict[str, Any]] = {}
            for pid, entry in sd["state"].items():
                for key, value in entry.items():
                    if isinstance(value, torch.Tensor):
                        tensors[f"{name}/state/{pid}/{key}"] = _tensor(value)
                    else:
                        scalars.setdefault(str(pid), {})[key] = value
            optimizers[name] = {"param_groups": sd["param_groups"], "scalars": scalars}
        else:
            for key, value in obj.state_dict().items():
                tensors[f"{name}/{key}"] = _tensor(value)
    for name in variables:
        tensors[f"var/{name}"] = _tensor(_attr(model, name))
    return tensors, optimizers


def _replay_arrays(model: BaseAlgorithm) -> dict[str, np.ndarray]:
    """The replay buffer's per-transition arrays, by name (``observations.image``, ...)."""
    buffer = getattr(model, "replay_buffer", None)
    if buffer is None:
        return {}
    arrays: dict[str, np.ndarray] = {}
    for name, value in vars(buffer).items():
        if isinstance(value, np.ndarray) and value.ndim >= 2:
            arrays[name] = value
        elif isinstance(value, dict) and all(isinstance(v, np.ndarray) for v in value.values()):
            arrays.update({f"{name}.{key}": v for key, v in value.items()})
    return arrays


def _replay_filled(model: BaseAlgorithm) -> int:
    buffer = model.replay_buffer
    return int(buffer.buffer_size if buffer.full else buffer.pos)


def save_resume_state(
    model: BaseAlgorithm, folder: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model``'s training state to ``folder`` (atomically: the old state survives a
    kill during the write). ``extra``: JSON values stored alongside (``train``'s wall time).

    Returns:
        ``folder``.
    """
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors, optimizers = _torch_state(model)
    save_file(tensors, str(tmp / STATE_FILE), metadata={"format": RESUME_FORMAT})
    meta: dict[str, Any] = {
        "format": RESUME_FORMAT,
        "algo": type(model).__name__,
        "num_timesteps": int(model.num_timesteps),
        "n_updates": int(getattr(model, "_n_updates", 0)),
        "episode_num": int(getattr(model, "_episode_num", 0)),
        "optimizers": optimizers,
        "extra": dict(extra or {}),
    }
    if _replay_arrays(model):
        filled = _replay_filled(model)
        (tmp / REPLAY_DIR).mkdir()
        for name, array in _replay_arrays(model).items():
            np.save(tmp / REPLAY_DIR / f"{name}.npy", array[:filled], allow_pickle=False)
        meta["replay"] = {
            "filled": filled,
            "pos": int(model.replay_buffer.pos),
            "full": bool(model.replay_buffer.full),
        }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")  # last: marks complete
    swap_folder(tmp, folder, folder.with_name(folder.name + ".old"))
    logger.info("resume state at %d env steps: %s", model.num_timesteps, folder)
    return folder


def find_resume_state(run: str | Path) -> Path | None:
    """``run/resume`` if complete; else a complete ``resume.old`` left by a kill mid-swap."""
    for name in ("resume", "resume.old"):
        folder = Path(run) / name
        if (folder / META_FILE).is_file() and (folder / STATE_FILE).is_file():
            return folder
    return None


def load_resume_state(model: BaseAlgorithm, folder: str | Path) -> dict[str, Any]:
    """Load a state written by :func:`save_resume_state` into ``model`` (built with the same
    configuration); returns the ``extra`` dict stored with it.

    Raises:
        CheckpointError: missing files, another format or algorithm, or tensors that do not
            fit the model (a different configuration).
    """
    folder = Path(folder)
    for name in (META_FILE, STATE_FILE):
        if not (folder / name).is_file():
            raise CheckpointError(f"resume state incomplete: {folder / name} not found")
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{folder / META_FILE}: not valid JSON ({exc})") from exc
    if meta.get("format") != RESUME_FORMAT:
        raise CheckpointError(
            f"{folder}: expected resume format {RESUME_FORMAT!r}, got {meta.get('format')!r}"
        )
    if meta["algo"] != type(model).__name__:
        raise CheckpointError(
            f"{folder}: resume state of a {meta['algo']} model, got a {type(model).__name__}"
        )
    try:  # on CPU: load_state_dict / copy_ move each tensor where its parameter lives (Adam's
        # step counters stay on CPU, as torch keeps them)
        tensors = load_file(str(folder / STATE_FILE), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{folder / STATE_FILE}: cannot be read ({exc})") from exc
    state_dicts, variables = model._get_torch_save_params()
    try:
        for name in state_dicts:
            obj = _attr(model, name)
            prefix = f"{name}/"
            if isinstance(obj, torch.optim.Optimizer):
                saved = meta["optimizers"][name]
                state: dict[int, dict[str, Any]] = {}
                for key, value in tensors.items():
                    if key.startswith(prefix + "state/"):
                        pid, field = key[len(prefix + "state/") :].split("/", 1)
                        state.setdefault(int(pid), {})[field] = value
                for pid, fields in saved["scalars"].items():
                    state.setdefault(int(pid), {}).update(fields)
                obj.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
            else:
                sub = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
                obj.load_state_dict(sub, strict=True)
        for name in variables:
            with torch.no_grad():
                _attr(model, name).copy_(tensors[f"var/{name}"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(
            f"{folder}: resume state does not fit this model (another configuration?): {exc}"
        ) from exc
    if "replay" in meta:
        _load_replay(model, folder / REPLAY_DIR, meta["replay"])
    model.num_timesteps = int(meta["num_timesteps"])
    model._n_updates = int(meta["n_updates"])
    model._episode_num = int(meta["episode_num"])
    logger.info("resumed from %s at %d env steps", folder, model.num_timesteps)
    return dict(meta.get("extra", {}))


def _load_replay(model: BaseAlgorithm, folder: Path, info: dict[str, Any]) -> None:
    """Put the saved transitions back, oldest first; a buffer of another size (SAC's default
    size follows ``steps``, which a resumed run may raise) keeps the most recent ones."""
    buffer = model.replay_buffer
    filled, pos, full = int(info["filled"]), int(info["pos"]), bool(info["full"])
    keep = min(filled, buffer.buffer_size)
    for name, array in _replay_arrays(model).items():
        path = folder / f"{name}.npy"
        if not path.is_file():
            raise CheckpointError(f"resume state incomplete: {path} not found")
        saved = np.load(path, mmap_mode="r", allow_pickle=False)
        if saved.shape != (filled, *array.shape[1:]) or saved.dtype != array.dtype:
            raise CheckpointError(
                f"{path}: expected {(filled, *array.shape[1:])} {array.dtype}, "
                f"got {saved.shape} {saved.dtype}"
            )
        if full and filled == buffer.buffer_size:  # same ring: back as it was
            array[:] = saved
        else:  # oldest first: a full ring starts at pos
            order = np.r_[pos:filled, 0:pos] if full else np.arange(filled)
            array[:keep] = saved[order[filled - keep :]]
    if full and filled == buffer.buffer_size:
        buffer.pos, buffer.full = pos, True
    else:
        buffer.pos, buffer.full = keep % buffer.buffer_size, keep == buffer.buffer_size
