"""MixStyle: feature-statistics augmentation for domain generalisation (training only).

Zhou et al., "Domain Generalization with MixStyle" (ICLR 2021): the channel-wise mean and
standard deviation of an early CNN feature map carry an image's "style" (lighting, colour,
texture contrast) more than its content. MixStyle re-normalises each sample's features with a
random convex mix of its own statistics and another sample's, so the layers after it learn to
read positions under statistics they were not shown verbatim. It is the training-time
counterpart of AdaBN, which re-estimates BatchNorm statistics on real frames at adaptation
time; it needs no real frame. At inference nothing changes (the encoder's forward never calls
it; :func:`~sim2real.perception.train.pretrain` applies it after the first blocks).
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
