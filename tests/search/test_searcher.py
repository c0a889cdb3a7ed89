import json

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
        s.on_trial_complete(f"t{i}", {"best_val_accuracy": 0.5, "macs": c.macs, "int8_bytes": c.int8_bytes})
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert s.rejected == len(rows) > 0
    assert all(r["status"] == "rejected" and r["reasons"] for r in rows)
    study = s._ot_study
    rejected = [t for t in study.trials if "rejected" in t.user_attrs]
    assert len(rejected) == len(rows)
    assert all(max(t.constraints.values()) > 0 for t in rejected)  # told as infeasible
    accepted = [t for t in study.trials if "rejected" not in t.user_attrs]
    assert len(accepted) == 12 and all(max(t.constraints.values()) <= 0 for t in accepted)
