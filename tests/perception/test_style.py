"""Style augmentations: MixStyle mixes statistics as specified, RandConv filters and mixes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sim2real.perception.style import mix_style, rand_conv


def test_mix_style_gives_each_sample_the_mixed_statistics() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 4, 7, 7) * torch.rand(6, 4, 1, 1) * 3 + torch.randn(6, 4, 1, 1)
    out = mix_style(x, np.random.default_rng(1), p=1.0, alpha=0.5)
    replay = np.random.default_rng(1)
    replay.random()  # the p draw
    lam = torch.as_tensor(replay.beta(0.5, 0.5, 6), dtype=x.dtype).view(6, 1)
    perm = torch.as_tensor(replay.permutation(6))
    mu, sig = x.mean(dim=(2, 3)), (x.var(dim=(2, 3)) + 1e-6).sqrt()
    assert torch.allclose(out.mean(dim=(2, 3)), lam * mu + (1 - lam) * mu[perm], atol=1e-5)
    assert torch.allclose(out.std(dim=(2, 3)), lam * sig + (1 - lam) * sig[perm], atol=1e-4)
    assert not torch.allclose(out, x)
    # the content (each sample's normalised map) is kept
    normed = (out - out.mean(dim=(2, 3), keepdim=True)) / out.std(dim=(2, 3), keepdim=True)
    ref = (x - x.mean(dim=(2, 3), keepdim=True)) / x.std(dim=(2, 3), keepdim=True)
    assert torch.allclose(normed, ref, atol=1e-4)


def test_mix_style_leaves_input_alone_when_not_drawn_or_single() -> None:
    x = torch.randn(4, 3, 5, 5)
    assert mix_style(x, np.random.default_rng(0), p=0.0) is x
    one = torch.randn(1, 3, 5, 5)
    assert mix_style(one, np.random.default_rng(0), p=1.0) is one
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        mix_style(torch.randn(4, 3), np.random.default_rng(0), p=1.0)


def test_mix_style_passes_gradient_and_is_seeded() -> None:
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    out = mix_style(x, np.random.default_rng(3), p=1.0)
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    again = mix_style(x.detach(), np.random.default_rng(3), p=1.0)
    assert torch.equal(out.detach(), again)


def test_rand_conv_filters_keeps_statistics_and_mixes() -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 3, 12, 16)
    assert rand_conv(x, np.random.default_rng(0), p=0.0) is x
    out = rand_conv(x, np.random.default_rng(2), p=1.0, kernel_sizes=(3,))
    assert out.shape == x.shape and not torch.allclose(out, x)
    # replay the draws: out = a * x + (1 - a) * y, y the filtered image at x's own statistics
    replay = np.random.default_rng(2)
    replay.random()
    k = int(replay.choice((3,)))
    w = torch.as_tensor(replay.normal(0.0, np.sqrt(2.0 / (3 * k * k)), (3, 3, k, k)), dtype=x.dtype)
    y = torch.nn.functional.conv2d(x, w, padding=1)
    a = torch.as_tensor(replay.uniform(0, 1, 5), dtype=x.dtype).view(-1, 1, 1, 1)
    y_std = (y - y.mean(dim=(2, 3), keepdim=True)) / (y.std(dim=(2, 3), keepdim=True) + 1e-6)
    expected = a * x + (1 - a) * (
        y_std * x.std(dim=(2, 3), keepdim=True) + x.mean(dim=(2, 3), keepdim=True)
    )
    assert torch.allclose(out, expected, atol=1e-5)
    # a 1x1 kernel mixes colours only: a pixel's output depends on that pixel alone
    one = rand_conv(x, np.random.default_rng(5), p=1.0, kernel_sizes=(1,))
    x2 = x.clone()
    x2[:, :, 0, 0] += 1.0
    two = rand_conv(x2, np.random.default_rng(5), p=1.0, kernel_sizes=(1,))
    change = (two - one).abs().sum(dim=1)
    assert (change[:, 0, 0] > 10 * change[:, 2:, 2:].amax(dim=(1, 2))).all()
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        rand_conv(torch.randn(3, 12, 16), np.random.default_rng(0), p=1.0)
