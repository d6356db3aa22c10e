"""Style augmentations for domain generalisation, applied in pretraining only.

:func:`mix_style` mixes feature statistics across the batch; :func:`rand_conv` passes the
input image through a random convolution. Both leave the saved encoder a plain one:
inference never calls them.

MixStyle: Zhou et al., "Domain Generalization with MixStyle" (ICLR 2021): the channel-wise mean and
standard deviation of an early CNN feature map carry an image's "style" (lighting, colour,
texture contrast) more than its content. MixStyle re-normalises each sample's features with a
random convex mix of its own statistics and another sample's, so the layers after it learn to
read positions under statistics they were not shown verbatim. It is the training-time
counterpart of AdaBN, which re-estimates BatchNorm statistics on real frames at adaptation
time; it needs no real frame. :func:`~sim2real.perception.train.pretrain` applies it after
the first blocks.

RandConv: Xu et al., "Robust and Generalizable Visual Representation Learning via Random
Convolutions" (ICLR 2021): a randomly initialised convolution (kernel 1, 3, 5 or 7) keeps
shapes but scrambles local texture and colour, so the network must find the cube by shape.
"""

from __future__ import annotations

import numpy as np
import torch


def mix_style(
    x: torch.Tensor,
    rng: np.random.Generator,
    p: float = 0.5,
    alpha: float = 0.1,
    eps: float = 1e-6,
) -> torch.Tensor:
    """With probability ``p``, give each sample a mix of its and another sample's statistics.

    Args:
        x: a feature map ``(B, C, H, W)``.
        rng: every draw comes from it (the caller seeds it, e.g. per step).
        p: probability that the batch is mixed at all.
        alpha: ``Beta(alpha, alpha)`` mixing weights (0.1: mostly near 0 or 1).
        eps: added to the variance.

    Returns:
        A tensor like ``x``; ``x`` itself when not mixed or ``B < 2``.

    Example:
        >>> mix_style(torch.randn(4, 8, 5, 5), np.random.default_rng(0), p=1.0).shape
        torch.Size([4, 8, 5, 5])
    """
    if x.dim() != 4:
        raise ValueError(f"mix_style: expected a (B, C, H, W) map, got shape {tuple(x.shape)}")
    batch = x.size(0)
    if batch < 2 or rng.random() >= p:
        return x
    mu = x.mean(dim=(2, 3), keepdim=True).detach()
    sig = (x.var(dim=(2, 3), keepdim=True) + eps).sqrt().detach()
    normed = (x - mu) / sig
    lam = torch.as_tensor(rng.beta(alpha, alpha, batch), dtype=x.dtype, device=x.device)
    lam = lam.view(batch, 1, 1, 1)
    perm = torch.as_tensor(rng.permutation(batch), device=x.device)
    mu_mix = lam * mu + (1 - lam) * mu[perm]
    sig_mix = lam * sig + (1 - lam) * sig[perm]
    return normed * sig_mix + mu_mix


def rand_conv(
    x: torch.Tensor,
    rng: np.random.Generator,
    p: float = 0.5,
    kernel_sizes: tuple[int, ...] = (1, 3, 5, 7),
) -> torch.Tensor:
    """With probability ``p``, filter the images with a random convolution and mix.

    One kernel size and one ``3 -> 3`` filter bank (He-normal weights) per call; each sample
    then gets ``a * x + (1 - a) * y`` with ``a ~ U(0, 1)``, where ``y`` is the filtered image
    brought back to the sample's own per-channel mean and standard deviation (so the input
    range stays that of normalised images).

    Args:
        x: normalised images ``(B, 3, H, W)``.
        rng: every draw comes from it.
        p: probability that the batch is filtered at all.
        kernel_sizes: odd kernel sizes to draw from.

    Example:
        >>> rand_conv(torch.randn(2, 3, 16, 16), np.random.default_rng(0), p=1.0).shape
        torch.Size([2, 3, 16, 16])
    """
    if x.dim() != 4:
        raise ValueError(f"rand_conv: expected (B, C, H, W) images, got shape {tuple(x.shape)}")
    if rng.random() >= p:
        return x
    k = int(rng.choice(kernel_sizes))
    channels = x.size(1)
    std = float(np.sqrt(2.0 / (channels * k * k)))
    weight = torch.as_tensor(
        rng.normal(0.0, std, (channels, channels, k, k)), dtype=x.dtype, device=x.device
    )
    y = torch.nn.functional.conv2d(x, weight, padding=k // 2)
    mu, sig = x.mean(dim=(2, 3), keepdim=True), x.std(dim=(2, 3), keepdim=True)
    y_mu, y_sig = y.mean(dim=(2, 3), keepdim=True), y.std(dim=(2, 3), keepdim=True)
    y = (y - y_mu) / (y_sig + 1e-6) * sig + mu
    a = torch.as_tensor(rng.uniform(0.0, 1.0, x.size(0)), dtype=x.dtype, device=x.device)
    a = a.view(-1, 1, 1, 1)
    return a * x + (1 - a) * y
