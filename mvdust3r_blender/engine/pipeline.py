"""Photos in, a :class:`~..core.bundle.Bundle` out: the whole reconstruction.

Stages (each timed in ``meta["timings"]`` and reported through ``progress(stage, fraction)``):

``load``      read and preprocess the photos (:mod:`.images`), reorder them so the reference views
              come first (:mod:`.views`);
``network``   one forward pass of MV-DUSt3R / MV-DUSt3R+ (path 0: points in network view 0's frame)
              in the options' ``precision`` as :mod:`.precision` plans it for the model's device
              (recorded in ``meta["precision"]``); its input is built on that device from the
              photos' bytes, and only what the later stages use comes back to the CPU;
``cameras``   confidence mask, each camera's focal and every view's pose (:func:`.cameras.recover_cameras`),
              intrinsics in original-photo pixels;
``gaussians`` world-frame Gaussians (:mod:`.gaussians`) — only when asked for.

Results are always in the user's photo order; the world frame is the camera frame of the first
reference view (network position 0, ``meta["reference_view"]`` in user indices). ``cancel`` is a
``threading.Event`` checked between stages and inside the per-photo and per-view loops.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

import numpy as np
import torch

from ..core.bundle import Bundle
from ..core.options import ReconstructOptions
from .cameras import RecoveredCameras, ViewGeometry, recover_cameras
from .config import ModelConfig
from .errors import Cancelled, CheckpointError, InputError
from .focal import known_focal
from .gaussians import SCALE_MAX, SCALE_MIN, gaussian_fields
from .images import PendingPhotos, PreparedPhoto, load_photos, network_input
from .model import Precision
from .precision import PrecisionPlan, numerics, plan_for
from .prediction import Prediction
from .views import check_reference_view, inverse_order, reference_order

Progress = Callable[[str, float], None]


class Network(Protocol):
    """What :func:`reconstruct` needs of a network: its settings and a path-0 prediction of one
    scene (:class:`~.model.MultiViewModel` is one)."""

    config: ModelConfig

    def predict(self, images: torch.Tensor, *, gaussians: bool = ..., precision: Precision = ...,
                channels_last: bool = ..., progress: Optional[Callable[[float], None]] = ...) -> Prediction: ...


def _first_weight(model: Network) -> Optional[torch.Tensor]:
    return next(iter(model.parameters()), None) if hasattr(model, "parameters") else None


def _model_device(model: Network) -> torch.device:
    first = _first_weight(model)
    return first.device if first is not None else torch.device(getattr(model, "device", "cpu"))


def _check_count(n: int, config: ModelConfig) -> None:
    if n == 0:
        raise InputError("no photos were given", "give at least 2 photos of the same scene (4–100 work best)")
    if n < config.min_views:
        name = "MV-DUSt3R+" if config.variant == "MVDp" else "MV-DUSt3R"
        why = (f"it uses {config.n_ref} reference views" if config.variant == "MVDp"
               else "it needs a reference view and at least one other")
        raise InputError(f"{n} photo{'s' if n != 1 else ''} given, but {name} needs at least {config.min_views} ({why})",
                         f"add photos of the same scene (at least {config.min_views})")


def view_geometry(photos: Sequence[PreparedPhoto], focal: str) -> ViewGeometry:
    """The cameras' geometry of `photos` (network order): crops, sizes, which camera took each (one per
    :attr:`~.images.PreparedPhoto.camera_key`) and the focal known for each camera under the ``focal`` option."""
    keys = [p.camera_key for p in photos]
    camera_of = {key: c for c, key in enumerate(dict.fromkeys(keys))}
    first = {c: photos[keys.index(key)] for key, c in camera_of.items()}
    known = [known_focal(focal, first[c].camera, first[c].photo_size) for c in range(len(camera_of))]
    return ViewGeometry(crop_box=np.array([p.crop_box for p in photos], dtype=np.float64),
                        photo_size=np.array([p.photo_size for p in photos], dtype=np.float64),
                        camera=np.array([camera_of[k] for k in keys], dtype=np.int64),
                        known_focal=np.array([f for f, _ in known]), known_source=[s for _, s in known])


class _Stages:
    """The pipeline's stages as they run: each is preceded by a look at `cancel`, reported from 0 to
    1 through `report` and timed into :attr:`timings`."""

    def __init__(self, report: Progress, cancel: Optional[threading.Event]) -> None:
        self.report, self.cancel = report, cancel
        self.timings: dict[str, float] = {}

    def stop_if_cancelled(self, before: str) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(f"reconstruction cancelled before {before}")

    @contextmanager
    def stage(self, name: str, before: Optional[str] = None) -> Iterator[Callable[[float], None]]:
        """Run the stage `name` (cancelled first if asked to stop `before` it); yields its progress callback."""
        if before is not None:
            self.stop_if_cancelled(before)
        started = time.perf_counter()
        last = [0.0]

        def progress(fraction: float) -> None:
            last[0] = fraction
            self.report(name, fraction)

        progress(0.0)
        yield progress
        self.timings[name] = time.perf_counter() - started
        if last[0] < 1.0:
            self.report(name, 1.0)


def reconstruct(photos: Sequence[str | os.PathLike[str]], model: Network,
                options: ReconstructOptions = ReconstructOptions(),
                progress: Optional[Progress] = None,
                cancel: Optional[threading.Event] = None,
                pending: Optional[PendingPhotos] = None,
                plan: Optional[PrecisionPlan] = None) -> Bundle:
    """Reconstruct `photos` with `model` (``config`` + ``predict(images, gaussians=)``); see the module doc.
    `pending`: these photos' decoding, started earlier (:func:`~.images.start_loading`). `plan`: how
    the options' precision runs on the model's device, when the caller planned it already (the worker
    plans once per request); else planned here."""
    stages = _Stages(progress if progress is not None else (lambda stage, fraction: None), cancel)
    config = model.config
    paths = [str(Path(p).expanduser().absolute()) for p in photos]
    if 0 < len(paths) < config.min_views:
        load_photos(paths, config.img_size, cancel=cancel)  # too few, but first name any that is broken
    _check_count(len(paths), config)
    check_reference_view(len(paths), options.reference_view)

    with stages.stage("load") as loading:
        loaded = load_photos(paths, config.img_size, cancel=cancel, progress=loading, pending=pending)
        order = reference_order(len(loaded), options.reference_view)
        back = inverse_order(order)
        images = np.stack([p.image for p in loaded])                          # user order

    device = _model_device(model)
    plan = plan if plan is not None else plan_for(options.precision, device)
    with stages.stage("network", before="the network") as network:
        def network_progress(fraction: float) -> None:
            """Called between two network blocks: shows progress, and is where a cancel takes effect."""
            stages.stop_if_cancelled("the end of the network pass")
            network(fraction)

        with torch.inference_mode(), numerics(plan):
            prediction = model.predict(network_input(images[order], device), gaussians=options.gaussians,
                                       precision=plan.compute, channels_last=plan.channels_last,
                                       progress=network_progress)
        pts3d = prediction.pts3d.float().cpu()                                 # network order
        conf = prediction.conf.float().cpu()

    with stages.stage("cameras", before="camera recovery") as solving:
        geometry = view_geometry([loaded[u] for u in order], options.focal)
        with torch.inference_mode():
            cams = recover_cameras(prediction.pts3d.float(), prediction.conf.float(), geometry,  # on the model's device
                                   options.pose_drop_percent, cancel, progress=solving)

    gaussian_arrays: dict[str, Optional[np.ndarray]] = {}
    meta_gaussians: dict[str, Any] = {}
    if options.gaussians:
        with stages.stage("gaussians", before="the Gaussians"):
            gaussian_arrays, meta_gaussians = _gaussians(prediction, pts3d, cams.mask, back)

    meta = {
        **_meta(model, options, loaded, order, geometry, cams),
        "timings": {k: round(v, 4) for k, v in stages.timings.items()},
        "device": str(device),
        "precision": plan.meta(getattr(_first_weight(model), "dtype", None)),
        "torch": torch.__version__,
        **meta_gaussians,
    }
    return Bundle(
        images=images,
        pts3d=pts3d[back].numpy(),
        conf=conf[back].numpy(),
        intrinsics=cams.intrinsics[back].astype(np.float32),
        cam2world=cams.cam2world[back].astype(np.float32),
        photo_size=np.array([p.photo_size for p in loaded], dtype=np.int32),
        crop_box=np.array([p.crop_box for p in loaded], dtype=np.float64).astype(np.float32),
        photo_paths=[p.path for p in loaded],
        meta=meta,
        **gaussian_arrays,
    )


def _gaussians(prediction: Prediction, pts3d: torch.Tensor, mask: torch.Tensor,
               back: Sequence[int]) -> tuple[dict[str, Optional[np.ndarray]], dict[str, Any]]:
    """The bundle's Gaussian arrays (user order) and their meta, from the network's Gaussian heads."""
    if prediction.scale is None or prediction.rotation is None or prediction.opacity is None:
        raise CheckpointError("this checkpoint's network returned no Gaussian parameters",
                              "reconstruct without Gaussians, or use an MV-DUSt3R(+) checkpoint with its GS heads")
    fields = gaussian_fields(pts3d, mask, prediction.scale.cpu(), prediction.rotation.cpu(),
                             prediction.opacity.cpu(), None if prediction.rgb is None else prediction.rgb.cpu())
    arrays = {
        "gaussian_rotation": fields.rotation[back].numpy(), "gaussian_scale": fields.scale[back].numpy(),
        "gaussian_opacity": fields.opacity[back].numpy(),
        "gaussian_rgb": None if fields.rgb is None else fields.rgb[back].numpy(),
    }
    meta = {"gaussian_norm_factor": fields.norm_factor,
            "gaussian_scale_clamp": [SCALE_MIN, SCALE_MAX], "gaussian_colour_source": "images"}
    return arrays, meta


def _meta(model: Network, options: ReconstructOptions, loaded: Sequence[PreparedPhoto], order: Sequence[int],
          geometry: ViewGeometry, cams: RecoveredCameras) -> dict[str, Any]:
    """What the bundle records of the model, the options and the cameras (views in user order)."""
    config = model.config
    back = inverse_order(list(order))
    source = getattr(model, "checkpoint_path", None)
    return {
        "model": {"name": Path(source).name if source else "", "variant": config.variant,
                  "n_ref": int(config.n_ref), "img_size": [int(s) for s in config.img_size]},
        "checkpoint": str(source) if source else "",
        "reference_order": [int(i) for i in order],
        "reference_view": int(order[0]),
        "focal_px": [float(cams.focal[back[u]]) for u in range(len(loaded))],
        "focal_source": [cams.focal_source[back[u]] for u in range(len(loaded))],
        "camera_of_view": [int(geometry.camera[back[u]]) for u in range(len(loaded))],
        "focal_option": options.focal,
        "pose_drop_percent": float(options.pose_drop_percent),
        "pose_failed_views": sorted(int(order[v]) for v in cams.failed),
        "pose_inliers": [int(cams.inliers[back[u]]) for u in range(len(loaded))],
        "camera_warnings": [{"views": sorted(int(order[v]) for v in w.views), "message": w.message}
                            for w in cams.warnings],
        "approximate_photos": [p.path for p in loaded if p.approximate],
    }
