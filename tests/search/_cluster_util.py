"""Helpers of the cluster, resume and failure tests: a small real-audio subset, running the CLI, Ray processes."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import write_subset_manifest

VENV_BIN = Path(sys.executable).parent

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
            **extra}


def cli(args: list[str], cwd: Path, timeout: float = 600, **extra_env: str) -> subprocess.CompletedProcess:
    """Run ``asc-search ARGS`` to the end."""
    return subprocess.run([sys.executable, "-m", "asc_search.cli", *args], cwd=cwd, env=env(**extra_env),
                          capture_output=True, text=True, timeout=timeout)


def trials(run: Path) -> list[dict]:
    """The rows of ``trials.csv``."""
    with open(run / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
