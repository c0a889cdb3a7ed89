from asc_search.deploy import choose_exports


def _front(n):
    return [{"trial_id": f"t{i}", "macs": 1_000_000 * (i + 1), "best_val_accuracy": 0.5 + 0.04 * i} for i in range(n)]


def test_all_members_exported_when_they_fit():
    assert [r["trial_id"] for r in choose_exports(_front(3), 8)] == ["t0", "t1", "t2"]


def test_most_accurate_and_spread_members_when_front_is_large():
    picks = choose_exports(_front(10), 3)
    ids = [r["trial_id"] for r in picks]
    assert len(ids) == 3 and "t9" in ids and "t0" in ids
    assert choose_exports(_front(10), 0) == []
