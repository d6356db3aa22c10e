"""Presets resolve in a checkout and in a wheel install (``pip install .``)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from sim2real.errors import ConfigError
from sim2real.paths import CONFIGS, REPO_ROOT, preset_path


def test_presets_resolve_by_name_and_path(tmp_path: Path) -> None:
    assert preset_path("scenes", "tabletop_panda") == CONFIGS / "scenes" / "tabletop_panda.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text("{}\n")
    assert preset_path("scenes", own) == own
    with pytest.raises(ConfigError, match=r"not found: expected a YAML path or one of \[.*kuka"):
        preset_path("scenes", "no_such_scene")


def test_wheel_ships_every_preset_file() -> None:
    """pyproject's package-data for sim2real.configs must cover each file under configs/."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")
    meta = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert meta["package-dir"]["sim2real.configs"] == "configs"
    globs = meta["package-data"]["sim2real.configs"]
    files = [
        p.relative_to(REPO_ROOT / "configs")
        for p in (REPO_ROOT / "configs").rglob("*")
        if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts
    ]
    assert files
    missed = [str(f) for f in files if not any(f.match(g) for g in globs)]
    assert not missed, f"configs files a wheel would leave out (add a glob): {missed}"


def test_installed_layout_finds_packaged_presets(tmp_path: Path) -> None:
    """In site-packages the repository root holds no configs/: paths.py reads sim2real/configs."""
    pkg = tmp_path / "site" / "sim2real"
    pkg.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "sim2real" / "paths.py", pkg / "paths.py")
    shutil.copytree(REPO_ROOT / "configs" / "scenes", pkg / "configs" / "scenes")
    spec = importlib.util.spec_from_file_location("installed_paths", pkg / "paths.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["installed_paths"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["installed_paths"]
    assert pkg / "configs" == module.CONFIGS
    assert (
        module.preset_path("scenes", "kuka_cube") == pkg / "configs" / "scenes" / "kuka_cube.yaml"
    )
