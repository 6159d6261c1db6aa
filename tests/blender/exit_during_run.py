"""Start a panel run and let Blender exit while it goes on (a normal exit: the end of this script), in a
child process: ``python exit_during_run.py ZIP CHECKPOINT WORKER_PYTHON OUTDIR``. The test then looks
for the run's folder in this process's temporary directory."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

USER = tempfile.mkdtemp(prefix="blender-user-", dir=sys.argv[4])  # inside the test's tmp_path
os.environ["BLENDER_USER_RESOURCES"] = USER

import bpy  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

PACKAGE = "bl_ext.user_default.mvdust3r_blender"


def main(zip_path: str, checkpoint: str, python: str, out_dir: str) -> None:
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    prefs.runtime_mode, prefs.python_path = "EXISTING", python
    prefs.checkpoint, prefs.checkpoint_path, prefs.device = "LOCAL", checkpoint, "cpu"
    folder = Path(out_dir) / "shoot"
    folder.mkdir()
    for k in range(3):
        pixels = np.random.default_rng(k).integers(0, 256, (64, 96, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"photo_{k}.png")
    assert bpy.ops.mvdust3r_blender.add_photos(directory=str(folder) + os.sep, files=[]) == {"FINISHED"}
    assert bpy.ops.mvdust3r_blender.reconstruct() == {"FINISHED"}
    run = sys.modules[f"{PACKAGE}.run"].active()
    assert run is not None and run._workdir is not None and run._workdir.is_dir()
    print(f"run started in {run._workdir}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
