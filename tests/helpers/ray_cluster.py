"""A real two-node Ray cluster on 127.0.0.1 with token authentication, for the farm tests.

Both nodes are ``ray start --block`` processes of the worker runtime's Ray (the driver's own
version), each in its own process group, so a node is removed by ending its group (nothing is
stopped by name: ``ray stop`` would end every Ray process of the user). Small: one CPU and an
80 MB object store per node, no dashboard. Everything Ray writes (session folders, sockets, logs,
the default token file under ``$HOME/.ray``) stays under one short temporary folder, removed by
:meth:`Cluster.stop`; Unix socket paths must stay under 108 bytes, hence the short folder name.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

OBJECT_STORE_BYTES = 80 * 1024 ** 2  # Ray's minimum is 75 MiB
START_TIMEOUT_S = 120.0


def worker_python() -> str:
    """The worker runtime's Python (it has torch and ray): ``$MVDUST3R_WORKER_PYTHON`` or this one."""
    return os.environ.get("MVDUST3R_WORKER_PYTHON") or sys.executable


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Node:
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """End the node at once, as a machine that dies: SIGKILL to its ``ray start --block``
        process group (raylet, object store; on the head the GCS). Its workers, in groups of their
        own, end when they lose their raylet (:meth:`Cluster.stop` ends any that linger)."""
        _kill_group(self.process.pid)
        self.process.wait(timeout=30)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Cluster:
    root: Path
    port: int
    token: str
    python: str
    nodes: list[Node] = field(default_factory=list)
    head_id: str = ""  # Ray's id of the head node

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self, token: Optional[str] = "", **extra: str) -> dict[str, str]:
        """The environment of a client: token auth on, the cluster's token (``token=None``: none),
        HOME and the temporary folder inside the cluster's folder."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(RAY_AUTH_MODE="token", HOME=str(self.root / "home"), TMPDIR=str(self.root / "tmp"),
                   RAY_USAGE_STATS_ENABLED="0")
        if token is not None:
            env["RAY_AUTH_TOKEN"] = token or self.token
        env.update(extra)
        return env

    def add_node(self, head: bool = False, num_cpus: int = 1) -> Node:
        ports = _free_ports(6)
        argv = [str(Path(self.python).with_name("ray")), "start", "--block", "--node-ip-address=127.0.0.1",
                f"--num-cpus={num_cpus}", "--num-gpus=0", f"--object-store-memory={OBJECT_STORE_BYTES}",
                f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
                f"--dashboard-agent-listen-port={ports[2]}", f"--dashboard-agent-grpc-port={ports[3]}",
                f"--metrics-export-port={ports[4]}", f"--runtime-env-agent-port={ports[5]}",
                "--disable-usage-stats", "--log-style=record", "--log-color=false"]
        if head:
            argv += ["--head", f"--port={self.port}", "--include-dashboard=false",
                     f"--temp-dir={self.root / 'r'}"]
        else:
            argv += [f"--address={self.address}"]
        log = self.root / f"node{len(self.nodes)}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env(),
                                       start_new_session=True, cwd=self.root)
        node = Node(process, log)
        self.nodes.append(node)
        return node

    def head_node_id(self) -> str:
        return self.head_id

    def wait_for_nodes(self, count: int) -> list[str]:
        """Block until `count` nodes are alive (asked through an authenticated client); their ids."""
        probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                 "print(' '.join(n['NodeID'] for n in ray.nodes() if n['Alive']))")
        deadline = time.monotonic() + START_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            for node in self.nodes:
                if not node.running:
                    raise RuntimeError(f"a Ray node exited: {node.log.read_text(errors='replace')[-3000:]}")
            done = subprocess.run([self.python, "-c", probe, self.address], env=self.env(), capture_output=True,
                                  text=True, timeout=120, cwd=self.root)
            last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
            if done.returncode == 0 and len(last.split()) >= count:
                return last.split()
            time.sleep(1.0)
        raise RuntimeError(f"the Ray cluster did not reach {count} nodes: {last}")

    def stop(self) -> None:
        """Stop every node, then whatever process still runs with this cluster's HOME (a Ray worker
        between its raylet's end and its own), and remove the cluster's folder."""
        for node in reversed(self.nodes):
            node.stop()
        deadline = time.monotonic() + 20.0
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def processes(self) -> list[int]:
        """Live processes of this cluster: those whose environment has its HOME (the nodes and
        their workers; clients started with :meth:`env` too)."""
        marker = f"HOME={self.root / 'home'}".encode() + b"\0"
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if marker in (entry / "environ").read_bytes() + b"\0" and \
                            "State:\tZ" not in (entry / "status").read_text():
                        found.append(int(entry.name))
                except OSError:
                    pass
        return found


def start(nodes: int = 2, python: Optional[str] = None) -> Cluster:
    """A head and ``nodes - 1`` more nodes, all alive; stop it with :meth:`Cluster.stop`."""
    root = Path(tempfile.mkdtemp(prefix="ray", dir=os.environ.get("TMPDIR") or None))
    (root / "home").mkdir()
    (root / "tmp").mkdir()
    cluster = Cluster(root=root, port=_free_ports(1)[0], token=secrets.token_hex(32),
                      python=python or worker_python())
    try:
        cluster.add_node(head=True)
        cluster.head_id = cluster.wait_for_nodes(1)[0]
        for _ in range(nodes - 1):
            cluster.add_node()
        cluster.wait_for_nodes(nodes)
    except BaseException:
        cluster.stop()
        raise
    return cluster
