"""The import as a whole: a new collection holding the points, cameras and Gaussians of a bundle.

Existing data is never modified. Every datablock the import creates is found by comparing
``bpy.data`` before and after, so if any part fails midway all of them are removed again — the
scene is left exactly as it was — and the error is raised unchanged for the caller to show.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import bpy
import numpy as np

from ..core.alignment import alignment_of
from ..core.bundle import Bundle, read_bundle, srgb8_to_linear
from ..core.confidence import empty_cut_warning
from ..core.conventions import (camera_matrix_world, grid_point_spacing, point_depths, transform_points,
                           transform_rotations)
from ..core.photos import display_name
from ..core.splats import pixel_footprints
from ..import_options import ImportOptions
from .cameras import create_cameras
from .gaussians import create_gaussians
from .render import prepare_render
from .placement import record_alignment
from .points import create_points
from .render import blocker_lines
from .result import Reconstruction, record, set_renders

# The bpy.data collections an import can add to (and so must roll back).
_DATA = ("objects", "meshes", "cameras", "materials", "node_groups", "images", "collections")


@dataclass
class ImportResult:
    """What one import created."""

    collection: bpy.types.Collection
    points: Optional[bpy.types.Object] = None
    cameras: list[bpy.types.Object] = field(default_factory=list)
    gaussians: Optional[bpy.types.Object] = None
    bundle_path: Optional[str] = None
    report: list[str] = field(default_factory=list)    # human-readable lines: what was made, what was missing
    warnings: list[str] = field(default_factory=list)  # the report lines about something missing or skipped


@contextmanager
def rollback_on_error() -> Iterator[None]:
    """Remove every datablock created inside the block if the block raises (then re-raise)."""
    before = {name: {id_.as_pointer() for id_ in getattr(bpy.data, name)} for name in _DATA}
    try:
        yield
    except BaseException:
        for name in _DATA:  # objects first, so no user of a mesh/material/image is left
            data: Any = getattr(bpy.data, name)
            for id_ in [i for i in data if i.as_pointer() not in before[name]]:
                data.remove(id_)
        raise


def collection_name(bundle: Bundle, bundle_path: Optional[str]) -> str:
    """The photos' folder name, else the bundle file's stem, else "Reconstruction"."""
    folders = {display_name(Path(p).parent.name) for p in bundle.photo_paths}
    if len(folders) == 1 and (folder := folders.pop()):
        return folder
    if bundle_path:
        return display_name(Path(bundle_path).stem)
    return "Reconstruction"


def bundle_warning_lines(bundle: Bundle) -> list[str]:
    """The worker's warnings, checked by the bundle's reader (``core.bundle.check_meta``): the photos'
    (``meta["photo_warnings"]``: tiny, strips, blank, duplicates, absurd EXIF) and the camera
    recovery's (``meta["camera_warnings"]``: degenerate input and its fallback), naming the photos."""
    lines = [f"photo: {warning.get('message', '')}" for warning in bundle.meta.get("photo_warnings", [])]
    for warning in bundle.meta.get("camera_warnings", []):
        names = ", ".join(display_name(Path(bundle.photo_paths[v]).name) for v in warning.get("views", []))
        lines.append(f"camera of {names or 'the reconstruction'}: {warning.get('message', '')}")
    return lines


def import_bundle(source: Union[str, "os.PathLike[str]", Bundle], options: ImportOptions,
                  scene: bpy.types.Scene) -> ImportResult:
    """The one way from a bundle to the scene (File › Import, the panel's run, the Python API):
    read and check `source` (a ``.npz`` path or a :class:`Bundle`), then import it as
    :func:`import_reconstruction` does. A bad file raises ``BundleError`` naming it, before
    anything is created."""
    if isinstance(source, Bundle):
        source.validate("bundle")
        return import_reconstruction(source, options, scene)
    path = os.fspath(source)
    return import_reconstruction(read_bundle(path), options, scene, bundle_path=path)


def import_reconstruction(bundle: Bundle, options: ImportOptions, scene: bpy.types.Scene,
                          bundle_path: Optional[str] = None) -> ImportResult:
    """Create a new collection in `scene` with what `options` asks for from `bundle`."""
    options.check()
    name = options.name or collection_name(bundle, bundle_path)
    n, h, w = bundle.num_views, *bundle.grid_size
    with rollback_on_error():
        collection = bpy.data.collections.new(name)
        scene.collection.children.link(collection)
        result = ImportResult(collection=collection, bundle_path=bundle_path)
        alignment = alignment_of(bundle, options.align)
        world, scale = alignment.matrix, alignment.scale
        record_alignment(collection, alignment, int(bundle.meta.get("reference_view", 0)))
        result.report.append(alignment.summary())
        if alignment.fallback_reason:
            result.warnings.append(alignment.summary())
        positions = transform_points(bundle.pts3d.reshape(-1, 3), world)
        colors = srgb8_to_linear(bundle.images.reshape(-1, 3))
        if options.points:
            conf = bundle.conf.reshape(-1)
            threshold = options.cut.threshold(conf)
            radius = options.point_radius
            if radius is None:  # half the grid spacing: neighbouring points just touch
                spacing = grid_point_spacing(bundle.pts3d, bundle.intrinsics, bundle.cam2world, bundle.crop_box)
                radius = 0.5 * spacing * options.point_size * scale
            view = np.repeat(np.arange(n, dtype=np.int32), h * w)
            kept = options.cut.keep(conf)
            result.points = create_points(f"{name} Points", positions, colors, conf, view, threshold, radius, collection,
                                          cut_at_tie=(conf >= threshold) & ~kept)
            shown = int(kept.sum())
            hidden_percent = min(100.0 * (conf.size - shown) / max(conf.size, 1), 99.0)
            record(collection, bundle_path, hidden_percent if options.min_confidence is not None
                   else options.confidence_drop_percent, shown, threshold, radius / options.point_size,
                   options.point_size)
            result.report.append(f"{shown} of {conf.size} points shown: the least confident {hidden_percent:.1f} % "
                                 f"hidden (confidence cut at {threshold:.4g}), radius {radius:.3g}")
            empty = empty_cut_warning(options.cut, conf)
            if empty is not None:
                result.report.append(f"no point is shown: {empty}")
                result.warnings.append(result.report[-1])
        else:
            record(collection, bundle_path, options.confidence_drop_percent, 0, 0.0, 0.0, options.point_size)
        if options.cameras:
            scene_scale = scale * float(np.median(np.abs(point_depths(bundle.pts3d, bundle.cam2world))))
            result.cameras, lines = create_cameras(
                bundle.intrinsics, bundle.photo_size, camera_matrix_world(bundle.cam2world, world),
                bundle.photo_paths, collection, scene_scale=scene_scale,
                background_images=options.background_images, image_planes=options.image_planes,
                orientations=bundle.meta.get("photo_orientation"))
            result.report.append(f"{len(result.cameras)} cameras")
            result.report.extend(lines)
            result.warnings.extend(lines)
        warnings = bundle_warning_lines(bundle)  # said whatever is imported
        result.report.extend(warnings)
        result.warnings.extend(warnings)
        if options.gaussians:  # coloured from the photos, like the official demo (the head's rgb is untrained)
            if bundle.has_gaussians:
                assert bundle.gaussian_rotation is not None and bundle.gaussian_scale is not None
                assert bundle.gaussian_opacity is not None
                result.gaussians = create_gaussians(
                    f"{name} Gaussians", positions,
                    transform_rotations(bundle.gaussian_rotation.reshape(-1, 4), world),
                    scale * bundle.gaussian_scale.reshape(-1, 3), bundle.gaussian_opacity.reshape(-1), colors,
                    scale * pixel_footprints(bundle.pts3d, bundle.cam2world, bundle.intrinsics),
                    float(bundle.intrinsics[0, 0, 0]), options.opacity_threshold, options.scale_multiplier,
                    collection, scene)
                result.report.append(f"{n * h * w} Gaussians")
                if result.points is not None:
                    result.report.append("renders show the splats; the points stay in the viewport "
                                         "(Result panel › Renders)")
            else:
                line = "the reconstruction has no Gaussians (the model has no Gaussian head)"
                result.report.append(line)
                result.warnings.append(line)
        reconstruction = Reconstruction.of(collection)
        assert reconstruction is not None
        set_renders(reconstruction, "SPLATS")
        blocked = blocker_lines(scene, reconstruction)
        result.report.extend(blocked)
        result.warnings.extend(blocked)
        if result.gaussians is not None:
            result.report.extend(prepare_render(scene))  # last: nothing after it can fail
    return result

