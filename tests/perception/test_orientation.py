"""Yaw modulo symmetry: targets, decoding, errors in degrees and the loss, numpy vs torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from envs.objects.specs import ObjectSpec
from sim2real.errors import ConfigError
from sim2real.perception.orientation import (
    SYMMETRY_NAMES,
    has_yaw,
    symmetry_order,
    yaw_error_deg,
    yaw_from_target,
    yaw_loss,
    yaw_target,
)

CUBE, BOX, MUG = 4, 2, 1


@pytest.mark.parametrize(
    ("turn_deg", "symmetry", "error"),
    [
        (90, CUBE, 0.0),
        (45, CUBE, 45.0),
        (-45, CUBE, 45.0),
        (180, CUBE, 0.0),
        (30, CUBE, 30.0),
        (60, CUBE, 30.0),
        (180, BOX, 0.0),
        (90, BOX, 90.0),
        (100, BOX, 80.0),
        (180, MUG, 180.0),
        (90, MUG, 90.0),
        (270, MUG, 90.0),
        (360, MUG, 0.0),
        (90, "z4", 0.0),
        (180, "z2", 0.0),
        (180, "none", 180.0),
    ],
)
def test_error_takes_symmetry_into_account(
    turn_deg: float, symmetry: int | str, error: float
) -> None:
    for start in (0.0, 0.7, -2.5):
        got = yaw_error_deg(start + math.radians(turn_deg), start, symmetry)
        assert float(got) == pytest.approx(error, abs=1e-9)


def test_error_range_and_broadcast() -> None:
    rng = np.random.default_rng(0)
    pred, true = rng.uniform(-10, 10, 500), rng.uniform(-10, 10, 500)
    for s in (1, 2, 4):
        err = yaw_error_deg(pred, true, s)
        assert err.shape == (500,) and (err >= 0).all() and (err <= 180 / s + 1e-9).all()
    assert yaw_error_deg(pred, 0.0, 4).shape == (500,)


def test_no_yaw_symmetries() -> None:
    for symmetry in (None, "z", "full"):
        assert not has_yaw(symmetry)
        assert np.isnan(yaw_error_deg([0.1, 0.2], 0.0, symmetry)).all()
        with pytest.raises(ConfigError, match="has no yaw"):
            yaw_target(0.3, symmetry)
        with pytest.raises(ConfigError, match="has no yaw"):
            yaw_from_target(1.0, 0.0, symmetry)
        pred = torch.randn(5, 2, requires_grad=True)
        loss = yaw_loss(pred, torch.zeros(5), symmetry)
        loss.backward()
        assert float(loss.detach()) == 0.0 and pred.grad is not None


def test_object_spec_symmetry_names_all_map() -> None:
    names = ObjectSpec.model_fields["symmetry"].annotation
    allowed = set(getattr(names, "__args__", ()))
    literal = next((a for a in allowed if a is not type(None)), None)
    assert literal is not None and set(literal.__args__) == set(SYMMETRY_NAMES)
    assert [symmetry_order(n) for n in ("none", "z2", "z4", "z", "full")] == [1, 2, 4, None, None]
    assert symmetry_order(" Z4 ") == 4 and symmetry_order("3") == 3 and symmetry_order(6) == 6


@pytest.mark.parametrize("bad", [0, -2, True, 1.5, "z3", "", "cube"])
def test_bad_symmetry(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"symmetry is .*expected an integer >= 1"):
        symmetry_order(bad)  # type: ignore[arg-type]


def test_target_round_trip_modulo_symmetry() -> None:
    yaw = np.linspace(-3 * math.pi, 3 * math.pi, 41)
    for s in (1, 2, 4):
        target = yaw_target(yaw, s)
        assert target.shape == (41, 2)
        np.testing.assert_allclose(np.linalg.norm(target, axis=-1), 1.0)
        back = yaw_from_target(target[:, 0], target[:, 1], s)
        assert (np.abs(back) <= math.pi / s + 1e-12).all()
        np.testing.assert_allclose(yaw_error_deg(back, yaw, s), 0.0, atol=1e-6)
        # equivalent yaws share the target
        np.testing.assert_allclose(yaw_target(yaw + 2 * math.pi / s, s), target, atol=1e-12)
    # not unit length: same angle
    assert float(yaw_from_target(3.0, 3.0, 1)) == pytest.approx(math.pi / 4)


def test_numpy_and_torch_agree() -> None:
    yaw = np.random.default_rng(1).uniform(-4, 4, 64)
    for s in (1, 2, 4):
        t = yaw_target(torch.as_tensor(yaw), s)
        assert isinstance(t, torch.Tensor) and t.shape == (64, 2)
        np.testing.assert_allclose(t.numpy(), yaw_target(yaw, s), atol=1e-12)
        pred = yaw + np.random.default_rng(2).normal(0, 0.5, 64)
        loss = yaw_loss(
            torch.as_tensor(yaw_target(pred, s)), torch.as_tensor(yaw), s, reduction="none"
        )
        np.testing.assert_allclose(loss.numpy(), 1 - np.cos(s * (pred - yaw)), atol=1e-9)
        # the loss and the error agree on which prediction is better
        err = yaw_error_deg(pred, yaw, s)
        np.testing.assert_allclose(loss.numpy(), 1 - np.cos(np.radians(err) * s), atol=1e-9)


def test_loss_zero_at_truth_and_invariant_to_symmetry() -> None:
    yaw = torch.tensor([0.0, 0.4, -1.3, 2.9])
    for s in (1, 2, 4):
        truth = yaw_target(yaw, s)
        assert float(yaw_loss(truth, yaw, s)) == pytest.approx(0.0, abs=1e-6)
        assert float(yaw_loss(3.0 * truth, yaw, s)) == pytest.approx(0.0, abs=1e-6)  # any length
        for k in (1, 2, 3):
            turned = yaw + 2 * math.pi * k / s
            assert float(yaw_loss(truth, turned, s)) == pytest.approx(0.0, abs=1e-5)
        opposite = yaw_target(yaw + math.pi / s, s)
        assert float(yaw_loss(opposite, yaw, s)) == pytest.approx(2.0, abs=1e-5)
    # a cube turned 90 degrees: loss 0; a mug turned 180: maximal
    assert float(yaw_loss(yaw_target(yaw + math.pi / 2, 4), yaw, 4)) < 1e-5
    assert float(yaw_loss(yaw_target(yaw + math.pi, 1), yaw, 1)) == pytest.approx(2.0, abs=1e-5)


def test_loss_trains_to_the_truth() -> None:
    torch.manual_seed(0)
    yaw = torch.rand(16) * 2 * math.pi
    pred = torch.randn(16, 2, requires_grad=True)
    opt = torch.optim.Adam([pred], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        yaw_loss(pred, yaw, 4, reduction="none").sum().backward()
        opt.step()
    got = yaw_from_target(pred[:, 0].detach().numpy(), pred[:, 1].detach().numpy(), 4)
    assert yaw_error_deg(got, yaw.numpy(), 4).max() < 1.0


def test_loss_shape_errors() -> None:
    with pytest.raises(ConfigError, match=r"expected \(\.\.\., 2\) and \(\.\.\.\)"):
        yaw_loss(torch.zeros(4, 3), torch.zeros(4), 4)
    with pytest.raises(ConfigError, match=r"reduction is 'sum'"):
        yaw_loss(torch.zeros(4, 2), torch.zeros(4), 4, reduction="sum")  # type: ignore[arg-type]
