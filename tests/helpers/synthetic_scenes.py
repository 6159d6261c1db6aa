"""Ground truth made in the tests: pointmaps seen by known cameras, and a network stand-in that returns them.

Cameras follow the network's camera model: grid pixel (row i, column j) looks along K⁻¹(j, i, 1)
(integer-index convention) with K = [[f,0,w/2],[0,f,h/2],[0,0,1]] — or each view's own grid K. Each view sees a
smooth random depth surface; points are expressed in camera 0's frame (the network's world frame).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from mvdust3r_blender.engine.config import ModelConfig
from mvdust3r_blender.engine.prediction import Prediction
from tests.helpers.cameras import look_at
from tests.helpers.photos import flat_photos


@dataclass
class Scene:
    pts3d: np.ndarray     # float32 [N,h,w,3] in camera 0's frame
    conf: np.ndarray      # float32 [N,h,w] >= 1
    c2w: np.ndarray       # float64 [N,4,4], c2w[0] = I
    focal: float          # grid pixels
    clean: np.ndarray     # float32 [N,h,w,3] the noise-free points
    inlier: np.ndarray    # bool [N,h,w] not an injected outlier


def make_scene(n: int, h: int, w: int, focal: float = 40.0, seed: int = 0, noise: float = 0.0,
               outliers: float = 0.0, grid_K: Optional[np.ndarray] = None) -> Scene:
    """`n` cameras on an arc around a target 3 units ahead, each seeing a smooth depth surface.

    `grid_K` [n,3,3], when given, is each view's own camera on the grid (`focal` is then unused).

    `noise` is the std-dev of Gaussian noise relative to depth; `outliers` the fraction of pixels
    moved to random places (half of them with high confidence, so RANSAC has to reject them).
    """
    rng = np.random.default_rng(seed)
    target = np.array([0.0, 0.0, 3.0])
    c2w_world = []
    for k in range(n):
        angle = np.radians(-25 + 50 * k / max(n - 1, 1)) + rng.normal(0, 0.03)
        eye = target + 3.0 * np.array([np.sin(angle), rng.normal(0, 0.15), -np.cos(angle)])
        c2w_world.append(look_at(eye, target + rng.normal(0, 0.1, 3)))
    c2w = np.linalg.inv(c2w_world[0]) @ np.stack(c2w_world)
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    if grid_K is None:
        grid_K = np.tile(np.array([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1.0]]), (n, 1, 1))
    clean = np.zeros((n, h, w, 3))
    for v in range(n):
        K = grid_K[v]
        rays = np.stack([(j - K[0, 2]) / K[0, 0], (i - K[1, 2]) / K[1, 1], np.ones_like(i, dtype=float)], axis=-1)
        a, b, c = rng.uniform(0.5, 2.0, 3)
        depth = 3.0 + 0.4 * np.sin(a * j / w * 3 + c) * np.cos(b * i / h * 3) + 0.2 * rng.normal()
        cam = rays * depth[..., None]
        clean[v] = cam @ c2w[v, :3, :3].T + c2w[v, :3, 3]
    pts = clean + rng.normal(0, noise, clean.shape) * np.linalg.norm(clean - c2w[:, None, None, :3, 3], axis=-1,
                                                                       keepdims=True)
    conf = rng.uniform(1.5, 10.0, (n, h, w))
    inlier = rng.random((n, h, w)) >= outliers
    pts[~inlier] = rng.uniform(-3, 3, (int((~inlier).sum()), 3)) + target
    return Scene(pts.astype(np.float32), conf.astype(np.float32), c2w, focal, clean.astype(np.float32), inlier)


def write_index_photos(folder: Path, sizes: list[tuple[int, int]], names: Optional[list[str]] = None) -> list[Path]:
    """Photos of the given (W,H) sizes whose red channel encodes their index k as 20k+10 (flat colour)."""
    return flat_photos(folder, sizes, [(20 * k + 10, 128, 90) for k in range(len(sizes))], names or "photo_{:02d}.png")


class SceneNetwork:
    """Network stand-in with the real interface: reads each input's index from its colour and
    returns the scene's pointmap of that camera, expressed in the frame of input view 0 — what a
    perfect MV-DUSt3R would predict for photos made by :func:`write_index_photos`."""

    def __init__(self, scene: Scene, config: ModelConfig) -> None:
        self.scene = scene
        self.config = config
        self.calls: list[list[int]] = []

    def predict(self, images: torch.Tensor, gaussians: bool = True, precision: str = "fp32", channels_last: bool = False,
                progress: Optional[Callable[[float], None]] = None) -> Prediction:
        if progress is not None:
            progress(1.0)
        red = ((images[:, 0].mean(dim=(1, 2)) * 0.5 + 0.5) * 255).numpy()
        index = [int(round((r - 10) / 20)) for r in red]
        self.calls.append(index)
        s = self.scene
        to_first = np.linalg.inv(s.c2w[index[0]])
        pts = s.pts3d[index] @ to_first[:3, :3].T.astype(np.float32) + to_first[:3, 3].astype(np.float32)
        n, h, w = pts.shape[:3]
        out = Prediction(pts3d=torch.from_numpy(pts.astype(np.float32)), conf=torch.from_numpy(s.conf[index]))
        if gaussians:
            g = torch.Generator().manual_seed(7)
            out.rgb = torch.randn(n, h, w, 3, generator=g)
            out.opacity = torch.sigmoid(torch.randn(n, h, w, generator=g) * 4)
            out.scale = 0.1 * torch.randn(n, h, w, 3, generator=g)
            out.rotation = torch.nn.functional.normalize(torch.randn(n, h, w, 4, generator=g), dim=-1)
        return out
