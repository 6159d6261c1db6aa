"""Ground-truth camera scenes rendered by Blender, and a network stand-in that returns their exact pointmaps.

:func:`render_truth_scenes` runs tests/engine/blender_truth_scenes.py under the bpy venv's Python
(``.venv-blender-$MVDUST3R_BLENDER_SERIES``, 5.0 by default; a missing venv is an error, never a
skip). The pointmaps follow the network's training convention (the official Habitat-Sim generator's
``compute_pointmap``): the depth seen through grid pixel (i, j)'s CENTRE, placed on the ray through
the INTEGER grid coordinate (j, i) — photo point ``(x0 + j·sx, y0 + i·sy)``.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from mvdust3r_blender.engine.config import ModelConfig
from mvdust3r_blender.engine.prediction import Prediction

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("blender_truth_scenes.py")


@dataclass
class TruthScene:
    """One rendered scene, arrays in photo order."""

    photos: list[Path]
    photo_size: np.ndarray   # float64 [N,2] (W, H) as displayed
    focal: np.ndarray        # float64 [N] photo pixels; principal point at the photo centre
    cam2world: np.ndarray    # float64 [N,4,4] OpenCV, Blender's world
    crop_box: np.ndarray     # float64 [N,4] the network grid's region of the photo
    depth: np.ndarray        # float64 [N,g,g] planar depth through each grid pixel's centre
    camera: list[str]        # which physical camera took each photo

    def points_in_camera(self) -> np.ndarray:
        """float64 [N,g,g,3]: each view's pointmap in its own camera frame, network convention (module doc)."""
        n, g = self.depth.shape[:2]
        index = np.arange(g, dtype=np.float64)
        sx = (self.crop_box[:, 2] - self.crop_box[:, 0]) / g
        sy = (self.crop_box[:, 3] - self.crop_box[:, 1]) / g
        x = (self.crop_box[:, 0, None] + index * sx[:, None] - self.photo_size[:, 0, None] / 2) / self.focal[:, None]
        y = (self.crop_box[:, 1, None] + index * sy[:, None] - self.photo_size[:, 1, None] / 2) / self.focal[:, None]
        rays = np.stack([np.broadcast_to(x[:, None, :], (n, g, g)), np.broadcast_to(y[:, :, None], (n, g, g)),
                         np.ones((n, g, g))], -1)
        return rays * self.depth[..., None]

    def points_in_world(self) -> np.ndarray:
        """float64 [N,g,g,3] in Blender's world frame."""
        cam = self.points_in_camera()
        return np.einsum("nij,nhwj->nhwi", self.cam2world[:, :3, :3], cam) + self.cam2world[:, None, None, :3, 3]


ALIGNMENT_TRUTH: dict[str, tuple[float, Optional[tuple[float, float]]]] = {
    "scan": (0.0, None), "ring": (0.75, (0.4, -0.3)), "walkaround": (0.8, (1.5, 0.5)), "strip": (0.0, None)}
"""The level alignment's scenes: the height of the plane that supports what was photographed and, for
a ring, the point the cameras look at (Blender's world; blender_truth_scenes.py)."""


def alignment_errors(truth_to_blender: np.ndarray, floor_z: float, centre_xy: Optional[tuple[float, float]],
                     size: float) -> tuple[float, float, float]:
    """(up error in degrees, floor height / size, horizontal distance of the centre from the origin / size)
    of an alignment, given as the map truth world → Blender world."""
    up = truth_to_blender[:3, :3] @ [0.0, 0.0, 1.0]
    angle = math.degrees(math.acos(min(1.0, up[2] / np.linalg.norm(up))))
    probe = (0.0, 0.0) if centre_xy is None else centre_xy
    floor = truth_to_blender @ [probe[0], probe[1], floor_z, 1.0]
    return angle, abs(floor[2]) / size, float(np.hypot(floor[0], floor[1])) / size


def blender_python() -> Path:
    series = os.environ.get("MVDUST3R_BLENDER_SERIES", "5.0")
    python = ROOT / f".venv-blender-{series}" / "bin" / "python"
    if not python.is_file():
        raise RuntimeError(f"the truth scenes are rendered with the bpy wheel, but {python} does not exist: "
                           "run `python build.py setup`")
    return python


def render_truth_scenes(out: Path, grid: int, names: tuple[str, ...] = ("room", "turntable")) -> dict[str, TruthScene]:
    """Render the scenes `names` into `out` (photos + truth) and read them back."""
    done = subprocess.run([str(blender_python()), str(SCRIPT), str(out), str(grid), *names], capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"rendering the truth scenes failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")
    scenes = {}
    for name in names:
        folder = out / name
        truth = np.load(folder / "truth.npz")
        scenes[name] = TruthScene(photos=[folder / p for p in json.loads((folder / "photos.json").read_text())],
                                  photo_size=truth["photo_size"], focal=truth["focal"],
                                  cam2world=truth["cam2world"], crop_box=truth["crop_box"], depth=truth["depth"],
                                  camera=[str(c) for c in truth["camera"]])
    return scenes


class TruthNetwork:
    """Network stand-in: recognises each input crop among the photos' crops (exactly: they are the same
    pixels) and returns that view's exact pointmap in the frame of the input at position 0 — what a
    perfect MV-DUSt3R would predict, so every camera error is the recovery's."""

    def __init__(self, scene: TruthScene, crops: np.ndarray, config: ModelConfig,
                 conf: Optional[np.ndarray] = None) -> None:
        self.config = config
        self.crops = crops.astype(np.int16)                   # uint8 [N,g,g,3] in photo order
        self.points = scene.points_in_world()
        self.cam2world = scene.cam2world
        self.conf = conf if conf is not None else np.full(scene.depth.shape, 5.0)

    def which(self, images: torch.Tensor) -> list[int]:
        pixels = np.rint((images.permute(0, 2, 3, 1).numpy() * 0.5 + 0.5) * 255).astype(np.int16)
        found = [int(np.abs(self.crops - p[None]).reshape(len(self.crops), -1).max(1).argmin()) for p in pixels]
        assert all(np.array_equal(self.crops[k], p) for k, p in zip(found, pixels)), "an input is no photo's crop"
        return found

    def predict(self, images: torch.Tensor, gaussians: bool = True, precision: str = "fp32",
                channels_last: bool = False, progress: Optional[Callable[[float], None]] = None) -> Prediction:
        """The exact pointmaps (any precision: a stand-in has no arithmetic to lower)."""
        order = self.which(images)
        to_first = np.linalg.inv(self.cam2world[order[0]])
        pts = self.points[order] @ to_first[:3, :3].T + to_first[:3, 3]
        return Prediction(pts3d=torch.from_numpy(pts.astype(np.float32)),
                          conf=torch.from_numpy(self.conf[order].astype(np.float32)))
