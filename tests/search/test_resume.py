"""SIGKILL the driver in the middle of a search, then ``asc-search resume``: no finished trial is lost or
trained again, the sampler goes on with the same study, and the run finishes its trial count."""

import csv
import json
import signal
import subprocess
import sys

import pytest

from asc_search._pareto import pareto_front
from tests.search._cluster_util import (
    SMALL_SEARCH,
    cli,
    descendants,
    env,
    kill_all,
    small_esc10,
    trials,
    wait_for,
)

pytestmark = pytest.mark.slow

TRIALS = 6


def _finished(run) -> dict[str, float]:
    """trial id -> finished_at of the trials whose final result the driver has recorded."""
    out = {}
    for path in (run / "tune").glob("trial_*/result.json"):
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if r.get("final") and not r.get("failed"):
                out[r["trial_id"]] = r["finished_at"]
    return out


def _trainings(run, trial_id: str) -> int:
    """How many times a trial started training (its epoch-1 results)."""
    lines = (run / "tune" / f"trial_{trial_id}" / "result.json").read_text().splitlines()
    return sum(json.loads(line).get("epoch") == 1 and not json.loads(line).get("resumed_from_checkpoint")
               for line in lines if line.strip())


def _search_then_kill(args: list[str], cwd, ready, what: str) -> None:
    """Start ``asc-search ARGS``, wait until ``ready()``, then SIGKILL the driver and the local Ray instance it
    started (they die with it, as in a crash)."""
    driver = subprocess.Popen([sys.executable, "-m", "asc_search.cli", *args], cwd=cwd, env=env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: ready() or driver.poll() is not None, 300, what)
        assert driver.poll() is None, "the search ended before it could be killed: " + driver.stdout.read()[-2000:]
        below = descendants(driver.pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
        kill_all(below)
    finally:
        if driver.poll() is None:
            kill_all([driver.pid, *descendants(driver.pid)])


def test_sigkill_mid_search_then_resume(esc10, tmp_path):
    data = small_esc10(esc10, tmp_path / "data")
    run = tmp_path / "run"
    _search_then_kill(["--data", str(data), "--trials", str(TRIALS), "--out", str(run), *SMALL_SEARCH], tmp_path,
                      lambda: len(_finished(run)) >= 2, "two finished trials")
    before = _finished(run)
    assert 2 <= len(before) < TRIALS and not (run / "trials.csv").exists()

    p = cli(["resume", str(run)], cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "search resumed" in p.stdout

    rows = [r for r in trials(run) if r["status"] != "rejected"]
    assert len(rows) == TRIALS and all(r["status"] == "completed" for r in rows)
    by_id = {r["trial_id"]: r for r in rows}
    for trial_id, finished_at in before.items():  # kept, with the metrics of their first (only) training
        assert by_id[trial_id]["status"] == "completed"
        assert float(by_id[trial_id]["finished_at"]) == pytest.approx(finished_at)
        assert _trainings(run, trial_id) == 1
    after = set(by_id) - set(before)
    assert after  # trials trained by the resumed session

    import optuna

    study = optuna.load_study(study_name="asc-search", storage=f"sqlite:///{run / 'optuna.db'}")
    trained = [t for t in study.trials if "rejected" not in t.user_attrs and t.state.name == "COMPLETE"]
    assert len(trained) == TRIALS  # each trial told once, in the study the first session started
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    sessions = json.loads((run / "cluster.json").read_text())
    assert [s["resumed"] for s in sessions] == [False, True]
    assert sessions[1]["search_wall_s"] > 0 and sessions[1]["trial_slots"] >= 1  # the killed session has none

    # the front is taken over the trials of both sessions, and the post-search ensemble when one was selected
    with open(run / "trials.csv", newline="") as f:
        candidates = [r for r in csv.DictReader(f) if r["status"] == "completed"]
    assert {r["trial_id"] for r in candidates} - {r["trial_id"] for r in rows} <= {"ensemble"}
    pts = [(float(r["best_val_accuracy"]), int(r["macs"]), int(r["int8_bytes"])) for r in candidates]
    expected = {candidates[i]["trial_id"] for i in pareto_front(pts, ("max", "min", "min"))}
    front = {f["trial_id"] for f in json.loads((run / "pareto.json").read_text())["front"]}
    assert front == expected
    assert {r["trial_id"] for r in candidates if r["on_front"] == "True"} == front


def test_resume_refuses_a_finished_or_missing_run(tmp_path):
    p = cli(["resume", str(tmp_path / "nope")], cwd=tmp_path)
    assert p.returncode == 2 and "does not exist" in p.stderr
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "config.yaml").write_text("run: {}\n")
    (tmp_path / "done" / "trials.csv").write_text("trial_id\n")
    p = cli(["resume", str(tmp_path / "done")], cwd=tmp_path)
    assert p.returncode == 2 and "has finished" in p.stderr


def _rung_records(run) -> list[dict]:
    """The complete lines of ``rungs.jsonl`` (a line cut off by the kill is not a finished rung)."""
    path = run / "rungs.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def test_the_mo_asha_state_survives_sigkill_and_resume(esc10, tmp_path):
    """``--scheduler mo-asha``: the rung results recorded before the driver is killed are all there after
    ``asc-search resume``, no trial is judged twice at a rung, a trial a rung stopped stays stopped (and is told
    to Optuna as pruned), and the run ends with its trial count."""
    data = small_esc10(esc10, tmp_path / "data")
    run = tmp_path / "run"
    args = [a for a in SMALL_SEARCH]
    args[args.index("--epochs") + 1] = "4"  # one rung, at 1 epoch (eta 3)
    args[args.index("--patience") + 1] = "4"
    _search_then_kill(["--data", str(data), "--trials", str(TRIALS), "--out", str(run), "--scheduler", "mo-asha",
                       *args], tmp_path, lambda: len(_rung_records(run)) >= 3, "three rung results")
    before = _rung_records(run)
    finished_before = _finished(run)
    assert len(before) >= 3 and not (run / "trials.csv").exists()

    p = cli(["resume", str(run)], cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "search resumed" in p.stdout

    after = _rung_records(run)
    assert after[:len(before)] == before  # no finished rung lost (nor rewritten)
    judged = [(r["trial_id"], r["rung"]) for r in after]
    assert len(judged) == len(set(judged))  # no trial judged twice at a rung, before or after the kill
    assert {r["rung"] for r in after} == {1}
    rows = {r["trial_id"]: r for r in trials(run) if r["status"] != "rejected"}
    assert len(rows) == TRIALS and {r["status"] for r in rows.values()} <= {"completed", "stopped"}
    cut = {r["trial_id"] for r in after if not r["promoted"]}
    assert {t for t, r in rows.items() if r["status"] == "stopped"} == cut
    for trial_id in cut:
        assert rows[trial_id]["stop_reason"].startswith("mo-asha: dominated at the")
    for trial_id in finished_before:  # a trial that had finished is kept, not trained again
        assert rows[trial_id]["status"] in ("completed", "stopped") and _trainings(run, trial_id) == 1

    import optuna

    study = optuna.load_study(study_name="asc-search", storage=f"sqlite:///{run / 'optuna.db'}")
    told = [t for t in study.trials if "rejected" not in t.user_attrs and "duplicate_of" not in t.user_attrs]
    assert sum(t.state.name == "PRUNED" for t in told) == len(cut)
    assert sum(t.state.name == "COMPLETE" for t in told) == TRIALS - len(cut)
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
