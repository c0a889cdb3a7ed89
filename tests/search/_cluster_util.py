"""Helpers of the cluster, resume and failure tests: a small real-audio subset, running the CLI, Ray processes."""

from __future__ import annotations

import csv
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import write_subset_manifest

VENV_BIN = Path(sys.executable).parent

# Ray's token (token authentication is on for every test cluster, as on a real one): the user's own
# (~/.ray/auth_token, written by `ray get-auth-token --generate`) when there is one, else one made for this test
# session, given to every `ray start` and driver through RAY_AUTH_TOKEN, so a fresh machine needs no set-up.
RAY_TOKEN_FILE = Path.home() / ".ray" / "auth_token"
RAY_TOKEN = RAY_TOKEN_FILE.read_text().strip() if RAY_TOKEN_FILE.is_file() else secrets.token_hex(32)

# A tiny budget keeps every trial to a few seconds on one CPU.
SMALL_SEARCH = ["--budget", "dcase2022", "--max-macs", "4000000", "--max-int8-bytes", "40000",
                "--sample-rates-hz", "8000", "--chunks-s", "1", "--epochs", "2", "--patience", "2",
                "--max-export", "0", "--seed", "0"]


def small_esc10(esc10: Path, dest: Path, per_class_per_fold: int = 2) -> Path:
    """A manifest of ``per_class_per_fold`` real ESC-10 clips per class and fold (60 clips by default)."""
    return write_subset_manifest(esc10, dest / "metadata.csv", per_class_per_group=per_class_per_fold,
                                 columns=("filename", "label", "fold"), group_column="fold")


def env(**extra: str) -> dict[str, str]:
    """The environment of a CLI run: the venv's bin first on PATH (onnx2tf, ray), plus ``extra``."""
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1",
            "RAY_AUTH_TOKEN": RAY_TOKEN, **extra}


def cli(args: list[str], cwd: Path, timeout: float = 600, **extra_env: str) -> subprocess.CompletedProcess:
    """Run ``asc-search ARGS`` to the end."""
    return subprocess.run([sys.executable, "-m", "asc_search.cli", *args], cwd=cwd, env=env(**extra_env),
                          capture_output=True, text=True, timeout=timeout)


def trials(run: Path) -> list[dict]:
    """The rows of ``trials.csv`` of the search's trials (the post-search ensemble's row, when one was selected,
    is left out: it is no trial)."""
    with open(run / "trials.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r["trial_id"] != "ensemble"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free right now (all held open together while they are picked)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def descendants(pid: int) -> list[int]:
    """Pids of every process below ``pid`` (children, grandchildren ...)."""
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_all(pids: list[int], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to each pid still alive and wait (up to 10 s) until they are gone."""
    import psutil

    procs = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            p.send_signal(sig)
            procs.append(p)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def ray_processes_under(temp_dir: Path) -> list[int]:
    """Pids of Ray processes whose command line names ``temp_dir`` (the ``--temp-dir`` of a test's cluster)."""
    import psutil

    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(temp_dir) in cmd and p.info["pid"] != os.getpid():
            out.append(p.info["pid"])
    return out


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    """Poll ``predicate()`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class LocalRayNodes:
    """A Ray cluster of separate ``ray start --block`` processes on this machine (a head and workers).

    Each node is one ``ray start`` process that owns its raylet and helpers; SIGTERM to it stops them all, so the
    cluster is stopped without ``ray stop`` (which would stop every Ray on the machine). Token authentication
    is on, as on a real cluster. Every process is found by the cluster's own ``--temp-dir``.

    Args:
        temp_dir: Ray's temp dir for this cluster (short: Unix socket paths are limited to 107 bytes).
        cpus_per_node: ``--num-cpus`` of each node.
    """

    def __init__(self, temp_dir: Path, cpus_per_node: int = 1) -> None:
        self.temp_dir, self.cpus = Path(temp_dir), cpus_per_node
        # Every port the nodes take, picked at once so no two coincide.
        self._ports = free_ports(8)
        self.port = self._ports.pop()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.env = env(RAY_AUTH_MODE="token")

    def _start(self, args: list[str]) -> None:
        log = open(self.temp_dir.parent / f"{self.temp_dir.name}-node{len(self.procs)}.log", "w")
        self.procs.append(subprocess.Popen([str(VENV_BIN / "ray"), "start", "--block", "--disable-usage-stats",
                                            f"--num-cpus={self.cpus}", "--num-gpus=0",
                                            f"--dashboard-agent-listen-port={self._ports.pop()}", *args],
                                           env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def start_head(self) -> None:
        """Start the head and wait until it answers."""
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self._start(["--head", f"--port={self.port}", f"--temp-dir={self.temp_dir}", "--include-dashboard=false",
                     f"--dashboard-port={self._ports.pop()}", f"--ray-client-server-port={self._ports.pop()}"])
        self.wait_nodes(1)

    def add_worker(self) -> None:
        """Start one more node joining the head, and wait until the cluster counts it."""
        n = len(self.procs)
        self._start([f"--address={self.address}"])
        self.wait_nodes(n + 1)

    def alive_nodes(self) -> int:
        """Nodes the cluster counts as active (``ray status``; ``ray list`` needs the full dashboard)."""
        p = subprocess.run([str(VENV_BIN / "ray"), "status", f"--address={self.address}"], env=self.env,
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0 or "Active:" not in p.stdout:
            return 0
        active = p.stdout.split("Active:")[1].split("Pending:")[0]
        return sum(1 for line in active.splitlines() if "node_" in line)

    def wait_nodes(self, n: int, timeout: float = 90) -> None:
        """Wait until ``n`` nodes are alive (fails when a node process died)."""
        def ready():
            dead = [p.args for p in self.procs if p.poll() is not None]
            assert not dead, f"ray start exited: {dead}"
            return self.alive_nodes() >= n

        wait_for(ready, timeout, f"{n} Ray node(s) alive")

    def node_id(self, index: int) -> str:
        """Ray node id of the ``index``-th node started (0: the head), read from its raylet's command line."""
        import re

        import psutil

        for pid in descendants(self.procs[index].pid):
            try:
                cmd = " ".join(psutil.Process(pid).cmdline())
            except psutil.NoSuchProcess:
                continue
            m = re.search(r"raylet/raylet .*--node_id=([0-9a-f]+)", cmd)
            if m:
                return m.group(1)
        raise AssertionError(f"no raylet under node {index}")

    def kill_node(self, index: int) -> None:
        """SIGKILL the ``index``-th node and everything it started, as when a machine dies."""
        kill_all([self.procs[index].pid, *descendants(self.procs[index].pid)])
        self.procs[index].wait(10)

    def stop(self) -> list[int]:
        """SIGTERM every node, then SIGKILL what is left under the temp dir; returns the pids that had to be
        killed (empty when SIGTERM stopped everything)."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        left = wait_for_gone(lambda: ray_processes_under(self.temp_dir), timeout=20)
        kill_all(left)
        return left


def wait_for_gone(find, timeout: float) -> list[int]:
    """Poll ``find()`` (pids) until it is empty or ``timeout`` s passed; return what is still there."""
    end = time.monotonic() + timeout
    left = find()
    while left and time.monotonic() < end:
        time.sleep(0.5)
        left = find()
    return left
