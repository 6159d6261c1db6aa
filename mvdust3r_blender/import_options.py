"""What an import does: the options as data (:class:`ImportOptions`) and as operator properties.

Following the SBCV Photogrammetry Importer, each option group is a mixin that owns its properties,
draws itself (``draw_*``) and turns itself into keyword arguments (``*_options``); an operator
combines the mixins it needs and stays thin. The API takes the same options as keywords.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Optional

import bpy

from .core.confidence import DEFAULT_DROP_PERCENT, ConfidenceCut
from .core.errors import OptionError
from .core.conventions import Axes

if TYPE_CHECKING:
    from bpy.types import UILayout


@dataclass
class ImportOptions:
    """Everything an import can be told; the defaults are what the File > Import operator starts with."""

    points: bool = True                # the point cloud
    cameras: bool = True               # one camera per photo
    gaussians: bool = True             # the 3D Gaussians, if the bundle has them
    background_images: bool = True     # each photo as its camera's background image
    image_planes: bool = False         # each photo on a plane in front of its camera
    axes: Axes = "Z_UP"                # see conventions.world_axes
    confidence_drop_percent: float = DEFAULT_DROP_PERCENT  # share of least-confident points hidden (percent)
    min_confidence: Optional[float] = None  # absolute cut instead of the share (the network's confidences are >= 1)
    point_radius: Optional[float] = None  # absolute, world units; None: point_size × half the grid spacing
    point_size: float = 1.0
    opacity_threshold: float = 0.05    # Gaussians below this opacity are not shown
    scale_multiplier: float = 3.0      # a splat spans this many standard deviations
    name: Optional[str] = None         # the new collection's name; None: the photos' folder

    @classmethod
    def from_keywords(cls, **options: Any) -> "ImportOptions":
        """Options from keywords; an unknown name or a value out of range raises ValueError (the
        core's ``OptionError``) saying which."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise OptionError(f"unknown import option(s) {', '.join(unknown)}", f"known: {', '.join(sorted(known))}")
        result = cls(**options)
        result.check()
        return result

    @property
    def cut(self) -> ConfidenceCut:
        """Which points are shown (and exported alongside): the share or the absolute cut."""
        return ConfidenceCut(confidence_drop_percent=self.confidence_drop_percent, min_confidence=self.min_confidence)

    def check(self) -> None:
        if self.axes not in ("Z_UP", "NETWORK"):
            raise OptionError(f"axes={self.axes!r}", "use 'Z_UP' or 'NETWORK'")
        self.cut  # checks both confidence options
        if self.point_radius is not None and self.point_radius <= 0:
            raise OptionError(f"point_radius={self.point_radius}", "must be > 0 (or None for automatic)")
        if self.point_size <= 0 or self.scale_multiplier <= 0:
            raise OptionError(f"point_size={self.point_size}, scale_multiplier={self.scale_multiplier}", "must be > 0")


class ContentOptions:
    """What to import."""

    import_points: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Points", default=True, description="Import the point cloud")
    import_cameras: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Cameras", default=True, description="Import one camera per photo")
    import_gaussians: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Gaussians", default=True, description="Import the 3D Gaussians (if the reconstruction has them)")
    background_images: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Photos as Backgrounds", default=True, description="Show each photo as its camera's background image")
    image_planes: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Photos as Image Planes", default=False,
        description="Put each photo on a plane in front of its camera (parented to it)")

    def draw_content(self, layout: "UILayout") -> None:
        box = layout.box()
        box.label(text="Import")
        box.prop(self, "import_points")
        box.prop(self, "import_cameras")
        sub = box.column()
        sub.enabled = bool(self.import_cameras)
        sub.prop(self, "background_images")
        sub.prop(self, "image_planes")
        box.prop(self, "import_gaussians")

    def content_options(self) -> dict[str, Any]:
        return {"points": bool(self.import_points), "cameras": bool(self.import_cameras),
                "gaussians": bool(self.import_gaussians), "background_images": bool(self.background_images),
                "image_planes": bool(self.image_planes)}


class AxisOptions:
    """How the network's frame is placed in Blender."""

    axes: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Axes", default="Z_UP",
        items=[("Z_UP", "Z Up", "The first photo's camera looks along +Y with Z up: upright if it was held level"),
               ("NETWORK", "Network Frame", "Keep the network's frame (the first camera's OpenCV axes: y down, z forward)")],
        description="Orientation of the reconstruction in the scene")

    def draw_axes(self, layout: "UILayout") -> None:
        layout.prop(self, "axes")

    def axis_options(self) -> dict[str, Any]:
        return {"axes": str(self.axes)}


class PointOptions:
    """How the point cloud is shown (both stay live inputs of its modifier)."""

    confidence_drop_percent: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Hide Least Confident", default=DEFAULT_DROP_PERCENT, min=0.0, max=99.0, subtype="PERCENTAGE",
        description="Hide this share of the points, the least confident first (the official demo hides 3 %); "
                    "exports leave out the same points")
    point_size: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Point Size", default=1.0, min=0.01, soft_max=10.0,
        description="Point radius relative to the automatic one (neighbouring points just touch at 1)")

    def draw_points(self, layout: "UILayout") -> None:
        box = layout.box()
        box.label(text="Points")
        box.prop(self, "confidence_drop_percent")
        box.prop(self, "point_size")

    def point_options(self) -> dict[str, Any]:
        return {"confidence_drop_percent": float(self.confidence_drop_percent), "point_size": float(self.point_size)}


class GaussianOptions:
    """How the Gaussians are shown (both stay live inputs of their modifier)."""

    opacity_threshold: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Opacity Threshold", default=0.05, min=0.0, max=1.0,
        description="Gaussians less opaque than this are not shown")
    scale_multiplier: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Splat Extent (σ)", default=3.0, min=0.1, soft_max=6.0,
        description="Each splat reaches this many standard deviations from its centre")

    def draw_gaussians(self, layout: "UILayout") -> None:
        box = layout.box()
        box.label(text="Gaussians")
        box.prop(self, "opacity_threshold")
        box.prop(self, "scale_multiplier")

    def gaussian_options(self) -> dict[str, Any]:
        return {"opacity_threshold": float(self.opacity_threshold), "scale_multiplier": float(self.scale_multiplier)}


class ImportSettings(ContentOptions, AxisOptions, PointOptions, GaussianOptions):
    """Every import option as properties, drawn and read as one: the File > Import operator and
    the scene's panel settings both derive from it, so they offer the same choices."""

    def draw_import_options(self, layout: "UILayout") -> None:
        self.draw_content(layout)
        self.draw_axes(layout)
        self.draw_points(layout)
        self.draw_gaussians(layout)

    def import_options(self) -> dict[str, Any]:
        """Keyword arguments for ``api.import_bundle`` (the fields of :class:`ImportOptions`)."""
        return {**self.content_options(), **self.axis_options(), **self.point_options(), **self.gaussian_options()}
