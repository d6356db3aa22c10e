"""Domain-adversarial training (DANN): gradient reversal and a domain classifier.

Ganin et al. 2016, "Domain-Adversarial Training of Neural Networks". A small classifier
learns to tell simulated from real encoder features; between the encoder and the classifier
a gradient reversal layer (identity forward, ``-lambda * grad`` backward) turns the
classifier's loss into a signal that makes simulated and real features indistinguishable,
while the task heads keep learning from labelled (simulated, and optionally real) frames.
``lambda`` ramps up with the paper's schedule ``2 / (1 + exp(-gamma * p)) - 1`` over the
training progress ``p`` in ``[0, 1]``, so the noisy early classifier does not wreck the
features.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sim2real.errors import ConfigError

logger = logging.getLogger(__name__)

SIM_DOMAIN = 0.0
REAL_DOMAIN = 1.0


class _GradientReversal(torch.autograd.Function):
    """Identity in the forward pass; multiplies the gradient by ``-lambd`` in the backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.neg() * ctx.lambd, None


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    """Gradient reversal: returns ``x`` unchanged; its gradient becomes ``-lambd * grad``.

    Shape:
        - x: any; returns the same shape.

    Example:
        >>> x = torch.ones(2, requires_grad=True)
        >>> grad_reverse(x, 0.5).sum().backward()
        >>> x.grad.tolist()
        [-0.5, -0.5]
    """
    if not lambd >= 0.0:
        raise ConfigError(f"gradient reversal lambda={lambd!r}: expected a number >= 0")
    return _GradientReversal.apply(x, float(lambd))


class GradientReversal(nn.Module):
    """Module form of :func:`grad_reverse`; set ``lambd`` as training progresses.

    Example:
        >>> grl = GradientReversal(lambd=0.0)
        >>> grl.lambd = dann_lambda(0.5)
    """

    def __init__(self, lambd: float = 1.0) -> None:
        super().__init__()
        self.lambd = float(lambd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Identity forward, reversed and scaled gradient backward. Shape: unchanged."""
        return grad_reverse(x, self.lambd)

    def extra_repr(self) -> str:
        return f"lambd={self.lambd:.4g}"


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """The DANN schedule ``2 / (1 + exp(-gamma * p)) - 1``: 0 at ``p = 0``, -> 1 at ``p = 1``.

    Args:
        progress: training progress ``p``, clipped to ``[0, 1]``.
        gamma: steepness (10 in the paper).

    Example:
        >>> round(dann_lambda(0.0), 6), round(dann_lambda(1.0), 4)
        (0.0, 0.9999)
    """
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


class DomainClassifier(nn.Module):
    """Gradient reversal + MLP on pooled encoder features -> one logit (real vs simulated).

    Args:
        in_dim: feature size ``D`` (``Encoder.feature_dim``).
        hidden: width of the two hidden layers.
        dropout: dropout after each hidden layer.

    Shape:
        - features: ``(B, D)``; returns ``(B,)`` logits, positive = real.

    Example:
        >>> clf = DomainClassifier(64)
        >>> clf(torch.zeros(3, 64)).shape
        torch.Size([3])
    """

    def __init__(self, in_dim: int, hidden: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        if in_dim < 1 or hidden < 1:
            raise ConfigError(f"DomainClassifier: in_dim={in_dim}, hidden={hidden}: expected >= 1")
        self.reverse = GradientReversal(0.0)
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Domain logits through the gradient reversal. Shape: ``(B, D)`` -> ``(B,)``."""
        return self.net(self.reverse(features.float())).squeeze(-1)

    def loss(
        self, sim_features: torch.Tensor, real_features: torch.Tensor
    ) -> tuple[torch.Tensor, float]:
        """Balanced binary cross-entropy of sim (label 0) vs real (label 1) features.

        Returns:
            ``(loss, accuracy)``: the loss to add to the task loss (its gradient reaches the
            encoder reversed) and the classifier's accuracy on this batch (0.5 = confused).

        Shape:
            - sim_features: ``(Bs, D)``; real_features: ``(Br, D)``.
        """
        logits_sim, logits_real = self(sim_features), self(real_features)
        loss = 0.5 * (
            F.binary_cross_entropy_with_logits(logits_sim, torch.full_like(logits_sim, SIM_DOMAIN))
            + F.binary_cross_entropy_with_logits(
                logits_real, torch.full_like(logits_real, REAL_DOMAIN)
            )
        )
        with torch.no_grad():
            correct = (logits_sim < 0).sum() + (logits_real > 0).sum()
            accuracy = float(correct) / (len(logits_sim) + len(logits_real))
        return loss, accuracy
