"""The live display in a real terminal: tmux runs asc-search, the test reads the pane."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_live_display_in_tmux(esc10, tmp_path):
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is missing: .ci/run installs it")
        pytest.skip("tmux is not installed")
    session = f"asc{os.getpid()}"
    cmd = (f"PATH={Path(sys.executable).parent}:$PATH {sys.executable} -m asc_search.cli --data {esc10} "
           f"--max-macs 3000000 --trials 2 --epochs 2 --max-export 0 --out {tmp_path / 'run'}; "
           f"echo EXIT=$?; sleep 600")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "50", cmd], check=True)
    seen_live, screen = False, ""
    try:
        deadline = time.time() + 600
        while time.time() < deadline:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                                    text=True).stdout
            seen_live |= "search in progress" in screen and "trials done" in screen
            if "EXIT=" in screen:
                break
            time.sleep(0.5)
        history = subprocess.run(["tmux", "capture-pane", "-p", "-S", "-", "-t", session], capture_output=True,
                                 text=True).stdout
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    assert "EXIT=0" in screen, screen
    assert seen_live, screen
    final_panel = history[history.rindex("trials done"):]  # the panel as the search ended
    lines = final_panel.splitlines()
    assert "2/2" in lines[0] and "rejected" in lines[0] and "failed" in lines[0]
    assert "best feasible" in lines[1] and "front size" in lines[1] and "hypervolume" in lines[1]
    assert "elapsed" in final_panel and "remaining time" in final_panel
    assert "Pareto front" in history
