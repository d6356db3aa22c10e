"""Entry point of a pipeline run: config, checks, torch threads, stages, top-level report."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from sim2real.errors import ConfigError
from sim2real.pipeline.config import PipelineConfig, load_config, parse_overrides
from sim2real.pipeline.engine import PipelineResult, run_stages

logger = logging.getLogger(__name__)


def run_pipeline(
    config: str | Path | PipelineConfig,
    out: str | Path,
    overrides: list[str] | dict[str, Any] | None = None,
    tiny: bool = False,
    real: str | Path | None = None,
    force_from: str | None = None,
    stop_after: str | None = None,
    progress: bool = True,
    command: str | None = None,
) -> PipelineResult:
    """Run (or resume) a pipeline into ``out``; ``out/report.md`` is the report.

    Args:
        config: a YAML path, a preset name in ``configs/pipelines/`` or a config.
        out: output folder; one sub-folder per stage.
        overrides: dotted ``key=value`` settings (``["pretrain.epochs=3"]``).
        tiny: apply the config's ``tiny:`` overrides (every stage in seconds).
        real: a folder of real frames (``labelled/`` + ``unlabelled/``): the target domain.
        force_from: re-run this stage and every later one.
        stop_after: stop after this stage.
        progress: tqdm bars in the stages.
        command: the command line, quoted in the report.

    Returns:
        What ran, what was skipped, and every stage's result.

    Raises:
        ConfigError: a bad config key or value (named), a missing ``real`` folder.

    Example:
        >>> run_pipeline("configs/pipelines/kuka_cube.yaml", "runs/kuka",
        ...              real="../shared/real/kuka_cube")  # doctest: +SKIP
    """
    from sim2real.pipeline.report import top_level
    from sim2real.pipeline.stages import STAGES

    if isinstance(config, PipelineConfig):
        cfg = config
    else:
        more = parse_overrides(overrides)
        if real is not None:
            more["real"] = str(Path(real).resolve())
        cfg = load_config(config, more, tiny=tiny)
    check_settings(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    meta = {"command": command, "out": str(out)}
    with torch_threads(cfg.threads):
        result = run_stages(STAGES, cfg, out, force_from, stop_after, progress, meta)
    if "report" in result.results:
        seconds = {o.name: o.seconds for o in result.outcomes}
        meta_all = {**meta, "seconds": _last_seconds(out, seconds)}
        path = top_level(out, cfg, result.results, meta_all)
        logger.info("report: %s", path)
    logger.info("pipeline %s in %s:\n%s", cfg.name, out, result.table())
    return result


def check_settings(cfg: PipelineConfig) -> None:
    """Validate what the config model cannot (training settings, strategy names, the real
    folder) before any stage runs; fine-tuning and curve settings are validated on loading.

    Raises:
        ConfigError: naming the dotted key.
    """
    from sim2real.transfer import parse_strategy

    if cfg.real is not None and not Path(cfg.real).is_dir():
        raise ConfigError(f"real={cfg.real!r}: expected a folder of real frames")
    for key, name in [("adapt.strategy", cfg.adapt.strategy)] + [
        (f"adapt.curve.strategies[{i}]", s) for i, s in enumerate(cfg.adapt.curve.strategies)
    ]:
        try:
            if name != "auto":  # nested selection among FinetuneConfig.candidates
                parse_strategy(name)
        except ConfigError as exc:
            raise ConfigError(f"{key}: {exc}") from exc
    if cfg.policy.enabled:
        from pydantic import ValidationError

        from sim2real.policies.config import TrainConfig

        reserved = {"env_id", "encoder", "algo", "steps", "n_envs", "mode", "seed"}
        sections = [("policy", cfg.policy.settings)]
        if cfg.scratch.enabled:
            sections.append(("scratch", cfg.scratch.settings))
        for name, settings in sections:
            keys = reserved | ({"backbone", "pool"} if name == "scratch" else set())
            clash = sorted(keys & set(settings))
            if clash:
                raise ConfigError(
                    f"{name}.settings: {clash} are policy.* or scratch.* keys, set them there"
                )
            try:
                TrainConfig(**settings)
            except ValidationError as exc:
                bad = "; ".join(
                    f"{name}.settings.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                    for e in exc.errors()
                )
                raise ConfigError(f"invalid {name} settings: {bad}") from exc


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op threads for the block (``None``: leave as is)."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _last_seconds(out: Path, fallback: dict[str, float]) -> dict[str, float]:
    from sim2real.pipeline.engine import read_record

    seconds = {}
    for name in fallback:
        record = read_record(out / name)
        if record is not None:
            seconds[name] = float(record["seconds"])
    return seconds
