"""Shared helpers of the benchmark scripts: paths, the machine and its load, JSON results, timing."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("ASC_SHARED_DATA", REPO.parent / "shared" / "data")) / "esc10-dev"
RESULTS = REPO / "bench" / "results"


def machine() -> dict:
    """nproc, CPU model, RAM (GiB), Python, load average now."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = int(line.split()[1]) / 2**20
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(ram, 1), "python": platform.python_version(),
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def spread(values: list[float]) -> dict:
    """Median, min, max and count of ``values``."""
    v = [float(x) for x in values]
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def write_result(name: str, payload: dict, command: str) -> Path:
    """Write ``bench/results/<name>.json`` with the command, the date, the machine and its load."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    payload = {"command": command, "date": _dt.datetime.now().isoformat(timespec="seconds"),
               "machine": machine(), **payload}
    out.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    return out


def command_line() -> str:
    """The command that ran this script, as typed from the repository root."""
    return ".venv/bin/python " + " ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])
