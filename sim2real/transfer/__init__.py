"""Transfer to real frames: fine-tuning strategies, AdaBN, DANN and the k-shot report.

Example:
    >>> from sim2real.transfer import finetune_cli
    >>> out = finetune_cli(  # doctest: +SKIP
    ...     "runs/kuka/encoder", "real/kuka_cube", "runs/kuka/adapted", "adabn+top-k"
    ... )
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim2real.lazy import lazy_getattr

if TYPE_CHECKING:
    from sim2real.transfer.adabn import adapt_batchnorm, batchnorm_layers, has_batchnorm
    from sim2real.transfer.config import FinetuneConfig
    from sim2real.transfer.dann import DomainClassifier, GradientReversal, dann_lambda, grad_reverse
    from sim2real.transfer.select import adapt, finetune_cli
    from sim2real.transfer.strategies import STRATEGIES, Plan, finetune, parse_strategy
    from sim2real.transfer.training import FrameSet

#: Where each public name is defined; imported on first use, so that importing a
#: submodule (e.g. the settings, for the command line) does not load torch.
_SOURCES = {
    "adapt_batchnorm": "sim2real.transfer.adabn",
    "batchnorm_layers": "sim2real.transfer.adabn",
    "has_batchnorm": "sim2real.transfer.adabn",
    "FinetuneConfig": "sim2real.transfer.config",
    "DomainClassifier": "sim2real.transfer.dann",
    "GradientReversal": "sim2real.transfer.dann",
    "dann_lambda": "sim2real.transfer.dann",
    "grad_reverse": "sim2real.transfer.dann",
    "STRATEGIES": "sim2real.transfer.strategies",
    "Plan": "sim2real.transfer.strategies",
    "finetune": "sim2real.transfer.strategies",
    "finetune_cli": "sim2real.transfer.select",
    "adapt": "sim2real.transfer.select",
    "parse_strategy": "sim2real.transfer.strategies",
    "FrameSet": "sim2real.transfer.training",
}


__getattr__ = lazy_getattr(globals(), _SOURCES)


__all__ = [
    "STRATEGIES",
    "DomainClassifier",
    "FinetuneConfig",
    "FrameSet",
    "GradientReversal",
    "Plan",
    "adapt",
    "adapt_batchnorm",
    "batchnorm_layers",
    "dann_lambda",
    "finetune",
    "finetune_cli",
    "grad_reverse",
    "has_batchnorm",
    "parse_strategy",
]
