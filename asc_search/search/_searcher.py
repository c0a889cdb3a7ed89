"""Ray Tune searcher: Optuna multi-objective sampling with infeasible genomes rejected before any trial.

Ray's ``OptunaSearch`` shows the sampler only the sampled parameters, so feasibility must follow from
the genome alone: ``FeasibleOptunaSearch.suggest`` samples, counts the genome's complexity, and while the
candidate breaks the budget tells Optuna the trial as infeasible (``COMPLETE`` with its constraint values
set by ``trial.set_constraint``, accuracy 0 as a placeholder since it was never trained) and samples
again. No Ray trial is started for a rejected genome; each rejection is appended to a JSON-lines file.

A genome is trained once: when the sampler proposes a genome (same ``genome_id``: every gene, the training genes
included) that a finished trial has trained, Optuna is told that trial's objectives for the new proposal (user
attribute ``duplicate_of``) and the search samples again; when the genome is still being trained, the proposal
waits and is told the same objectives (or FAIL) when the training ends. TPE thus learns from every proposal without
a second training with the same seed, which would only give the same numbers.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import optuna
from ray.tune.search.optuna import OptunaSearch

from asc_search._errors import AscSearchError
from asc_search.constraints import Budget, count_complexity
from asc_search.search_spaces import Genome, SpaceOptions, genome_from_params, sample_genome

log = logging.getLogger(__name__)

OBJECTIVES = ("best_val_accuracy", "macs", "int8_bytes")
MODES = ("max", "min", "min")


class DefineByRunSpace:
    """Picklable define-by-run space: samples a genome and records the budget's constraint values.

    Args:
        options: Gene choices.
        budget: Device budget.
        n_classes: Output classes.
    """

    def __init__(self, *, options: SpaceOptions, budget: Budget, n_classes: int) -> None:
        self.options, self.budget, self.n_classes = options, budget, n_classes

    def __call__(self, trial) -> None:
        """Sample the genes on ``trial`` and set its constraints; returns no constants."""
        genome = sample_genome(trial, self.options)
        c = count_complexity(genome, n_classes=self.n_classes)
        for key, value in self.budget.violations(c).items():
            trial.set_constraint(key, value)
        return None


class FeasibleOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that never hands Ray an infeasible genome.

    Args:
        space: The define-by-run space.
        rejections_path: JSON-lines file every rejection is appended to.
        max_consecutive_rejections: Give up (an error naming the budget) after this many rejections in a row.
        **kwargs: Passed to ``OptunaSearch`` (``metric``, ``mode``, ``sampler``, ``storage`` ...).
    """

    def __init__(self, *, space: DefineByRunSpace, rejections_path: str | Path,
                 max_consecutive_rejections: int = 2000, **kwargs) -> None:
        super().__init__(space=space, **kwargs)
        self._rejections_path = str(rejections_path)
        self._max_rejections = max_consecutive_rejections
        self.rejected = 0
        self.suggested = 0
        self.duplicates = 0
        self._trained: dict[str, list[float]] = {}  # genome_id -> objectives of a finished training
        self._training: dict[str, str] = {}  # Ray trial id -> genome_id, while it trains
        self._waiting: dict[str, list] = {}  # genome_id -> Optuna trials proposing it again while it trains

    def suggest(self, trial_id: str) -> dict | None:
        """Sample until a feasible genome comes out; tell Optuna each infeasible one.

        Returns:
            ``{"genome": ..., "params": ..., "index": n}`` for the n-th feasible candidate (1-based), or what
            ``OptunaSearch.suggest`` returned when it had no parameters.
        """
        for _ in range(self._max_rejections):
            params = super().suggest(trial_id)
            if not isinstance(params, dict):
                return params
            space: DefineByRunSpace = self._space
            genome = genome_from_params(params)
            c = count_complexity(genome, n_classes=space.n_classes)
            reasons = space.budget.check(c)
            if not reasons:
                gid = genome.genome_id
                if gid not in self._trained and gid not in self._training.values():
                    self.suggested += 1
                    self._training[trial_id] = gid
                    return {"genome": genome.to_dict(), "params": params, "index": self.suggested}
                self._reuse(trial_id, gid, genome)
                continue
            ot_trial = self._ot_trials.pop(trial_id)
            ot_trial.set_user_attr("rejected", "; ".join(reasons))
            self._ot_study.tell(ot_trial, [0.0, float(c.macs), float(c.int8_bytes)],
                                state=optuna.trial.TrialState.COMPLETE)
            self.rejected += 1
            self._record_rejection(genome, c.to_dict(), reasons, ot_trial.number)
        raise AscSearchError(
            f"{self._max_rejections} candidates in a row break the budget {space.budget.name!r} or repeat a genome "
            f"already trained ({self.duplicates} repeats so far): the space has (almost) no feasible genome left; "
            "loosen the budget, widen the space or ask for fewer --trials"
        )

    def _reuse(self, trial_id: str, gid: str, genome: Genome) -> None:
        """The proposal of ``trial_id`` repeats genome ``gid``: tell it the trained result, or queue it."""
        ot_trial = self._ot_trials.pop(trial_id)
        ot_trial.set_user_attr("duplicate_of", gid)
        self.duplicates += 1
        if gid in self._trained:
            self._ot_study.tell(ot_trial, self._trained[gid], state=optuna.trial.TrialState.COMPLETE)
            log.info("already trained, its result reused: %s", genome.summary())
        else:
            self._waiting.setdefault(gid, []).append(ot_trial)
            log.info("being trained, its result will be reused: %s", genome.summary())

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Tell Optuna the trial's objectives; a trial that reported ``failed`` (or errored) is told as FAIL.

        A trial cut before its final report (a MO-ASHA rung stopped it, or the time budget ran out) is told as
        PRUNED, without values: its low-fidelity accuracy is not a final one. Optuna's TPE puts pruned trials
        among the worse ones of a split (below every completed trial), so the sampler learns that the region
        lost at a rung without reading the rung's figure as the trial's result.
        """
        if result and result.get("failed"):
            result, error = None, True
        cut = bool(result) and not error and not result.get("final")
        super().on_trial_complete(trial_id, result=None if cut else result, error=error)
        gid = self._training.pop(trial_id, None)
        if gid is None:
            return
        values = [result.get(m) for m in OBJECTIVES] if result and not error and result.get("final") else None
        if values is not None and all(v is not None for v in values):
            self._trained[gid] = [float(v) for v in values]
        for ot_trial in self._waiting.pop(gid, []):  # proposals of the same genome made while it trained
            if gid in self._trained:
                self._ot_study.tell(ot_trial, self._trained[gid], state=optuna.trial.TrialState.COMPLETE)
            else:
                self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)

    def restore(self, checkpoint_path: str) -> None:
        """Restore the searcher's state (``Tuner.restore``), then mark as FAIL the Optuna trials left RUNNING by
        the crash that the restored state does not know (sampled after its last save; Ray will not run them).

        The sampler keeps its whole history: the study lives in the run's SQLite storage, which holds every
        trial told before the crash, also those told after the last save of this state.
        """
        super().restore(checkpoint_path)
        for attr, empty in (("duplicates", 0), ("_trained", {}), ("_training", {}), ("_waiting", {})):
            if not hasattr(self, attr):  # a state saved before the repeat bookkeeping existed
                setattr(self, attr, empty)
        known = {t.number for t in self._ot_trials.values()}
        known |= {t.number for waiting in self._waiting.values() for t in waiting}
        stale = [t for t in self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                 if t.number not in known]
        for t in stale:
            self._ot_study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        if stale:
            log.info("resume: %d Optuna trial(s) sampled after the last saved state marked FAIL", len(stale))

    def _record_rejection(self, genome: Genome, complexity: dict, reasons: list[str], number: int) -> None:
        row = {"trial_id": f"rejected_{number:05d}", "status": "rejected", "optuna_number": number,
               "reasons": reasons, "genome": genome.to_dict(), "genome_id": genome.genome_id,
               "complexity": complexity, "time": time.time()}
        with open(self._rejections_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
        log.info("rejected before training: %s (%s)", genome.summary(), "; ".join(reasons))
