"""The paper's training loss: ``ConfLoss(Regr3D(L21, norm_mode='avg_dis', mv=True), alpha=0.2)``.

What the official code computes (``dust3r/losses.py``, ``dust3r/utils/geometry.py``), which this
module reproduces for every reference path of the network output:

1. Ground truth per path r: the points of every view expressed in the camera frame of path r's
   reference view (view r), in the path's slot order — slot 0 holds view r and slot r holds
   view 0 (``extend_gts`` repeats the batch ``n_ref`` times and swaps, as the network does).
2. ``avg_dis`` normalisation, *separately* for prediction and ground truth, per batch row (= per
   scene and path): divide every point by the mean Euclidean norm of that row's valid points over
   *all* its views (invalid points count as zero in the sum and not in the count; factor clipped
   at 1e-8). The prediction's factor is differentiable. The GT validity mask selects the pixels
   for both.
3. Per valid pixel: ``d = ‖p̂ − p‖`` (L21), ``ℓ = conf·d − α·log(conf)`` with α = 0.2.
4. Reduction: slot 0 is averaged over its valid pixels pooled across the whole batch (every scene
   and path); each other slot likewise on its own; the loss is the slot-0 mean **plus the sum** of
   the other slots' means. So views are *not* averaged together: the total grows with the number
   of views (≈ N × the per-pixel average), and a view with few valid pixels weighs as much as one
   with many. We keep this exactly — it sets the effective learning rate of the recipes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .cameras import centre_convention
from .splatting import render_gaussians

ALPHA = 0.2


@dataclass(frozen=True)
class LossTerms:
    """``total`` is differentiable; the rest are detached floats for the training log."""

    total: Tensor
    conf_view0: float      # the slot-0 term
    conf_others: float     # sum of the other slots' terms
    distance: float        # mean normalised L2 distance over all valid pixels (monitoring, like ND)


def stack_outputs(res1: dict[str, Tensor], res2s: list[dict[str, Tensor]]) -> tuple[Tensor, Tensor]:
    """Network output (official dicts) → pts [B',V,H,W,3], conf [B',V,H,W] in slot order."""
    pts = torch.stack([res1["pts3d"], *[r["pts3d_in_other_view"] for r in res2s]], dim=1)
    conf = torch.stack([res1["conf"], *[r["conf"] for r in res2s]], dim=1)
    return pts, conf


def path_ground_truth(pts3d: Tensor, cam2world: Tensor, valid: Tensor, n_ref: int) -> tuple[Tensor, Tensor]:
    """GT for every reference path, laid out like the network's output (batch index b·n_ref + r).

    ``pts3d`` [B,V,H,W,3] in view 0's frame, ``cam2world`` [B,V,4,4] to view 0's frame, ``valid``
    [B,V,H,W] → (points [B·R,V,H,W,3] in view r's frame in path r's slot order, valid [B·R,V,H,W]).
    """
    b, v = pts3d.shape[:2]
    world2ref = torch.linalg.inv(cam2world[:, :n_ref])                         # [B,R,4,4]
    pts = torch.einsum("brij,bvhwj->brvhwi", world2ref[..., :3, :3], pts3d) \
        + world2ref[:, :, None, None, None, :3, 3]                             # [B,R,V,H,W,3]
    view_of = torch.arange(v, device=pts3d.device).repeat(n_ref, 1)             # [R,V]
    for r in range(1, n_ref):
        view_of[r, 0], view_of[r, r] = r, 0
    path = torch.arange(n_ref, device=pts3d.device)[:, None]
    pts = pts[:, path, view_of]                                                 # [B,R,V,H,W,3]
    mask = valid[:, view_of]                                                    # [B,R,V,H,W]
    return pts.flatten(0, 1), mask.flatten(0, 1)


def avg_dis_factor(pts: Tensor, valid: Tensor) -> Tensor:
    """[B]: each row's mean point norm of ``pts`` [B,V,H,W,3] over ``valid`` [B,V,H,W] pixels, clipped at 1e-8."""
    dist = pts.norm(dim=-1) * valid
    return (dist.flatten(1).sum(1) / (valid.flatten(1).sum(1) + 1e-8)).clip(min=1e-8)


def normalise_avg_dis(pts: Tensor, valid: Tensor) -> Tensor:
    """``pts`` [B,V,H,W,3] divided per row by its mean point norm over ``valid`` [B,V,H,W] pixels."""
    return pts / avg_dis_factor(pts, valid)[:, None, None, None, None]


def confidence_loss(pred_pts: Tensor, pred_conf: Tensor, gt_pts: Tensor, valid: Tensor,
                    alpha: float = ALPHA) -> LossTerms:
    """The loss of one batch in slot order (all [B',V,H,W,...]; see the module docstring)."""
    pred_n = normalise_avg_dis(pred_pts, valid)
    gt_n = normalise_avg_dis(gt_pts, valid)
    dist = (pred_n - gt_n).norm(dim=-1)                                         # [B',V,H,W]
    per_pixel = pred_conf * dist - alpha * torch.log(pred_conf)
    mask = valid.to(per_pixel.dtype)
    count = mask.sum(dim=(0, 2, 3))                                             # [V]
    per_slot = (per_pixel * mask).sum(dim=(0, 2, 3)) / count.clamp(min=1)      # [V]; empty slot → 0
    total = per_slot.sum()
    distance = float((dist.detach() * mask).sum() / mask.sum().clamp(min=1))
    logged = per_slot.detach()
    return LossTerms(total, float(logged[0]), float(logged[1:].sum()), distance)


def multiview_loss(res1: dict[str, Tensor], res2s: list[dict[str, Tensor]], batch: dict[str, Tensor],
                   alpha: float = ALPHA) -> LossTerms:
    """The loss of a network output for a collated batch of :class:`training.dataset.SyntheticScenes`
    (render views, at the end of each sample, are left out as the network left them out)."""
    pred_pts, pred_conf = stack_outputs(res1, res2s)
    n = pred_pts.shape[1]
    n_ref = pred_pts.shape[0] // batch["pts3d"].shape[0]
    gt, valid = path_ground_truth(batch["pts3d"][:, :n], batch["cam2world"][:, :n], batch["valid"][:, :n], n_ref)
    return confidence_loss(pred_pts, pred_conf, gt, valid, alpha)


def gaussian_render_loss(res1: dict[str, Tensor], res2s: list[dict[str, Tensor]], batch: dict[str, Tensor],
                         scale_range: tuple[float, float] = (1e-4, 4e-3)) -> Tensor:
    """The official Gaussian rendering loss without its LPIPS term (which needs pretrained VGG
    weights): mean squared error between the render views of a sample and its predicted Gaussians
    rendered from those views' true cameras (``GSRenderLoss(..., use_img_rgb=True)``).

    Reference path 0 only (the official loss renders every path). Gaussians: centres = predicted
    points / the prediction's ``avg_dis`` factor (detached), scales / the same factor clamped to
    ``scale_range``, the heads' opacities and rotations, colours = the input images in [-1, 1];
    cameras = true render-view poses in view 0's frame with translations / the truth's factor;
    white background. Returns a differentiable scalar (0 when the batch has no render views).
    """
    pred_pts, _ = stack_outputs(res1, res2s)
    n = pred_pts.shape[1]
    b = batch["pts3d"].shape[0]
    n_ref = pred_pts.shape[0] // b
    views = [res1, *res2s]
    pick = slice(None, None, n_ref)                                             # path 0 rows
    pts, valid = pred_pts[pick], batch["valid"][:, :n]
    h, w = pts.shape[2:4]
    pred_factor = avg_dis_factor(pts, valid).detach()
    gt_factor = avg_dis_factor(batch["pts3d"][:, :n], valid)
    scales = torch.stack([v["scale"][pick] for v in views], 1)                 # [B,n,H,W,3]
    quats = torch.stack([v["rotation"][pick] for v in views], 1)
    opacity = torch.stack([v["opacity"][pick] for v in views], 1)[..., 0]
    colour = batch["img"][:, :n].permute(0, 1, 3, 4, 2)                         # [B,n,H,W,3]
    losses = []
    for i in range(b):
        means = (pts[i] / pred_factor[i]).reshape(-1, 3)
        sc = (scales[i] / pred_factor[i]).clamp(*scale_range).reshape(-1, 3)
        for k in range(n, batch["img"].shape[1]):
            world2cam = torch.linalg.inv(batch["cam2world"][i, k])
            world2cam = torch.cat([world2cam[:3, :3], world2cam[:3, 3:] / gt_factor[i]], 1)
            image = render_gaussians(means, quats[i].reshape(-1, 4), sc, opacity[i].reshape(-1),
                                     colour[i].reshape(-1, 3), world2cam, centre_convention(batch["intrinsics"][i, k]), h, w,
                                     torch.ones(3, dtype=means.dtype, device=means.device))
            losses.append(((image - batch["img"][i, k].permute(1, 2, 0)) ** 2).mean())
    return torch.stack(losses).mean() if losses else pred_pts.new_zeros(())
