"""The preferences' Check for a Ray cluster: nodes, GPUs, free GPU memory, Ray and torch versions.

The check runs the Ray driver's ``--check`` in the worker runtime (Blender never imports ray) in
the background; a timer writes what it found into the preferences' ``ray_summary``, or the error.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import bpy

from . import preferences
from .client.farm import ClusterCheck
from .session import SetupError, worker_python

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems

POLL_INTERVAL = 0.5
_CHECK: list[ClusterCheck] = []  # the check that runs now (at most one)


def poll_check() -> Optional[float]:
    """Publish a finished check; None (stop the timer) when none runs. Tests call it themselves."""
    if not _CHECK:
        return None
    check = _CHECK[0]
    if not check.finished:
        return POLL_INTERVAL
    _CHECK.clear()
    prefs = preferences.get()
    prefs.ray_summary = check.summary if check.error is None else f"Failed: {check.error}"
    return None


class MVDUST3R_BLENDER_OT_check_ray_cluster(bpy.types.Operator):
    """Connect to the Ray cluster and show its nodes, GPUs, free GPU memory and Ray / torch versions"""

    bl_idname = "mvdust3r_blender.check_ray_cluster"
    bl_label = "Check Ray Cluster"
    bl_options = {"REGISTER", "INTERNAL"}

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        prefs = preferences.get()
        if _CHECK:
            self.report({"WARNING"}, "a cluster check is running")
            return {"CANCELLED"}
        try:
            python = worker_python(prefs)
        except SetupError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        _CHECK.append(ClusterCheck(python, prefs.ray_address.strip() or "auto"))
        prefs.ray_summary = "Checking…"
        if not bpy.app.timers.is_registered(poll_check):
            bpy.app.timers.register(poll_check, first_interval=POLL_INTERVAL)
        return {"FINISHED"}


def register() -> None:
    bpy.utils.register_class(MVDUST3R_BLENDER_OT_check_ray_cluster)


def unregister() -> None:
    if bpy.app.timers.is_registered(poll_check):
        bpy.app.timers.unregister(poll_check)
    bpy.utils.unregister_class(MVDUST3R_BLENDER_OT_check_ray_cluster)
