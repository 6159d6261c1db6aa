"""Add-on preferences: the worker's runtime, the model checkpoint, the compute device and precision.

The preferences hold choices only; the long tasks they start (creating the environment, checking
it, downloading a checkpoint) live in :mod:`.operators_setup` and report through
``window_manager.mvdust3r_setup``. The helpers at the bottom say where the extension keeps its
files; :mod:`.session` turns the choices into the paths a run needs.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import bpy

from .core import registry
from .core.options import ALIGN_CHOICES, DEFAULT_ALIGN, DEFAULT_PRECISION, DEVICES, PRECISIONS
from .client.runtime import WHEELS_ENV, InstallRecord
from .client.torch_build import TORCH_BACKENDS

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import IconItems

LOCAL = "LOCAL"
BUILTIN = "BUILTIN"
# The small model shipped inside the extension (trained on synthetic rooms; see training/README.md)
BUILTIN_MODEL = registry.builtin_model()
_BACKEND_LABELS = {"auto": "Automatic (detect the GPU)", "cpu": "CPU only", "cu130": "NVIDIA CUDA 13.0",
                   "cu128": "NVIDIA CUDA 12.8", "cu126": "NVIDIA CUDA 12.6", "rocm6.4": "AMD ROCm 6.4 (Linux)"}
# Property arguments are evaluated by Blender from the annotations' text: keep them plain names.
_BACKEND_ITEMS = [(b, _BACKEND_LABELS[b], f"Install the '{b}' build of PyTorch") for b in TORCH_BACKENDS]
_DEVICE_ITEMS = [(key, label, explanation) for key, (label, explanation) in DEVICES.items()]
_ALIGN_ITEMS = [(key, key.replace("_", " ").title(), explanation) for key, explanation in ALIGN_CHOICES.items()]
_PRECISION_ITEMS = [(key, key.capitalize(), explanation) for key, explanation in PRECISIONS.items()]
_LICENCE_LABEL = f"I accept the model licence ({registry.LICENCE}, non-commercial use only)"


def _checkpoint_items(self: Any, context: Any) -> list[tuple[str, str, str]]:
    items = [(c.filename, c.title, f"{c.description} {c.download_size_text}, licence {c.licence}")
             for c in registry.RELEASED]
    items.append((BUILTIN, "Built-in Small Model", "Shipped with the add-on, works offline: a small "
                  "MV-DUSt3R+ trained on synthetic rooms, to try the add-on. Real photos need a released model"))
    items.append((LOCAL, "Local File", "A checkpoint file already on this computer"))
    return items


def _forget_check(self: Any, context: Any) -> None:
    """Another runtime was chosen: the last check's result no longer describes it."""
    self.runtime_summary = ""


# EnumProperty with a callback: Python must keep the strings alive, so build them once.
_CHECKPOINT_ITEMS = _checkpoint_items(None, None)


class MVDUST3R_AddonPreferences(bpy.types.AddonPreferences):
    """Runtime, model and device of the MV-DUSt3R+ worker."""

    bl_idname = __package__

    runtime_mode: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Runtime",
        items=(("PRIVATE", "Private Environment", "An environment with PyTorch created by this add-on in its "
                                                  "user folder"),
               ("EXISTING", "Existing Python", "A Python interpreter you already have, with PyTorch installed")),
        default="PRIVATE", update=_forget_check,
        description="The Python with PyTorch that runs the reconstruction (the worker)")
    python_path: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Python", subtype="FILE_PATH",
        description="The python executable of an environment that has torch (e.g. .../venv/bin/python)",
        update=_forget_check)
    torch_backend: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="PyTorch Build",
        items=_BACKEND_ITEMS,
        default="auto", description="Which PyTorch the private environment installs: for your GPU, or CPU only")
    wheels_folder: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Wheels Folder", subtype="DIR_PATH",
        description=f"Install PyTorch and the worker's libraries only from this folder of wheels, without "
                    f"the internet (empty: ${WHEELS_ENV} if set, else the internet)")
    checkpoint: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Model", items=_CHECKPOINT_ITEMS, default=0,
        description="The network that reconstructs: a released checkpoint (downloaded once), the built-in small "
                    "model, or a file")
    checkpoint_path: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Checkpoint File", subtype="FILE_PATH",
        description="MVDp_s2.pth, MVD.pth or a .safetensors file written by this add-on")
    licence_accepted: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name=_LICENCE_LABEL, default=False,
        description="The released checkpoints are licensed for non-commercial use only; accept to download one")
    device: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Device",
        items=_DEVICE_ITEMS,
        default="auto", description="Where the network runs")
    precision: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Precision",
        items=_PRECISION_ITEMS,
        default=DEFAULT_PRECISION, description="How exactly the network computes: exact, or faster with small "
                                               "differences (docs/benchmarks.md#precision)")
    align: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Align", items=_ALIGN_ITEMS, default=DEFAULT_ALIGN,
        description="Where a script's reconstruction lands (api, batch, command line) unless it says: "
                    "the import and the exports' frame")
    runtime_summary: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Last Check", description="What the last runtime check found")
    worker_location: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Worker",
        items=(("LOCAL", "This Computer", "Run the reconstruction here"),
               ("REMOTE", "Remote GPU (ssh)", "Run it on another machine reached with ssh: photos and results "
                                              "travel over the connection (docs/remote.md)"),
               ("RAY", "Ray Cluster", "Batches (the command line's batch, api.reconstruct_many) run on a Ray "
                                      "cluster, one loaded model per GPU; single runs stay on this computer "
                                      "(docs/farm.md)")),
        default="LOCAL", update=_forget_check, description="Where the reconstruction runs")
    remote_destination: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Host", description="ssh destination: user@host or ssh://user@host:port", update=_forget_check)
    remote_ssh_command: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="ssh Command", default="ssh", update=_forget_check,
        description="The ssh command line, with your options: e.g. ssh -i ~/.ssh/gpu_key -J bastion "
                    "(BatchMode is always on: set up key login first)")
    remote_python: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Remote Python", default="python3", update=_forget_check,
        description="The command that runs a Python with torch on the remote machine")
    remote_checkpoint: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Remote Checkpoint", description="Path of the model file ON THE REMOTE machine (relative: to the "
                                              "remote home), or 'builtin' for the built-in small model, which "
                                              "travels with the add-on's engine")

    bundle_folder: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Keep Results In", subtype="DIR_PATH",
        description="Where the panel keeps each run's reconstruction bundle (.npz), for File › Import, "
                    "Export… and Save Bundle… later. Empty: a folder beside the saved .blend "
                    "(an unsaved file's bundles are removed when Blender quits)")
    ray_address: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Address", default="auto", update=_forget_check,
        description="The Ray cluster: auto, head:6379 or ray://head:10001 (the token comes from RAY_AUTH_TOKEN, "
                    "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)")
    ray_checkpoint: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Cluster Checkpoint", default="MVDp_s2.pth",
        description="The model on the nodes: a path readable on every node, a released file name "
                    "(MVDp_s2.pth) that each node downloads once, or 'builtin' for the built-in small model, "
                    "which travels with the add-on's engine")
    ray_summary: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Cluster", description="What the last cluster check found")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        if layout is None:
            return
        setup = getattr(context.window_manager, "mvdust3r_setup", None)
        layout.row().prop(self, "worker_location", expand=True)
        if self.worker_location == "REMOTE":
            self._draw_remote(layout.box(), setup)
        elif self.worker_location == "RAY":
            self._draw_ray(layout.box())
            self._draw_runtime(layout.box(), setup)
        else:
            self._draw_runtime(layout.box(), setup)
            self._draw_model(layout.box(), setup)
        layout.prop(self, "device")
        layout.prop(self, "precision")
        layout.prop(self, "bundle_folder")
        layout.prop(self, "align")

    def _draw_runtime(self, box: bpy.types.UILayout, setup: Any) -> None:
        box.label(text="PyTorch Runtime", icon="CONSOLE")
        box.row().prop(self, "runtime_mode", expand=True)
        if self.runtime_mode == "EXISTING":
            box.prop(self, "python_path")
        else:
            box.label(text=f"Environment: {runtime_dir()}")
            box.prop(self, "torch_backend")
            box.prop(self, "wheels_folder")
            row = box.row()
            running = setup is not None and setup.runtime_state == "RUNNING"
            row.enabled = not running
            label = "Recreate Environment" if runtime_ready_marker().is_file() else "Create Environment"
            if setup is not None and setup.runtime_state == "FAILED":
                label = "Retry"
            row.operator("mvdust3r_blender.create_runtime", text=label, icon="FILE_REFRESH")
            if setup is not None and setup.runtime_state != "IDLE":
                draw_task(box, setup.runtime_state, setup.runtime_step, setup.runtime_message, setup.runtime_hint)
                if setup.runtime_command:
                    box.label(text=f"$ {setup.runtime_command}")
                for line in setup.runtime_tail.splitlines()[-8:]:
                    box.label(text=line)
                if setup.runtime_log:
                    box.label(text=f"Log: {setup.runtime_log}")
                if running:
                    box.operator("mvdust3r_blender.cancel_setup", text="Stop", icon="CANCEL")
        self._draw_check(box, setup)

    def _draw_check(self, box: bpy.types.UILayout, setup: Any) -> None:
        row = box.row()
        row.operator("mvdust3r_blender.check_runtime", text="Check", icon="CHECKMARK")
        if setup is not None and setup.check_state == "RUNNING":
            row.label(text="Starting the worker…")
        elif setup is not None and setup.check_state == "FAILED":
            draw_task(box, "FAILED", "Check", setup.check_message, "")
        elif self.runtime_summary:
            row.label(text=self.runtime_summary)
        record = InstallRecord.read(runtime_ready_marker()) if self.runtime_mode == "PRIVATE" else None
        if record is not None and self.runtime_summary:
            col = box.column(align=True)
            for line in record.lines():
                col.label(text=line)

    def _draw_ray(self, box: bpy.types.UILayout) -> None:
        box.label(text="Ray Cluster (batches)", icon="NETWORK_DRIVE")
        box.prop(self, "ray_address")
        box.prop(self, "ray_checkpoint")
        row = box.row()
        row.operator("mvdust3r_blender.check_ray_cluster", text="Check", icon="CHECKMARK")
        if self.ray_summary:
            box.label(text=self.ray_summary)

    def _draw_remote(self, box: bpy.types.UILayout, setup: Any) -> None:
        box.label(text="Remote GPU over ssh", icon="NETWORK_DRIVE")
        for name in ("remote_destination", "remote_ssh_command", "remote_python", "remote_checkpoint"):
            box.prop(self, name)
        row = box.row(align=True)
        row.prop(self, "checkpoint", text="Download")
        fetch = row.row()
        fetch.enabled = self.checkpoint not in (LOCAL, BUILTIN) and self.licence_accepted
        fetch.operator("mvdust3r_blender.fetch_remote_model", text="Download on Remote", icon="IMPORT")
        if self.checkpoint not in (LOCAL, BUILTIN):
            box.prop(self, "licence_accepted")
        if setup is not None and setup.download_state != "IDLE":
            draw_task(box, setup.download_state, "Download", setup.download_message, "")
        box.prop(self, "torch_backend")
        row = box.row()
        row.enabled = not (setup is not None and setup.runtime_state == "RUNNING")
        row.operator("mvdust3r_blender.create_remote_runtime", text="Set Up Remote Runtime", icon="FILE_REFRESH")
        if setup is not None and setup.runtime_state != "IDLE":
            draw_task(box, setup.runtime_state, setup.runtime_step, setup.runtime_message, setup.runtime_hint)
        self._draw_check(box, setup)

    def _draw_model(self, box: bpy.types.UILayout, setup: Any) -> None:
        box.label(text="Model", icon="MESH_MONKEY")
        box.prop(self, "checkpoint")
        if self.checkpoint == LOCAL:
            box.prop(self, "checkpoint_path")
            return
        if self.checkpoint == BUILTIN:
            box.label(text="Trained on synthetic rooms only: expect rough results on real photos", icon="INFO")
            return
        entry = registry.find_released(self.checkpoint)
        path = models_dir() / self.checkpoint
        if entry is not None:
            box.label(text=f"{entry.title}: {entry.download_size_text}, licence {entry.licence}")
        if path.is_file():
            box.label(text=f"Downloaded: {path}", icon="CHECKMARK")
            return
        box.prop(self, "licence_accepted")
        if not bpy.app.online_access:
            box.label(text="Online access is off: allow it in Preferences > System, or use the built-in model",
                      icon="ERROR")
        row = box.row()
        row.enabled = self.licence_accepted and bool(bpy.app.online_access) and not (
            setup is not None and setup.download_state == "RUNNING")
        row.operator("mvdust3r_blender.download_model", text=f"Download {self.checkpoint}", icon="IMPORT")
        if setup is not None and setup.download_state != "IDLE":
            draw_task(box, setup.download_state, "Download", setup.download_message, "")
            if setup.download_state == "RUNNING":
                box.progress(factor=setup.download_progress, type="BAR",
                             text=f"{setup.download_progress * 100:.0f} %")
                box.operator("mvdust3r_blender.cancel_setup", text="Stop Download", icon="CANCEL")


_STATE_ICONS: dict[str, "IconItems"] = {"RUNNING": "SORTTIME", "DONE": "CHECKMARK", "FAILED": "ERROR",
                                       "CANCELLED": "CANCEL"}


def draw_task(layout: bpy.types.UILayout, state: str, title: str, message: str, hint: str) -> None:
    """One status line (and the fix, for a failure) of a set-up task or run."""
    icon = _STATE_ICONS.get(state, "INFO")
    col = layout.column(align=True)
    col.label(text=f"{title}: {message}" if message else title, icon=icon)
    if hint:
        for line in hint.splitlines()[:6]:
            col.label(text=line)


# ---------------------------------------------------------------------------------------------
# Where the extension keeps its files


def get() -> MVDUST3R_AddonPreferences:
    """This add-on's preferences."""
    context_prefs = bpy.context.preferences
    assert context_prefs is not None and __package__ is not None
    prefs = context_prefs.addons[__package__].preferences
    assert isinstance(prefs, MVDUST3R_AddonPreferences)
    return prefs


def user_dir() -> Path:
    """The extension's own writable folder (environment, models, logs); survives updates."""
    assert __package__ is not None
    return Path(bpy.utils.extension_path_user(__package__, create=True))


def runtime_dir() -> Path:
    return user_dir() / "runtime"


def runtime_ready_marker() -> Path:
    """Written when the private environment's installation finished (an
    :class:`~.client.runtime.InstallRecord`: installer, PyTorch build, why); a half-made one has none."""
    return runtime_dir() / "mvdust3r-runtime-complete"


def models_dir() -> Path:
    return user_dir() / "models"


def register() -> None:
    bpy.utils.register_class(MVDUST3R_AddonPreferences)


def unregister() -> None:
    bpy.utils.unregister_class(MVDUST3R_AddonPreferences)
