"""What an import does: the options as data (:class:`ImportOptions`) and as operator properties.

Following the SBCV Photogrammetry Importer, each option group is a mixin that owns its properties,
draws itself (``draw_*``) and turns itself into keyword arguments (``*_options``); an operator
combines the mixins it needs and stays thin. The API takes the same options as keywords.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Optional

import bpy

from .core.confidence import DEFAULT_DROP_PERCENT, ConfidenceCut, make_cut
from .core.errors import OptionError
from .core.options import ALIGN_CHOICES, DEFAULT_ALIGN, Align, check_number

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
    align: Align = DEFAULT_ALIGN       # where the scene lands: level / first_camera / none (core.alignment)
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
        core's ``OptionError``) saying which; a cut given both ways (a share and an absolute
        confidence) is refused."""
        if options.get("min_confidence") is not None and options.get("confidence_drop_percent") is not None:
            make_cut(options["confidence_drop_percent"], options["min_confidence"])  # refuses both at once
        options = {k: v for k, v in options.items() if not (k == "confidence_drop_percent" and v is None)}
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
        if self.align not in ALIGN_CHOICES:
            raise OptionError(f"align={self.align!r} is not an alignment", f"use one of {', '.join(ALIGN_CHOICES)}")
        self.cut  # checks both confidence options
        if self.point_radius is not None:
            check_number("point_radius", self.point_radius, above=0.0,
                         hint="give a radius > 0 in world units, or None for automatic")
        check_number("point_size", self.point_size, above=0.0, hint="give a size > 0 (1: neighbouring points touch)")
        check_number("opacity_threshold", self.opacity_threshold, at_least=0.0, at_most=1.0,
                     hint="give an opacity from 0 (show every Gaussian) to 1")
        check_number("scale_multiplier", self.scale_multiplier, above=0.0,
                     hint="give how many standard deviations a splat spans, > 0 (3 is usual)")


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
    """Where the reconstruction lands in the scene (core.alignment)."""

    align: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Align", default=DEFAULT_ALIGN,
        items=[("level", "Level & Ground", ALIGN_CHOICES["level"]),
               ("first_camera", "First Camera Upright", ALIGN_CHOICES["first_camera"]),
               ("none", "As Computed", ALIGN_CHOICES["none"])],
        description="Where the reconstruction lands in the scene")

    def draw_axes(self, layout: "UILayout") -> None:
        layout.prop(self, "align")

    def axis_options(self) -> dict[str, Any]:
        return {"align": str(self.align)}


class PointOptions:
    """How the point cloud is shown (both stay live inputs of its modifier)."""

    confidence_drop_percent: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Hide Least Confident", default=DEFAULT_DROP_PERCENT, min=0.0, max=99.0, subtype="PERCENTAGE",
        description="Hide this share of the points, the least confident first (the official demo hides 3 %); "
                    "exports leave out the same points")
    point_size: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Point Size", default=1.0, min=0.01, max=100.0, soft_max=10.0,
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
        name="Splat Size", default=3.0, min=0.1, max=10.0, soft_max=6.0,
        description="How far each splat reaches from its centre, in standard deviations of its Gaussian "
                    "(3: nearly all of it; less: smaller, sharper splats)")

    def draw_gaussians(self, layout: "UILayout") -> None:
        box = layout.box()
        box.label(text="Gaussians")
        box.prop(self, "opacity_threshold")
        box.prop(self, "scale_multiplier")

    def gaussian_options(self) -> dict[str, Any]:
        return {"opacity_threshold": float(self.opacity_threshold), "scale_multiplier": float(self.scale_multiplier)}


class PlacementSettings:
    """What the artist knows about the scene's size, as the panel's fields (``scene.mvdust3r``)."""

    known_distance: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Distance", default=1.0, min=0.0, max=1e6, subtype="DISTANCE", unit="LENGTH",
        description="The real distance between two picked points: two selected vertices of the point cloud "
                    "(Edit Mode), or one selected vertex and the 3D cursor")
    known_camera_height: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Camera Height", default=1.6, min=0.0, max=1e6, subtype="DISTANCE", unit="LENGTH",
        description="The real height above the floor of the active camera (else of the cameras' median); "
                    "the floor must be at z = 0 (Level & Ground)")
    known_size: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Size", default=1.0, min=0.0, max=1e6, subtype="DISTANCE", unit="LENGTH",
        description="The real length of the longest side of the bounding box of the selected points "
                    "(else of every shown point)")

    def draw_placement(self, layout: "UILayout") -> None:
        """Level & Ground, then each known measure beside the operator that scales to it."""
        layout.operator("mvdust3r_blender.level_ground", text="Level & Ground", icon="ORIENTATION_GLOBAL")
        box = layout.box()
        box.label(text="Scale to What You Know")
        for prop, operator in (("known_distance", "mvdust3r_blender.scale_distance"),
                               ("known_camera_height", "mvdust3r_blender.scale_camera_height"),
                               ("known_size", "mvdust3r_blender.scale_size")):
            row = box.row(align=True)
            row.prop(self, prop)
            row.operator(operator, text="", icon="FULLSCREEN_ENTER")


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
