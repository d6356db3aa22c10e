"""Back-projection routes: what a camera whose pose is a little off does to each of them."""

from __future__ import annotations

import numpy as np

from sim2real.perception.geometry import PlaneCamera, relative_position

W, H, CUBE_Z = 84, 84, 0.025


def look_at(eye: np.ndarray, target: np.ndarray) -> PlaneCamera:
    """An OpenCV-convention camera (x right, y down, z forward) at ``eye`` facing ``target``."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    rot = np.stack([right, np.cross(forward, right), forward])
    k = np.array([[70.0, 0.0, W / 2], [0.0, 70.0, H / 2], [0.0, 0.0, 1.0]])
    return PlaneCamera(k, rot, -rot @ eye, W, H, CUBE_Z)


def normalised(cam: PlaneCamera, points: np.ndarray) -> np.ndarray:
    return 2.0 * cam.project(points) / np.array([W, H]) - 1.0


def test_relative_route_cancels_most_of_a_camera_pose_error() -> None:
    """200 cameras up to 4 cm off in position and look-at point (the default randomisation),
    the gripper 2 cm beside the hover point above the cube, as near the end of a reach."""
    rng = np.random.default_rng(0)
    eye, target = np.array([1.3, 0.0, 0.7]), np.array([0.5, 0.0, 0.0])
    nominal = look_at(eye, target)
    abs_err, rel_err = [], []
    for _ in range(200):
        real = look_at(eye + rng.uniform(-0.04, 0.04, 3), target + rng.uniform(-0.04, 0.04, 3))
        cube = np.array([[rng.uniform(0.4, 0.7), rng.uniform(-0.2, 0.2), CUBE_Z]])
        gripper = cube + np.array([[0.02, -0.01, 0.075]])
        cube_xy, gripper_xy = normalised(real, cube), normalised(real, gripper)
        absolute = nominal.backproject_normalised(cube_xy)  # the keypoint_plane route
        relative = relative_position(nominal, cube_xy, gripper_xy, gripper)
        abs_err.append(np.linalg.norm(absolute - cube))
        rel_err.append(np.linalg.norm(relative - cube))
        # with the right camera both routes are exact
        np.testing.assert_allclose(real.backproject_normalised(cube_xy), cube, atol=1e-9)
        exact = relative_position(real, cube_xy, gripper_xy, gripper)
        np.testing.assert_allclose(exact, cube, atol=1e-9)
    assert np.median(abs_err) > 0.02  # the pose error shows in the absolute route (~3.5 cm)
    assert np.median(rel_err) < 0.15 * np.median(abs_err)  # ~2.6 mm
    assert max(rel_err) < 0.008


def test_backproject_onto_a_height_per_point() -> None:
    cam = look_at(np.array([1.3, 0.0, 0.7]), np.array([0.5, 0.0, 0.0]))
    points = np.array([[0.5, 0.1, 0.2], [0.6, -0.1, 0.05]])
    got = cam.backproject_normalised(normalised(cam, points), plane_z=points[:, 2])
    np.testing.assert_allclose(got, points, atol=1e-9)
