"""A real multi-node Ray cluster on this machine, started with Ray's own CLI (``ray start``).

Each node is a ``ray start --block`` process in a session of its own, with its own raylet,
object store and workers, all on loopback with ports of its own; the head has a GCS and
token authentication (``RAY_AUTH_MODE=token``, a token made for this cluster alone, passed
through the environment, never written to ``~/.ray``). :meth:`LocalCluster.kill` SIGKILLs a
node's whole session (its raylet and every worker it started), which is what losing a machine
looks like to Ray; :meth:`LocalCluster.stop` kills every session it started, by process
group, never with ``ray stop`` (which would stop other people's clusters on a shared machine).

Used by tests/test_bulk_cluster.py and by the ``cluster`` benchmark scenario.

>>> with LocalCluster(tmp) as cluster:                          # doctest: +SKIP
...     cluster.add_node()                                       # the second node
...     subprocess.run([..., "bulk", "--engine", "ray", "--ray-address", cluster.address], env=cluster.env)
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

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))
#: how long a node may take to say "Ray runtime started" (a loaded 2-core machine: tens of seconds)
START_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Node:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    num_cpus: int

    @property
    def pgid(self) -> int:
        return self.process.pid  # start_new_session: the group's id is the leader's pid

    def pids(self) -> list[int]:
        """Every live process of this node: its session (``ray start``, raylet, agents) and everything
        they started, workers included (Ray may start a worker in a process group of its own)."""
        parents: dict[int, int] = {}
        groups: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if fields[0] != "Z":  # not zombies
                    parents[int(entry.name)], groups[int(entry.name)] = int(fields[1]), int(fields[2])
        found = {pid for pid, group in groups.items() if group == self.pgid}
        grew = True
        while grew:
            more = {pid for pid, parent in parents.items() if parent in found} - found
            found |= more
            grew = bool(more)
        return sorted(found)

    def peak_rss_mb(self, comm: str) -> dict[int, float]:
        """VmHWM (peak resident memory) of this node's processes whose command line holds ``comm``."""
        found = {}
        for pid in self.pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            if comm in cmdline:
                kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
                found[pid] = kb / 1024
        return found


@dataclass
class LocalCluster:
    """A head node (``num_cpus`` CPUs) and the nodes :meth:`add_node` adds; a context manager."""

    root: Path
    num_cpus: int = 1
    #: extra environment for every node and driver (e.g. PYTHONPATH, HF_HUB_OFFLINE)
    extra_env: dict[str, str] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    #: processes of the nodes still alive after :meth:`stop` (none, unless something escaped)
    leaked: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        # Ray's socket paths must stay short (AF_UNIX: 107 bytes): a short temp dir of its own.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.2:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update({
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **self.extra_env,
        })
        self.env = env  # what a driver (the CLI, a benchmark child) needs to join the cluster

    def __enter__(self) -> LocalCluster:
        try:
            self.start_head()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self, name: str, args: list[str], num_cpus: int) -> Node:
        ip = f"127.0.0.{len(self.nodes) + 2}"
        log = self.root / f"{name}.log"
        common = [
            "--block", "--num-cpus", str(num_cpus), "--node-ip-address", ip, "--disable-usage-stats",
            "--temp-dir", str(self.temp_dir / name),
            "--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()), "--object-store-memory", str(200 * 1024 * 1024),
        ]
        with open(log, "wb") as out:
            process = subprocess.Popen([RAY, "start", *args, *common], env=self.env, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root)
        node = Node(name, process, log, num_cpus)
        self.nodes.append(node)
        deadline = time.monotonic() + START_TIMEOUT_S
        while b"Ray runtime started" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray node {name} did not start: {log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.3)
        return node

    def start_head(self) -> Node:
        return self._start("head", ["--head", "--port", str(self.port), "--include-dashboard", "false",
                                    "--ray-client-server-port", str(free_port())], self.num_cpus)

    def add_node(self, num_cpus: int | None = None) -> Node:
        return self._start(f"node{len(self.nodes)}", ["--address", self.address], num_cpus or self.num_cpus)

    def kill(self, node: Node) -> None:
        """SIGKILL the node's raylet, its workers and everything else it started, at once."""
        pids = node.pids()
        try:
            os.killpg(node.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in pids:  # workers in process groups of their own
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        node.process.wait(timeout=30)

    def stop(self) -> None:
        """Kill every node; :attr:`leaked` lists any of their processes still alive 10 s later."""
        pids = {pid for node in self.nodes for pid in node.pids()}
        for node in reversed(self.nodes):
            self.kill(node)
        self.nodes.clear()
        deadline = time.monotonic() + 10
        while True:
            self.leaked = sorted(pid for pid in pids if _alive(pid))
            if not self.leaked or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
