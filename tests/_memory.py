"""Memory of a process tree, sampled: what the memory tests assert on and what ``bench/scale.py`` prints.

"In use" is what ``free`` counts as used (anonymous memory of the processes) plus the shared memory they add
(Ray's object store lives in ``/dev/shm``), and not the page cache: the pages of a memory-mapped store that
the kernel keeps cached are reclaimable and are left out, as ``free`` leaves out "buff/cache".
"""

from __future__ import annotations

import threading

import psutil


def _anon_bytes(pid: int) -> int:
    """``RssAnon`` of one process (bytes; 0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _shmem_bytes() -> int:
    """System-wide ``Shmem`` of ``/proc/meminfo`` (bytes)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Shmem:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no Shmem line")


class TreeMemorySampler:
    """Sample the memory in use of process ``pid`` and all its descendants every ``interval_s`` in a thread.

    Use as a context manager around the work. Figures (bytes): ``peak_tree`` (sum of ``RssAnon`` over the tree
    plus the growth of system ``Shmem`` since the start, at its highest), ``peak_root`` (``RssAnon`` of ``pid``
    alone: the driver), ``peak_child`` (the largest ``RssAnon`` of one descendant: a trial or a preparation
    worker), ``baseline_tree`` (the tree at the start).

    Args:
        pid: Root process (the driver).
        interval_s: Seconds between samples.
    """

    def __init__(self, pid: int, interval_s: float = 0.2):
        self.pid, self.interval_s = pid, interval_s
        self.peak_tree = self.peak_root = self.peak_child = self.baseline_tree = 0
        self.samples = 0
        self._stop = threading.Event()
        self._shm0 = _shmem_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        """Take one sample now; the tree's bytes in use."""
        try:
            kids = [c.pid for c in psutil.Process(self.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            kids = []
        root = _anon_bytes(self.pid)
        child = max((_anon_bytes(k) for k in kids), default=0)
        tree = root + sum(_anon_bytes(k) for k in kids) + max(0, _shmem_bytes() - self._shm0)
        self.peak_root, self.peak_child = max(self.peak_root, root), max(self.peak_child, child)
        self.peak_tree = max(self.peak_tree, tree)
        self.samples += 1
        return tree

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> TreeMemorySampler:
        self.baseline_tree = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
