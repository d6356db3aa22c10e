"""Fine-tuning strategies: each changes exactly what it should; gradient reversal; bad inputs."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from sim2real.data.real import open_real
from sim2real.data.shards import ShardedDataset
from sim2real.errors import ConfigError, DataError
from sim2real.perception import Encoder
from sim2real.transfer import (
    DomainClassifier,
    FinetuneConfig,
    GradientReversal,
    adapt_batchnorm,
    dann_lambda,
    finetune,
    finetune_cli,
    grad_reverse,
    parse_strategy,
)
from sim2real.transfer.adabn import is_bn_stat
from sim2real.transfer.strategies import kfold


def _state(enc: Encoder) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in enc.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], after: Encoder) -> set[str]:
    now = after.state_dict()
    return {k for k, v in before.items() if not torch.equal(v, now[k])}


def _block(key: str) -> int | None:
    parts = key.split(".")
    return int(parts[2]) if parts[:2] == ["backbone", "blocks"] else None


# ---------------------------------------------------------------------------- gradient reversal
def test_gradient_reversal_flips_and_scales() -> None:
    x = torch.randn(3, 5, requires_grad=True)
    w = torch.randn(3, 5)
    y = grad_reverse(x, 0.3)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.3 * w)
    x.grad = None
    (GradientReversal(0.0)(x) * w).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(w))
    with pytest.raises(ConfigError, match="lambda"):
        grad_reverse(x, -1.0)


def test_dann_lambda_schedule() -> None:
    values = [dann_lambda(p) for p in np.linspace(0, 1, 11)]
    assert values[0] == 0.0 and values[-1] > 0.999
    assert all(b > a for a, b in itertools.pairwise(values))
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + np.exp(-5)) - 1)


def test_domain_classifier_gradient_reaches_features_reversed() -> None:
    torch.manual_seed(0)
    clf = DomainClassifier(8, hidden=16, dropout=0.0)
    sim = torch.randn(4, 8, requires_grad=True)
    real = torch.randn(4, 8) + 1.0
    clf.reverse.lambd = 1.0
    loss, accuracy = clf.loss(sim, real)
    loss.backward()
    reversed_grad = sim.grad.clone()
    sim.grad = None
    clf.reverse.lambd = 0.0
    clf.loss(sim, real)[0].backward()
    assert 0.0 <= accuracy <= 1.0
    assert torch.equal(sim.grad, torch.zeros_like(sim.grad))
    assert reversed_grad.abs().sum() > 0


# ---------------------------------------------------------------------------- what changes
@pytest.mark.parametrize(
    "strategy", ["probe", "top-k", "full", "adabn", "dann", "adabn+top-k", "adabn+dann"]
)
def test_strategy_changes_exactly_what_it_should(
    strategy: str, encoder: Encoder, real_dir: Path, sim_dir: Path, cfg: FinetuneConfig
) -> None:
    real = open_real(real_dir)
    before = _state(encoder)
    cfg = cfg.replace(select_epochs=False)  # cross-validation may choose 0 epochs
    adapted = finetune(encoder, real.labelled(), strategy, real.unlabelled(), sim_dir, config=cfg)
    assert not _changed(before, encoder), "finetune must not modify its input encoder"
    changed = _changed(before, adapted)
    plan = parse_strategy(strategy)
    bn_stats = {k for k in changed if is_bn_stat(k)}
    weights = changed - bn_stats
    n = len(encoder.backbone.blocks)
    if plan.adabn:
        assert bn_stats, "adabn must re-estimate BatchNorm statistics"
        assert all(_block(k) is not None for k in bn_stats)
    else:
        assert not bn_stats, "only adabn may change BatchNorm running statistics"
    backbone = {k for k in weights if k.startswith("backbone.")}
    heads = {k for k in weights if k.startswith("heads.")}
    assert not any(k.endswith(("target_mean", "target_std")) for k in weights)
    if plan.train is None:
        assert not weights
    elif plan.train == "probe":
        assert heads and not backbone
    elif plan.train == "top-k":
        assert heads and backbone
        assert {_block(k) for k in backbone} <= set(range(n - cfg.top_k, n))
    else:  # full, dann: everything trainable
        assert heads and any(_block(k) == 0 for k in backbone)
    record = adapted.card["transfer"][-1]
    assert record["strategy"] == plan.name and record["config"]["seed"] == cfg.seed
    assert record.get("epochs", cfg.epochs) == cfg.epochs


def test_epochs_chosen_by_cross_validation(
    encoder: Encoder, real_dir: Path, cfg: FinetuneConfig
) -> None:
    adapted = finetune(encoder, open_real(real_dir).labelled(), "full", config=cfg)
    record = adapted.card["transfer"][-1]
    cv = record["cv"]
    assert cv["method"] == "2-fold" and len(cv["mean_xy_cm_by_epoch"]) == cfg.epochs + 1
    assert record["epochs"] == cv["epochs"] == int(np.argmin(cv["mean_xy_cm_by_epoch"]))
    assert adapted.card["metrics"]["real_cv"]["strategy"] == "full"


def test_adabn_touches_only_bn_running_stats(encoder: Encoder, real_dir: Path) -> None:
    frames = np.stack([f.image for f in open_real(real_dir).unlabelled()])
    before = _state(encoder)
    n_layers = adapt_batchnorm(encoder, frames, batch_size=3)  # 4 frames: batches 3 + 1 -> 4
    changed = _changed(before, encoder)
    assert changed and all(is_bn_stat(k) for k in changed)
    assert len({k for k in changed if k.endswith("running_mean")}) == n_layers
    assert not encoder.training


def test_mixing_sim_batches_into_a_labelled_strategy(
    encoder: Encoder, real_dir: Path, sim_dir: Path, cfg: FinetuneConfig
) -> None:
    real = open_real(real_dir).labelled()
    mixed = cfg.replace(sim_batch_size=2, select_epochs=False, epochs=1)
    adapted = finetune(encoder, real, "top-k", sim=sim_dir, config=mixed)
    plain = finetune(encoder, real, "top-k", config=mixed.replace(sim_batch_size=0))
    assert adapted.card["transfer"][-1]["sim"] == str(sim_dir)
    assert not torch.equal(
        adapted.heads["position"].mlp[0].weight, plain.heads["position"].mlp[0].weight
    )


def test_probe_with_a_new_head(encoder: Encoder, real_dir: Path, cfg: FinetuneConfig) -> None:
    real = open_real(real_dir).labelled()
    fresh = cfg.replace(reset_heads=True, select_epochs=False, epochs=0)
    before = _state(encoder)
    a, b = (finetune(encoder, real, "probe", config=fresh) for _ in range(2))
    changed = _changed(before, a)
    assert changed and all(k.startswith("heads.") for k in changed)
    assert not any(k.endswith(("target_mean", "target_std")) for k in changed)
    assert not _changed(_state(a), b)  # seeded


def test_same_seed_same_weights(encoder: Encoder, real_dir: Path, cfg: FinetuneConfig) -> None:
    real = open_real(real_dir).labelled()
    a = finetune(encoder, real, "top-k", config=cfg).state_dict()
    b = finetune(encoder, real, "top-k", config=cfg).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_kfold_partitions() -> None:
    folds = kfold(7, 3, seed=1)
    assert sorted(np.concatenate(folds).tolist()) == list(range(7))
    assert len(kfold(5, 0, seed=0)) == 5  # leave-one-out


def test_finetune_cli_round_trip(
    encoder: Encoder, real_dir: Path, tmp_path: Path, sim_dir: Path
) -> None:
    encoder.save(tmp_path / "model")
    out = finetune_cli(
        tmp_path / "model", real_dir, tmp_path / "adapted", "adabn+probe",
        epochs="2", steps_per_epoch="2", batch_size="4", cv_folds="0", device="cpu",
        progress="false",
    )  # fmt: skip
    loaded = Encoder.load(out)
    record = loaded.card["transfer"][-1]
    assert record["strategy"] == "adabn+probe" and record["cv"]["method"] == "leave-one-out"
    assert record["n_labelled"] == 5 and record["n_unlabelled"] == 4
    assert set(loaded.card["metrics"]["real_cv"]) >= {"mean", "median", "p90"}


# ---------------------------------------------------------------------------- bad inputs
def test_labelled_strategy_without_labels(
    encoder: Encoder, real_dir: Path, cfg: FinetuneConfig
) -> None:
    unlabelled = open_real(real_dir).unlabelled()
    with pytest.raises(DataError, match="needs labelled real frames"):
        finetune(encoder, None, "top-k", config=cfg)
    with pytest.raises(DataError, match="needs labelled real frames"):
        finetune(encoder, unlabelled.labelled(), "probe", config=cfg)


@pytest.mark.parametrize("strategy", ["adabn", "dann"])
def test_unlabelled_missing_or_empty(
    strategy: str, encoder: Encoder, real_dir: Path, sim_dir: Path, tmp_path: Path
) -> None:
    real = open_real(real_dir)
    with pytest.raises(DataError, match="needs unlabelled real frames"):
        finetune(encoder, real.labelled(), strategy, None, sim_dir)
    encoder.save(tmp_path / "model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"needs unlabelled real frames.*empty"):
        finetune_cli(tmp_path / "model", real_dir, tmp_path / "out", strategy, tmp_path / "empty")


def test_adabn_without_batchnorm_says_so(nature_encoder: Encoder, real_dir: Path) -> None:
    real = open_real(real_dir)
    with pytest.raises(ConfigError, match="no BatchNorm layers"):
        finetune(nature_encoder, None, "adabn", real.unlabelled())


def test_dann_without_sim(encoder: Encoder, real_dir: Path) -> None:
    real = open_real(real_dir)
    with pytest.raises(DataError, match="simulated dataset"):
        finetune(encoder, real.labelled(), "dann", real.unlabelled())


def test_mismatched_image_sizes(
    encoder: Encoder, real_dir: Path, tmp_path: Path, frame_writer: Callable[..., Path]
) -> None:
    real = open_real(real_dir)
    rng = np.random.default_rng(0)
    big = frame_writer(tmp_path / "big", rng.integers(0, 255, (3, 60, 80, 3), np.uint8), None)
    with pytest.raises(DataError, match="same resolution"):
        finetune(encoder, real.labelled(), "adabn+probe", open_real(big))
    square = frame_writer(tmp_path / "sq", rng.integers(0, 255, (3, 48, 48, 3), np.uint8), None)
    with pytest.raises(DataError, match="aspect"):
        finetune(encoder, None, "adabn", open_real(square))


def test_bad_strategy_and_settings() -> None:
    for bad in ("finetune", "top-k+probe", "probe+adabn", "adabn+adabn"):
        with pytest.raises(ConfigError, match="strategy"):
            parse_strategy(bad)
    with pytest.raises(ConfigError, match="unknown fine-tuning settings"):
        FinetuneConfig.from_overrides({"learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="bn_mode"):
        FinetuneConfig(bn_mode="sometimes")
    with pytest.raises(ConfigError, match="epochs"):
        FinetuneConfig.from_overrides(epochs="many")
    assert FinetuneConfig.from_overrides(lr="none", augment="no").augment is False


def test_task_loss_maps_whole_frame_keypoints_into_the_crop(sim_dir: Path) -> None:
    from sim2real.transfer.training import task_loss

    torch.manual_seed(0)
    enc = Encoder(
        "nature_cnn",
        {"keypoint": {"type": "keypoints", "names": ["cube"]}},
        input_size=(64, 48),
        crop=(0, 8, 64, 48),
        pretrained=False,
    ).eval()
    images = np.stack([ShardedDataset(sim_dir, fields=["image"])[i]["image"] for i in range(3)])
    with torch.no_grad():
        fmap = enc.backbone(enc.preprocess(images))
        own = enc.heads["keypoint"](fmap)[:, 0]  # the crop's coordinates
        frame_uv = enc.preprocessing.to_frame(own)  # the labels' coordinates
        assert float(task_loss(enc, fmap, torch.zeros(3, 3), frame_uv)) < 1e-6
        assert float(task_loss(enc, fmap, torch.zeros(3, 3), own)) > 1e-3
