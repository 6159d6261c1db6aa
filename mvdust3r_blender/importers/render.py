"""A first F12 that shows the reconstruction: what in the scene hides it, and the render settings
measured for the splats.

A new scene's default cube is 2 units wide and a reconstruction in network units often fits
inside it (every camera of ``samples/room`` lies within 0.64 of the origin): the render is then the
cube's inside. :func:`blockers` finds such objects by their bounding boxes; the fix is to hide
them from render (:func:`hide_from_render`), never to delete them.
"""
from __future__ import annotations

from typing import Optional

import bpy
import numpy as np

from .result import Reconstruction, of_object

SOLID_TYPES = {"MESH", "CURVE", "SURFACE", "META", "FONT", "VOLUME", "CURVES", "POINTCLOUD"}
SPLAT_SAMPLES = 8
"""Cycles samples for splats: 37.5 dB against a 3DGS reference in 5.4 s, where Blender's default
(adaptive up to 4096 samples, denoiser on) reaches 37.6 dB in 10× the time (docs/import.md)."""
TRANSPARENT_BOUNCES = 128
MIN_TRANSPARENT_BOUNCES = 64   # no Russian roulette before this: splats composite without its noise


def _world_box(obj: bpy.types.Object) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array([tuple(c) for c in obj.bound_box], dtype=np.float64)
    matrix = np.array(obj.matrix_world, dtype=np.float64)
    world = corners @ matrix[:3, :3].T + matrix[:3, 3]
    return world.min(axis=0), world.max(axis=0)


def _box(reconstruction: Reconstruction) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The world box of the reconstruction's points (else its splats), or None."""
    for obj in (reconstruction.points, reconstruction.gaussians):
        if obj is not None:
            return _world_box(obj)
    return None


OVERLAP_SHARE = 0.25
"""An object and the reconstruction whose boxes share this much of the smaller one's volume: the object
stands among the points (the default cube in a levelled room), and F12 shows it there."""


def blockers(scene: bpy.types.Scene, reconstruction: Reconstruction) -> list[tuple[bpy.types.Object, str]]:
    """Objects that render and whose bounding box holds a camera of `reconstruction`, its centre, or
    that shares a quarter of its space (:data:`OVERLAP_SHARE`):
    (object, why) — F12 through those cameras would show the object, not the reconstruction. Another
    reconstruction's points and splats are the artist's result too, never a blocker."""
    own = {o.as_pointer() for o in reconstruction.collection.all_objects}
    cameras = np.array([np.array(c.matrix_world)[:3, 3] for c in reconstruction.cameras], dtype=np.float64)
    box = _box(reconstruction)
    found = []
    for obj in scene.objects:
        if obj.as_pointer() in own or obj.type not in SOLID_TYPES or obj.hide_render or of_object(obj) is not None:
            continue
        low, high = _world_box(obj)
        inside = np.all((cameras >= low) & (cameras <= high), axis=1) if len(cameras) else np.zeros(0, bool)
        if inside.any():
            count = int(inside.sum())
            found.append((obj, f"'{obj.name}' encloses {count} of the {len(cameras)} cameras"))
        elif box is not None:
            centre = (box[0] + box[1]) / 2.0
            overlap = np.prod(np.clip(np.minimum(high, box[1]) - np.maximum(low, box[0]), 0.0, None))
            smaller = min(float(np.prod(box[1] - box[0])), float(np.prod(high - low)))
            share = float(overlap / max(smaller, 1e-30))
            if bool(np.all((centre >= low) & (centre <= high))):
                found.append((obj, f"'{obj.name}' surrounds the reconstruction"))
            elif share >= OVERLAP_SHARE:
                found.append((obj, f"'{obj.name}' stands inside the reconstruction"))
    return found


def blocker_lines(scene: bpy.types.Scene, reconstruction: Reconstruction) -> list[str]:
    """One warning per blocker, with its fix."""
    return [f"{why}: a render shows it instead of the reconstruction — hide it from render "
            "(MV-DUSt3R+ Result panel › Hide from Render)" for _, why in blockers(scene, reconstruction)]


def hide_from_render(objects: list[bpy.types.Object], view_layer: Optional[bpy.types.ViewLayer]) -> None:
    """Hide `objects` from renders and the viewport (nothing is deleted; the Outliner shows them back)."""
    for obj in objects:
        obj.hide_render = True
        if view_layer is not None and obj.name in view_layer.objects:
            obj.hide_set(True, view_layer=view_layer)


def apply_splat_settings(scene: bpy.types.Scene) -> list[str]:
    """Cycles with the settings measured for splats: 8 samples, no adaptive sampling, no denoiser,
    the light paths of :func:`prepare_render`. One line per change (nothing if none)."""
    render = scene.render
    lines = []
    if render.engine != "CYCLES":
        lines.append(f"Render Engine: {render.engine.replace('BLENDER_', '').title()} → Cycles")
        render.engine = "CYCLES"  # type: ignore[assignment]  # the stubs know one engine id
    cycles = getattr(scene, "cycles", None)
    if cycles is None:  # Cycles is an add-on: off only in a stripped build
        return lines + ["Cycles is not available in this Blender: its settings were not changed"]
    for attribute, value, where in (("samples", SPLAT_SAMPLES, "Sampling › Render › Max Samples"),
                                    ("use_adaptive_sampling", False, "Sampling › Render › Noise Threshold"),
                                    ("use_denoising", False, "Sampling › Render › Denoise")):
        before = getattr(cycles, attribute)
        if before != value:
            setattr(cycles, attribute, value)
            lines.append(f"{where}: {_word(before)} → {_word(value)}")
    return lines + prepare_render(scene)


def _word(value: object) -> str:
    return {True: "on", False: "off"}.get(value, str(value)) if isinstance(value, bool) else str(value)


def prepare_render(scene: bpy.types.Scene) -> list[str]:
    """Raise what the splats need in `scene`'s Cycles settings (never lower anything); one report line per change.

    Cycles stops a path after ``transparent_max_bounces`` transparent surfaces (default 8) and the
    splats behind turn dark, so the limit goes up to TRANSPARENT_BOUNCES; and its Russian roulette,
    which ends paths at random once their throughput is low, is the main noise in splats, so it
    starts only after MIN_TRANSPARENT_BOUNCES surfaces: more quality per second (10 k Gaussians at
    160×120: 37.5 dB at 8 samples in 5.4 s, against 37.5 dB at 16 samples in 9.1 s with 32 and 31.9 dB
    at 16 samples in 3.5 s with Cycles' 0; docs/benchmarks.md). EEVEE's dithered splats have no limit.
    """
    cycles = getattr(scene, "cycles", None)
    lines = []
    for setting, needed, where in (("transparent_max_bounces", TRANSPARENT_BOUNCES, "Light Paths > Max Bounces > Transparent"),
                                   ("min_transparent_bounces", MIN_TRANSPARENT_BOUNCES, "Light Paths > Min Transparent Bounces")):
        before = getattr(cycles, setting, None)
        if before is not None and before < needed:
            setattr(cycles, setting, needed)
            lines.append(f"Cycles {where}: {before} → {needed} for the splats (Undo reverts it with the import)")
    return lines
