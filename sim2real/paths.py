"""Where the project's own files live (configs presets, default run folders)."""

from __future__ import annotations

from pathlib import Path

from sim2real.errors import ConfigError

#: Repository root of an editable install (``pip install -e .``, what ``make install`` does).
REPO_ROOT = Path(__file__).resolve().parents[1]


def _configs_dir() -> Path:
    """The presets: shipped inside the package by a wheel (``pip install .``, where the
    repository root is site-packages), else the checkout's ``configs/`` (editable install)."""
    packaged = Path(__file__).resolve().parent / "configs"
    return packaged if packaged.is_dir() else REPO_ROOT / "configs"


CONFIGS = _configs_dir()
RUNS = Path("runs")


def preset_path(kind: str, name_or_path: str | Path) -> Path:
    """Resolve a preset name (``"default"``) or a path to a YAML file.

    Args:
        kind: sub-folder of ``configs/``: ``"scenes"``, ``"randomization"`` or ``"pipelines"``.
        name_or_path: a preset name without extension, or a path to a YAML file.

    Example:
        >>> preset_path("scenes", "kuka_cube").name
        'kuka_cube.yaml'
    """
    p = Path(name_or_path)
    if p.suffix in {".yaml", ".yml"} and p.exists():
        return p
    candidate = CONFIGS / kind / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    available = sorted(q.stem for q in (CONFIGS / kind).glob("*.yaml"))
    raise ConfigError(
        f"{kind} preset {str(name_or_path)!r} not found: expected a YAML path or one of {available}"
    )
