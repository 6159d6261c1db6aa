"""Batched camera resection: every view's pose, and its camera's focal, from 3-D points and the image
points they are seen at — all views at once, as tensor maths on the points' device.

Image points are photo-pixel offsets from the principal point, so one camera (one focal F, square
pixels) projects a camera-frame point (x, y, z) to ``F·(x/z, y/z)`` whatever its photo's crop or
resize; world-to-camera poses are ``x_cam = R·X + t`` (OpenCV axes).

Three closed-form starts and one refinement:

- :func:`dlt` — the direct linear transform of a 3×4 projection matrix on Hartley-normalised points
  (one 12×12 symmetric eigenproblem per batch entry), decomposed into F, R, t with the principal
  point known and the pixels square;
- :func:`sampled_dlt` — a RANSAC without loops: H random subsets of each view's points give H DLT
  hypotheses per view at once, each scored by its truncated reprojection cost on all the view's
  sample points; the best one's inliers give a final DLT;
- :func:`plane_pose` — for views whose points lie on one plane (the DLT is degenerate there): the
  plane's homography with a known focal;
- :func:`refine` — robust (Geman–McClure-weighted) Gauss–Newton on the reprojection error of every view's
  pose and every camera's log focal together. Views of one camera share one focal: the focal is
  eliminated per camera through the Schur complement of the views' 6×6 pose blocks, so a solve costs
  one batched 6×6 inverse per view and one division per camera.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

Tensor = torch.Tensor


@dataclass
class Resection:
    """World-to-camera poses and focal lengths of a batch of views."""

    R: Tensor       # float64 [V,3,3] rotation, world → camera
    t: Tensor       # float64 [V,3]
    focal: Tensor   # float64 [V] photo pixels (the focal of the view's camera)
    ok: Tensor      # bool [V] the solve gave a proper, finite camera with points in front


def project(R: Tensor, t: Tensor, focal: Tensor, world: Tensor) -> tuple[Tensor, Tensor]:
    """Image offsets [...,P,2] and depths [...,P] of `world` [...,P,3] under poses [...,3,3]/[...,3] and focal [...]."""
    cam = world @ R.transpose(-1, -2) + t.unsqueeze(-2)
    depth = cam[..., 2]
    return focal[..., None, None] * cam[..., :2] / depth.unsqueeze(-1), depth


def _nearest_rotation(M: Tensor) -> tuple[Tensor, Tensor]:
    """The rotation nearest to each M [...,3,3] (polar factor) and whether M was finite and no reflection."""
    finite = torch.isfinite(M).flatten(-2).all(-1)
    U, _, Vh = torch.linalg.svd(torch.where(finite[..., None, None], M, torch.eye(3, dtype=M.dtype, device=M.device)))
    det = torch.linalg.det(U @ Vh)
    fix = torch.ones_like(U[..., 0, :])
    fix[..., 2] = torch.sign(det)
    return (U * fix.unsqueeze(-2)) @ Vh, finite & (det > 0)


def _normalisers(world: Tensor, image: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Hartley normalisation: world centroid [...,3] and scale [...], image scale [...] (RMS distance → √3, √2)."""
    total = w.sum(-1).clamp(min=1e-12)
    centre = (world * w.unsqueeze(-1)).sum(-2) / total.unsqueeze(-1)
    spread = (((world - centre.unsqueeze(-2)).square().sum(-1) * w).sum(-1) / total).sqrt().clamp(min=1e-12)
    image_spread = ((image.square().sum(-1) * w).sum(-1) / total).sqrt().clamp(min=1e-12)
    return centre, spread / 3 ** 0.5, image_spread / 2 ** 0.5


def _smallest_eigenvector(rows_a: Tensor, rows_b: Tensor, w: Tensor) -> Tensor:
    """The unit vector minimising Σ w·((a·p)² + (b·p)²) over rows a, b [...,P,k]: one k×k eigenproblem per batch entry
    (NaN where the rows are not finite)."""
    wa, wb = rows_a * w.unsqueeze(-1), rows_b * w.unsqueeze(-1)
    normal = wa.transpose(-1, -2) @ rows_a + wb.transpose(-1, -2) @ rows_b
    finite = torch.isfinite(normal).flatten(-2).all(-1)[..., None, None]
    eye = torch.eye(normal.shape[-1], dtype=normal.dtype, device=normal.device)
    vector = torch.linalg.eigh(torch.where(finite, normal, eye))[1][..., 0]
    return torch.where(finite[..., 0], vector, torch.full_like(vector, float("nan")))


def dlt(world: Tensor, image: Tensor, w: Tensor) -> Resection:
    """Camera from ≥ 6 weighted correspondences per batch entry: world [...,P,3], image [...,P,2], w [...,P] ≥ 0."""
    centre, scale3, scale2 = _normalisers(world, image, w)
    X = (world - centre.unsqueeze(-2)) / scale3[..., None, None]
    x = image / scale2[..., None, None]
    Xh = torch.cat([X, torch.ones_like(X[..., :1])], -1)
    zero = torch.zeros_like(Xh)
    rows_a = torch.cat([Xh, zero, -x[..., :1] * Xh], -1)
    rows_b = torch.cat([zero, Xh, -x[..., 1:] * Xh], -1)
    P = _smallest_eigenvector(rows_a, rows_b, w).reshape(*w.shape[:-1], 3, 4)
    # undo the normalisation: P = diag(s2, s2, 1) · Pn · [[I/s3, −c/s3], [0, 1]]
    P = P * torch.stack([scale2, scale2, torch.ones_like(scale2)], -1).unsqueeze(-1)
    M = P[..., :3] / scale3[..., None, None]
    p4 = P[..., 3] - (M @ centre.unsqueeze(-1)).squeeze(-1)
    depth = (world @ M[..., 2, :].unsqueeze(-1)).squeeze(-1) + p4[..., 2:3]
    sign = torch.where((depth * w).sum(-1) >= 0, 1.0, -1.0).to(M)
    M, p4 = M * sign[..., None, None], p4 * sign[..., None]
    norm3 = M[..., 2, :].norm(dim=-1).clamp(min=1e-300)
    focal = (M[..., 0, :].norm(dim=-1) + M[..., 1, :].norm(dim=-1)) / (2 * norm3)
    unscale = torch.stack([1 / focal, 1 / focal, torch.ones_like(focal)], -1) / norm3.unsqueeze(-1)
    R, proper = _nearest_rotation(M * unscale.unsqueeze(-1))
    t = p4 * unscale
    ok = proper & torch.isfinite(focal) & (focal > 0) & torch.isfinite(t).all(-1) & ((w > 0).sum(-1) >= 6)
    return Resection(R, t, focal, ok)


def sampled_dlt(world: Tensor, image: Tensor, valid: Tensor, threshold: Tensor, hypotheses: int = 48,
                subset: int = 8, generator: Optional[torch.Generator] = None) -> tuple[Resection, Tensor]:
    """Robust DLT of each view [V,P,...]: `hypotheses` random `subset`-point DLTs per view, the one with the least
    truncated cost ``Σ min(e², threshold²)`` over the view's `valid` points wins, and a DLT on its inliers
    (error < `threshold` [V], photo pixels) is returned with that inlier mask [V,P].

    `valid` must list each view's usable points first (as :func:`~.cameras` samples them)."""
    V, P = valid.shape
    count = valid.sum(-1)
    draw = torch.rand((V, hypotheses, subset), generator=generator, device="cpu").to(world.device, world.dtype)
    picks = (draw * count.clamp(min=1)[:, None, None]).long().clamp(max=P - 1)
    take = picks.reshape(V, hypotheses * subset)
    sample_world = torch.gather(world, 1, take.unsqueeze(-1).expand(-1, -1, 3)).reshape(V, hypotheses, subset, 3)
    sample_image = torch.gather(image, 1, take.unsqueeze(-1).expand(-1, -1, 2)).reshape(V, hypotheses, subset, 2)
    guess = dlt(sample_world, sample_image, torch.ones(V, hypotheses, subset, dtype=world.dtype, device=world.device))
    # scored in single precision: pixel errors need no more, and it is several times faster
    seen, depth = project(guess.R.float(), guess.t.float(), guess.focal.float(), world.float().unsqueeze(1))
    error = (seen - image.float().unsqueeze(1)).norm(dim=-1)
    good = valid.unsqueeze(1) & (depth > 0) & torch.isfinite(error)
    limit = threshold.float()[:, None, None].square()
    cost = torch.where(good, error.square().clamp(max=limit), limit).sum(-1)
    cost = torch.where(guess.ok, cost, torch.full_like(cost, float("inf")))
    best = cost.argmin(-1)
    inliers = torch.gather(good & (error < threshold.float()[:, None, None]), 1,
                           best[:, None, None].expand(-1, 1, P)).squeeze(1)
    inliers &= torch.isfinite(cost.min(-1).values)[:, None]   # no proper camera among the hypotheses: none
    return dlt(world, image, inliers.to(world.dtype)), inliers


def plane_pose(world: Tensor, image: Tensor, w: Tensor, focal: Tensor) -> Resection:
    """Pose of views whose weighted points [V,P,3] lie on one plane, seen with a known `focal` [V]: the plane's
    homography, decomposed (rotation columns r1, r2 and translation of the plane's own frame)."""
    total = w.sum(-1).clamp(min=1e-12)
    centre = (world * w.unsqueeze(-1)).sum(-2) / total.unsqueeze(-1)
    rel = world - centre.unsqueeze(-2)
    cov = (rel * w.unsqueeze(-1)).transpose(-1, -2) @ rel / total[:, None, None]
    axes = torch.linalg.eigh(cov)[1]                                   # ascending: normal first
    e1, e2 = axes[..., 2], axes[..., 1]
    basis = torch.stack([e1, e2, torch.linalg.cross(e1, e2)], -1)      # plane → world, proper rotation
    plane = (rel @ basis)[..., :2]
    spread = ((plane.square().sum(-1) * w).sum(-1) / total).sqrt().clamp(min=1e-12)
    p = plane / spread[:, None, None]
    x = image / focal[:, None, None]
    ph = torch.cat([p, torch.ones_like(p[..., :1])], -1)
    zero = torch.zeros_like(ph)
    H = _smallest_eigenvector(torch.cat([ph, zero, -x[..., :1] * ph], -1),
                              torch.cat([zero, ph, -x[..., 1:] * ph], -1), w).reshape(-1, 3, 3)
    H = H * torch.stack([1 / spread, 1 / spread, torch.ones_like(spread)], -1).unsqueeze(-2)
    H = H * torch.where(H[:, 2, 2] >= 0, 1.0, -1.0).to(H)[:, None, None]  # the plane's centre is in front
    h1, h2, h3 = H[..., 0], H[..., 1], H[..., 2]
    scale = (h1.norm(dim=-1) + h2.norm(dim=-1)).clamp(min=1e-300) / 2
    r1, r2 = h1 / scale[:, None], h2 / scale[:, None]
    R_plane, proper = _nearest_rotation(torch.stack([r1, r2, torch.linalg.cross(r1, r2)], -1))
    R = R_plane @ basis.transpose(-1, -2)
    t = h3 / scale[:, None] - (R @ centre.unsqueeze(-1)).squeeze(-1)
    ok = proper & torch.isfinite(R).flatten(-2).all(-1) & torch.isfinite(t).all(-1)
    return Resection(R, t, focal.clone(), ok)


def _skew(v: Tensor) -> Tensor:
    zero = torch.zeros_like(v[..., 0])
    return torch.stack([torch.stack([zero, -v[..., 2], v[..., 1]], -1),
                        torch.stack([v[..., 2], zero, -v[..., 0]], -1),
                        torch.stack([-v[..., 1], v[..., 0], zero], -1)], -2)


def _exp_so3(omega: Tensor) -> Tensor:
    """Rodrigues: rotation matrices [...,3,3] of rotation vectors [...,3]."""
    angle = omega.norm(dim=-1, keepdim=True).unsqueeze(-1)
    K = _skew(omega)
    small = angle < 1e-8
    a = torch.where(small, torch.ones_like(angle), torch.sin(angle) / angle.clamp(min=1e-300))
    b = torch.where(small, 0.5 * torch.ones_like(angle), (1 - torch.cos(angle)) / angle.clamp(min=1e-300).square())
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device).expand_as(K)
    return eye + a * K + b * (K @ K)


def refine(world: Tensor, image: Tensor, w: Tensor, start: Resection, camera: Tensor, fixed_pose: Tensor,
           fixed_focal: Tensor, scale: Tensor, iterations: int = 10, tolerance: float = 1e-5) -> Resection:
    """Robust Gauss–Newton on all views at once (module doc).

    world [V,P,3], image [V,P,2], w [V,P] base weights (0 = unused point); `camera` [V] long: which
    camera (0..C−1) each view belongs to; views of one camera share one focal — taken from `start`'s
    first view of it; `fixed_pose` [V] and `fixed_focal` [C] bool hold those parameters still;
    `scale` [V] the Geman–McClure scale of the reprojection error (photo pixels). Stops after `iterations`
    or when no parameter moves by more than `tolerance` (radians; translation over the view's mean depth; log focal).
    """
    V = world.shape[0]
    cameras = int(camera.max()) + 1 if V else 0
    dtype, device = world.dtype, world.device
    first = torch.full((cameras,), V, dtype=torch.long, device=device).scatter_reduce(
        0, camera, torch.arange(V, device=device), reduce="amin")
    log_f = start.focal[first].log()
    R, t = start.R.clone(), start.t.clone()
    eye6 = torch.eye(6, dtype=dtype, device=device)
    free_pose = (~fixed_pose).to(dtype)
    free_focal = (~fixed_focal).to(dtype)
    for _ in range(iterations):
        focal = log_f.exp()[camera]
        cam = torch.baddbmm(t.unsqueeze(-2), world, R.transpose(-1, -2))
        z = cam[..., 2].clamp(min=1e-12)
        inv_z = 1 / z
        xn, yn = cam[..., 0] * inv_z, cam[..., 1] * inv_z
        f = focal[:, None]
        rx, ry = image[..., 0] - f * xn, image[..., 1] - f * yn                  # residuals [V,P]
        robust = w / (1 + (rx * rx + ry * ry) / scale[:, None].square()).square()  # Geman-McClure IRLS
        robust = torch.where(cam[..., 2] > 0, robust, torch.zeros_like(robust))
        # rows of d(F·xy)/d(ω, v) / F for cam' = cam + ω × cam + v (the classic form), as [V,6,P]
        zero = torch.zeros_like(z)
        a = torch.stack([-xn * yn, 1 + xn * xn, -yn, inv_z, zero, -xn * inv_z], 1)
        b = torch.stack([-1 - yn * yn, xn * yn, xn, zero, inv_z, -yn * inv_z], 1)
        pose_scale = (focal * free_pose)[:, None]                                # d/d pose = F·(a, b)
        focal_scale = (focal * free_focal[camera])[:, None]                      # d/d log F = F·(xn, yn)
        aw, bw = a * (robust * pose_scale)[:, None], b * (robust * pose_scale)[:, None]
        A = (aw @ a.transpose(1, 2) + bw @ b.transpose(1, 2)) * pose_scale[..., None]
        jx, jy = xn * focal_scale, yn * focal_scale
        B = (aw @ jx.unsqueeze(-1) + bw @ jy.unsqueeze(-1)).squeeze(-1)
        g_pose = (aw @ rx.unsqueeze(-1) + bw @ ry.unsqueeze(-1)).squeeze(-1)
        C = (robust * (jx * jx + jy * jy)).sum(-1)
        g_focal = (robust * (jx * rx + jy * ry)).sum(-1)
        A = A + 1e-9 * torch.diagonal(A, dim1=-2, dim2=-1).mean(-1).clamp(min=1e-12)[:, None, None] * eye6 \
            + (1 - free_pose)[:, None, None] * eye6
        A_inv = torch.linalg.inv(A)
        A_inv_B = (A_inv @ B.unsqueeze(-1)).squeeze(-1)
        A_inv_g = (A_inv @ g_pose.unsqueeze(-1)).squeeze(-1)
        schur = torch.zeros(cameras, dtype=dtype, device=device).index_add_(0, camera, C - (B * A_inv_B).sum(-1))
        rhs = torch.zeros(cameras, dtype=dtype, device=device).index_add_(0, camera, g_focal - (B * A_inv_g).sum(-1))
        step_f = torch.where(schur > 1e-12 * schur.abs().max().clamp(min=1e-300), rhs / schur.clamp(min=1e-300),
                             torch.zeros_like(rhs)) * free_focal
        step_pose = A_inv_g - A_inv_B * step_f[camera].unsqueeze(-1)
        step_pose = torch.nan_to_num(step_pose) * free_pose[:, None]
        rotate = _exp_so3(step_pose[:, :3])
        R = rotate @ R
        t = (rotate @ t.unsqueeze(-1)).squeeze(-1) + step_pose[:, 3:]
        log_f = log_f + torch.nan_to_num(step_f)
        distance = (z * (w > 0)).sum(-1) / (w > 0).sum(-1).clamp(min=1)
        moved = torch.cat([step_pose[:, :3].abs().flatten(), (step_pose[:, 3:] / distance[:, None]).abs().flatten(),
                           step_f.abs()])
        if not V or float(moved.max()) < tolerance:
            break
    focal = log_f.exp()[camera]
    ok = torch.isfinite(R).flatten(-2).all(-1) & torch.isfinite(t).all(-1) & torch.isfinite(focal)
    return Resection(R, t, focal, ok & start.ok)
