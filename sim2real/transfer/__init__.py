"""Transfer to real frames: fine-tuning strategies, AdaBN, DANN and the k-shot report.

Example:
    >>> from sim2real.transfer import finetune_cli
    >>> out = finetune_cli(  # doctest: +SKIP
    ...     "runs/kuka/encoder", "real/kuka_cube", "runs/kuka/adapted", "adabn+top-k"
    ... )
"""

from __future__ import annotations

from sim2real.transfer.adabn import adapt_batchnorm, batchnorm_layers, has_batchnorm
from sim2real.transfer.config import FinetuneConfig
from sim2real.transfer.dann import DomainClassifier, GradientReversal, dann_lambda, grad_reverse
from sim2real.transfer.strategies import (
    STRATEGIES,
    Plan,
    finetune,
    finetune_cli,
    parse_strategy,
)
from sim2real.transfer.training import FrameSet

__all__ = [
    "STRATEGIES",
    "DomainClassifier",
    "FinetuneConfig",
    "FrameSet",
    "GradientReversal",
    "Plan",
    "adapt_batchnorm",
    "batchnorm_layers",
    "dann_lambda",
    "finetune",
    "finetune_cli",
    "grad_reverse",
    "has_batchnorm",
    "parse_strategy",
]
