"""Multi-objective asynchronous successive halving (MO-ASHA) as a Ray Tune ``TrialScheduler``.

ASHA (Li et al., "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020) stops a trial at a rung (an
epoch milestone) unless it is among the best ``1 / reduction_factor`` of the results that rung has seen so far.
Ray's ``ASHAScheduler`` ranks by one metric. MO-ASHA (Schmucker et al., "Multi-objective Asynchronous Successive
Halving", 2021) ranks a rung's results by non-dominated sorting instead; here the objectives are the search's
three (validation accuracy max, MACs min, INT8 bytes min), the Pareto ranks come from moocore, and ties within a
rank are broken by accuracy. A trial is promoted (goes on training) when its position in that order is within
the first ``max(1, ceil(n / reduction_factor))`` of the rung's ``n`` results.

Every rung result is appended to a JSON-lines file in the run directory as it is recorded (one line, flushed), and
a scheduler that starts without them (``asc-search resume`` after the driver was killed) reads them back: no
finished rung is lost, and a restarted trial is not judged twice at a rung it passed.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import moocore
import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

log = logging.getLogger(__name__)

RUNGS_FILE = "rungs.jsonl"
"""The scheduler's state in the run directory: one line a rung result (``trial_id``, ``rung``, the objectives,
``promoted``)."""


def promotion_order(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of a rung's results, best first: by Pareto rank of (accuracy max, MACs min, INT8 bytes min), then
    by accuracy (higher first), then by position (earlier first).

    Args:
        points: ``(accuracy, macs, int8_bytes)`` per result, shape ``(n, 3)``.

    Returns:
        A permutation of ``range(n)``.
    """
    if not len(points):
        return []
    p = np.asarray(points, dtype=float)
    ranks = moocore.pareto_rank(p, maximise=[True, False, False])
    return sorted(range(len(p)), key=lambda i: (int(ranks[i]), -p[i, 0], i))


def promoted(points: Sequence[Sequence[float]], reduction_factor: float) -> set[int]:
    """The results of a rung that MO-ASHA promotes: the first ``max(1, ceil(n / reduction_factor))`` of
    ``promotion_order``.

    Args:
        points: ``(accuracy, macs, int8_bytes)`` per result.
        reduction_factor: ASHA's eta (> 1): one result in eta goes on.

    Returns:
        The promoted indices. A rung of ``n = k * eta`` results whose first Pareto layer holds ``k`` results
        promotes exactly those.
    """
    k = max(1, math.ceil(len(points) / reduction_factor))
    return set(promotion_order(points)[:k])


def rung_milestones(max_epochs: int, *, grace_epochs: int, reduction_factor: float) -> list[int]:
    """Epoch milestones ``grace, grace * eta, grace * eta^2, ...`` up to ``ceil(max_epochs / eta)`` and below
    ``max_epochs`` (the full training is not judged). A rung later than ``max_epochs / eta`` would stop trials that
    have done most of their training, saving little and losing their results: with 16 epochs and grace 5 the
    rungs are ``[5]``, not ``[5, 15]``.

    Raises:
        ValueError: ``grace_epochs < 1`` or ``reduction_factor <= 1``.
    """
    if grace_epochs < 1 or reduction_factor <= 1:
        raise ValueError(f"grace_epochs must be >= 1 and reduction_factor > 1, got {grace_epochs}, "
                         f"{reduction_factor}")
    out, m = [], float(grace_epochs)
    last = math.ceil(max_epochs / reduction_factor - 1e-9)
    while round(m) < max_epochs and round(m) <= last:
        if not out or round(m) > out[-1]:
            out.append(int(round(m)))
        m *= reduction_factor
    return out


class ParetoASHAScheduler(FIFOScheduler):
    """MO-ASHA over epochs (module docstring).

    Args:
        run_dir: The run directory (the state goes to ``run_dir/rungs.jsonl``).
        max_epochs: Most epochs of a trial (``--epochs``).
        grace_epochs: The first rung (epochs); default ``max(1, round(max_epochs / eta))``: one rung at a third of
            the training (eta 3). Measured on the learning-curve tables of esc10-dev and fsdd (BENCHMARKS.md,
            "Search quality by replay"): earlier rungs (2 of 16 epochs) judge on noise where the training set is
            small (80 clips), and gained nothing on the larger set.
        reduction_factor: eta (default 3).
        objectives: Result keys of accuracy (max), MACs (min) and INT8 bytes (min).
        epoch_key: Result key of the epochs trained so far (every stage's epochs count).

    A result with ``final`` set (the trial's last report, with its checkpoint) is never stopped.
    """

    def __init__(self, run_dir: str | Path, *, max_epochs: int, grace_epochs: int | None = None,
                 reduction_factor: float = 3.0,
                 objectives: tuple[str, str, str] = ("best_val_accuracy", "macs", "int8_bytes"),
                 epoch_key: str = "epoch") -> None:
        super().__init__()
        self.path = Path(run_dir) / RUNGS_FILE
        self.reduction_factor = float(reduction_factor)
        grace = grace_epochs or max(1, round(max_epochs / reduction_factor))
        self.milestones = rung_milestones(max_epochs, grace_epochs=grace, reduction_factor=self.reduction_factor)
        self.objectives = objectives
        self.epoch_key = epoch_key
        self._rungs: dict[int, list[dict]] | None = None  # loaded lazily: also after unpickling (Tuner.restore)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_rungs"] = None  # the file is the state
        return state

    @property
    def rungs(self) -> dict[int, list[dict]]:
        """``{milestone: [record, ...]}`` as recorded so far (read from ``rungs.jsonl`` on first use)."""
        if self._rungs is None:
            self._rungs = {m: [] for m in self.milestones}
            if self.path.is_file():
                for line in self.path.read_text(encoding="utf-8").splitlines():
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:  # a line cut off by a kill: the rung it began is not finished
                        continue
                    self._rungs.setdefault(int(rec["rung"]), []).append(rec)
        return self._rungs

    def stopped(self) -> dict[str, str]:
        """``{trial_id: reason}`` of the trials a rung stopped."""
        return {r["trial_id"]: f"mo-asha: dominated at the {r['rung']}-epoch rung"
                for recs in self.rungs.values() for r in recs if not r["promoted"]}

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        """Record the trial at each rung it reaches and stop it where the rung does not promote it."""
        if result.get("final") or result.get("failed"):
            return TrialScheduler.CONTINUE
        return self.decide(str(trial.trial_id), result)

    def decide(self, trial_id: str, result: dict) -> str:
        """``CONTINUE`` or ``STOP`` for one result of ``trial_id`` (``on_trial_result`` without Ray's objects)."""
        epoch = int(result.get(self.epoch_key) or 0)
        for m in self.milestones:
            if epoch < m:
                break
            recs = self.rungs[m]
            earlier = next((r for r in recs if r["trial_id"] == trial_id), None)
            if earlier is not None:  # judged at this rung before (a restarted trial): the same decision
                if not earlier["promoted"]:
                    return TrialScheduler.STOP
                continue
            point = [float(result[k]) for k in self.objectives]
            points = [r["point"] for r in recs] + [point]
            ok = len(points) - 1 in promoted(points, self.reduction_factor)
            rec = {"trial_id": trial_id, "rung": m, "epoch": epoch, "point": point, "promoted": ok}
            recs.append(rec)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
                f.flush()
                os.fsync(f.fileno())
            if not ok:
                log.info("mo-asha: trial %s stopped at the %d-epoch rung (%d results there)", trial_id, m,
                         len(points))
                return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        return "ParetoASHA: " + ", ".join(f"rung {m}: {len(self.rungs[m])}" for m in self.milestones)
