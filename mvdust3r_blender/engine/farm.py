"""The Ray driver of a farm batch: scenes spread over one loaded model per GPU of a Ray cluster.

Started by the Blender side (:class:`~..client.farm.FarmClient`) in the worker runtime, never inside
Blender: ``python -m mvdust3r_blender.engine.farm`` reads one :class:`~..core.farm.FarmJob` line and
writes :class:`~..core.farm.FarmEvent` lines; ``--check ADDRESS`` describes a cluster instead.
The driver joins the cluster with the engine as the job's runtime environment
(:mod:`.farm_cluster`), keeps one :class:`~.farm_actor.SceneActor` per GPU busy
(:mod:`.farm_scheduler`: streaming, retries, timeouts) and writes what lands, checked
(:mod:`.farm_results`).

SIGINT, SIGTERM or the end of stdin stop the driver: every actor it started is killed before it
exits (Ray would also end them with their owner), so nothing of the batch keeps running.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, Optional

from ..core.farm import FarmError, FarmEvent, FarmJob
from .farm_actor import remove_orphans
from .farm_cluster import connect, describe
from .farm_scheduler import Batch


def _stop_on_stdin_end(stream: IO[str]) -> None:
    """The Blender side went away (its end of stdin closed): stop as on Ctrl-C."""
    def watch() -> None:
        while stream.readline():
            pass
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    from .worker import take_stdout

    parser = argparse.ArgumentParser(prog="python -m mvdust3r_blender.engine.farm")
    parser.add_argument("--check", metavar="ADDRESS", help="describe the Ray cluster at ADDRESS and exit")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    out = take_stdout()

    def emit(event: FarmEvent) -> None:
        out.write(event.encode() + "\n")
        out.flush()

    signal.signal(signal.SIGTERM, _interrupt)
    remove_orphans(Path(tempfile.gettempdir()), "mvdust3r-farm-driver")
    staging = Path(tempfile.mkdtemp(prefix=f"mvdust3r-farm-driver-{os.getpid()}-"))
    batch: Optional[Batch] = None
    code = 0
    try:
        if args.check:
            ray = connect(args.check, staging)
            emit(FarmEvent(kind="cluster", detail=describe(ray)))
        else:
            line = sys.stdin.readline()
            job = FarmJob.decode(line)
            _stop_on_stdin_end(sys.stdin)
            ray = connect(job.address, staging)
            batch = Batch(ray, job, emit)
            batch.run()
    except FarmError as exc:
        emit(FarmEvent(kind="error", message=exc.message, hint=exc.hint, code=exc.code))
        code = 1
    except KeyboardInterrupt:
        emit(FarmEvent(kind="error", message="the batch was interrupted", code="cancelled",
                       hint="run it again: finished scenes are kept and skipped"))
        code = 130
    finally:
        try:
            if batch is not None:
                batch.release()
            if "ray" in sys.modules and sys.modules["ray"].is_initialized():
                sys.modules["ray"].shutdown()
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            emit(FarmEvent(kind="end"))
    return code


if __name__ == "__main__":
    sys.exit(main())
