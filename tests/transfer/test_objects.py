"""finetune and curve with several objects: long labels.csv, named-target encoders, per
object and the mean over objects; a single-target encoder on a long file uses its target."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sim2real.cli import main
from sim2real.data.real import open_real
from sim2real.data.shards import ShardedDataset
from sim2real.errors import DataError
from sim2real.perception import Encoder
from sim2real.transfer import FinetuneConfig, finetune
from sim2real.transfer.curve import ZERO_SHOT, run_curve
from sim2real.transfer.objects import frame_errors, object_errors
from sim2real.transfer.select import finetune_cli
from sim2real.transfer.training import FrameSet, as_frame_set, held_out_errors
from tests.transfer.conftest import SIZE

OBJECTS = ("cube", "shadow")
OFFSET = np.array([0.05, -0.04, 0.0])  # "shadow" sits this far from the cube
N = 6
TINY = {"epochs": 1, "steps_per_epoch": 1, "batch_size": 4, "cv_folds": 2, "device": "cpu"}


def named_encoder(sim_dir: Path, objects: tuple[str, ...] = OBJECTS) -> Encoder:
    """A tiny untrained Nature-CNN encoder with a position head per object (named layout)."""
    heads = {f"{o}/position": {"type": "position", "frame": "robot_base", "hidden": 32}
             for o in objects}  # fmt: skip
    torch.manual_seed(0)
    enc = Encoder("nature_cnn", heads, input_size=SIZE, pretrained=False)
    ds = ShardedDataset(sim_dir, fields=["position"])
    pos = np.stack([ds[i]["position"] for i in range(len(ds))]).astype(np.float64)
    for o in objects:
        shift = OFFSET if o == "shadow" else 0.0
        enc.heads[f"{o}/position"].set_target_stats(pos.mean(0) + shift, pos.std(0) + 0.05)
    enc.card.update(
        target_layout="named",
        target_names=list(objects),
        position_frame="robot_base",
        position_route="position_head",
        targets={
            o: {"frame": "robot_base", "symmetry": None, "order": None, "yaw": False,
                "heads": {"position": f"{o}/position"}}
            for o in objects
        },
    )  # fmt: skip
    return enc.eval()


@pytest.fixture(scope="module")
def long_dir(sim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``N`` labelled frames with a long labels.csv (the cube in all, "shadow" in all but
    the first two) and 3 unlabelled ones."""
    ds = ShardedDataset(sim_dir)
    root = tmp_path_factory.mktemp("long") / "real"
    root.mkdir()
    rows = ["file,object,x_m,y_m,z_m"]
    for i in range(N + 3):
        name = f"f{i:02d}.png"
        s = ds[i]
        assert cv2.imwrite(str(root / name), cv2.cvtColor(s["image"], cv2.COLOR_RGB2BGR))
        if i >= N:
            continue
        pos = np.asarray(s["position"], dtype=np.float64)
        rows.append(f"{name},cube," + ",".join(f"{v:.5f}" for v in pos))
        if i >= 2:
            rows.append(f"{name},shadow," + ",".join(f"{v:.5f}" for v in pos + OFFSET))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_frames_of_several_objects(sim_dir: Path, long_dir: Path) -> None:
    enc = named_encoder(sim_dir)
    frames = as_frame_set(open_real(long_dir), enc, "labelled real", labels=True)
    assert isinstance(frames, FrameSet) and frames.objects == OBJECTS and len(frames) == N
    assert frames.positions is not None and frames.positions.shape == (N, 2, 3)
    assert np.isnan(frames.positions[:2, 1]).all() and np.isfinite(frames.positions[2:]).all()
    errors = object_errors(enc, frames.images, frames.positions, frames.objects)
    assert np.isnan(errors["shadow"][:2]).all() and np.isfinite(errors["cube"]).all()
    per_frame = held_out_errors(enc, frames)
    np.testing.assert_allclose(per_frame, frame_errors(errors))
    np.testing.assert_allclose(per_frame[:2], errors["cube"][:2])  # only the cube labelled
    np.testing.assert_allclose(per_frame[2:], (errors["cube"][2:] + errors["shadow"][2:]) / 2)


def test_finetune_per_object(
    sim_dir: Path, long_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    enc = named_encoder(sim_dir)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    cfg = FinetuneConfig(epochs=2, steps_per_epoch=2, batch_size=4, cv_folds=2, device="cpu",
                         progress=False, select_epochs=True)  # fmt: skip
    adapted = finetune(enc, open_real(long_dir), "probe", config=cfg)
    cv = adapted.card["transfer"][-1]["cv"]
    assert set(cv["objects"]) == set(OBJECTS) and cv["objects"]["shadow"]["n"] == N - 2
    means = [cv["objects"][o]["mean"] for o in OBJECTS]
    assert cv["mean_over_objects"] == pytest.approx(np.mean(means))
    if adapted.card["transfer"][-1]["epochs"] > 0:  # probe: the heads moved, the trunk not
        state = adapted.state_dict()
        assert any(not torch.equal(state[k], before[k]) for k in before if "heads" in k)
        assert all(torch.equal(state[k], before[k]) for k in before if "backbone" in k)
    # the CLI path: the model folder in, the adapted encoder out
    enc.save(tmp_path / "model")
    out = finetune_cli(tmp_path / "model", long_dir, tmp_path / "adapted", "probe", config=cfg)
    card = json.loads((out / "card.json").read_text())
    assert card["transfer"][-1]["n_labelled"] == N
    assert card["transfer"][-1]["n_unlabelled"] == 0  # probe uses none; rows are labels
    args = ["finetune", "--model", str(tmp_path / "model"), "--real", str(long_dir),
            "--out", str(tmp_path / "cli"), "--strategy", "probe", "--epochs", "1",
            "--device", "cpu", "--set", "steps_per_epoch=1", "batch_size=4", "cv_folds=2",
            "progress=false"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "per object: cube " in printed and "mean over objects" in printed


def test_curve_per_object(sim_dir: Path, long_dir: Path, tmp_path: Path) -> None:
    named_encoder(sim_dir).save(tmp_path / "model")
    run_curve(
        tmp_path / "model", long_dir, tmp_path / "curve", ks=(0, 2), repeats=1,
        strategies=("probe",), baselines=False, progress=False, **TINY,
    )  # fmt: skip
    results = json.loads((tmp_path / "curve" / "curve.json").read_text())
    report = (tmp_path / "curve" / "report.md").read_text()
    assert "## Per object" in report and "| cube | shadow | mean over objects |" in report
    assert results["meta"]["n_labelled"] == N
    zero = results["entries"][ZERO_SHOT]["points"]["0"]
    assert set(zero["objects"]) == set(OBJECTS) and zero["objects"]["shadow"]["n"] == N - 2
    point = results["entries"]["probe"]["points"]["2"]
    assert set(point["objects"]) == set(OBJECTS)
    means = [point["objects"][o]["mean"] for o in OBJECTS]
    assert point["mean_over_objects"] == pytest.approx(np.mean(means))
    assert results["entries"]["probe"]["skipped"] is None
    # resumes from the journal (NaN positions in the fingerprint read back equal)
    run_curve(
        tmp_path / "model", long_dir, tmp_path / "curve", ks=(0, 2), repeats=1,
        strategies=("probe",), baselines=False, progress=False, **TINY,
    )  # fmt: skip
    again = json.loads((tmp_path / "curve" / "curve.json").read_text())
    assert again["meta"]["resumed_runs"] > 0
    assert again["entries"]["probe"]["points"]["2"]["objects"] == point["objects"]


def test_single_target_encoder_on_a_long_file(
    nature_encoder: Encoder, long_dir: Path, tmp_path: Path
) -> None:
    frames = as_frame_set(open_real(long_dir), nature_encoder, "labelled real", labels=True)
    assert frames is not None and frames.objects == () and frames.positions.shape == (N, 3)
    cube = np.stack([r.objects["cube"].position for r in open_real(long_dir).refs[:N]])
    np.testing.assert_allclose(frames.positions, cube)
    other = copy.deepcopy(nature_encoder)
    other.card["targets"] = {"duck": {"frame": "robot_base", "heads": {"position": "position"}}}
    with pytest.raises(DataError, match=r"locates \['duck'\]"):
        as_frame_set(open_real(long_dir), other, "labelled real", labels=True)


def test_simulated_batches_carry_every_target(sim_dir: Path, tmp_path: Path) -> None:
    """sim_batch_size mixing for a named encoder: per-target positions, NaN where absent."""
    from sim2real.data.generate import generate_dataset
    from sim2real.envs.sources import scene_spec
    from sim2real.transfer.objects import object_loss
    from sim2real.transfer.training import SimStream

    spec = scene_spec("bin_camera", "default", SIZE)
    data = generate_dataset(spec["source"], spec, n=4, out=tmp_path / "sim", progress=False)
    stream = SimStream(data, SIZE, seed=0, objects=("duck", "clutter_0"))
    images, pos, uv = stream.batch(6, np.random.default_rng(0), step=0)
    assert images.shape == (6, SIZE[1], SIZE[0], 3) and pos.shape == (6, 2, 3)
    assert uv.shape == (6, 2, 2) and torch.isfinite(pos[:, 0]).all()  # the duck is always there
    ds = ShardedDataset(data, verify=False)
    shown = [bool(ds[i]["objects.clutter_0.present"]) for i in range(len(ds))]
    if not any(shown):  # a clutter member not drawn in these samples: NaN, not zeros
        assert torch.isnan(pos[:, 1]).all()
    enc = named_encoder(sim_dir, ("duck", "clutter_0"))
    fmap = enc.backbone(enc.preprocessing.normalise(images))
    loss = object_loss(enc, fmap, pos, uv)
    assert torch.isfinite(loss) and loss > 0
