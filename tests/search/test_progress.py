"""Live progress: the Tune callback holds no state and reports only to the listener bound around Tuner.fit."""

import pickle
from types import SimpleNamespace

import pytest

from asc_search.search import Listener, ProgressCallback, SearchProgress, listening


def _trial(tid, **result):
    return SimpleNamespace(trial_id=tid, last_result=result)


def _listener(tmp_path, lines, states):
    return Listener(say=lines.append, on_state=lambda p: states.append((p.running, p.done)),
                    progress=SearchProgress(total=3, time_budget_s=None, max_macs=1_000_000,
                                                            max_int8_bytes=18_000), searcher=None,
                    rejections=tmp_path / "rejected.jsonl")


def test_the_callback_reports_to_the_bound_listener_only(tmp_path):
    cb = ProgressCallback()
    lines, states = [], []
    cb.on_trial_start(0, [], _trial("t1"))  # nobody listening: nothing happens, nothing breaks
    with listening(_listener(tmp_path, lines, states)) as lis:
        cb.on_trial_start(0, [], _trial("t1"))
        cb.on_trial_complete(0, [], _trial("t1", best_val_accuracy=0.5, macs=200_000, int8_bytes=9000, final=True))
        cb.on_trial_start(0, [], _trial("t2"))
        cb.on_trial_error(0, [], _trial("t2", failed=True, error="NaN/inf loss: x"))
    assert lis.progress.done == 1 and lis.progress.failed == 1 and lis.progress.running == 0
    assert lis.progress.best_accuracy == 0.5 and lis.progress.front_size == 1
    assert lis.progress.hypervolume == pytest.approx(0.5 * (1 - 0.2) * (1 - 0.5))  # (acc, MACs, bytes)
    assert lines[0].startswith("trial 1/3 t1 done: acc 0.500, 0.20 M MACs, 9,000 B")
    assert lines[1] == "trial 2/3 t2 FAILED: NaN/inf loss: x"
    assert states == [(1, 0), (0, 1), (1, 1), (0, 1)]
    cb.on_trial_start(0, [], _trial("t3"))  # unbound again after the block
    assert lis.progress.running == 0


def test_nested_searches_each_hear_their_own_trials(tmp_path):
    cb = ProgressCallback()
    outer_lines, inner_lines = [], []
    with listening(_listener(tmp_path, outer_lines, [])) as outer:
        with listening(_listener(tmp_path, inner_lines, [])) as inner:
            cb.on_trial_complete(0, [], _trial("i", best_val_accuracy=0.4, macs=1, int8_bytes=1, final=True))
        cb.on_trial_complete(0, [], _trial("o", best_val_accuracy=0.6, macs=1, int8_bytes=1, final=True))
    assert inner.progress.done == 1 and outer.progress.done == 1
    assert inner_lines[0].startswith("trial 1/3 i done") and outer_lines[0].startswith("trial 1/3 o done")


def test_a_resumed_run_counts_rejections_from_the_file(tmp_path):
    (tmp_path / "rejected.jsonl").write_text('{"a": 1}\n{"a": 2}\n\n')
    with listening(_listener(tmp_path, [], [])) as lis:
        ProgressCallback().on_trial_start(0, [], _trial("t1"))
    assert lis.progress.rejected == 2


def test_the_callback_pickles_without_the_listener(tmp_path):
    """Ray pickles callbacks into tuner.pkl; a listener holds a terminal display and must not go with it."""
    with listening(_listener(tmp_path, [], [])):
        data = pickle.dumps(ProgressCallback())
    assert b"Listener" not in data and isinstance(pickle.loads(data), ProgressCallback)


def test_a_trial_cut_before_its_final_report_is_stopped_not_done(tmp_path):
    """A trial a scheduler's rung (or the time budget) ended reports no final result: it is counted and said as
    stopped, and its rung figure enters neither the best accuracy nor the front."""
    lines = []
    with listening(_listener(tmp_path, lines, [])) as lis:
        ProgressCallback().on_trial_complete(0, [], _trial("c", best_val_accuracy=0.9, macs=1, int8_bytes=1, epoch=2))
        ProgressCallback().on_trial_complete(0, [], _trial("f", best_val_accuracy=0.4, macs=1, int8_bytes=1,
                                                           final=True))
    assert (lis.progress.done, lis.progress.stopped, lis.progress.failed) == (1, 1, 0)
    assert lis.progress.best_accuracy == 0.4 and lis.progress.points == [(0.4, 1, 1)]
    assert lines[0].startswith("trial 1/3 c stopped at epoch 2: acc 0.900") and lines[1].startswith("trial 2/3 f done")
