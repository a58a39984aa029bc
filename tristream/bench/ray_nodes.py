"""Ray nodes on this machine, on loopback: a head and worker nodes, each its own ``ray start --block``
process tree, for drills and tests that need more than one node (``bench chaos`` with a node loss).

Nothing here runs ``ray stop``: it stops every Ray process of the machine, other people's instances
included. A ``ray start --block`` process owns its node and shuts exactly that node down on SIGTERM; its
process group (its own session) is killed after that as a fallback, and a SIGKILL of the group is how a
node crash is simulated.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# Loopback only. Ray turns token auth on whenever ~/.ray/auth_token exists, a file any other Ray instance on
# the machine may create or replace meanwhile: switch it off explicitly. Workers at nice 0 (docs/cluster.md).
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_worker_niceness": "0", "PYTHONUNBUFFERED": "1"}
_HANDED_OUT: set[int] = set()


def free_ports(n: int) -> list[int]:
    """Ports free now and not handed out before: a port closed after an earlier call can come back from the
    OS, and Ray refuses one port for two components of a node."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            ports.append(port)
    return ports


def start_node(args: list[str], log: Path, timeout: float = 90.0) -> subprocess.Popen:
    """``ray start --block`` with ``args`` (``--head ...`` or ``--address=...``) on 127.0.0.1, its output in
    ``log``; returns once Ray says the node runs. Raises RuntimeError with the log's tail if it does not."""
    agent, grpc, metrics, runtime_env = free_ports(4)
    ray = str(Path(sys.executable).with_name("ray"))
    cmd = [ray, "start", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
           f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={grpc}",
           f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}", *args]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True, env=ENV)
    deadline = time.monotonic() + timeout
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_node(proc)
            raise RuntimeError(f"ray start failed: {' '.join(cmd)}\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    return proc


def stop_node(proc: subprocess.Popen) -> None:
    """Shut one node down (SIGTERM to its ``ray start --block``), then kill what is left of its group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            pass
    kill_node(proc)


def kill_node(proc: subprocess.Popen) -> None:
    """SIGKILL the node's whole process group: raylet, its workers and actors at once, as in a crash."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class LoopbackCluster:
    """A head node and one worker node on 127.0.0.1; ``address`` is what ``ray.address`` takes.

    ``head_args`` / ``node_args``: resources of each, e.g. ``["--num-cpus=2", '--resources={"sim": 2}']``.
    The worker node can be crashed (:meth:`crash_node`) and started again (:meth:`start_worker`); a new
    start registers as a new node with the same resources."""

    def __init__(self, log_dir: Path, head_args: list[str], node_args: list[str]):
        self.log_dir, self.node_args = Path(log_dir), node_args
        self.log_dir.mkdir(parents=True, exist_ok=True)
        port, client = free_ports(2)
        self.address = f"127.0.0.1:{port}"
        self.temp = Path(f"/tmp/tristream-ray-{os.getpid()}-{port}")  # short: Ray's socket paths are limited
        self.starts = 0
        self.head = start_node(["--head", f"--port={port}", f"--ray-client-server-port={client}",
                                "--include-dashboard=false", f"--temp-dir={self.temp}", *head_args],
                               self.log_dir / "head.log")
        self.worker: subprocess.Popen | None = None
        try:
            self.start_worker()
        except BaseException:
            self.close()
            raise

    def start_worker(self) -> None:
        self.starts += 1
        self.worker = start_node([f"--address={self.address}", *self.node_args],
                                 self.log_dir / f"node{self.starts}.log")

    def crash_node(self) -> bool:
        """SIGKILL the worker node's process tree; False if it is not running."""
        if self.worker is None or self.worker.poll() is not None:
            return False
        kill_node(self.worker)
        return True

    def close(self) -> None:
        for proc in (self.worker, self.head):
            if proc is not None:
                stop_node(proc)
        shutil.rmtree(self.temp, ignore_errors=True)
