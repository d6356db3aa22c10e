"""AdaBN: re-estimate BatchNorm running statistics on unlabelled target-domain frames.

Li et al. 2016, "Revisiting Batch Normalization For Practical Domain Adaptation": the
weights learnt in simulation stay as they are; only each BatchNorm layer's
``running_mean``, ``running_var`` and ``num_batches_tracked`` are recomputed on real frames,
so every layer normalises real activations with real statistics. It needs no labels.

The estimate is the cumulative average over batches (``momentum=None``) with every other
module in eval mode (dropout off), computed without gradients.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sim2real.errors import ConfigError, DataError
from sim2real.perception.encoder import Encoder

logger = logging.getLogger(__name__)

#: The state-dict entries AdaBN may change (suffixes of BatchNorm buffers).
BN_STAT_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def batchnorm_layers(module: nn.Module) -> Iterator[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """``(name, layer)`` of every BatchNorm layer that tracks running statistics."""
    for name, child in module.named_modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and child.track_running_stats:
            yield name, child


def has_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` has a BatchNorm layer with running statistics (AdaBN applies).

    Example:
        >>> has_batchnorm(Encoder("nature_cnn", pretrained=False))
        False
    """
    return next(batchnorm_layers(module), None) is not None


def require_batchnorm(encoder: Encoder, strategy: str = "adabn") -> None:
    """Raise a :class:`ConfigError` when the encoder has no BatchNorm layer to adapt."""
    if not has_batchnorm(encoder):
        raise ConfigError(
            f"strategy {strategy!r}: backbone {encoder.backbone.name!r} has no BatchNorm layers "
            "with running statistics, so AdaBN has nothing to re-estimate; use a backbone with "
            "BatchNorm (efficientnet_lite0, resnet18) or another strategy (probe, top-k, full, "
            "dann)"
        )


@torch.no_grad()
def adapt_batchnorm(
    encoder: Encoder,
    frames: np.ndarray | torch.Tensor,
    batch_size: int = 64,
    progress: bool = False,
) -> int:
    """Replace every BatchNorm layer's running statistics by those of ``frames`` (in place).

    Only ``running_mean``, ``running_var`` and ``num_batches_tracked`` change; weights,
    biases, head buffers and the training/eval mode of the encoder are left as they were.

    Args:
        encoder: the encoder to adapt.
        frames: unlabelled target-domain frames, uint8 RGB ``(N, H, W, 3)`` at any size.
        batch_size: frames per forward pass; the statistics are averaged over the batches, so
            a batch of a few frames gives noisy variances (use >= 16 where memory allows).
        progress: show a tqdm bar.

    Returns:
        The number of BatchNorm layers re-estimated.

    Raises:
        ConfigError: the encoder has no BatchNorm layer, or ``batch_size < 1``.
        DataError: no frames.

    Example:
        >>> enc = Encoder("efficientnet_lite0", {"position": {"type": "position"}})
        >>> adapt_batchnorm(enc, np.zeros((8, 96, 128, 3), np.uint8))
        49
    """
    require_batchnorm(encoder)
    if batch_size < 1:
        raise ConfigError(f"adabn batch_size={batch_size!r}: expected an integer >= 1")
    n = len(frames)
    if n == 0:
        raise DataError("adabn: no unlabelled frames to estimate BatchNorm statistics from")
    if n < 2:
        raise DataError("adabn: expected at least 2 unlabelled frames (a variance needs two)")
    layers = [layer for _, layer in batchnorm_layers(encoder)]
    was_training = encoder.training
    saved = [(layer, layer.momentum) for layer in layers]
    encoder.eval()
    try:
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # cumulative moving average over the batches
            layer.train()
        bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
            bounds[-2:] = [(bounds[-2][0], n)]  # a batch of one frame has no variance
        for start, stop in tqdm(bounds, desc="adabn", disable=not progress, leave=False):
            encoder.backbone(encoder.preprocess(frames[start:stop]))
    finally:
        for layer, momentum in saved:
            layer.momentum = momentum
        encoder.train(was_training)
    logger.info("adabn: re-estimated %d BatchNorm layers on %d frames", len(layers), n)
    return len(layers)


def is_bn_stat(key: str) -> bool:
    """Whether a state-dict key is a BatchNorm running statistic (what AdaBN may change)."""
    return key.rsplit(".", 1)[-1] in BN_STAT_SUFFIXES
