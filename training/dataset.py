"""Synthetic multi-view training samples and the view-count recipes of the paper.

A sample is one procedural room seen by ``n_input + n_render`` cameras, ray-cast on the fly
(deterministic from ``(seed, index, view counts)``; no files). Images are normalised as the network
expects, ``(x/255 − 0.5)/0.5``; ground-truth points are in the camera frame of view 0 (OpenCV), as
the network predicts them. The last ``num_render_views`` views (taken from random places along
the camera walk) are never fed to the network (the official recipes hold 2 out for the Gaussian
rendering loss).

Recipes (official ``scripts/train_*.sh``: ``num_views=10, num_render_views=2`` for MV-DUSt3R and
MV-DUSt3R+ stage 1; the paper's stage 2 mixes view counts; view order shuffled per sample,
``random_order=True``):

=================  ======================  ============
recipe             input views per batch   render views
=================  ======================  ============
``mvd``            8                       2
``mvdp-stage1``    8                       2
``mvdp-stage2``    uniform in 4..12        2
=================  ======================  ============

All samples of one batch share their view count (tensors stack), the count is drawn per batch.

Where the rays are cast is the dataset's ``device``: the CPU in loader processes (and tests), or
the training GPU itself inside the training process (``training.train --data-device cuda``), where
a sample costs milliseconds instead of a core's tenth of a second. The scene, the cameras and every
random draw are made on the CPU from the seed either way, so both devices render the same sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from .cameras import sample_intrinsics, sample_trajectory
from .render import render_batch
from .scenes import random_scene
from .world import ROOMS_V1, World


@dataclass(frozen=True)
class ViewRecipe:
    """Input-view counts (one drawn uniformly per batch) and held-out render views."""

    name: str
    input_views: tuple[int, ...]
    render_views: int = 2


RECIPES = {
    "mvd": ViewRecipe("mvd", (8,)),
    "mvdp-stage1": ViewRecipe("mvdp-stage1", (8,)),
    "mvdp-stage2": ViewRecipe("mvdp-stage2", tuple(range(4, 13))),
}


@dataclass(frozen=True)
class SampleKey:
    """Which sample to make: scene ``index`` seen by ``n_input`` network views + ``n_render`` more."""

    index: int
    n_input: int
    n_render: int = 0


def _mix(*values: int) -> int:
    """A 62-bit seed from integers (stable across runs and machines, unlike ``hash``)."""
    h = 1469598103934665603
    for v in values:
        h = ((h ^ (int(v) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 62)
    return h


class SyntheticScenes(Dataset):
    """``dataset[SampleKey(index, n_input, n_render)]`` → dict (V = n_input + n_render views):

    - ``img`` float32 [V,3,H,W] in [-1, 1]
    - ``pts3d`` float32 [V,H,W,3]: each pixel's surface point in view 0's camera frame
    - ``valid`` bool [V,H,W]: pixels that see a surface (sky is invalid)
    - ``depth`` float32 [V,H,W]: z in the pixel's own camera
    - ``intrinsics`` float32 [V,3,3] (pixels; pixel (i, j) at (j, i), :mod:`training.cameras`)
    - ``cam2world`` float32 [V,4,4]: camera → view-0 camera frame (view 0 is the identity)
    - ``num_render_views`` int64 scalar, ``scene_seed`` int64 scalar

    Images are anti-aliased with ``supersample``² rays a pixel (1: one ray, ≈ 4× faster) and
    each view's colours are jittered (:func:`jitter_factors`, ``colour_jitter`` = 0 for none).
    Scenes and captures come from ``world`` (:mod:`training.world`); every tensor of a sample is
    on ``device``.
    An int index means ``SampleKey(index, default_views, 0)``. ``len`` is nominal (the stream of
    scenes is unbounded; the batch sampler decides which indices are used).
    """

    def __init__(self, resolution: tuple[int, int] = (224, 224), seed: int = 0,
                 length: int = 1_000_000, default_views: int = 8, supersample: int = 2,
                 colour_jitter: float = 0.3, world: World = ROOMS_V1, device: torch.device | str = "cpu") -> None:
        self.height, self.width = resolution
        self.seed = seed
        self.length = length
        self.default_views = default_views
        self.supersample = supersample
        self.colour_jitter = colour_jitter
        self.world = world
        self.device = torch.device(device)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: SampleKey | int) -> dict[str, Tensor]:
        if isinstance(key, int):
            key = SampleKey(key, self.default_views, 0)
        return {name: value[0] for name, value in self.batch([key]).items()}

    def batch(self, keys: Sequence[SampleKey]) -> dict[str, Tensor]:
        """The samples of ``keys`` (one view count) stacked as a DataLoader would, [B,...] — ray-cast
        in ONE pass (:func:`training.render.render_batch`): on a GPU a batch then costs about the
        kernel launches of one sample. Each sample equals ``dataset[key]`` bit for bit."""
        scenes, intrinsics, cam2world, factors = [], [], [], []
        for key in keys:
            scene_seed = _mix(self.seed, key.index)
            scene = random_scene(scene_seed, self.world)
            gen = torch.Generator().manual_seed(_mix(scene_seed, key.n_input, key.n_render))
            total = key.n_input + key.n_render
            k = sample_intrinsics(gen, total, self.height, self.width, self.world)
            c2w = sample_trajectory(gen, scene, total, self.world)
            # the walk shuffled (official random_order): input views in random order, render views at
            # random places between them, so the rendering loss scores views the inputs surround
            order = torch.randperm(total, generator=gen)
            scenes.append(scene.to(self.device))
            intrinsics.append(k[order])
            cam2world.append(c2w[order])
            factors.append(jitter_factors(gen, total, self.colour_jitter))
        K = torch.stack(intrinsics).to(self.device)
        poses = torch.stack(cam2world).to(self.device)
        views = render_batch(scenes, K, poses, self.height, self.width, self.supersample)
        to_view0 = torch.linalg.inv(poses[:, 0])                                           # [B,4,4]
        pts = views.world_points @ to_view0[:, None, None, :3, :3].transpose(-1, -2) \
            + to_view0[:, None, None, None, :3, 3]
        pts = torch.where(views.valid[..., None], pts, torch.zeros_like(pts))
        rgb = views.rgb if self.colour_jitter <= 0 else apply_jitter(views.rgb, torch.stack(factors).to(self.device))
        img = rgb.permute(0, 1, 4, 2, 3).float() / 255.0
        return {
            "img": (img - 0.5) / 0.5,
            "pts3d": pts,
            "valid": views.valid,
            "depth": views.depth,
            "intrinsics": K,
            "cam2world": to_view0[:, None] @ poses,
            "num_render_views": torch.tensor([key.n_render for key in keys], device=self.device),
            "scene_seed": torch.tensor([_mix(self.seed, key.index) for key in keys], device=self.device),
        }


def jitter_factors(gen: torch.Generator, views: int, strength: float) -> Tensor:
    """[3,V] per-view brightness, contrast and saturation factors in [1 − strength, 1 + strength]
    (the official datasets' ColorJitter, without hue); ones for ``strength`` 0 (no draw then).

    Photos of one scene differ in exposure and white balance; the network must match views anyway.
    """
    if strength <= 0:
        return torch.ones(3, views)
    return 1 + strength * (2 * torch.rand(3, views, generator=gen) - 1)


def apply_jitter(rgb: Tensor, factors: Tensor) -> Tensor:
    """uint8 [..., V,H,W,3] with the :func:`jitter_factors` [..., 3, V] applied → uint8 [..., V,H,W,3]."""
    f = factors[..., None, None, None]                                          # [...,3,V,1,1,1]
    luma = torch.tensor([0.299, 0.587, 0.114], device=rgb.device)
    x = rgb.float() / 255 * f.select(-5, 0)
    gray = (x * luma).sum(-1, keepdim=True)
    mean = gray.mean(dim=(-3, -2, -1), keepdim=True)
    x = (x - mean) * f.select(-5, 1) + mean
    gray = (x * luma).sum(-1, keepdim=True)
    x = gray + (x - gray) * f.select(-5, 2)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


class RecipeBatchSampler(Sampler[list[SampleKey]]):
    """Batches of :class:`SampleKey` for steps ``start_step .. num_steps-1``.

    Step s uses scenes ``s·batch_size … s·batch_size + batch_size − 1`` (never repeated) and a
    view count drawn from the recipe with a generator seeded by (seed, s): resuming at step s
    replays exactly the batches an uninterrupted run would have seen. With ``fixed`` every step
    is step 0 (the same scenes and views: overfitting checks). With ``render_views=False`` the
    recipe's render-only views are not made (a run without the rendering loss has no use for them).
    """

    def __init__(self, recipe: ViewRecipe, batch_size: int, num_steps: int, seed: int = 0,
                 start_step: int = 0, fixed: bool = False, render_views: bool = True) -> None:
        self.recipe = recipe
        self.n_render = recipe.render_views if render_views else 0
        self.batch_size = batch_size
        self.num_steps = num_steps
        self.seed = seed
        self.start_step = start_step
        self.fixed = fixed

    def __len__(self) -> int:
        return max(0, self.num_steps - self.start_step)

    def keys(self, step: int) -> list[SampleKey]:
        gen = torch.Generator().manual_seed(_mix(self.seed, 0 if self.fixed else step))
        choices = self.recipe.input_views
        n_input = choices[int(torch.randint(len(choices), (1,), generator=gen))]
        first = 0 if self.fixed else step * self.batch_size
        return [SampleKey(first + k, n_input, self.n_render) for k in range(self.batch_size)]

    def __iter__(self) -> Iterator[list[SampleKey]]:
        for step in range(self.start_step, self.num_steps):
            yield self.keys(step)


def network_views(batch: dict[str, Tensor]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The official ``(view1, view2s)`` of a collated batch, render views left out."""
    img = batch["img"]                                                           # [B,V,3,H,W]
    n = img.shape[1] - int(batch["num_render_views"].flatten()[0])
    b, _, _, h, w = img.shape
    shape = torch.tensor([h, w]).expand(b, 2)
    views = [{"img": img[:, v], "true_shape": shape} for v in range(n)]
    return views[0], views[1:]
