"""Gaussians that follow the scene camera.

The splats' low-pass needs the world size of a render pixel, which depends on the camera's focal
length in render pixels: every Gaussians modifier the add-on made keeps ``Focal Length (px)`` equal
to the scene camera's (:func:`sync_focal_lengths`, run before every render and after every scene
change by the add-on's handlers). Only what the add-on made is touched, found by its id, never by name.
"""
from __future__ import annotations

import bpy

from .cameras import camera_focal_px
from .gaussians import FOCAL_LENGTH, ID_PROPERTY, SPLATS_ID
from .nodes import get_modifier_input, set_modifier_input


def _made_as(data: bpy.types.ID) -> object:
    """What the add-on made `data` as (its :data:`ID_PROPERTY`), or None for anything else."""
    return data[ID_PROPERTY] if ID_PROPERTY in data else None  # type: ignore[operator]


def splat_modifiers(scene: bpy.types.Scene) -> list[tuple[bpy.types.Object, bpy.types.NodesModifier]]:
    """The Gaussians modifiers this add-on made in `scene`: on objects that carry its id
    (:data:`SPLATS_ID`, stored by :func:`create_gaussians`; a duplicate of such an object carries it
    too), whose node group carries the id as well — never a user's object because its modifier
    happens to have the same name."""
    found: list[tuple[bpy.types.Object, bpy.types.NodesModifier]] = []
    for obj in scene.objects:
        if obj.type != "MESH" or _made_as(obj) != SPLATS_ID:
            continue
        for modifier in obj.modifiers:
            group = getattr(modifier, "node_group", None)
            if isinstance(modifier, bpy.types.NodesModifier) and group is not None and _made_as(group) == SPLATS_ID:
                found.append((obj, modifier))
    return found


def sync_focal_lengths(scene: bpy.types.Scene) -> None:
    """Set Focal Length (px) of every Gaussians modifier the add-on made in `scene` to its camera's (where it
    differs: an unchanged value is not written, so this can run from depsgraph updates without a loop).
    A node group edited so that it lacks the input is left alone: these run on every scene change and
    render, where an error would repeat on each."""
    focal = camera_focal_px(scene)
    if focal is None:
        return
    for obj, modifier in splat_modifiers(scene):
        try:
            current = float(get_modifier_input(modifier, FOCAL_LENGTH))
        except (KeyError, TypeError, ValueError):
            continue
        if abs(current - focal) > 1e-4 * focal:
            set_modifier_input(obj, modifier, FOCAL_LENGTH, focal)
