"""MO-ASHA: Pareto promotion at a rung, the rungs, and the state that survives a killed driver."""

from __future__ import annotations

import pickle

import pytest
from ray.tune.schedulers import TrialScheduler

from asc_search.search._scheduler import (
    RUNGS_FILE,
    ParetoASHAScheduler,
    promoted,
    promotion_order,
    rung_milestones,
)


def _planted_rung():
    """Nine results (accuracy, MACs, INT8 bytes) of which exactly three are non-dominated: a, b, c trade accuracy
    for cost; every other result is worse than one of them in every objective."""
    front = [(0.9, 3e6, 30_000), (0.8, 2e6, 20_000), (0.7, 1e6, 10_000)]
    dominated = [(0.85, 3.5e6, 31_000), (0.75, 2.5e6, 25_000), (0.65, 1.5e6, 12_000), (0.6, 4e6, 40_000),
                 (0.5, 2e6, 20_000), (0.69, 1e6, 10_001)]
    points = [dominated[0], front[0], dominated[1], dominated[2], front[1], dominated[3], dominated[4], front[2],
              dominated[5]]
    return points, {1, 4, 7}


def test_promotion_keeps_exactly_the_non_dominated_results_of_a_planted_rung():
    points, front = _planted_rung()
    assert promoted(points, 3) == front  # 9 results, eta 3: three go on, and they are the first Pareto layer
    order = promotion_order(points)
    assert set(order[:3]) == front and order[0] == 1  # within the layer, by accuracy
    # with eta 2 five go on: the front, then the two most accurate of the second layer
    assert promoted(points, 2) == front | {0, 2}
    assert promoted(points[:1], 3) == {0}  # a rung's first result always goes on (ASHA)


def test_rungs_are_eta_spaced_below_the_full_training():
    assert rung_milestones(16, grace_epochs=2, reduction_factor=3) == [2, 6]
    assert rung_milestones(27, grace_epochs=1, reduction_factor=3) == [1, 3, 9]
    assert rung_milestones(16, grace_epochs=5, reduction_factor=3) == [5]  # not 15: it would save one epoch
    assert rung_milestones(16, grace_epochs=1, reduction_factor=3) == [1, 3]  # 9 is past 16 / 3
    # the default: one rung at a third of the training
    assert ParetoASHAScheduler("/nonexistent", max_epochs=16).milestones == [5]
    assert ParetoASHAScheduler("/nonexistent", max_epochs=8).milestones == [3]
    assert ParetoASHAScheduler("/nonexistent", max_epochs=1).milestones == []
    with pytest.raises(ValueError):
        rung_milestones(10, grace_epochs=0, reduction_factor=3)


def test_a_dominated_trial_stops_at_its_rung_and_the_state_survives_a_killed_driver(tmp_path):
    points, front = _planted_rung()
    s = ParetoASHAScheduler(tmp_path, max_epochs=16, grace_epochs=2)
    seen = []
    for i, (acc, macs, nbytes) in enumerate(points):
        tid = f"t{i}"
        assert s.decide(tid, {"epoch": 1, "best_val_accuracy": acc, "macs": macs, "int8_bytes": nbytes}) == (
            TrialScheduler.CONTINUE)  # below the first rung: nothing judged
        seen.append((tid, s.decide(tid, {"epoch": 2, "best_val_accuracy": acc, "macs": macs, "int8_bytes": nbytes})))
    # asynchronous: each trial is judged against the rung's results so far, so the front always goes on
    assert all(d == TrialScheduler.CONTINUE for tid, d in seen if int(tid[1:]) in front)
    stopped = {tid for tid, d in seen if d == TrialScheduler.STOP}
    assert stopped and stopped.isdisjoint({f"t{i}" for i in front})
    assert set(s.stopped()) == stopped and all("2-epoch rung" in r for r in s.stopped().values())
    lines = (tmp_path / RUNGS_FILE).read_text().splitlines()
    assert len(lines) == 9

    # the driver is killed (SIGKILL: nothing but the file is left) mid-line; a resumed run's scheduler, new or
    # unpickled from the Tuner's state, has every finished rung result and judges a restarted trial as before
    with open(tmp_path / RUNGS_FILE, "a") as f:
        f.write('{"trial_id": "t9", "rung": 2, "ep')
    for again in (ParetoASHAScheduler(tmp_path, max_epochs=16, grace_epochs=2), pickle.loads(pickle.dumps(s))):
        assert [r["trial_id"] for r in again.rungs[2]] == [f"t{i}" for i in range(9)]
        assert again.stopped() == s.stopped()
        for tid, d in seen:
            acc, macs, nbytes = points[int(tid[1:])]
            assert again.decide(tid, {"epoch": 3, "best_val_accuracy": acc, "macs": macs, "int8_bytes": nbytes}) == d
        assert len(again.rungs[2]) == 9  # not recorded twice
    # a final result is never stopped
    assert s.on_trial_result(None, type("T", (), {"trial_id": "t5"})(), {"final": True}) == TrialScheduler.CONTINUE


@pytest.mark.slow
def test_a_mo_asha_search_stops_dominated_trials_at_their_rung_and_prunes_them_in_optuna(esc10, tmp_path):
    """A real search with --scheduler mo-asha: every rung decision in rungs.jsonl is MO-ASHA's rule applied to
    the results the rung had then; a trial a rung stopped is a stopped row with its reason and a PRUNED Optuna
    trial (no low-fidelity values told); the others trained to their end."""
    import csv
    import json

    import optuna

    from tests.search._cluster_util import SMALL_SEARCH, cli, small_esc10

    data = small_esc10(esc10, tmp_path / "data")
    run = tmp_path / "run"
    p = cli([*SMALL_SEARCH, "--data", str(data), "--trials", "6", "--sampler", "random", "--max-concurrent", "1",
             "--scheduler", "mo-asha", "--epochs", "6", "--patience", "6", "--no-ensemble", "--out", str(run)], cwd=tmp_path,
            timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "MO-ASHA rungs at [2] epochs" in p.stdout
    records = [json.loads(line) for line in (run / RUNGS_FILE).read_text().splitlines()]
    assert {r["rung"] for r in records} == {2}
    assert len(records) >= 5  # every trial reaches the rung
    for rung in (2,):
        recs = [r for r in records if r["rung"] == rung]
        for j, r in enumerate(recs):
            assert r["promoted"] is (j in promoted([x["point"] for x in recs[:j + 1]], 3))
    rows = [r for r in csv.DictReader(open(run / "trials.csv")) if r["status"] != "rejected"]
    cut = {r["trial_id"] for r in records if not r["promoted"]}
    assert {r["trial_id"] for r in rows if r["status"] == "stopped"} == cut
    assert all("mo-asha: dominated at the" in r["stop_reason"] for r in rows if r["trial_id"] in cut)
    assert all(r["status"] == "completed" for r in rows if r["trial_id"] not in cut)
    study = optuna.load_study(study_name="asc-search", storage=f"sqlite:///{run / 'optuna.db'}")
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(pruned) == len(cut) and all(t.values is None for t in pruned)
    print(f"mo-asha: {len(cut)} of {len(rows)} trials stopped at a rung")


def test_a_data_fidelity_search_trains_on_growing_nested_subsets_up_to_its_rungs(esc10, tmp_path):
    """``--fidelity epochs+data`` with ``--train-subset 50``: the run trains on half of the training clips (the rest
    counted as left out, validation untouched), and every trial trains on 25 % of those up to its rung (epoch 2 of
    6), on all of them after; ``--fidelity`` without mo-asha and a bad subset are usage errors."""
    import json

    from asc_search.rundir import HISTORY_FILE
    from tests.search._cluster_util import SMALL_SEARCH, cli, small_esc10

    data = small_esc10(esc10, tmp_path / "data", per_class_per_fold=4)
    run = tmp_path / "run"
    p = cli([*SMALL_SEARCH, "--data", str(data), "--trials", "2", "--sampler", "random", "--max-concurrent", "1",
             "--scheduler", "mo-asha", "--fidelity", "epochs+data", "--train-subset", "50", "--epochs", "6",
             "--patience", "6", "--no-ensemble", "--out", str(run)], cwd=tmp_path, timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "training clips up to each rung: 25% to epoch 2" in p.stdout
    report = json.loads((run / "data_report.json").read_text())
    text = json.dumps(report)
    assert "training limited to the 50 % subset: 20 of 40 training clips" in text
    histories = [json.loads(h.read_text()) for h in (run / "tune").glob(f"trial_*/checkpoint_*/{HISTORY_FILE}")]
    assert any(len(h) == 6 for h in histories)  # a trial that trained to its end
    for h in histories:
        fractions = [row["train_fraction"] for row in h]
        assert fractions == [0.25, 0.25, 1.0, 1.0, 1.0, 1.0][:len(fractions)]
    bad = cli([*SMALL_SEARCH, "--data", str(data), "--fidelity", "epochs+data", "--out", str(tmp_path / "r2")],
              cwd=tmp_path)
    assert bad.returncode == 2 and "add --scheduler mo-asha" in bad.stderr + bad.stdout
    bad = cli([*SMALL_SEARCH, "--data", str(data), "--train-subset", "30", "--out", str(tmp_path / "r3")], cwd=tmp_path)
    assert bad.returncode == 2 and "--train-subset must be one of 5, 10, 25, 50, 100" in bad.stderr + bad.stdout
