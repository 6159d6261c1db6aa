"""Metric definitions on cases with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from training.metrics import (camera_metrics, chamfer_distance, focal_error, mean_average_accuracy,
                                             point_metrics, relative_rotation_errors, relative_translation_errors)


def _rot_z(deg):
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def _c2w(R, t):
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = R, t
    return m


def test_rre_is_the_angle_between_relative_rotations():
    true = np.stack([_c2w(np.eye(3), [0, 0, 0]), _c2w(_rot_z(30), [1, 0, 0]), _c2w(_rot_z(60), [2, 0, 0])])
    pred = true.copy()
    pred[2, :3, :3] = _rot_z(65)
    errs = relative_rotation_errors(pred, true)  # pairs (0,1), (0,2), (1,2)
    np.testing.assert_allclose(errs, [0, 5, 5], atol=1e-6)


def test_metrics_are_invariant_to_the_world_frame_and_scale():
    rng = np.random.default_rng(0)
    true = np.stack([_c2w(_rot_z(rng.uniform(0, 90)), rng.normal(size=3)) for _ in range(5)])
    world = _c2w(_rot_z(40) @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]]), [3, -2, 1])
    pred = world @ true
    pred[:, :3, 3] *= 7.5
    m = camera_metrics(pred, true, [100, 100, 100, 100, 100], 100)
    assert m.rre < 1e-5 and m.rte < 1e-4 and m.mae == 0 and m.maa30 == 1.0


def test_rte_is_the_angle_between_translation_directions():
    true = np.stack([_c2w(np.eye(3), [0, 0, 0]), _c2w(np.eye(3), [1, 0, 0])])
    pred = np.stack([_c2w(np.eye(3), [0, 0, 0]), _c2w(np.eye(3), [1, 1, 0])])
    np.testing.assert_allclose(relative_translation_errors(pred, true), [45.0])


def test_maa_and_focal_error():
    assert mean_average_accuracy(np.array([0.5, 10.5]), np.array([0.1, 0.1]), 30) == pytest.approx((30 + 20) / 60)
    assert focal_error([110, 90], 100) == pytest.approx(0.1)


def test_point_metrics_scale_free_and_with_known_offsets():
    rng = np.random.default_rng(1)
    true = rng.normal(size=(2, 8, 8, 3)) + [0, 0, 5]
    valid = np.ones((2, 8, 8), dtype=bool)
    m = point_metrics(true * 3.0, true, valid)
    assert m.nd < 1e-12 and m.dac == 1.0 and m.cd < 1e-12
    norm = np.linalg.norm(true, axis=-1).mean()
    shifted = true.copy()
    shifted[0] += [0.3 * norm, 0, 0]                    # half the pixels move by 0.3 normalised units
    m = point_metrics(shifted, true, valid)
    assert m.dac == pytest.approx(0.5, abs=0.05) and m.nd > 0.1
    valid[1] = False                                     # invalid pixels do not count
    assert point_metrics(true * 2, true, valid).nd < 1e-12


def test_chamfer_distance_of_known_sets():
    a = np.array([[0.0, 0, 0], [1, 0, 0]])
    b = np.array([[0.0, 0, 1]])
    # a→b: (1 + √2)/2 ; b→a: 1 ; CD = ½ of their sum
    assert chamfer_distance(a, b, chunk=1) == pytest.approx(0.5 * ((1 + np.sqrt(2)) / 2 + 1))
