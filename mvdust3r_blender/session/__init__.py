"""The worker of this Blender session and how a run is asked of it: below all drivers.

Every driver — the panel's run (:mod:`..run`, never blocks), the scripting side
(:mod:`..reconstruction`, blocks), batches and the command line — starts runs through this
package, so they resolve settings the same way (:class:`WorkerSettings`), check photos the same way
(:func:`photo_list`), describe a run the same way (:class:`RunSpec`, built once by each face),
follow it the same way (the :class:`~..client.requests.RequestHandle` that :meth:`WorkerSession.submit`
returns) and share one worker (:data:`SESSION`), which keeps the model loaded from one run to the
next, whoever starts it. The runtime check of the preferences (:class:`RuntimeCheck`) asks the same worker.

Errors a user fixes: :class:`SetupError` (runtime, checkpoint), :class:`RunError` (photos, options).
One idea a module: :mod:`.errors`, :mod:`.states` (the run states), :mod:`.settings`
(:class:`WorkerSettings`), :mod:`.photos` (:func:`photo_list`), :mod:`.spec` (:class:`RunSpec`),
:mod:`.worker` (:data:`SESSION` and the requests the preferences follow); the names the drivers
use are gathered here.
"""
from __future__ import annotations

from .errors import RunError, SetupError
from .photos import PhotoSource, check_photos, folder_photos, photo_list
from .settings import (WORKER_PYTHON_ENV, PathLike, WorkerSettings, checkpoint_file, log_path, preferred_remote,
                       remote_target, worker_python)
from .spec import Exports, RunSpec
from .states import FINISHED_STATES, RunState
from .worker import POLL_INTERVAL, SESSION, FollowedRequest, RemoteFetch, RuntimeCheck, WorkerSession

__all__ = ["FINISHED_STATES", "POLL_INTERVAL", "SESSION", "WORKER_PYTHON_ENV", "Exports", "FollowedRequest",
           "PathLike", "PhotoSource", "RemoteFetch", "RunError", "RunSpec", "RunState", "RuntimeCheck", "SetupError",
           "WorkerSession", "WorkerSettings", "check_photos", "checkpoint_file", "folder_photos", "log_path",
           "photo_list", "preferred_remote", "remote_target", "worker_python"]
