"""Per-object labels agree with the pixels (envs/object_labels.py): uv inside the mask, box
equal to the mask's extent, visible_fraction 0 out of view, ~0.5 cut by the border, 0 hidden
(exact mode), and cheap and exact agreeing on unoccluded objects."""

from __future__ import annotations

import numpy as np
import pybullet as p
import pytest
import trimesh
from pybullet_utils.bullet_client import BulletClient

from sim2real.envs.camera import CameraConfig, CameraGeometry, render
from sim2real.envs.labels import mask_box
from sim2real.envs.object_labels import (
    SilhouetteRenderer,
    clip_polygon,
    dataset_fields,
    dataset_schema,
    label_object,
    object_labels,
    polygon_area,
)
from sim2real.envs.objects import (
    ObjectSpec,
    Placement,
    SceneObjects,
    SpawnRegion,
    apply_placements,
    load_objects,
    yaw_quat,
)

CAMERA = CameraConfig(
    eye=(0.5, 0.0, 0.6),
    target=(0.5, 0.0, 0.0),
    up=(1.0, 0.0, 0.0),
    fov_deg=45.0,
    width=96,
    height=96,
    near=0.05,
    far=3.0,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A DIRECT client with a table top at z=0, a cube, a mesh box and a random_urdfs object."""
    mesh_file = tmp_path_factory.mktemp("mesh") / "slab.obj"
    trimesh.creation.box(extents=[0.09, 0.06, 0.03]).export(mesh_file)
    c = BulletClient(p.DIRECT)
    half = [0.6, 0.6, 0.02]
    vis = c.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=[0.5, 0.4, 0.3, 1])
    c.createMultiBody(0, c.createCollisionShape(p.GEOM_BOX, halfExtents=half), vis, [0.5, 0, -0.02])
    specs = [
        ObjectSpec(name="cube", shape="box", size=0.08, color=(0.9, 0.1, 0.1, 1)),
        ObjectSpec(name="slab", mesh=str(mesh_file), color=(0.1, 0.8, 0.1, 1)),
        ObjectSpec(
            name="thing", set="random_urdfs", glob="random_urdfs/*[^0]/*.urdf", role="distractor"
        ),
    ]
    objects = load_objects(c, specs, np.random.default_rng(0), base_dir=mesh_file.parent)
    sil = SilhouetteRenderer(objects)
    yield c, objects, sil, CameraGeometry.from_config(CAMERA)
    sil.close()
    c.disconnect()


def place(c, objects, where: dict[str, tuple[float, float]], z: float = 0.0, yaw: float = 0.3):
    pl = {
        n: Placement(np.array([x, y, z + objects[n].bottom + 1e-4]), yaw_quat(yaw), yaw)
        for n, (x, y) in where.items()
    }
    apply_placements(c, objects, pl)


def both(c, geom, objects, sil):
    frame = render(c, geom, segmentation=True)
    kw = {"base_position": np.zeros(3)}
    cheap = object_labels(c, geom, objects, **kw)
    exact = object_labels(c, geom, objects, seg=frame.seg, silhouettes=sil, **kw)
    return frame, cheap, exact


def test_polygon_clip_halves_a_square_on_the_border():
    sq = np.array([[-5.0, 10.0], [5.0, 10.0], [5.0, 20.0], [-5.0, 20.0]])
    assert polygon_area(clip_polygon(sq, 64, 48)) == pytest.approx(polygon_area(sq) / 2)


def test_silhouette_clipped_at_the_near_plane_and_uv_behind_the_camera(world):
    _, objects, _, geom = world
    cube = objects["cube"]
    eye = geom.eye
    # centre 1 cm behind the camera: part of the cube in front, its centre has no pixel
    lab = label_object(
        geom,
        cube,
        eye - np.array([0.0, 0.0, -0.01]),
        np.array([0, 0, 0, 1.0]),
        base_position=np.zeros(3),
    )
    assert np.isnan(lab.uv).all() and 0.0 <= lab.visible_fraction <= 1.0
    behind = label_object(
        geom,
        cube,
        eye + np.array([0.0, 0.0, 0.5]),
        np.array([0, 0, 0, 1.0]),
        base_position=np.zeros(3),
    )
    assert behind.visible_fraction == 0.0 and behind.box is None


def test_visible_objects_uv_in_mask_box_is_mask_extent_cheap_matches_exact(world):
    c, objects, sil, geom = world
    place(c, objects, {"cube": (0.42, -0.1), "slab": (0.62, -0.05), "thing": (0.48, 0.1)})
    frame, cheap, exact = both(c, geom, objects, sil)
    assert set(exact) == {"cube", "slab", "thing"}
    for name, lab in exact.items():
        mask = frame.seg == objects[name].body
        assert mask.sum() > 20, name
        u, v = lab.uv
        assert mask[int(v), int(u)], f"{name}: uv {lab.uv} outside its mask"
        np.testing.assert_array_equal(lab.box, mask_box(mask))
        assert lab.visible_fraction > 0.85, (name, lab.visible_fraction)
        assert abs(lab.visible_fraction - cheap[name].visible_fraction) < 0.1, name
        # the cheap box is the projected hull's: within a few pixels of the mask's
        assert np.abs(cheap[name].box - lab.box).max() <= 4, (name, cheap[name].box, lab.box)
        info = lab.as_info()
        assert info["position_world"].shape == (3,) and info["quaternion"].shape == (4,)
        assert info["uv"].shape == (2,) and info["box"].shape == (4,)
    np.testing.assert_allclose(
        exact["cube"].position_world, c.getBasePositionAndOrientation(objects["cube"].body)[0]
    )


def test_out_of_view_is_zero_and_has_no_box(world):
    c, objects, sil, geom = world
    place(c, objects, {"cube": (1.0, 0.0), "slab": (0.5, 0.0)})
    _, cheap, exact = both(c, geom, objects, sil)
    assert "thing" not in exact  # parked: not in the scene this frame
    for labs in (cheap, exact):
        lab = labs["cube"]
        assert lab.visible_fraction == 0.0 and lab.box is None and "box" not in lab.as_info()
        assert not (0 <= lab.uv[1] < geom.height)  # the keypoint lies outside the image
    assert exact["cube"].visible_pixels == 0


def test_cut_in_half_by_the_border(world):
    c, objects, sil, geom = world
    cube = objects["cube"]
    xy = geom.ray_plane(np.array([0.0, geom.height / 2]), plane_z=0.04)[:2]
    place(c, objects, {"cube": tuple(xy)}, yaw=0.0)
    frame, cheap, exact = both(c, geom, objects, sil)
    assert exact["cube"].uv[0] == pytest.approx(0.0, abs=0.5)
    for labs in (cheap, exact):
        assert labs["cube"].visible_fraction == pytest.approx(0.5, abs=0.1)
    assert abs(cheap["cube"].visible_fraction - exact["cube"].visible_fraction) < 0.1
    np.testing.assert_array_equal(exact["cube"].box, mask_box(frame.seg == cube.body))
    assert exact["cube"].box[0] == 0  # clipped to the image


def test_hidden_behind_another_is_zero_in_exact_mode(world):
    c, objects, sil, geom = world
    place(c, objects, {"cube": (0.5, 0.0)})
    half = [0.15, 0.15, 0.01]
    vis = c.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=[0.2, 0.2, 0.9, 1])
    lid = c.createMultiBody(0, -1, vis, [0.5, 0.0, 0.3])
    try:
        _, cheap, exact = both(c, geom, objects, sil)
    finally:
        c.removeBody(lid)
    assert exact["cube"].visible_fraction == 0.0 and exact["cube"].box is None
    assert exact["cube"].in_frame_fraction == pytest.approx(1.0, abs=0.02)
    assert cheap["cube"].visible_fraction == pytest.approx(1.0)  # cheap ignores occlusion


def test_dataset_fields_fixed_shapes_for_absent_instances(world):
    c, objects, _sil, geom = world
    place(c, objects, {"cube": (0.5, 0.0)})
    labs = object_labels(c, geom, objects, base_position=np.zeros(3))
    fields = dataset_fields(labs, list(objects))
    assert set(fields) == set(dataset_schema(list(objects)))
    assert bool(fields["objects.cube.present"]) and not bool(fields["objects.thing.present"])
    assert np.isnan(fields["objects.thing.uv"]).all()
    assert float(fields["objects.thing.visible_fraction"]) == 0.0
    assert fields["objects.cube.box"].shape == (4,)


def test_scene_objects_reset_and_info_in_both_modes():
    c = BulletClient(p.DIRECT)
    try:
        specs = [
            {
                "name": "mug",
                "urdf": "objects/mug.urdf",
                "spawn": {"x": [0.4, 0.6], "y": [-0.1, 0.1]},
            },
            {
                "name": "junk",
                "set": "random_urdfs",
                "glob": "random_urdfs/*[^0]/*.urdf",
                "count": [1, 3],
                "role": "distractor",
            },
        ]
        region = SpawnRegion(x=(0.3, 0.7), y=(-0.2, 0.2))
        objs = SceneObjects(c, specs, table_top=0.0, region=region)
        assert objs.target == "mug" and len(objs.objects) == 4
        first = objs.reset(np.random.default_rng(5))
        again = objs.reset(np.random.default_rng(5))
        assert list(first) == list(again) and all(
            np.array_equal(first[n].position, again[n].position) for n in first
        )
        assert objs.shown[0] == "mug" and 2 <= len(objs.shown) <= 4
        geom = CameraGeometry.from_config(CAMERA)
        cheap = objs.info(geom, base_position=np.zeros(3))
        seg = render(c, geom, segmentation=True).seg
        exact = objs.info(geom, base_position=np.zeros(3), seg=seg)
        assert list(cheap) == list(exact) == objs.shown
        assert 0.0 <= exact["mug"]["visible_fraction"] <= 1.0 and "visible_pixels" in exact["mug"]
        objs.reset(np.random.default_rng(1), preset={"mug": (0.5, 0.0, 0.0)})
        np.testing.assert_allclose(objs.pose("mug")[0][:2], [0.5, 0.0])
        objs.place("mug", (0.45, 0.05))
        np.testing.assert_allclose(objs.pose("mug")[0][:2], [0.45, 0.05])
        objs.close()
    finally:
        c.disconnect()
