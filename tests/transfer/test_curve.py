"""k-shot transfer curve and report: end to end on tiny data, summary logic, input checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sim2real.errors import ConfigError, DataError
from sim2real.perception import Encoder
from sim2real.transfer.config import check_ks
from sim2real.transfer.curve import (
    IMAGENET,
    JOURNAL,
    SCRATCH,
    ZERO_SHOT,
    run_curve,
    splits,
)
from sim2real.transfer.report import summary

TINY = {"epochs": 1, "steps_per_epoch": 1, "batch_size": 4, "cv_folds": 2, "device": "cpu"}


def test_curve_end_to_end(encoder: Encoder, real_dir: Path, sim_dir: Path, tmp_path: Path) -> None:
    encoder.save(tmp_path / "model")
    report = run_curve(
        tmp_path / "model", real_dir, tmp_path / "curve", sim_dir=sim_dir,
        ks=(0, 1, 2, "all"), repeats=2, strategies=("probe", "adabn", "dann", "adabn+top-k"),
        outer_folds=0, progress=False, **TINY,
    )  # fmt: skip
    out = tmp_path / "curve"
    assert report == out / "report.md"
    for name in ("curve.png", "best.png", "curve.json"):
        assert (out / name).stat().st_size > 0
    results = json.loads((out / "curve.json").read_text())
    entries = results["entries"]
    assert set(entries) == {ZERO_SHOT, "probe", "adabn", "dann", "adabn+top-k", IMAGENET, SCRATCH}
    assert not any(e["skipped"] for e in entries.values())
    zero = entries[ZERO_SHOT]["points"]["0"]
    assert zero["runs"] == 1 and len(zero["errors"]) == 5
    assert entries["probe"]["points"]["0"]["mean"] == zero["mean"]  # k = 0: nothing trained yet
    assert list(entries["adabn"]["points"]) == ["0"]
    assert list(entries[IMAGENET]["points"]) == ["1", "2", "all"]
    one, everything = entries["probe"]["points"]["1"], entries["probe"]["points"]["all"]
    assert one["runs"] == 2 and len(one["errors"]) == 2 * 4  # 4 held-out frames per run
    assert everything["runs"] == 5 and everything["k_train"] == 4  # leave-one-out
    assert one["train_sets"] == entries[SCRATCH]["points"]["1"]["train_sets"]  # paired subsets
    text = report.read_text()
    for needle in ("## Summary", "negative transfer", "slope", "k=all", "## Full table", "dann"):
        assert needle in text
    assert "## Not measured" not in text


def test_curve_says_what_it_cannot_measure(
    nature_encoder: Encoder, real_dir: Path, tmp_path: Path
) -> None:
    nature_encoder.save(tmp_path / "model")
    report = run_curve(
        tmp_path / "model", real_dir, tmp_path / "curve", ks=(0, 1), repeats=1,
        strategies=("probe", "adabn", "dann"), progress=False, **TINY,
    )  # fmt: skip
    entries = json.loads((tmp_path / "curve" / "curve.json").read_text())["entries"]
    assert "no BatchNorm" in entries["adabn"]["skipped"]
    assert "simulated" in entries["dann"]["skipped"]
    assert "ImageNet" in entries[IMAGENET]["skipped"]
    assert entries["probe"]["points"]["1"]["runs"] == 1
    text = report.read_text()
    assert "## Not measured" in text and "no BatchNorm layers" in text


def _point(k_train: int, mean: float, zero: float) -> dict:
    return {"k_train": k_train, "mean": mean, "zero_shot": zero, "std": 0.0, "runs": 1}


def test_summary_flags_negative_transfer_and_slope() -> None:
    results = {
        "entries": {
            ZERO_SHOT: {"kind": "reference", "skipped": None, "points": {"0": _point(0, 4, 4)}},
            "good": {
                "kind": "strategy",
                "skipped": None,
                "points": {
                    "0": _point(0, 4.0, 4.0),
                    "1": _point(1, 3.0, 4.0),
                    "2": _point(2, 2.0, 4.0),
                    "4": _point(4, 1.0, 4.0),
                },
            },
            "bad": {
                "kind": "strategy",
                "skipped": None,
                "points": {"1": _point(1, 5.0, 4.0), "2": _point(2, 3.5, 4.0)},
            },
            IMAGENET: {
                "kind": "baseline",
                "skipped": None,
                "points": {"1": _point(1, 6.0, 4.0), "2": _point(2, 3.0, 4.0)},
            },
            SCRATCH: {"kind": "baseline", "skipped": "not run", "points": {}},
        }
    }
    rows = summary(results)
    assert rows["good"]["slope"] == pytest.approx(-1.0)
    assert (rows["good"]["start"], rows["good"]["start_k"]) == (4.0, "0")
    assert (rows["good"]["best"], rows["good"]["best_k"]) == (1.0, "4")
    assert rows["good"]["flags"] == []
    assert rows["bad"]["start_k"] == "1"
    flags = " | ".join(rows["bad"]["flags"])
    assert "worse than zero-shot at k=1" in flags and "k=2" not in flags.split("|")[0]
    assert "worse than real-only at k=2" in flags
    assert rows[IMAGENET]["flags"] == [] and SCRATCH not in rows


def test_splits_and_ks() -> None:
    pairs = splits(6, 2, repeats=3, outer_folds=3, seed=0)
    assert [(len(a), len(b)) for a, b in pairs] == [(2, 4)] * 3
    assert all(not set(a) & set(b) for a, b in pairs)
    folds = splits(6, "all", repeats=3, outer_folds=3, seed=0)
    assert sorted(np.concatenate([b for _, b in folds]).tolist()) == list(range(6))
    assert check_ks((0, "1", "all")) == [0, 1, "all"]
    for bad in ((), (1, 1), (-1,), ("some",), (True,)):
        with pytest.raises(ConfigError, match="ks"):
            check_ks(bad)


def test_curve_needs_two_labelled_frames(encoder: Encoder, real_dir: Path, tmp_path: Path) -> None:
    encoder.save(tmp_path / "model")
    with pytest.raises(DataError, match="at least 2 labelled"):
        run_curve(tmp_path / "model", real_dir / "unlabelled", tmp_path / "c", progress=False)
    with pytest.raises(ConfigError, match="repeats"):
        run_curve(tmp_path / "model", real_dir, tmp_path / "c", repeats=0)


def test_curve_resumes_from_its_journal(
    encoder: Encoder, real_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sim2real.transfer.curve as curve_module

    encoder.save(tmp_path / "model")
    out = tmp_path / "curve"
    args = dict(ks=(0, 1, 2), repeats=2, strategies=("probe",), baselines=False, progress=False)
    run_curve(tmp_path / "model", real_dir, out, **args, **TINY)
    first = json.loads((out / "curve.json").read_text())
    journal = (out / JOURNAL).read_text().splitlines()
    assert "fingerprint" in json.loads(journal[0]) and len(journal) == 1 + 5  # k=0, k=1,2 x 2

    trained: list[tuple[str, int]] = []
    real_one_run = curve_module._one_run

    def counting(setup, job, train, test, repeat):  # type: ignore[no-untyped-def]
        trained.append((job.name, len(train)))
        return real_one_run(setup, job, train, test, repeat)

    monkeypatch.setattr(curve_module, "_one_run", counting)
    # killed after three runs, while writing the fourth: the torn line is cut, two retrained
    (out / JOURNAL).write_text("\n".join(journal[:4]) + '\n{"entry": "probe", "k": "2", "rep')
    (out / "curve.json").unlink()
    run_curve(tmp_path / "model", real_dir, out, **args, **TINY)
    assert trained == [("probe", 2), ("probe", 2)]
    again = json.loads((out / "curve.json").read_text())
    assert again["meta"]["resumed_runs"] == 3
    for k in ("0", "1", "2"):
        assert again["entries"]["probe"]["points"][k] == first["entries"]["probe"]["points"][k]
    assert len((out / JOURNAL).read_text().splitlines()) == 1 + 5

    trained.clear()
    run_curve(tmp_path / "model", real_dir, out, **args, **TINY)  # all done: nothing trains
    assert trained == []
    with pytest.raises(ConfigError, match="differs in: config"):
        run_curve(tmp_path / "model", real_dir, out, **args, **{**TINY, "epochs": 2})
