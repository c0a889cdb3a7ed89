"""A trial that raises, one whose loss becomes NaN and one that runs out of memory are recorded as failed
with their reasons; the search finishes its other trials and the report lists the failures."""

import json

import pytest

from tests.search._cluster_util import SMALL_SEARCH, cli, small_esc10, trials

pytestmark = pytest.mark.slow


def test_failing_trials_are_recorded_and_the_search_goes_on(esc10, tmp_path):
    data = small_esc10(esc10, tmp_path / "data")
    run = tmp_path / "run"
    p = cli(["--data", str(data), "--trials", "5", "--out", str(run), *SMALL_SEARCH], cwd=tmp_path,
            ASC_SEARCH_INJECT_FAULTS="2:raise,3:nan,4:oom")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = [r for r in trials(run) if r["status"] != "rejected"]
    assert len(rows) == 5
    params = {json.loads((run / "tune" / f"trial_{r['trial_id']}" / "params.json").read_text())["index"]: r
              for r in rows}
    assert params[2]["status"] == "failed" and "RuntimeError: injected fault" in params[2]["error"]
    assert params[3]["status"] == "failed" and params[3]["error"].startswith("NaN/inf loss: training loss is nan")
    assert params[4]["status"] == "failed" and params[4]["error"].startswith("out of memory:")
    assert {params[i]["status"] for i in (1, 5)} == {"completed"}
    assert all(params[i]["genome"] for i in (2, 3, 4))  # a failed row keeps its candidate
    report = (run / "report.md").read_text()
    assert "## Failures" in report
    for i in (2, 3, 4):
        assert params[i]["trial_id"] in report.split("## Failures")[1]
    assert "NaN/inf loss" in report and "out of memory" in report and "RuntimeError" in report
    assert "3 failed" in p.stdout and p.stdout.count("failed trial ") == 3
    import optuna

    study = optuna.load_study(study_name="asc-search", storage=f"sqlite:///{run / 'optuna.db'}")
    states = [t.state.name for t in study.trials if "rejected" not in t.user_attrs]
    assert sorted(states) == ["COMPLETE", "COMPLETE", "FAIL", "FAIL", "FAIL"]  # told to the sampler as failed
    assert not list((run / "tune").glob("trial_*/error.txt"))  # not Ray errors: not retried
