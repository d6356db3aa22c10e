"""``target``: the named object whose predicted position joins the policy features, from an
encoder with per-target heads; the contract records it and the bundle's encoder keeps it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sim2real.errors import ConfigError
from sim2real.perception import Encoder
from sim2real.perception.targets import NAMED_LAYOUT, Target, target_head_specs, targets_card
from sim2real.policies.bundle import encode, policy_target, position_head_name, position_route
from sim2real.policies.config import TrainConfig, encoder_source
from sim2real.policies.contract import _feature_layout
from sim2real.policies.extractor import build_encoder


def _named(tmp_path: Path) -> Path:
    targets = [Target("mug", "none", {"quaternion": "q"}), Target("duck", None, {})]
    specs = target_head_specs(
        targets, "position", window=0, pool="mean", visibility=False, yaw=True
    )
    enc = Encoder("nature_cnn", specs, input_size=(84, 84), pretrained=False)
    enc.card.update(target_layout=NAMED_LAYOUT, targets=targets_card(targets, enc.heads))
    enc.card["target_names"] = ["mug", "duck"]
    return enc.save(tmp_path / "named")


def test_target_picks_that_objects_position_head(tmp_path: Path) -> None:
    folder = _named(tmp_path)
    cfg = TrainConfig(encoder=str(folder), target="duck")
    source = encoder_source(cfg)
    assert source == {"path": str(folder), "target": "duck"}
    enc = build_encoder(source)
    assert policy_target(enc) == "duck" and position_head_name(enc) == "duck/position"
    assert position_route(enc) == "position_head"
    x = torch.zeros(2, 3, 84, 84)
    out = encode(enc, x, "mean", True)
    expected = enc.heads["duck/position"](enc.backbone(x)).float()
    torch.testing.assert_close(out[:, -3:], expected)
    encoded, _ = _feature_layout(cfg, enc, enc.feature_dim, True)
    assert encoded[-1]["object"] == "duck" and encoded[-1]["frame"] == "robot_base"
    again = Encoder.load(enc.save(tmp_path / "bundle_encoder"))  # what a bundle keeps
    assert position_head_name(again) == "duck/position"


def test_several_targets_need_a_name_and_names_are_checked(tmp_path: Path) -> None:
    folder = _named(tmp_path)
    enc = build_encoder(str(folder))
    assert policy_target(enc) is None and position_route(enc) is None
    with pytest.raises(ConfigError, match="target=NAME"):
        encode(enc, torch.zeros(1, 3, 84, 84), "mean", True)
    with pytest.raises(ConfigError, match=r"'cat'.*locates \['mug', 'duck'\]"):
        build_encoder({"path": str(folder), "target": "cat"})


def test_single_target_encoders_are_unchanged(tmp_path: Path) -> None:
    enc = Encoder("nature_cnn", {"position": {"type": "position"}}, input_size=(84, 84),
                  pretrained=False)  # fmt: skip
    assert position_head_name(enc) == "position" and position_route(enc) == "position_head"
    assert policy_target(enc) == "cube"  # an old card: its one target
    encoded, _ = _feature_layout(TrainConfig(), enc, enc.feature_dim, True)
    assert encoded[-1]["name"] == "position" and encoded[-1]["object"] == "cube"
    assert encoder_source(TrainConfig(encoder="x")) == "x"
