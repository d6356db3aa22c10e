"""``sim2real pipeline``: data -> target -> pretrain -> adapt -> evaluate -> policy ->
export -> run -> report, each stage skipped when its outputs exist and its inputs and config
are unchanged (see :mod:`sim2real.pipeline.engine`).

Example:
    >>> from sim2real.pipeline import run_pipeline
    >>> result = run_pipeline("demo", "runs/demo", tiny=True)  # doctest: +SKIP
    >>> result.ran()  # doctest: +SKIP
    ['data', 'target', 'pretrain', 'adapt', 'evaluate', 'policy', 'export', 'run', 'report']
"""

from __future__ import annotations

from sim2real.pipeline.config import PipelineConfig, load_config
from sim2real.pipeline.engine import PipelineResult, Stage, run_stages
from sim2real.pipeline.run import run_pipeline

__all__ = ["PipelineConfig", "PipelineResult", "Stage", "load_config", "run_pipeline", "run_stages"]
