"""Nested selection (``strategy="auto"``): labels that are noise are not used, labels that
carry the answer are; the choice and its reasons reach the card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sim2real.data.real import open_real
from sim2real.errors import ConfigError
from sim2real.perception import Encoder
from sim2real.transfer import FinetuneConfig, adapt, finetune, finetune_cli
from sim2real.transfer.training import FrameSet

W, H, N = 64, 48, 12
SQUARE = 12


def _frames(shuffle: bool) -> FrameSet:
    """A white square whose pixel position encodes the label (x -> row, y -> column)."""
    rng = np.random.default_rng(0)
    pos = np.stack([rng.uniform(-1.25, -0.5, N), rng.uniform(-0.6, 0.6, N), np.full(N, 0.33)], 1)
    images = np.full((N, H, W, 3), 30, np.uint8)
    for i, (x, y, _) in enumerate(pos):
        u = int((y + 0.6) / 1.2 * (W - SQUARE))
        v = int((x + 1.25) / 0.75 * (H - SQUARE))
        images[i, v : v + SQUARE, u : u + SQUARE] = 255
    labels = pos[rng.permutation(N)] if shuffle else pos
    return FrameSet(images, labels, tuple(f"f{i:02d}.png" for i in range(N)), (W, H))


def _constant_encoder(frames: FrameSet) -> Encoder:
    """Nature CNN (no BatchNorm) whose position head answers the labels' mean at first."""
    torch.manual_seed(0)
    heads = {"position": {"type": "position", "frame": "robot_base", "hidden": 32}}
    enc = Encoder("nature_cnn", heads, input_size=(W, H), pretrained=False)
    assert frames.positions is not None
    enc.heads["position"].set_target_stats(frames.positions.mean(0), frames.positions.std(0) + 0.01)
    last = [m for m in enc.heads["position"].modules() if isinstance(m, torch.nn.Linear)][-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    enc.card["position_route"] = "position_head"
    return enc.eval()


def _cfg(**more: object) -> FinetuneConfig:
    return FinetuneConfig(
        epochs=6, steps_per_epoch=8, batch_size=8, cv_folds=3, lr=3e-3, augment=False,
        device="cpu", progress=False, candidates=["sim-only", "adabn", "probe", "full"],
        **more,
    )  # fmt: skip


@pytest.mark.parametrize("shuffle", [True, False], ids=["noise labels", "informative labels"])
def test_nested_selection_uses_labels_only_when_they_help(shuffle: bool) -> None:
    frames = _frames(shuffle)
    out = adapt(_constant_encoder(frames), frames, "auto", config=_cfg())
    record = out.card["transfer"][-1]
    sel = record["selection"]
    assert record["requested"] == "auto" and sel["method"] == "3-fold"
    assert "no BatchNorm" in sel["candidates"]["adabn"]["skipped"]
    free = sel["candidates"]["sim-only"]["inner_cv_xy_cm"]
    if shuffle:
        assert sel["chosen"] == "sim-only", sel["why"]
        assert all(c.get("epochs", 0) == 0 for c in sel["candidates"].values())
        assert record["strategy"] == "sim-only" and "epochs" not in record
    else:
        assert sel["chosen"] == "full", sel["why"]
        assert record["epochs"] == sel["candidates"]["full"]["epochs"] > 0
        assert sel["candidates"]["full"]["inner_cv_xy_cm"] < 0.9 * free
        assert "beats the best label-free candidate sim-only" in sel["why"]


def test_outer_folds_measure_the_selection() -> None:
    frames = _frames(shuffle=False)
    out = adapt(_constant_encoder(frames), frames, "auto", config=_cfg(auto_outer_folds=3))
    nested = out.card["transfer"][-1]["selection"]["nested"]
    assert nested["method"] == "3-fold" and len(nested["chosen_per_fold"]) == 3
    assert len(nested["errors"]) == N
    assert nested["xy_cm"]["mean"] < nested["label_free_xy_cm"]["sim-only"]["mean"]


def test_margin_keeps_the_label_free_candidate() -> None:
    frames = _frames(shuffle=False)
    out = adapt(_constant_encoder(frames), frames, "auto", config=_cfg(select_margin_cm=1e3))
    assert out.card["transfer"][-1]["selection"]["chosen"] == "sim-only"


def test_auto_through_finetune_cli_and_fallback(
    encoder: Encoder, real_dir: Path, cfg: FinetuneConfig, tmp_path: Path
) -> None:
    encoder.save(tmp_path / "model")
    cfg = cfg.replace(candidates=["sim-only", "adabn", "adabn+probe"])
    out = finetune_cli(tmp_path / "model", real_dir, tmp_path / "auto", "auto", config=cfg)
    card = json.loads((out / "card.json").read_text())
    sel = card["transfer"][-1]["selection"]
    assert sel["chosen"] in ("sim-only", "adabn", "adabn+probe")
    assert set(sel["candidates"]) == {"sim-only", "adabn", "adabn+probe"}
    assert sel["why"] and card["transfer"][-1]["source_model"] == str(tmp_path / "model")
    real = open_real(real_dir)
    one = adapt(encoder, real.labelled().select([0]), "auto", real.unlabelled(), config=cfg)
    sel = one.card["transfer"][-1]["selection"]
    assert sel["chosen"] == "adabn" and "cannot cross-validate" in sel["why"]


def test_auto_is_not_a_single_strategy(encoder: Encoder) -> None:
    with pytest.raises(ConfigError, match="auto"):
        finetune(encoder, None, "auto")
    with pytest.raises(ConfigError, match="candidates"):
        FinetuneConfig(candidates=["auto"])


def test_curve_measures_auto_by_nested_cv(encoder: Encoder, real_dir: Path, tmp_path: Path) -> None:
    from sim2real.transfer.curve import run_curve

    encoder.save(tmp_path / "model")

    def curve() -> Path:
        return run_curve(
            tmp_path / "model", real_dir, tmp_path / "curve", ks=(0, 1, "all"), repeats=1,
            strategies=("adabn", "auto"), outer_folds=0, baselines=False, progress=False,
            candidates="sim-only,adabn,adabn+probe", epochs=1, steps_per_epoch=1, batch_size=4,
            cv_folds=2, device="cpu",
        )  # fmt: skip

    report = curve()
    entries = json.loads((tmp_path / "curve" / "curve.json").read_text())["entries"]
    points = entries["auto"]["points"]
    assert list(points) == ["0", "1", "all"]
    assert points["0"]["chosen"] == {"adabn": 1}  # no labels: the label-free fallback
    assert sum(points["all"]["chosen"].values()) == 5  # leave-one-out: one choice per run
    assert set(points["all"]["chosen"]) <= {"sim-only", "adabn", "adabn+probe"}
    assert set(points["all"]["inner_cv_xy_cm"]) == {"sim-only", "adabn", "adabn+probe"}
    text = report.read_text()
    assert "## Nested selection (auto)" in text and "outer folds" in text
    assert "inner-CV mean per candidate" in text
    curve()  # resumed from the journal: the same choices read back
    again = json.loads((tmp_path / "curve" / "curve.json").read_text())["entries"]["auto"]
    assert again["points"] == points


def test_a_gain_within_the_noise_is_not_taken() -> None:
    from sim2real.transfer.select import candidate_plans, choose

    plans = candidate_plans(FinetuneConfig(candidates=["adabn", "adabn+top-k"]))
    free = [2.0] * 6
    noisy = [0.5, 3.5, 0.5, 3.5, 0.5, 3.4]  # mean 1.98: 0.02 cm better, +- 0.7 per frame
    scores = {
        "adabn": {"inner_cv_xy_cm": 2.0, "epochs": 0, "errors": free},
        "adabn+top-k": {"inner_cv_xy_cm": float(np.mean(noisy)), "epochs": 4, "errors": noisy},
    }
    name, why = choose(scores, plans)
    assert name == "adabn" and "standard errors" in why
    assert choose(scores, plans, se=0.0)[0] == "adabn+top-k"


def test_cli_finetune_auto_prints_the_choice(
    encoder: Encoder, real_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sim2real.cli import main

    encoder.save(tmp_path / "model")
    code = main([
        "finetune", "--model", str(tmp_path / "model"), "--real", str(real_dir),
        "--out", str(tmp_path / "auto"), "--strategy", "auto", "--device", "cpu",
        "--set", "candidates=sim-only,adabn", "auto_outer_folds=0", "cv_folds=2",
        "progress=false",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "auto chose" in out and "nested CV (leave-one-out" in out
