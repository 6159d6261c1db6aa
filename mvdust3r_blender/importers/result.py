"""An imported reconstruction as the Result panel sees it, and the live edits it offers.

An import records on its collection where it came from and how its points are cut (custom
properties named ``mvdust3r_*``, saved with the .blend); :class:`Reconstruction` finds its parts
again (points, Gaussians, cameras, photo planes) by what the importers made, never by name. The
edits here change only that collection's objects:

- :func:`apply_cut` hides the least-confident share of the points, exactly that share even where
  many confidences tie at the threshold (a real scene can have a third of its points at exactly
  1.0): the threshold and the ``cut_at_tie`` marks are written together, so what is shown is what
  the exports write (:class:`~..core.confidence.ConfidenceCut`);
- point size, what shows in the viewport and what renders (``RENDERS``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import bpy
import numpy as np

from ..core.confidence import ConfidenceCut
from .gaussians import MODIFIER as GAUSSIANS_MODIFIER
from .nodes import set_modifier_input
from .points import CUT_AT_TIE, MODIFIER as POINTS_MODIFIER, RADIUS, THRESHOLD

BUNDLE = "mvdust3r_bundle"            # the bundle file this collection was imported from ("" if none)
DROP_PERCENT = "mvdust3r_hide_percent"  # the share of least-confident points hidden, percent
SHOWN = "mvdust3r_shown"              # how many points that leaves
THRESHOLD_KEY = "mvdust3r_threshold"  # the confidence the cut falls at
UNIT_RADIUS = "mvdust3r_unit_radius"  # the point radius at Point Size 1 (half the grid spacing)
POINT_SIZE = "mvdust3r_point_size"

RENDERS = (("SPLATS", "Splats", "Render the Gaussians only (the photo-like result); the points stay in the viewport"),
           ("POINTS", "Points", "Render the point cloud only"),
           ("BOTH", "Splats and Points", "Render both (the points show through where splats are thin)"))


@dataclass
class Reconstruction:
    """One imported reconstruction: its collection and the objects the import made in it."""

    collection: bpy.types.Collection
    points: Optional[bpy.types.Object] = None
    gaussians: Optional[bpy.types.Object] = None
    cameras: list[bpy.types.Object] = field(default_factory=list)
    photo_planes: list[bpy.types.Object] = field(default_factory=list)

    @classmethod
    def of(cls, collection: bpy.types.Collection) -> Optional["Reconstruction"]:
        """The reconstruction `collection` holds, or None if no import made it."""
        if not has(collection, DROP_PERCENT) and not has(collection, BUNDLE):
            return None
        result = cls(collection)
        for obj in collection.objects:
            if obj.type == "MESH" and obj.modifiers.get(POINTS_MODIFIER) is not None:
                result.points = obj
            elif obj.type == "MESH" and obj.modifiers.get(GAUSSIANS_MODIFIER) is not None:
                result.gaussians = obj
            elif obj.type == "CAMERA" and has(obj, "view"):
                result.cameras.append(obj)
            elif obj.type == "MESH" and obj.parent is not None and obj.parent.type == "CAMERA":
                result.photo_planes.append(obj)
        result.cameras.sort(key=lambda cam: int(cam["view"]))
        return result

    @property
    def bundle_path(self) -> str:
        return str(stored(self.collection, BUNDLE, ""))

    @property
    def hide_percent(self) -> float:
        return float(stored(self.collection, DROP_PERCENT, 0.0))

    @property
    def shown(self) -> int:
        return int(stored(self.collection, SHOWN, 0))

    @property
    def total(self) -> int:
        mesh = self.points.data if self.points is not None else None
        return len(mesh.vertices) if isinstance(mesh, bpy.types.Mesh) else 0

    @property
    def threshold(self) -> float:
        return float(stored(self.collection, THRESHOLD_KEY, 0.0))

    @property
    def point_size(self) -> float:
        return float(stored(self.collection, POINT_SIZE, 1.0))

    @property
    def cut(self) -> ConfidenceCut:
        """The cut shown now: what Export… writes."""
        return ConfidenceCut(confidence_drop_percent=self.hide_percent)

    def objects(self) -> list[bpy.types.Object]:
        return [o for o in (self.points, self.gaussians) if o is not None] + self.cameras + self.photo_planes


def has(id_: Any, key: str) -> bool:
    """Whether `id_` has the custom property `key` (the stubs don't type ``in`` on data-blocks)."""
    return key in id_


def stored(id_: Any, key: str, default: Any) -> Any:
    """The custom property `key` of `id_`, or `default`."""
    return id_.get(key, default)


def of_object(obj: Optional[bpy.types.Object]) -> Optional[Reconstruction]:
    """The reconstruction `obj` belongs to (a photo plane belongs to its camera's), or None."""
    while obj is not None:
        for collection in obj.users_collection:
            result = Reconstruction.of(collection)
            if result is not None:
                return result
        obj = obj.parent
    return None


def record(collection: bpy.types.Collection, bundle_path: Optional[str], hide_percent: float, shown: int,
           threshold: float, unit_radius: float, point_size: float) -> None:
    """What the import writes on its collection (see the module doc)."""
    collection[BUNDLE] = bundle_path or ""
    collection[DROP_PERCENT] = float(hide_percent)
    collection[SHOWN] = int(shown)
    collection[THRESHOLD_KEY] = float(threshold)
    collection[UNIT_RADIUS] = float(unit_radius)
    collection[POINT_SIZE] = float(point_size)


def _attribute(mesh: bpy.types.Mesh, name: str, dtype: Any) -> np.ndarray:
    attribute = mesh.attributes[name]
    values = np.empty(len(mesh.vertices), dtype=dtype)
    getattr(attribute, "data").foreach_get("value", values)
    return values


def apply_cut(reconstruction: Reconstruction, hide_percent: float) -> int:
    """Hide the least-confident `hide_percent` % of the points (live; nothing is deleted); how many show."""
    cut = ConfidenceCut(confidence_drop_percent=hide_percent)  # checks the range
    collection = reconstruction.collection
    collection[DROP_PERCENT] = float(hide_percent)
    points = reconstruction.points
    mesh = points.data if points is not None else None
    if points is None or not isinstance(mesh, bpy.types.Mesh):
        return 0
    confidence = _attribute(mesh, "confidence", np.float32)
    threshold = cut.threshold(confidence)
    keep = cut.keep(confidence)
    ties = (confidence >= threshold) & ~keep
    getattr(mesh.attributes[CUT_AT_TIE], "data").foreach_set("value", ties)
    mesh.update()
    modifier = points.modifiers[POINTS_MODIFIER]
    assert isinstance(modifier, bpy.types.NodesModifier)
    set_modifier_input(points, modifier, THRESHOLD, float(threshold))
    collection[SHOWN] = int(keep.sum())
    collection[THRESHOLD_KEY] = float(threshold)
    return int(keep.sum())


def set_point_size(reconstruction: Reconstruction, size: float) -> None:
    """Point radius = `size` × the automatic one (neighbouring points just touch at 1)."""
    reconstruction.collection[POINT_SIZE] = float(size)
    points = reconstruction.points
    if points is None:
        return
    modifier = points.modifiers[POINTS_MODIFIER]
    assert isinstance(modifier, bpy.types.NodesModifier)
    unit = float(stored(reconstruction.collection, UNIT_RADIUS, 0.0))
    if unit > 0:
        set_modifier_input(points, modifier, RADIUS, unit * float(size))


def renders(reconstruction: Reconstruction) -> str:
    """Which of RENDERS the render-visibility of the points and splats amounts to."""
    points = reconstruction.points is not None and not reconstruction.points.hide_render
    splats = reconstruction.gaussians is not None and not reconstruction.gaussians.hide_render
    if points and splats:
        return "BOTH"
    return "POINTS" if points or reconstruction.gaussians is None else "SPLATS"


def set_renders(reconstruction: Reconstruction, choice: str) -> None:
    """Show the points, the splats or both in renders (RENDERS); the viewport is left as it is."""
    if choice not in {key for key, _, _ in RENDERS}:
        raise ValueError(f"renders={choice!r}: choose one of {', '.join(key for key, _, _ in RENDERS)}")
    if reconstruction.points is not None:
        reconstruction.points.hide_render = choice == "SPLATS" and reconstruction.gaussians is not None
    if reconstruction.gaussians is not None:
        reconstruction.gaussians.hide_render = choice == "POINTS"


def photos_shown(reconstruction: Reconstruction) -> bool:
    cameras = [c.data for c in reconstruction.cameras if isinstance(c.data, bpy.types.Camera)
               and len(c.data.background_images)]
    return any(c.show_background_images for c in cameras) or any(not p.hide_viewport
                                                                  for p in reconstruction.photo_planes)


def show_photos(reconstruction: Reconstruction, show: bool) -> None:
    """The photos as camera backgrounds and as image planes, in the viewport."""
    for camera in reconstruction.cameras:
        if isinstance(camera.data, bpy.types.Camera) and len(camera.data.background_images):
            camera.data.show_background_images = show
    for plane in reconstruction.photo_planes:
        plane.hide_viewport = not show
