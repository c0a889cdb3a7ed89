"""pareto.html rendered in headless Chromium (no network): one marker per candidate in each panel."""

import os
import re
import shutil
import subprocess

import pytest

from asc_search.constraints import get_budget
from asc_search.report import plot_pareto_html

pytestmark = pytest.mark.slow

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync",
         "--virtual-time-budget=10000"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("CI"):
        pytest.fail("Chromium is missing: .ci/run installs Debian's chromium package")
    pytest.skip("Chromium is not installed (apt-get install chromium)")


def test_pareto_html_draws_one_marker_per_candidate(tmp_path):
    chromium = _chromium()
    rows = []
    for i in range(9):
        rows.append({"trial_id": f"t{i:04d}", "status": "completed", "summary": f"genome {i}",
                     "best_val_accuracy": 0.5 + 0.04 * i, "macs": int((i + 1) * 2e6), "int8_bytes": 5000 * (i + 1),
                     "params": 4000 * (i + 1), "on_front": i % 3 == 0})
    rows += [{"trial_id": f"rejected_{i:05d}", "status": "rejected", "summary": "big", "best_val_accuracy": "",
              "macs": int(40e6 + i), "int8_bytes": 200_000, "params": 1, "reasons": "macs", "on_front": False}
             for i in range(4)]
    html = plot_pareto_html(rows, get_budget("dcase2022"), tmp_path / "pareto.html", exported={"t0000"})
    profile = tmp_path / "profile"
    dom = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", html.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    markers = re.findall(r'class="point(?: [^"]*)?"', dom)
    assert len(markers) == 2 * len(rows), dom[-2000:]  # one per candidate in each of the two panels
    shot = tmp_path / "pareto_screenshot.png"
    subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--window-size=1250,620",
                    f"--screenshot={shot}", html.as_uri()], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000
    out = os.environ.get("ASC_ARTIFACTS")
    if out:
        shutil.copyfile(shot, os.path.join(out, "pareto_screenshot.png"))
