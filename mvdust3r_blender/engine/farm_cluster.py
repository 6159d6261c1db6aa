"""The Ray cluster of a farm batch, seen from its driver: connecting with the engine as the job's
runtime environment, and the cluster check (``python -m mvdust3r_blender.engine.farm --check``).

The engine's files (``__init__``, ``core/``, ``engine/``, the manifest: the same set as the ssh path
sends) are staged as ``engine-<sha256>/<package>`` and travel as the job's runtime environment
(``py_modules``); Ray stores them content-addressed, so nodes fetch a version once. Nodes need
Python, torch and ray, nothing installed by hand. ``ray.init`` joins an existing cluster, never a
new one, and every way it fails is told in words (:class:`~..core.farm.FarmError`).
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

from ..core.engine_files import engine_archive
from ..core.farm import FarmError
from .farm_actor import gpu_memory

CONNECT_TIMEOUT_S = 60.0
GCS_ATTEMPTS = 5
"""How often ``ray.init`` asks the head for the cluster's id, a second apart, before it gives up
(Ray's ``RAY_NUM_REDIS_GET_RETRIES``, 20 by default, set unless the environment sets it): Ray asks
again even when the head refused the token, so its default keeps a user with a wrong token
waiting 20 s; the head is already known to answer (:func:`_reachable`)."""
PACKAGE_DIR = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Connecting


def stage_engine(parent: Path) -> Path:
    """The engine's files unpacked under `parent`/engine-<sha256>/<package>: the ``py_modules`` entry."""
    import io
    import tarfile

    blob, digest, _ = engine_archive(PACKAGE_DIR)
    folder = parent / f"engine-{digest[:16]}"
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        tar.extractall(folder, filter="data")
    return folder / PACKAGE_DIR.name


def connect(address: str, staging: Path) -> Any:
    """``ray.init`` to an existing cluster (never a new one) with the engine as runtime environment;
    a refused token or an unreachable head becomes a :class:`FarmError` that says which."""
    os.environ.setdefault("RAY_NUM_REDIS_GET_RETRIES", str(GCS_ATTEMPTS))  # read when ray is imported
    try:
        import ray
    except ImportError:
        raise FarmError(f"the worker runtime ({sys.executable}) has no 'ray' package",
                        "install ray (the same version as the cluster's) into the worker runtime") from None
    if not address:
        raise FarmError("no Ray cluster address is given", "pass auto, head:6379 or ray://head:10001")
    _reachable(address)
    env = {"py_modules": [str(stage_engine(staging))]}
    os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", str(int(CONNECT_TIMEOUT_S)))
    try:
        ray.init(address=address, runtime_env=env, logging_level=logging.WARNING, log_to_driver=False,
                 include_dashboard=False, configure_logging=True)
    except Exception as exc:  # noqa: BLE001 -- every way ray.init fails, told in words
        raise _connect_error(address, exc) from None
    return ray


def _reachable(address: str) -> None:
    """Fail fast, in words, when a ``host:port`` address does not answer (``ray.init`` would retry
    for minutes); ``auto`` and ``ray://`` addresses are left to Ray."""
    import socket

    if address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S / 6):
            pass
    except (OSError, ValueError) as exc:
        raise FarmError(f"cannot connect to the Ray cluster at {address}: {exc}",
                        "check the address (head:6379 is the head's GCS port), that the head is running and that "
                        "this machine can reach it (docs/farm.md: an ssh tunnel to the head)") from None


def _connect_error(address: str, exc: BaseException) -> FarmError:
    chain: list[str] = []
    cause: Optional[BaseException] = exc
    while cause is not None and len(chain) < 8:
        chain.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__ or cause.__context__
    text = " | ".join(chain)
    if "AuthenticationError" in text or "InvalidAuthToken" in text or "UNAUTHENTICATED" in text:
        return FarmError(f"the Ray cluster at {address} refused this client: its token is missing or wrong",
                         "set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN, a file named by "
                         "RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (ray get-auth-token on the head prints it)")
    if "ray[client]" in text:
        return FarmError(f"{address}: a ray:// address needs the Ray Client ('ray[client]') in the worker runtime",
                         "install ray[client], or give the head's GCS address (head:6379) instead")
    return FarmError(f"cannot connect to the Ray cluster at {address}: {chain[0][:400]}",
                     "check the address (auto, head:6379, ray://head:10001), that the head is running and "
                     "that this machine can reach it (docs/farm.md: an ssh tunnel to the head)")


# ---------------------------------------------------------------------------------------------
# The cluster check


def _node_probe() -> dict[str, Any]:
    import platform
    import socket

    import ray

    info: dict[str, Any] = {"host": socket.gethostname(), "ray": ray.__version__, "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu_free"] = gpu_memory()
    except ImportError:
        info["torch"] = ""
    return info


def describe(ray: Any, timeout: float = 120.0) -> dict[str, Any]:
    """Nodes (alive), their CPUs, GPUs, free GPU memory, Ray / torch / Python versions, asked of
    each node by a zero-CPU task pinned to it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(_node_probe)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
            for n in nodes]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    described = []
    for node, ref in zip(nodes, refs):
        resources = node.get("Resources", {})
        entry: dict[str, Any] = {"address": node.get("NodeManagerAddress", ""), "id": node["NodeID"],
                                 "cpus": resources.get("CPU", 0), "gpus": resources.get("GPU", 0)}
        if ref in ready:
            try:
                entry.update(ray.get(ref))
            except Exception as exc:  # noqa: BLE001 -- a node that cannot run the probe is reported, not fatal
                entry["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        else:
            entry["error"] = "did not answer"
        described.append(entry)
    for ref in refs:
        if ref not in ready:
            ray.cancel(ref, force=True)
    total = ray.cluster_resources()
    return {"ray": ray.__version__, "nodes": described, "cpus": total.get("CPU", 0), "gpus": total.get("GPU", 0)}
