"""Backbone registry: ImageNet weights of EfficientNet-Lite0, shapes, errors. CPU, offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from skimage import data

from sim2real.errors import CheckpointError, ConfigError
from sim2real.perception.backbones import (
    EFFICIENTNET_LITE0_TENSORS,
    RESNET18_FILE,
    TF_EDGE_MEAN,
    TF_EDGE_STD,
    available_backbones,
    build_backbone,
    efficientnet_lite0_weights_path,
    load_efficientnet_lite0_imagenet,
    map_lite0_state_dict,
)
from sim2real.perception.encoder import Preprocessing

# 128 x 96 input (W x H): feature map (C, h, w) per (name, feature_stride).
SHAPES_128x96 = {
    ("efficientnet_lite0", 8): (40, 12, 16),
    ("efficientnet_lite0", 16): (112, 6, 8),
    ("efficientnet_lite0", 32): (1280, 3, 4),
    ("resnet18", 8): (128, 12, 16),
    ("resnet18", 16): (256, 6, 8),
    ("resnet18", 32): (512, 3, 4),
    ("nature_cnn", 8): (64, 8, 12),  # unpadded convolutions
    ("impala_cnn", 8): (32, 12, 16),
}


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return load_efficientnet_lite0_imagenet()


def _classify(model: torch.nn.Module, image) -> int:
    # The library's own preprocessing for this backbone: stretch to 224, TF edge normalisation.
    bb_pre = Preprocessing(width=224, height=224, colour="RGB", mean=TF_EDGE_MEAN, std=TF_EDGE_STD)
    with torch.no_grad():
        return int(model(bb_pre(image)).argmax(dim=1))


def test_lite0_imagenet_weights_classify_known_images(lite0: torch.nn.Module) -> None:
    assert 281 <= _classify(lite0, data.chelsea()) <= 285  # a cat (tabby .. Egyptian cat)
    assert _classify(lite0, data.coffee()) == 967  # espresso


def test_lite0_weights_map_one_to_one() -> None:
    source = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    target = build_backbone("efficientnet_lite0", pretrained=False)
    assert len(source) == EFFICIENTNET_LITE0_TENSORS
    model = load_efficientnet_lite0_imagenet()
    mapped = map_lite0_state_dict(source, model.state_dict())
    assert len(mapped) == EFFICIENTNET_LITE0_TENSORS
    for (_, a), (_, b) in zip(source.items(), model.state_dict().items(), strict=True):
        assert torch.equal(a, b)
    # the backbone keeps every tensor but the classifier's weight and bias
    assert len(target.state_dict()) == EFFICIENTNET_LITE0_TENSORS - 2


def test_lite0_mapping_rejects_mismatch(lite0: torch.nn.Module) -> None:
    source = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    fewer = dict(list(source.items())[:-1])
    with pytest.raises(CheckpointError, match="expected 296 tensors"):
        map_lite0_state_dict(fewer, lite0.state_dict())
    swapped = dict(source)
    swapped["_fc.weight"] = torch.zeros(10, 1280)
    with pytest.raises(CheckpointError, match=r"_fc\.weight"):
        map_lite0_state_dict(swapped, lite0.state_dict())


def test_pretrained_backbone_matches_classifier_features(lite0: torch.nn.Module) -> None:
    backbone = build_backbone("efficientnet_lite0").eval()
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(backbone(x), lite0.forward_features(x))
    assert backbone.pretrained and backbone.default_mean == TF_EDGE_MEAN


@pytest.mark.parametrize(("name", "stride"), sorted(SHAPES_128x96))
def test_backbone_feature_shape(name: str, stride: int) -> None:
    backbone = build_backbone(name, pretrained=False, feature_stride=stride).eval()
    with torch.no_grad():
        out = backbone(torch.zeros(2, 3, 96, 128))
    assert tuple(out.shape) == (2, *SHAPES_128x96[(name, stride)])
    assert backbone.out_channels == out.shape[1]
    assert backbone.stride == stride
    assert len(backbone.blocks) >= 3
    assert len(backbone.default_mean) == len(backbone.default_std) == 3


def test_nature_cnn_on_84x84() -> None:
    out = build_backbone("nature_cnn", pretrained=False)(torch.zeros(1, 3, 84, 84))
    assert tuple(out.shape) == (1, 64, 7, 7)


def test_registry_lists_every_name() -> None:
    assert available_backbones()[0] == "efficientnet_lite0"
    assert set(available_backbones()) == {name for name, _ in SHAPES_128x96}


def test_unknown_backbone_lists_names() -> None:
    with pytest.raises(ConfigError, match=r"efficientnet_lite0.*resnet18"):
        build_backbone("resnet50")


def test_bad_backbone_options() -> None:
    with pytest.raises(ConfigError, match="feature_stride"):
        build_backbone("nature_cnn", pretrained=False, feature_stride=16)
    with pytest.raises(ConfigError, match="unknown option"):
        build_backbone("resnet18", pretrained=False, width=2)


def test_resnet18_pretrained_needs_cached_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(CheckpointError, match=RESNET18_FILE) as info:
        build_backbone("resnet18", pretrained=True)
    assert str(tmp_path / "checkpoints") in str(info.value)


def test_lite0_dilated_stride8_keeps_weights_and_finer_map() -> None:
    # Dilation changes the map's resolution, not the tensors: the stride-16 and dilated
    # stride-8 backbones hold the same ImageNet weights, and the dilated one sees 16x12 cells.
    s16 = build_backbone("efficientnet_lite0", feature_stride=16).eval()
    d8 = build_backbone("efficientnet_lite0", feature_stride=8, dilated=True).eval()
    assert d8.kwargs == {"feature_stride": 8, "dilated": True}
    assert (d8.stride, d8.out_channels) == (8, 112)
    s16_state, d8_state = s16.state_dict(), d8.state_dict()
    assert list(s16_state) == list(d8_state)
    assert all(torch.equal(s16_state[k], d8_state[k]) for k in s16_state)
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fine, coarse = d8(x), s16(x)
    assert tuple(fine.shape) == (2, 112, 12, 16) and tuple(coarse.shape) == (2, 112, 6, 8)
    # The stem and the stride-8 stages are untouched by the dilation.
    with torch.no_grad():
        a, b = x, x
        for block_a, block_b in zip(s16.blocks[:4], d8.blocks[:4], strict=True):
            a, b = block_a(a), block_b(b)
    assert torch.equal(a, b)


def test_lite0_dilated_needs_stride8() -> None:
    with pytest.raises(ConfigError, match="dilated=True needs feature_stride=8, got 16"):
        build_backbone("efficientnet_lite0", pretrained=False, feature_stride=16, dilated=True)
