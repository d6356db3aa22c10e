"""Running stages in order, skipping the ones whose fingerprint says nothing changed.

Each stage writes only under ``OUT/<stage>/``. When it finishes, ``OUT/<stage>/.stage.json``
is written atomically with:

- ``fingerprint``: sha256 of the stage's name and code version, its config sections, the
  fingerprints *and output manifests* of the stages it reads, and the manifest of any
  external input (a user's real-frame folder) -- file contents, never modification times;
- ``outputs``: the manifest of everything it wrote (relative path -> size and sha256);
- ``result``: the small JSON summary later stages and the report read;
- ``seconds``: its wall time.

A stage is skipped when its ``.stage.json`` exists, the fingerprint matches and the outputs
still match the manifest. Otherwise its folder is emptied and it runs again; a stage that
fails or is killed never writes ``.stage.json``, so the next run redoes it -- from where it
stopped for a ``resumable`` stage whose fingerprint is unchanged (``data`` keeps its verified
shards, ``pretrain`` continues from its last epoch), from scratch otherwise. Because a
fingerprint includes the upstream output manifests, re-running a stage whose outputs come
out different re-runs everything downstream of it; one that reproduces the same bytes does
not.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim2real.atomic import write_text
from sim2real.errors import ConfigError, Sim2RealError
from sim2real.pipeline.config import PipelineConfig

logger = logging.getLogger(__name__)

STAGE_FILE = ".stage.json"
#: Written when a resumable stage starts (its fingerprint); removed when it finishes.
PARTIAL_FILE = ".stage.partial"
#: Bump when the stage machinery changes what a stage writes.
ENGINE_VERSION = 1


@dataclass
class Context:
    """What a stage function gets: the config, its folder and the upstream results."""

    cfg: PipelineConfig
    out: Path
    stage: str
    results: dict[str, dict[str, Any]]
    progress: bool = True
    meta: dict[str, Any] = field(default_factory=dict)
    resume: bool = False

    @property
    def dir(self) -> Path:
        """The stage's own output folder, ``OUT/<stage>``."""
        return self.out / self.stage

    def path(self, relative: str) -> Path:
        """An output path recorded relative to ``OUT`` (as results store them)."""
        return self.out / relative

    def rel(self, path: Path) -> str:
        """``path`` relative to ``OUT`` (results never store absolute output paths)."""
        return str(Path(path).resolve().relative_to(self.out.resolve()))


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline.

    Attributes:
        name: folder name under ``OUT`` and the name used by ``--from``/``--to``.
        inputs: upstream stages whose results and outputs it reads.
        sections: config sections in its fingerprint (``"shared"`` = top-level settings).
        run: ``Context -> result`` (JSON-serialisable).
        version: bump when the stage's code changes what it writes.
        enabled: whether the config turns it on.
        external: ``cfg -> [paths]`` read from outside ``OUT`` (hashed into the fingerprint).
        optional: upstream stages it reads when they are enabled (in the fingerprint then).
        resumable: an interrupted run with the same fingerprint is continued, not restarted
            (the stage gets ``ctx.resume=True`` and keeps its partial outputs).
    """

    name: str
    inputs: tuple[str, ...]
    sections: tuple[str, ...]
    run: Callable[[Context], dict[str, Any]]
    version: int = 1
    enabled: Callable[[PipelineConfig], bool] = lambda cfg: True
    external: Callable[[PipelineConfig], list[Path]] = lambda cfg: []
    optional: tuple[str, ...] = ()
    resumable: bool = False


@dataclass
class StageOutcome:
    """What happened to one stage in one pipeline run."""

    name: str
    status: str  # "ran", "skipped", "disabled"
    seconds: float
    reason: str = ""


@dataclass
class PipelineResult:
    """Outcome of :func:`run_stages`: per-stage status and every stage's result."""

    out: Path
    outcomes: list[StageOutcome] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def ran(self) -> list[str]:
        """Names of the stages that ran (not skipped or disabled)."""
        return [o.name for o in self.outcomes if o.status == "ran"]

    def table(self) -> str:
        """One line per stage: status, wall time, reason."""
        lines = [f"{'stage':<10}{'status':<10}{'seconds':>9}  reason"]
        for o in self.outcomes:
            lines.append(f"{o.name:<10}{o.status:<10}{o.seconds:>9.1f}  {o.reason}")
        return "\n".join(lines)


def run_stages(
    stages: Sequence[Stage],
    cfg: PipelineConfig,
    out: Path,
    force_from: str | None = None,
    stop_after: str | None = None,
    progress: bool = True,
    meta: dict[str, Any] | None = None,
) -> PipelineResult:
    """Run ``stages`` in order into ``out``, skipping up-to-date ones.

    Args:
        stages: the stages, upstream first.
        cfg: the validated config.
        out: the pipeline's output folder.
        force_from: re-run this stage and every later one even if up to date.
        stop_after: stop after this stage.
        progress: passed to the stages (tqdm bars).
        meta: passed to the stages (e.g. the command line, for the report); the engine adds
            ``seconds``: each finished stage's wall time when it last ran.

    Raises:
        ConfigError: an unknown ``force_from``/``stop_after`` stage name.
    """
    names = [s.name for s in stages]
    for flag, value in (("--from", force_from), ("--to", stop_after)):
        if value is not None and value not in names:
            raise ConfigError(f"{flag} {value!r}: expected one of {names}")
    out.mkdir(parents=True, exist_ok=True)
    result = PipelineResult(out)
    records: dict[str, dict[str, Any]] = {}
    meta = {**(meta or {}), "seconds": {}}
    forcing = False
    for stage in stages:
        forcing = forcing or stage.name == force_from
        disabled = _disabled_reason(stage, cfg, records)
        if disabled:
            logger.info("stage %s: disabled (%s)", stage.name, disabled)
            shutil.rmtree(out / stage.name, ignore_errors=True)
            result.outcomes.append(StageOutcome(stage.name, "disabled", 0.0, disabled))
        else:
            fingerprint = stage_fingerprint(stage, cfg, records)
            record, reason = _up_to_date(out / stage.name, fingerprint)
            if record is not None and not forcing:
                logger.info("stage %s: skipped (up to date)", stage.name)
                result.outcomes.append(StageOutcome(stage.name, "skipped", 0.0, "up to date"))
            else:
                reason = "forced" if forcing else reason
                logger.info("stage %s: running (%s)", stage.name, reason)
                context = Context(cfg, out, stage.name, result.results, progress, meta)
                record = _run_one(stage, context, fingerprint)
                result.outcomes.append(StageOutcome(stage.name, "ran", record["seconds"], reason))
            records[stage.name] = record
            result.results[stage.name] = record["result"]
            meta["seconds"][stage.name] = record["seconds"]
        if stage.name == stop_after:
            break
    return result


def stage_fingerprint(stage: Stage, cfg: PipelineConfig, records: dict[str, dict[str, Any]]) -> str:
    """sha256 of what determines a stage's outputs (see the module docstring)."""
    missing = [name for name in stage.inputs if name not in records]
    assert not missing, f"stage {stage.name}: upstream {missing} has no record"
    payload = {
        "engine": ENGINE_VERSION,
        "stage": stage.name,
        "version": stage.version,
        "config": {name: cfg.section(name) for name in stage.sections},
        "inputs": {
            name: {"fingerprint": records[name]["fingerprint"], "outputs": records[name]["digest"]}
            for name in (*stage.inputs, *stage.optional)
            if name in records
        },
        "external": {str(p): manifest_digest(tree_manifest(p)) for p in stage.external(cfg)},
    }
    return _sha256_json(payload)


def tree_manifest(root: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"size", "sha256"}}`` of every file under ``root`` (symbolic links
    followed), ``.stage.json`` excluded; a single file maps to ``{name: ...}``."""
    root = Path(root)
    if root.is_file():
        return {root.name: _file_entry(root)}
    if not root.is_dir():
        raise ConfigError(f"input {root} does not exist: expected a file or folder")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.name not in (STAGE_FILE, PARTIAL_FILE) and ".tmp" not in p.name
    )
    return {str(p.relative_to(root)): _file_entry(p) for p in files}


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of a manifest."""
    return _sha256_json(manifest)


def read_record(stage_dir: Path) -> dict[str, Any] | None:
    """The ``.stage.json`` of a finished stage, or ``None``."""
    path = stage_dir / STAGE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        logger.warning("%s is unreadable; the stage will run again", path)
        return None


# -- internals ------------------------------------------------------------------------------
def _disabled_reason(stage: Stage, cfg: PipelineConfig, records: dict[str, Any]) -> str:
    if not stage.enabled(cfg):
        return f"{stage.name}.enabled is false" if hasattr(cfg, stage.name) else "off"
    missing = [name for name in stage.inputs if name not in records]
    return f"needs {', '.join(missing)}" if missing else ""


def _up_to_date(stage_dir: Path, fingerprint: str) -> tuple[dict[str, Any] | None, str]:
    record = read_record(stage_dir)
    if record is None:
        return None, "not run yet"
    if record.get("fingerprint") != fingerprint:
        return None, "config or inputs changed"
    if tree_manifest(stage_dir) != record.get("outputs"):
        return None, "outputs changed or missing"
    return record, ""


def _run_one(stage: Stage, context: Context, fingerprint: str) -> dict[str, Any]:
    stage_dir = context.dir
    partial = stage_dir / PARTIAL_FILE
    if stage.resumable and partial.is_file() and partial.read_text().strip() == fingerprint:
        logger.info("stage %s: continuing the interrupted run in %s", stage.name, stage_dir)
        context.resume = True
    else:
        shutil.rmtree(stage_dir, ignore_errors=True)
        stage_dir.mkdir(parents=True)
        if stage.resumable:
            write_text(partial, fingerprint + "\n")
    started = time.perf_counter()
    try:
        result = stage.run(context)
    except Sim2RealError as exc:
        raise type(exc)(f"stage {stage.name}: {exc}") from exc
    seconds = time.perf_counter() - started
    outputs = tree_manifest(stage_dir)
    record = {
        "stage": stage.name,
        "fingerprint": fingerprint,
        "digest": manifest_digest(outputs),
        "outputs": outputs,
        "result": result,
        "seconds": seconds,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_text(stage_dir / STAGE_FILE, json.dumps(record, indent=1, sort_keys=True) + "\n")
    partial.unlink(missing_ok=True)
    logger.info("stage %s: done in %.1f s", stage.name, seconds)
    return record


def _file_entry(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def _sha256_json(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
