"""Preparing a run's data: the manifest checked before Ray starts, a --cache folder shared by two runs (the
second reuses the waveform store and the features, and its report says so), and the terminal's progress bar."""

from __future__ import annotations

import json

import pytest

from asc_search.pipeline import PreparationProgress
from tests.search._cluster_util import SMALL_SEARCH, cli, small_esc10


@pytest.mark.slow
def test_a_second_run_on_the_same_data_reuses_the_cache(esc10, tmp_path):
    data = small_esc10(esc10, tmp_path / "data")
    cache = tmp_path / "shared-cache"
    args = [a if a != "2" else "1" for a in SMALL_SEARCH]  # 1 epoch: only the preparation matters here
    for name in ("first", "second"):
        p = cli(["--data", str(data), "--trials", "1", "--out", str(tmp_path / name), "--cache", str(cache), *args],
                cwd=tmp_path)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    first = json.loads((tmp_path / "first" / "data_report.json").read_text())["preparation"]
    second = json.loads((tmp_path / "second" / "data_report.json").read_text())["preparation"]
    assert [s["reused"] for s in first["stores"]] == [False] and [s["reused"] for s in second["stores"]] == [True]
    assert first["stores"][0]["path"] == second["stores"][0]["path"]
    assert first["stores"][0]["path"].startswith(str(cache)) and not (tmp_path / "second" / "cache").exists()
    report = (tmp_path / "second" / "report.md").read_text()
    assert "8000 Hz: reused (prepared by an earlier run)" in report
    # the second run's trial is the first's genome (same seed): its features come from the first run's file
    assert "distinct front-ends computed (misses): 0; cache hits: " in report
    assert "cache hits: 0" not in report.split("## Feature cache")[1].split("\n")[2]


def test_the_live_panel_shows_the_preparation_as_a_bar():
    from rich.console import Console

    from asc_search.cli import _LivePanel

    panel = _LivePanel()
    panel.update(PreparationProgress(sample_rate_hz=16000, clips_done=41_000, clips_total=169_300,
                                     clips_per_s=2_050.0, eta_s=62.6))
    console = Console(width=120, record=True, force_terminal=False)
    console.print(panel)
    text = console.export_text()
    assert "preparing the 16000 Hz audio" in text and "41,000/169,300 clips" in text
    assert "2,050 clips/s" in text and "ETA 63 s" in text
