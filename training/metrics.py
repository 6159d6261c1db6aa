"""Evaluation metrics for cameras and points, as the MV-DUSt3R paper reports them.

Cameras (pose estimation; all scale-free, so predicted and true trajectories need no alignment):
- RRE, relative rotation error, degrees: for every unordered pair of views (i, j), the geodesic
  angle between the predicted and the true relative rotation ``R_i⁻¹R_j`` (camera-to-world R's).
- RTE, relative translation error, degrees: for every pair, the angle between the predicted and the
  true relative translation directions (translation of ``c2w_i⁻¹·c2w_j``). Translation *direction*
  because scale is arbitrary. (RRA@τ / RTA@τ are the fractions of pairs under τ degrees; mAA@30 is
  the mean over τ = 1..30 of the fraction of pairs with max(RRE, RTE) < τ — the official eval's
  metrics.)
- mAE, mean absolute focal error, relative: mean over views of |f̂ − f| / f, with f in any consistent
  pixel unit (we use the network grid's pixels).

Points (multi-view stereo; predicted and true pointmaps share pixels and the world frame of view 0):
- both are first normalised by their own mean distance to the origin over the valid pixels — the
  ``avg_dis`` normalisation of training (scale-free comparison);
- ND, normalised distance: mean over valid pixels of ‖p̂ − p‖ after normalisation;
- DAc@τ, distance accuracy: fraction of valid pixels with ‖p̂ − p‖ < τ after normalisation
  (τ = 0.2 as in the paper);
- CD, Chamfer distance: ½(mean nearest-neighbour distance prediction→truth + truth→prediction) of
  the normalised valid clouds, correspondence-free.

Where the paper states only the metric's name, the definition above is inferred from DUSt3R /
MV-DUSt3R's evaluation code conventions (pairwise relative poses, ``avg_dis`` normalisation); the
docstrings of each function are the authoritative definition for this project.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(n, k=1)
    return i, j


def _relative(c2w: np.ndarray) -> np.ndarray:
    """[P,4,4]: ``c2w_i⁻¹ · c2w_j`` for all pairs i < j."""
    c2w = np.asarray(c2w, dtype=np.float64)
    i, j = _pairs(len(c2w))
    return np.linalg.inv(c2w[i]) @ c2w[j]


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Geodesic angle (degrees) of rotation matrices [...,3,3]."""
    cos = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def relative_rotation_errors(c2w_pred: np.ndarray, c2w_true: np.ndarray) -> np.ndarray:
    """RRE per pair i < j, degrees (module doc)."""
    rp, rt = _relative(c2w_pred)[:, :3, :3], _relative(c2w_true)[:, :3, :3]
    return rotation_angle_deg(np.swapaxes(rp, -1, -2) @ rt)


def relative_translation_errors(c2w_pred: np.ndarray, c2w_true: np.ndarray) -> np.ndarray:
    """RTE per pair i < j, degrees: angle between relative translation directions (module doc)."""
    tp, tt = _relative(c2w_pred)[:, :3, 3], _relative(c2w_true)[:, :3, 3]
    tp = tp / np.maximum(np.linalg.norm(tp, axis=-1, keepdims=True), 1e-12)
    tt = tt / np.maximum(np.linalg.norm(tt, axis=-1, keepdims=True), 1e-12)
    return np.degrees(np.arccos(np.clip((tp * tt).sum(-1), -1.0, 1.0)))


def mean_average_accuracy(rre: np.ndarray, rte: np.ndarray, max_threshold: int = 30) -> float:
    """mAA@max_threshold: mean over τ = 1..max of the fraction of pairs with max(RRE, RTE) < τ."""
    err = np.maximum(rre, rte)
    return float(np.mean([(err < t).mean() for t in range(1, max_threshold + 1)]))


def focal_error(focal_pred: np.ndarray | float, focal_true: np.ndarray | float) -> float:
    """mAE: mean relative absolute focal error |f̂ − f| / f over views."""
    fp, ft = np.asarray(focal_pred, dtype=np.float64), np.asarray(focal_true, dtype=np.float64)
    return float(np.mean(np.abs(fp - ft) / ft))


def normalise_points(points: torch.Tensor | np.ndarray, valid: torch.Tensor | np.ndarray) -> np.ndarray:
    """Points [...,3] divided by their mean distance to the origin over `valid` (training's avg_dis)."""
    p = np.asarray(points, dtype=np.float64)
    return p / np.linalg.norm(p[np.asarray(valid, dtype=bool)], axis=-1).mean()


def chamfer_distance(a: np.ndarray, b: np.ndarray, chunk: int = 4096) -> float:
    """½(mean NN distance a→b + b→a) for point sets [P,3], [Q,3]; exact, chunked to bound memory."""
    ta, tb = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)

    def one_way(x: torch.Tensor, y: torch.Tensor) -> float:
        best = torch.cat([torch.cdist(x[k:k + chunk], y, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values for k in range(0, len(x), chunk)])
        return float(best.mean())

    return 0.5 * (one_way(ta, tb) + one_way(tb, ta))


@dataclass
class PointMetrics:
    nd: float       # normalised distance
    dac: float      # distance accuracy at `threshold`
    cd: float       # Chamfer distance (normalised clouds)
    threshold: float


def point_metrics(pred: np.ndarray, true: np.ndarray, valid: np.ndarray, threshold: float = 0.2,
                  max_points: int = 20000, seed: int = 0) -> PointMetrics:
    """ND, DAc@threshold and CD of predicted vs true pointmaps [N,h,w,3] over `valid` [N,h,w].

    CD uses at most `max_points` valid pixels (the same seeded subset for both clouds).
    """
    valid = np.asarray(valid, dtype=bool)
    p, t = normalise_points(pred, valid)[valid], normalise_points(true, valid)[valid]  # each map on its own
    dist = np.linalg.norm(p - t, axis=-1)
    if len(p) > max_points:
        pick = np.random.default_rng(seed).choice(len(p), max_points, replace=False)
        p, t = p[pick], t[pick]
    return PointMetrics(float(dist.mean()), float((dist < threshold).mean()), chamfer_distance(p, t), threshold)


@dataclass
class CameraMetrics:
    rre: float       # mean RRE, degrees
    rte: float       # mean RTE, degrees
    mae: float       # mean relative focal error
    maa30: float


def camera_metrics(c2w_pred: np.ndarray, c2w_true: np.ndarray, focal_pred: np.ndarray | float,
                   focal_true: np.ndarray | float) -> CameraMetrics:
    """Mean RRE, RTE (degrees), mAE and mAA@30 of a predicted trajectory against the truth."""
    rre, rte = relative_rotation_errors(c2w_pred, c2w_true), relative_translation_errors(c2w_pred, c2w_true)
    return CameraMetrics(float(rre.mean()), float(rte.mean()), focal_error(focal_pred, focal_true),
                         mean_average_accuracy(rre, rte))
