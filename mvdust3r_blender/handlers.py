"""Application handlers: keep the splats' low-pass set for the camera the scene renders from.

The Gaussians' geometry nodes need the scene camera's focal length in pixels, which geometry nodes
cannot read (a driver could, but a driver that fails once — while the scene has no camera — is
never evaluated again). So the add-on sets it: before every render (also animations, where the
camera or its lens may change per frame) and after every depsgraph update (the viewport). Imported
splat files with spherical harmonics get their view-dependent colour for the render camera in the
same place before a render, and their degree-0 colour back after it (the viewport shows that).
"""
from __future__ import annotations

from typing import Any

import bpy

from .importers.splat_camera import sync_focal_lengths
from .importers.splat_file import restore_base_colours, sync_view_colours


@bpy.app.handlers.persistent
def _before_render(scene: bpy.types.Scene, *_: Any) -> None:
    sync_focal_lengths(scene)
    sync_view_colours(scene)


@bpy.app.handlers.persistent
def _after_render(scene: bpy.types.Scene, *_: Any) -> None:
    restore_base_colours(scene)


@bpy.app.handlers.persistent
def _after_update(scene: bpy.types.Scene, *_: Any) -> None:
    sync_focal_lengths(scene)


_HANDLERS = ((bpy.app.handlers.render_pre, _before_render), (bpy.app.handlers.depsgraph_update_post, _after_update),
             (bpy.app.handlers.render_post, _after_render), (bpy.app.handlers.render_cancel, _after_render))


def register() -> None:
    for handlers, handler in _HANDLERS:
        if handler not in handlers:
            handlers.append(handler)


def unregister() -> None:
    for handlers, handler in _HANDLERS:
        if handler in handlers:
            handlers.remove(handler)
