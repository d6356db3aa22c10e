"""Scene objects (envs/objects.py): specs and their errors, files and globs, the one loader
(primitive, mesh written by the test, URDF, random_urdfs set), render budgets, the legacy
cube, and spawns that rest on the table without interpenetrating."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pybullet as p
import pytest
import trimesh
import yaml
from pybullet_utils.bullet_client import BulletClient
from pydantic import ValidationError

from sim2real.envs.camera import CameraConfig, CameraGeometry, render
from sim2real.envs.objects import (
    ObjectSpec,
    SpawnRegion,
    apply_placements,
    legacy_cube,
    legacy_cube_view,
    load_object,
    load_objects,
    resolve_file,
    resolve_glob,
    sample_counts,
    sample_placements,
    target_name,
    upgrade_scene_dict,
    validate_objects,
)
from sim2real.errors import ConfigError
from sim2real.paths import CONFIGS


@pytest.fixture
def client():
    c = BulletClient(p.DIRECT)
    c.setGravity(0, 0, -9.81)
    half = [0.5, 0.5, 0.025]
    col = c.createCollisionShape(p.GEOM_BOX, halfExtents=half)
    vis = c.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=[0.5, 0.4, 0.3, 1])
    c.table = c.createMultiBody(0, col, vis, [0.5, 0.0, -0.025])  # top at z = 0
    yield c
    c.disconnect()


@pytest.fixture(scope="module")
def mesh_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("meshes") / "slab.obj"
    trimesh.creation.box(extents=[0.08, 0.05, 0.03]).export(path)
    return path


# -- specs -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"name": "a", "shape": "box", "size": 0.1, "urdf": "x.urdf"}, ["exactly one", "urdf"]),
        ({"name": "a"}, ["exactly one", "none"]),
        ({"name": "a", "shape": "box"}, ["box", "size"]),
        ({"name": "a", "shape": "cylinder", "radius": 0.1}, ["cylinder", "length"]),
        ({"name": "a", "shape": "box", "size": 0.1, "radius": 0.1}, ["radius", "box"]),
        ({"name": "a", "mesh": "thing.fbx"}, ["thing.fbx", ".obj"]),
        ({"name": "a", "urdf": "thing.sdf"}, ["thing.sdf", ".urdf"]),
        ({"name": "a", "urdf": "x.urdf", "glob": "*.urdf"}, ["glob", "set"]),
        ({"name": "a", "set": "ycb"}, ["ycb", "glob"]),
        ({"name": "a", "urdf": "x.urdf", "scale": [1, 2, 3]}, ["one scale"]),
        ({"name": "a", "shape": "sphere", "radius": 0.1, "count": [3, 1]}, ["count"]),
        ({"name": "a", "shape": "sphere", "radius": 0.1, "colr": [1, 0, 0, 1]}, ["colr"]),
        ({"name": "a", "shape": "sphere", "radius": 0.1, "role": "goal"}, ["role"]),
        ({"name": "a b", "shape": "sphere", "radius": 0.1}, ["name"]),
        ({"name": "a", "shape": "sphere", "radius": 0.1, "pool": 4}, ["pool", "sets"]),
        ({"name": "a", "set": "random_urdfs", "count": [1, 3], "pool": 2}, ["pool 2"]),
    ],
)
def test_bad_fields_are_named(entry, words):
    with pytest.raises(ValidationError) as err:
        ObjectSpec.model_validate(entry)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_spec_kinds_aliases_counts_and_instances():
    s = ObjectSpec.model_validate(
        {"name": "c", "shape": "box", "size": [0.1, 0.2, 0.3], "colour": [1, 0, 0, 1]}
    )
    assert s.kind == "shape" and s.color == (1, 0, 0, 1) and s.box_size == (0.1, 0.2, 0.3)
    assert s.instance_names == ["c"]
    many = ObjectSpec(name="junk", set="random_urdfs", count=[1, 3], role="distractor")
    assert many.kind == "set" and many.instance_names == ["junk_0", "junk_1", "junk_2"]
    specs = validate_objects([many.model_dump(), s])
    assert target_name(specs) == "c"
    shown = sample_counts(specs, np.random.default_rng(0))
    assert "c" in shown and 1 <= len([n for n in shown if n.startswith("junk")]) <= 3
    pooled = ObjectSpec(name="p", set="random_urdfs", count=2, pool=6)
    assert len(pooled.instance_names) == 6
    draws = {tuple(sample_counts([pooled], np.random.default_rng(i))) for i in range(20)}
    assert len(draws) > 5 and all(len(d) == 2 for d in draws)  # 2 of the 6, varying
    with pytest.raises(ConfigError, match="clashes"):
        validate_objects([s, s])
    with pytest.raises(ConfigError, match="target"):
        target_name([many])


def test_legacy_cube_section_becomes_one_box_named_cube():
    data = yaml.safe_load((CONFIGS / "scenes" / "kuka_cube.yaml").read_text())
    up = upgrade_scene_dict(data)
    assert "cube" not in up and len(up["objects"]) == 1
    (cube,) = validate_objects(up["objects"])
    assert cube.name == "cube" and cube.shape == "box" and cube.box_size == (0.08,) * 3
    assert cube.mass == 0.2 and cube.color == (0.92, 0.92, 0.90, 1.0)
    assert cube.spawn.x == (-1.25, -0.5) and cube.spawn.y == (-0.59, 0.61)
    assert legacy_cube({})["size"] == 0.05  # the old defaults
    view = legacy_cube_view([cube])  # the inverse: the old section back, every field
    assert view == {**{"grid_step": None, "spawn_near": 0.0}, **data["cube"]}
    assert legacy_cube_view([cube.model_copy(update={"name": "box"})]) is None
    assert legacy_cube_view([cube, cube]) is None
    with pytest.raises(ConfigError, match="unknown"):
        legacy_cube({"sise": 0.1})
    with pytest.raises(ConfigError, match="not both"):
        upgrade_scene_dict({"cube": {}, "objects": [{"name": "x"}]})


# -- files -------------------------------------------------------------------------------
def test_missing_file_lists_the_paths_tried(tmp_path):
    with pytest.raises(ConfigError) as err:
        resolve_file("nope/missing.obj", base_dir=tmp_path, what="object 'x' mesh")
    msg = str(err.value)
    assert "object 'x' mesh" in msg and str(tmp_path / "nope/missing.obj") in msg
    assert "pybullet_data" in msg
    assert resolve_file("objects/mug.urdf").name == "mug.urdf"
    with pytest.raises(ConfigError, match="matches no file"):
        resolve_glob("random_urdfs/*/*.nothing")


def test_random_urdfs_split_by_folder_name_as_bullet3():
    train = resolve_glob("random_urdfs/*[^0]/*.urdf")
    test = resolve_glob("random_urdfs/*0/*.urdf")
    assert len(train) == 900 and len(test) == 100
    assert not any(f.parent.name.endswith("0") for f in train)
    assert resolve_glob("random_urdfs/*[!0]/*.urdf") == train


# -- loading -----------------------------------------------------------------------------
def test_primitive_mesh_urdf_and_set_load_and_render(client, mesh_file):
    specs = [
        ObjectSpec(name="cube", shape="box", size=0.05, mass=0.3, color=(1, 0, 0, 1)),
        ObjectSpec(name="can", shape="cylinder", radius=0.03, length=0.08),
        ObjectSpec(name="ball", shape="sphere", radius=0.03),
        ObjectSpec(name="slab", mesh=mesh_file.name, scale=1.5),
        ObjectSpec(name="mug", urdf="objects/mug.urdf", mass=0.4),
        ObjectSpec(name="junk", set="random_urdfs", glob="random_urdfs/*[^0]/*.urdf", count=2),
    ]
    objs = load_objects(client, specs, np.random.default_rng(0), base_dir=mesh_file.parent)
    assert list(objs) == ["cube", "can", "ball", "slab", "mug", "junk_0", "junk_1"]
    slab = objs["slab"]
    np.testing.assert_allclose(slab.hull.max(axis=0) - slab.hull.min(axis=0), [0.12, 0.075, 0.045])
    assert slab.file == mesh_file.resolve() and slab.bottom == pytest.approx(0.0225)
    assert objs["cube"].mass == 0.3 and objs["mug"].mass == 0.4 and objs["slab"].mass == 0.1
    # inertia from trimesh (a solid box: m (b^2 + c^2) / 12 about x), kept through parking
    assert slab.inertia[0] == pytest.approx(0.1 * (0.075**2 + 0.045**2) / 12, rel=1e-3)
    assert objs["junk_0"].file.parent.parent.name == "random_urdfs"
    assert not objs["junk_0"].file.parent.name.endswith("0")
    assert objs["junk_0"].file != objs["junk_1"].file  # distinct members
    placements = sample_placements(
        list(objs.values()),
        np.random.default_rng(1),
        table_top=0.0,
        region=SpawnRegion(x=(0.3, 0.7), y=(-0.2, 0.2)),
    )
    apply_placements(client, objs, placements)
    cam = CameraConfig(eye=(0.5, 0, 0.9), target=(0.5, 0, 0), up=(1, 0, 0), width=96, height=96)
    assert client.getDynamicsInfo(slab.body, -1)[2] == pytest.approx(slab.inertia)
    seg = render(client, CameraGeometry.from_config(cam), segmentation=True).seg
    for name, obj in objs.items():
        assert (seg == obj.body).sum() > 5, f"{name} not rendered"


@pytest.mark.parametrize("suffix", [".stl", ".ply", ".glb"])
def test_mesh_formats(client, tmp_path, suffix):
    path = tmp_path / f"box{suffix}"
    trimesh.creation.box(extents=[0.04, 0.05, 0.06]).export(path)
    obj = load_object(client, ObjectSpec(name="m", mesh=str(path)))
    np.testing.assert_allclose(obj.hull.max(axis=0) - obj.hull.min(axis=0), [0.04, 0.05, 0.06])


def test_bad_files_are_named(client, tmp_path):
    bad = tmp_path / "broken.obj"
    bad.write_text("this is not a mesh\n")
    with pytest.raises(ConfigError, match=r"broken\.obj"):
        load_object(client, ObjectSpec(name="b", mesh=str(bad)))
    with pytest.raises(ConfigError, match=r"missing\.urdf"):
        load_object(client, ObjectSpec(name="u", urdf="missing.urdf"), base_dir=tmp_path)
    junk = tmp_path / "junk.urdf"
    junk.write_text("<robot><link></robot>")
    with pytest.raises(ConfigError, match=r"junk\.urdf"):
        load_object(client, ObjectSpec(name="j", urdf=str(junk)))
    with pytest.raises(ConfigError, match="matches no file"):
        load_object(client, ObjectSpec(name="s", set="mine", glob="nothing/*.urdf"))


def test_heavy_mesh_render_is_simplified_to_the_budget(client, tmp_path, caplog):
    path = tmp_path / "ball.stl"
    trimesh.creation.icosphere(subdivisions=4, radius=0.03).export(path)  # 5120 triangles
    with caplog.at_level(logging.INFO, logger="sim2real.envs.objects"):
        obj = load_object(client, ObjectSpec(name="ball", mesh=str(path), max_triangles=200))
    assert 0 < obj.render_triangles <= 200
    if importlib.util.find_spec("fast_simplification") is None:
        assert "convex hull" in caplog.text  # the fallback is logged
    light = load_object(client, ObjectSpec(name="b2", mesh=str(path), max_triangles=6000))
    assert light.render_triangles == 5120


def test_heavy_non_convex_mesh_is_decimated_not_replaced_by_its_hull():
    from sim2real.envs.objects.meshes import simplify

    torus = trimesh.creation.torus(0.05, 0.015, major_sections=64, minor_sections=48)
    assert len(torus.faces) == 6144
    out = simplify(torus, 1000, what="torus")
    assert 0 < len(out.faces) <= 1000
    # quadric decimation keeps the hole: the volume stays near the torus's, while its
    # convex hull would be ~1.6x larger
    assert abs(out.volume / torus.volume - 1.0) < 0.05
    assert torus.convex_hull.volume / torus.volume > 1.5


def test_vhacd_collision_on_request(client, mesh_file, tmp_path, monkeypatch):
    monkeypatch.setenv("SIM2REAL_CACHE", str(tmp_path))
    spec = ObjectSpec(name="slab", mesh=str(mesh_file), collision="vhacd")
    obj = load_object(client, spec, position=(0.5, 0.0, 0.1))
    assert list((tmp_path / "objects").glob("*-vhacd.obj"))
    for _ in range(240):
        client.stepSimulation()
    z = client.getBasePositionAndOrientation(obj.body)[0][2]
    assert z == pytest.approx(0.015, abs=0.004)  # fell and rests on the table


# -- spawning ----------------------------------------------------------------------------
def test_spawns_rest_on_the_table_without_interpenetrating(client, mesh_file):
    specs = [
        ObjectSpec(name="box", shape="box", size=0.06, count=4),
        ObjectSpec(name="can", shape="cylinder", radius=0.025, length=0.07, count=3),
        ObjectSpec(name="slab", mesh=str(mesh_file), count=2),
        ObjectSpec(
            name="ball", shape="sphere", radius=0.03, spawn=SpawnRegion(x=(0.6, 0.7), y=(0.1, 0.2))
        ),
    ]
    objs = load_objects(client, specs, np.random.default_rng(0))
    region = SpawnRegion(x=(0.25, 0.75), y=(-0.25, 0.25))
    pl = sample_placements(
        list(objs.values()), np.random.default_rng(3), table_top=0.0, region=region
    )
    again = sample_placements(
        list(objs.values()), np.random.default_rng(3), table_top=0.0, region=region
    )
    assert all(np.array_equal(pl[n].position, again[n].position) for n in pl)  # deterministic
    assert 0.6 <= pl["ball"].position[0] <= 0.7 and 0.1 <= pl["ball"].position[1] <= 0.2
    names = list(pl)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            d = np.linalg.norm(pl[a].position[:2] - pl[b].position[:2])
            assert d >= objs[a].radius + objs[b].radius, (a, b)
    apply_placements(client, objs, pl)
    client.performCollisionDetection()
    for name, obj in objs.items():
        low = client.getAABB(obj.body)[0][2]
        assert low == pytest.approx(0.0, abs=2e-3), name  # bottom on the table top
        for other in objs.values():
            if other.body != obj.body:
                assert not client.getContactPoints(obj.body, other.body), (name, other.name)
    start = {n: np.array(client.getBasePositionAndOrientation(o.body)[0]) for n, o in objs.items()}
    for _ in range(60):
        client.stepSimulation()
    for name, obj in objs.items():
        moved = np.array(client.getBasePositionAndOrientation(obj.body)[0]) - start[name]
        assert np.abs(moved).max() < 3e-3, (name, moved)  # resting, not popping apart
        assert client.getContactPoints(obj.body, client.table), f"{name} not on the table"


def test_a_region_too_small_is_an_error_naming_the_object(client):
    objs = load_objects(
        client, [ObjectSpec(name="box", shape="box", size=0.1, count=3)], np.random.default_rng(0)
    )
    with pytest.raises(ConfigError, match="box_"):
        sample_placements(
            list(objs.values()),
            np.random.default_rng(0),
            table_top=0.0,
            region=SpawnRegion(x=(0.5, 0.52), y=(0.0, 0.02)),
            max_tries=50,
        )
    with pytest.raises(ConfigError, match="no spawn region"):
        sample_placements(list(objs.values()), np.random.default_rng(0), table_top=0.0)


def test_parked_objects_do_not_fall(client):
    objs = load_objects(
        client,
        [ObjectSpec(name="box", shape="box", size=0.05, count=[0, 2])],
        np.random.default_rng(0),
    )
    pl = sample_placements(
        [objs["box_0"]],
        np.random.default_rng(0),
        table_top=0.0,
        region=SpawnRegion(x=(0.4, 0.6), y=(-0.1, 0.1)),
    )
    apply_placements(client, objs, pl)
    for _ in range(60):
        client.stepSimulation()
    assert client.getBasePositionAndOrientation(objs["box_1"].body)[0][2] == pytest.approx(60.0)
    assert client.getBasePositionAndOrientation(objs["box_0"].body)[0][2] < 0.05
