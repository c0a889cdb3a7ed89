"""Live progress of a search: ``SearchProgress`` (counts, best accuracy, front size, hypervolume) and the Ray
Tune callback that keeps it, reporting to the ``Listener`` bound around ``Tuner.fit``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from ray.tune import Callback

from asc_search._pareto import hypervolume_limits, normalised_hypervolume, pareto_front
from asc_search.search._searcher import MODES, FeasibleOptunaSearch


@dataclass(kw_only=True)
class SearchProgress:
    """Live state of a search, for progress displays.

    Args:
        total: Trials the run trains.
        time_budget_s: The search's wall-clock limit (s), or None.
        max_macs: MACs limit of the budget (hypervolume reference), or None.
        max_int8_bytes: INT8-byte limit of the budget (hypervolume reference), or None.
        started_at: ``time.time()`` at the start of the search.
        done: Trials completed. running: Trials running. failed: Trials that raised. stopped: Trials ended before
            their final report (a scheduler's rung, the time budget).
        rejected: Candidates rejected before training.
        best_accuracy: Best validation accuracy so far.
        front_size: Members of the (accuracy, MACs, INT8 bytes) Pareto front so far.
        hypervolume: Exact normalised (accuracy, MACs, INT8 bytes) hypervolume so far (``normalised_hypervolume``).
    """

    total: int
    time_budget_s: float | None
    max_macs: int | None
    max_int8_bytes: int | None = None
    started_at: float = field(default_factory=time.time)
    done: int = 0
    running: int = 0
    failed: int = 0
    stopped: int = 0
    rejected: int = 0
    best_accuracy: float = 0.0
    front_size: int = 0
    hypervolume: float = 0.0
    points: list[tuple[float, int, int]] = field(default_factory=list)

    @property
    def elapsed_s(self) -> float:
        """Seconds since the search started."""
        return time.time() - self.started_at

    @property
    def remaining_s(self) -> float | None:
        """Seconds left of the time budget, or None without one."""
        return None if self.time_budget_s is None else max(0.0, self.time_budget_s - self.elapsed_s)

    def add(self, accuracy: float, macs: int, int8_bytes: int) -> None:
        """Record a completed trial and update the front and the hypervolume."""
        self.done += 1
        self.best_accuracy = max(self.best_accuracy, accuracy)
        self.points.append((accuracy, macs, int8_bytes))
        self.front_size = len(pareto_front(self.points, MODES))
        max_macs, max_bytes = hypervolume_limits(self.points, self.max_macs, self.max_int8_bytes)
        self.hypervolume = normalised_hypervolume(self.points, max_macs=max_macs, max_int8_bytes=max_bytes)


@dataclass(kw_only=True)
class Listener:
    """Who hears about a running search, and its live state.

    Args:
        say: Called with one line a finished trial.
        on_state: Called with the live ``SearchProgress`` after each trial starts or ends.
        progress: The live state.
        searcher: The run's searcher (its count of rejected candidates); None on a resumed run, whose restored
            searcher is Ray's copy: the count then comes from ``rejections``.
        rejections: The run's ``rejected.jsonl``.
    """

    say: Callable[[str], None]
    on_state: Callable[[SearchProgress], None] | None
    progress: SearchProgress
    searcher: FeasibleOptunaSearch | None
    rejections: Path


_CURRENT: ContextVar[Listener | None] = ContextVar("asc_search_listener", default=None)


@contextmanager
def listening(listener: Listener) -> Iterator[Listener]:
    """Bind ``listener`` for the ``ProgressCallback`` calls made inside the block (``Tuner.fit``), then unbind
    it: two searches in one process (tests, notebooks) each hear only their own trials."""
    token = _CURRENT.set(listener)
    try:
        yield listener
    finally:
        _CURRENT.reset(token)


class ProgressCallback(Callback):
    """Ray Tune callback: keeps ``SearchProgress`` and says one line a finished trial.

    Ray pickles its callbacks with the experiment (``tuner.pkl``) and a resumed run unpickles them in a new
    process, so the callback holds no state: it reports to the ``Listener`` bound by ``listening`` around
    ``Tuner.fit`` in the process running the search (none bound: it does nothing).
    """

    @staticmethod
    def _changed(listener: Listener) -> None:
        if listener.searcher is not None:
            listener.progress.rejected = listener.searcher.rejected
        elif listener.rejections.exists():  # resumed run: the restored searcher is Ray's copy
            listener.progress.rejected = sum(1 for line in open(listener.rejections) if line.strip())
        if listener.on_state is not None:
            listener.on_state(listener.progress)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        listener = _CURRENT.get()
        if listener is not None:
            listener.progress.running += 1
            self._changed(listener)

    def _finished(self, trial, verdict: str) -> None:
        listener = _CURRENT.get()
        if listener is None:
            return
        p = listener.progress
        p.running = max(0, p.running - 1)
        r = trial.last_result or {}
        acc = r.get("best_val_accuracy")
        if r.get("failed"):
            verdict = "FAILED"
        if verdict == "done" and acc is not None and r.get("final"):
            p.add(acc, r.get("macs", 0), r.get("int8_bytes", 0))
        elif verdict == "done":  # ended before its final report: cut at a rung or by the time budget
            verdict = f"stopped at epoch {r.get('epoch', 0)}"
            p.stopped += 1
        else:
            p.failed += verdict == "FAILED"
        self._changed(listener)
        if r.get("failed") or (verdict == "FAILED" and acc is None):
            text = f"{r.get('error') or 'error (see tune/)'}"
        else:
            acc_text = f"acc {acc:.3f}" if acc is not None else "no result"
            text = (f"{acc_text}, {r.get('macs', 0) / 1e6:.2f} M MACs, {r.get('int8_bytes', 0):,} B; "
                    f"best {p.best_accuracy:.3f}; front {p.front_size}; {p.rejected} rejected before training")
        listener.say(f"trial {p.done + p.failed + p.stopped}/{p.total} {trial.trial_id} {verdict}: {text}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._finished(trial, "done")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._finished(trial, "FAILED")
