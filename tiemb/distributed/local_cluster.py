"""A real Redis Cluster on loopback ports, for the distributed-table tests.

Six ``redis-server`` processes (3 masters, 3 replicas) in a temporary
directory, joined with ``redis-cli --cluster create``; nothing persisted,
stopped afterwards. Faults are injected on the real processes: SIGKILL a
master (its replica is promoted after ``cluster-node-timeout``), SIGSTOP a
node (a partition as the others see it), restart a killed node.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional


def redis_missing_reason() -> Optional[str]:
    """Why a cluster cannot be started here, or None."""
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install redis-server)"
    # Installed is not enough: a copy unpacked from another OS's packages
    # (benchmarks/gpu_suite.sh, .debs/) may not run against this libc.
    try:
        r = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"redis-server ({shutil.which('redis-server')}) cannot run: {e}"
    if r.returncode != 0:
        last = (r.stderr or r.stdout).strip().splitlines()
        return f"redis-server ({shutil.which('redis-server')}) cannot run: {last[-1] if last else f'exit {r.returncode}'}"
    return None


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> List[int]:
    """`count` loopback ports whose cluster bus ports (+10000) are free too."""
    import random

    rng = random.Random(os.getpid() ^ int(time.time() * 1000))
    for _ in range(200):
        base = rng.randrange(20000, 29000)
        ports = list(range(base, base + count))
        if all(_port_free(p) and _port_free(p + 10000) for p in ports):
            return ports
    raise RuntimeError("no free block of loopback ports for a Redis Cluster")


class RedisCluster:
    """A local cluster of ``masters`` masters with ``replicas`` replicas each.

    Args:
        directory: where each node keeps its config, nodes.conf and log.
        masters, replicas: the cluster's shape (3 and 1: six processes).
        node_timeout_ms: ``cluster-node-timeout``: how long until a silent
            master is failed over.
        extra: more ``redis.conf`` lines for every node (``maxmemory ...``).
    """

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000,
                 extra: Optional[List[str]] = None):
        self.directory = Path(directory)
        self.masters_count = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.extra = list(extra or [])
        self.ports = free_ports(masters * (1 + replicas))
        self.procs: Dict[int, subprocess.Popen] = {}

    @property
    def address(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def _conf(self, port: int) -> Path:
        d = self.directory / str(port)
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "redis.conf"
        conf.write_text("\n".join([
            f"port {port}", "bind 127.0.0.1", "protected-mode no", f"dir {d}", "cluster-enabled yes",
            "cluster-config-file nodes.conf", f"cluster-node-timeout {self.node_timeout_ms}",
            "appendonly no", 'save ""', f"logfile {d / 'redis.log'}", "cluster-require-full-coverage yes",
            *self.extra]) + "\n")
        return conf

    def start_node(self, port: int) -> None:
        self.procs[port] = subprocess.Popen(["redis-server", str(self._conf(port))], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
        self._wait_ping(port)

    def _wait_ping(self, port: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.cli(port, "PING", check=False).strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {port} did not answer PING in {timeout} s")

    def cli(self, port: int, *args: str, check: bool = True) -> str:
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True,
                           text=True, timeout=10)
        if check and r.returncode != 0:
            raise RuntimeError(f"redis-cli -p {port} {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def start(self) -> "RedisCluster":
        for p in self.ports:
            self.start_node(p)
        r = subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                            "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {r.stdout[-2000:]} {r.stderr[-2000:]}")
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 20.0) -> None:
        """Until every live node reports cluster_state:ok and sees the same masters."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [p for p, proc in self.procs.items() if proc.poll() is None]
            states = [self.cli(p, "CLUSTER", "INFO", check=False) for p in live]
            if states and all("cluster_state:ok" in s for s in states) and self._replicas_synced(live):
                return
            time.sleep(0.1)
        raise RuntimeError(f"cluster on ports {self.ports} not ok after {timeout} s")

    def _replicas_synced(self, live: List[int]) -> bool:
        for p in live:
            info = self.cli(p, "INFO", "replication", check=False)
            if "role:slave" in info and "master_link_status:up" not in info:
                return False
        return True

    def masters(self) -> List[int]:
        """Ports of the current masters (as a live node sees them)."""
        live = [p for p, proc in self.procs.items() if proc.poll() is None]
        out = []
        for line in self.cli(live[0], "CLUSTER", "NODES").splitlines():
            parts = line.split()
            if "master" in parts[2] and "fail" not in parts[2]:
                out.append(int(parts[1].split("@")[0].rsplit(":", 1)[1]))
        return sorted(out)

    def kill(self, port: int) -> None:
        """SIGKILL: the node is gone; the cluster fails it over."""
        proc = self.procs[port]
        proc.kill()
        proc.wait(timeout=10)

    def pause(self, port: int) -> None:
        """SIGSTOP: the node stops answering but keeps its sockets (a partition)."""
        os.kill(self.procs[port].pid, signal.SIGSTOP)

    def resume(self, port: int) -> None:
        os.kill(self.procs[port].pid, signal.SIGCONT)

    def restart(self, port: int) -> None:
        """Starts a killed node again (it rejoins, as a replica of its promoted one)."""
        self.start_node(port)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                proc.kill()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
