import json
from pathlib import Path

import pytest

from asc_search.config import SAMPLERS
from asc_search.constraints import Budget, count_complexity
from asc_search.search import MODES, OBJECTIVES, DefineByRunSpace, FeasibleOptunaSearch, make_sampler
from asc_search.search_spaces import Genome, SpaceOptions


def test_searcher_never_suggests_an_infeasible_genome_and_records_rejections(tmp_path):
    budget = Budget(name="tight", max_int8_bytes=20_000, max_macs=3_000_000)
    space = DefineByRunSpace(options=SpaceOptions(), budget=budget, n_classes=10)
    path = tmp_path / "rejected.jsonl"
    s = FeasibleOptunaSearch(space=space, rejections_path=path, metric=list(OBJECTIVES), mode=list(MODES),
                             sampler=make_sampler("tpe", 0))
    for i in range(12):
        cfg = s.suggest(f"t{i}")
        g = Genome.from_dict(cfg["genome"])
        c = count_complexity(g, n_classes=10)
        assert budget.check(c) == []
        s.on_trial_complete(f"t{i}", {"best_val_accuracy": 0.5, "macs": c.macs, "int8_bytes": c.int8_bytes,
                                      "final": True})
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert s.rejected == len(rows) > 0
    assert all(r["status"] == "rejected" and r["reasons"] for r in rows)
    study = s._ot_study
    rejected = [t for t in study.trials if "rejected" in t.user_attrs]
    assert len(rejected) == len(rows)
    assert all(max(t.constraints.values()) > 0 for t in rejected)  # told as infeasible
    accepted = [t for t in study.trials if "rejected" not in t.user_attrs]
    assert len(accepted) == 12 and all(max(t.constraints.values()) <= 0 for t in accepted)


def test_a_duplicated_genome_trains_once_and_the_sampler_is_told_its_result(tmp_path):
    """The sampler proposes one genome five times: it trains once; the proposal made while it trains waits for
    its result, the ones after it are told that result at once; every suggestion handed to Ray is a new genome."""
    budget = Budget(name="dcase-like", max_int8_bytes=128_000, max_macs=30_000_000)
    space = DefineByRunSpace(options=SpaceOptions(), budget=budget, n_classes=10)
    first = FeasibleOptunaSearch(space=space, rejections_path=tmp_path / "r0.jsonl", metric=list(OBJECTIVES),
                                 mode=list(MODES), sampler=make_sampler("random", 0)).suggest("probe")
    params = first["params"]
    s = FeasibleOptunaSearch(space=space, rejections_path=tmp_path / "r.jsonl", metric=list(OBJECTIVES),
                             mode=list(MODES), sampler=make_sampler("random", 1), points_to_evaluate=[params] * 3)
    gid = Genome.from_dict(first["genome"]).genome_id
    a = s.suggest("t1")
    assert Genome.from_dict(a["genome"]).genome_id == gid
    b = s.suggest("t2")  # the two repeats of the genome in training wait; a new genome goes to Ray
    assert Genome.from_dict(b["genome"]).genome_id != gid and s.duplicates == 2
    waiting = [t for t in s._ot_study.trials if t.user_attrs.get("duplicate_of") == gid]
    assert len(waiting) == 2 and all(t.state.name == "RUNNING" for t in waiting)
    result = {"best_val_accuracy": 0.7, "macs": 1_000_000, "int8_bytes": 20_000, "final": True}
    s.on_trial_complete("t1", result)
    for _ in range(2):  # proposed again after its training ended: told the result at once
        s._ot_study.enqueue_trial(params)
    c = s.suggest("t3")
    handed = [Genome.from_dict(x["genome"]).genome_id for x in (a, b, c)]
    assert len(set(handed)) == 3 and s.duplicates == 4 and s.suggested == 3
    repeats = [t for t in s._ot_study.trials if t.user_attrs.get("duplicate_of") == gid]
    assert len(repeats) == 4 and all(t.state.name == "COMPLETE" and t.values == [0.7, 1_000_000, 20_000]
                                     for t in repeats)
    original = next(t for t in s._ot_study.trials if t.number == s._ot_trials["t1"].number)
    assert original.values == [0.7, 1_000_000, 20_000] and "duplicate_of" not in original.user_attrs


def test_a_repeat_of_a_failed_or_cut_training_is_not_told_a_result(tmp_path):
    """A genome whose training failed: its waiting repeat is told FAIL; a training cut before its end (not
    ``final``) leaves no result to reuse, so the genome may be proposed and trained again."""
    budget = Budget(name="dcase-like", max_int8_bytes=128_000, max_macs=30_000_000)
    space = DefineByRunSpace(options=SpaceOptions(), budget=budget, n_classes=10)
    params = FeasibleOptunaSearch(space=space, rejections_path=tmp_path / "r0.jsonl", metric=list(OBJECTIVES),
                                  mode=list(MODES), sampler=make_sampler("random", 0)).suggest("probe")["params"]
    s = FeasibleOptunaSearch(space=space, rejections_path=tmp_path / "r.jsonl", metric=list(OBJECTIVES),
                             mode=list(MODES), sampler=make_sampler("random", 1), points_to_evaluate=[params] * 2)
    s.suggest("t1")
    s.suggest("t2")
    s.on_trial_complete("t1", {"failed": True, "final": True})
    waiting = [t for t in s._ot_study.trials if "duplicate_of" in t.user_attrs]
    assert len(waiting) == 1 and waiting[0].state.name == "FAIL"
    s.on_trial_complete("t2", {"best_val_accuracy": 0.5, "macs": 1, "int8_bytes": 1, "final": False})
    assert s._trained == {}
    # the cut training (a MO-ASHA rung, or the time budget) is told PRUNED, without its low-fidelity values
    pruned = [t for t in s._ot_study.trials if t.state.name == "PRUNED"]
    assert len(pruned) == 1 and pruned[0].values is None


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_suggests_only_feasible_genomes_past_its_start_up(name, tmp_path):
    """The samplers' contract: seeded, multi-objective over (accuracy, MACs, INT8 bytes), fed the budget's
    constraints; 11 suggestions (past the 8 start-up trials of tpe and gp) are feasible and handed to Ray once."""
    budget = Budget(name="tight", max_int8_bytes=40_000, max_macs=5_000_000)
    space = DefineByRunSpace(options=SpaceOptions(), budget=budget, n_classes=10)
    s = FeasibleOptunaSearch(space=space, rejections_path=tmp_path / "r.jsonl", metric=list(OBJECTIVES),
                             mode=list(MODES), sampler=make_sampler(name, 0))
    seen = set()
    for i in range(11):
        g = Genome.from_dict(s.suggest(f"t{i}")["genome"])
        c = count_complexity(g, n_classes=10)
        assert budget.check(c) == [] and g.genome_id not in seen
        seen.add(g.genome_id)
        s.on_trial_complete(f"t{i}", {"best_val_accuracy": 0.3 + 0.05 * (i % 7), "macs": c.macs,
                                      "int8_bytes": c.int8_bytes, "final": True})
    assert len(s._ot_study.directions) == 3


def test_auto_picks_the_sampler_by_the_trial_budget_as_autosampler():
    import optuna

    from asc_search.config import RunConfig
    from asc_search.search import resolve_sampler

    assert resolve_sampler("auto", 1) == resolve_sampler("auto", 249) == "tpe"
    assert resolve_sampler("auto", 250) == resolve_sampler("auto", 5000) == "nsga2"
    assert resolve_sampler("gp", 5000) == "gp"  # a named sampler is kept at any budget
    small, large = make_sampler("auto", 0, trials=249), make_sampler("auto", 0, trials=250)
    assert isinstance(small, optuna.samplers.TPESampler) and small._constant_liar
    assert isinstance(large, optuna.samplers.NSGAIISampler) and large._population_size == 50
    assert make_sampler("nsga2", 0)._population_size == 8
    assert RunConfig(data=Path("d"), sampler="auto").sampler == "auto"
    with pytest.raises(Exception, match="--sampler must be one of .*auto"):
        RunConfig(data=Path("d"), sampler="autosampler")
