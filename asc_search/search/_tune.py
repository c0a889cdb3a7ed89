"""The Ray Tune phase of a search: the Optuna sampler, the feasibility-filtering searcher, the Tuner (new or
restored) and its rows; nothing before it (data, space) and nothing after it (ensemble, export, report)."""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
import ray
from ray import tune
from ray.tune.search import ConcurrencyLimiter

from asc_search._errors import UserInputError
from asc_search.config import RunConfig
from asc_search.constraints import Budget, count_complexity
from asc_search.data import DecodedDataset, fidelity_fractions
from asc_search.rundir import (
    OPTUNA_DB,
    REJECTED_FILE,
    TUNE_DIR,
    cache_dir,
    rejected_rows,
    row_from_result,
    rows_from_tune,
    trial_dirname,
)
from asc_search.search._cluster import concurrency, record_cluster, record_search_time, start_ray
from asc_search.search._progress import Listener, ProgressCallback, SearchProgress, listening
from asc_search.search._scheduler import ParetoASHAScheduler
from asc_search.search._searcher import MODES, OBJECTIVES, DefineByRunSpace, FeasibleOptunaSearch
from asc_search.search._trainable import TrialSettings, parse_faults, train_candidate
from asc_search.search_spaces import SpaceOptions, smallest_genomes

log = logging.getLogger(__name__)

NODE_FAILURE_RETRIES = 2
"""Times Ray restarts a trial whose worker process or node died (the trial's own errors are not retried)."""


AUTO_NSGA2_MIN_TRIALS = 250
"""``--sampler auto`` takes NSGA-II from this trial budget on, TPE below it: the multi-objective budget threshold of
OptunaHub's AutoSampler (``_MAX_BUDGET_FOR_MULTI_GP_AND_TPE``)."""


def resolve_sampler(name: str, trials: int) -> str:
    """The sampler ``--sampler name`` runs for a search of ``trials`` trials: ``name`` itself, or for ``auto`` the
    one OptunaHub's AutoSampler would pick by the trial budget for a multi-objective study over a categorical
    space: ``tpe`` (multivariate, constant liar) below ``AUTO_NSGA2_MIN_TRIALS`` trials, ``nsga2`` (population 50,
    Optuna's default) from there on.

    AutoSampler itself cannot be loaded here (``optunahub.load_module`` downloads it from GitHub at run time, which
    a cluster node or an air-gapped workstation may not reach), and it decides per trial from the completed
    trials; this decides once, from ``--trials``, so that a resumed run keeps its sampler. Unlike AutoSampler, it
    moves to NSGA-II at large budgets although the space has conditional genes (the blocks of a shorter network
    are absent): NSGA-II samples those at random, as GPSampler does.
    """
    if name != "auto":
        return name
    return "tpe" if trials < AUTO_NSGA2_MIN_TRIALS else "nsga2"


def make_sampler(name: str, seed: int, *, trials: int = 0) -> optuna.samplers.BaseSampler:
    """The Optuna sampler ``--sampler name`` names, seeded with ``seed``: ``tpe`` (multivariate, grouped, constant
    liar for parallel trials), ``nsga2`` (population 8), ``gp`` (``GPSampler``: Gaussian-process Bayesian optimisation,
    multi-objective and constrained by the genome's budget constraints as TPE; the genes of a dynamic part of the
    space that not every trial has are sampled at random), ``random``, or ``auto`` (``resolve_sampler`` with the
    search's ``trials``)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if name == "auto":
        name = resolve_sampler(name, trials)
        if name == "nsga2":  # 250 trials or more: Optuna's default population
            return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=8, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=8,
                                      constant_liar=True)


def check_space_has_feasible(space: DefineByRunSpace) -> None:
    """Fail fast when even the smallest networks of the space break the budget (every front-end choice).

    Raises:
        UserInputError: Every smallest network breaks the budget; the message says which limits.
    """
    reasons: list[str] = []
    for smallest in smallest_genomes(space.options):
        reasons = space.budget.check(count_complexity(smallest, n_classes=space.n_classes))
        if not reasons:
            return
    if reasons:
        raise UserInputError(
            f"budget {space.budget.name!r} rejects even the smallest network of the space ({'; '.join(reasons)}); "
            "raise --max-int8-bytes / --max-macs"
        )


def run_tune(config: RunConfig, options: SpaceOptions | None, budget: Budget,
             data_by_rate: dict[int, DecodedDataset], run_dir: Path, say: Callable[[str], None],
             on_state: Callable[[SearchProgress], None] | None = None, *, resume: bool = False) -> list[dict]:
    """Run (or, with ``resume``, restore and finish) the Tune search of a run; return its ``trials.csv`` rows,
    the trained trials' and the rejected candidates'.

    Args:
        config: The run configuration.
        options: The search space (None when resuming: the restored searcher has it).
        budget: The run's budget (candidates over it are rejected before training).
        data_by_rate: Decoded data by sample rate (Hz).
        run_dir: The run directory.
        say: Called with status lines.
        on_state: Called with the live ``SearchProgress``.
        resume: Restore the Tuner in ``run_dir/tune`` instead of starting one.

    Raises:
        UserInputError: The space has no feasible genome, or the cluster cannot run a trial.
    """
    data = next(iter(data_by_rate.values()))
    rejections = run_dir / REJECTED_FILE
    searcher = None if resume else _searcher(config, options, budget, data.n_classes, run_dir)
    progress = SearchProgress(total=config.trials, time_budget_s=config.time_budget_s, max_macs=budget.max_macs,
                              max_int8_bytes=budget.max_int8_bytes)
    if resume:
        count_finished(progress, run_dir, data.n_classes)
    started = start_ray(config)
    try:
        nodes = record_cluster(run_dir, config, resumed=resume)
        concurrent = concurrency(config)
        trainable = _trainable(config, data_by_rate, run_dir)
        if resume:
            tuner = tune.Tuner.restore(str(run_dir / TUNE_DIR), trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
            say(f"search resumed: {progress.done} trial(s) finished before, {config.trials} in all, "
                f"{len(nodes)} node(s)")
        else:
            tuner = _new_tuner(config, searcher, trainable, run_dir, concurrent, len(nodes), say)
        t0 = time.time()
        with listening(Listener(say=say, on_state=on_state, progress=progress, searcher=searcher,
                                rejections=rejections)):
            grid = tuner.fit()
        wall_s = time.time() - t0
        record_search_time(run_dir, started_at=t0, wall_s=wall_s, trial_slots=concurrent)
        say(f"search finished in {wall_s:.1f} s")
        rows = [row_from_result(r, data.n_classes) for r in grid]
        cut = ParetoASHAScheduler(run_dir, max_epochs=config.epochs).stopped() if config.scheduler == "mo-asha" else {}
        for r in rows:
            if r["status"] == "stopped" and r["trial_id"] in cut and not r.get("stop_reason"):
                r["stop_reason"] = cut[r["trial_id"]]
    finally:
        if started:
            ray.shutdown()
    return rows + rejected_rows(rejections, data.n_classes)


def _searcher(config: RunConfig, options: SpaceOptions, budget: Budget, n_classes: int,
              run_dir: Path) -> FeasibleOptunaSearch:
    """The run's searcher over a space with at least one feasible genome; its study lives in ``optuna.db``
    (optuna-dashboard opens it)."""
    space = DefineByRunSpace(options=options, budget=budget, n_classes=n_classes)
    check_space_has_feasible(space)
    storage = optuna.storages.RDBStorage(f"sqlite:///{run_dir / OPTUNA_DB}")
    return FeasibleOptunaSearch(space=space, rejections_path=run_dir / REJECTED_FILE, metric=list(OBJECTIVES),
                                mode=list(MODES),
                                sampler=make_sampler(config.sampler, config.seed, trials=config.trials),
                                storage=storage, study_name="asc-search")


def data_schedule(config: RunConfig) -> tuple[tuple[int, float], ...]:
    """The data fidelity of ``--fidelity epochs+data``: ``((rung epoch, fraction of the training clips), ...)``,
    one entry per MO-ASHA rung (``asc_search.data.fidelity_fractions``); empty for ``--fidelity epochs``."""
    if config.scheduler != "mo-asha" or config.fidelity != "epochs+data":
        return ()
    sched = ParetoASHAScheduler(Path("."), max_epochs=config.epochs)
    return tuple(zip(sched.milestones, fidelity_fractions(sched.milestones, sched.reduction_factor), strict=True))


def trial_settings(config: RunConfig, run_dir: Path) -> TrialSettings:
    """The ``TrialSettings`` every trial of the run at ``run_dir`` trains with (also the refit's)."""
    return TrialSettings(cache_dir=str(cache_dir(run_dir, config.cache)), epochs=config.epochs,
                         data_schedule=data_schedule(config),
                         patience=config.patience, batch_size=config.batch_size, seed=config.seed,
                         threads=max(1, int(config.cpus_per_trial)), tune_dir=str(run_dir / TUNE_DIR),
                         faults=parse_faults(os.environ.get("ASC_SEARCH_INJECT_FAULTS", "")),
                         hold_file=os.environ.get("ASC_SEARCH_HOLD_FILE", ""))


def _trainable(config: RunConfig, data_by_rate: dict[int, DecodedDataset], run_dir: Path):
    """``train_candidate`` with the run's settings and resources. The datasets are store-backed (their waveforms
    memory-mapped from the prepared data folder), so ``tune.with_parameters`` carries only their store paths;
    each trial maps the store and the features it needs from disk."""
    settings = trial_settings(config, run_dir)
    resources = {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(train_candidate, data_by_rate=data_by_rate, settings=settings),
                               resources)


def _new_tuner(config: RunConfig, searcher: FeasibleOptunaSearch, trainable, run_dir: Path, concurrent: int,
               n_nodes: int, say: Callable[[str], None]) -> tune.Tuner:
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrent),
                                    num_samples=config.trials, time_budget_s=config.time_budget_s,
                                    scheduler=(ParetoASHAScheduler(run_dir, max_epochs=config.epochs)
                                               if config.scheduler == "mo-asha" else None),
                                    reuse_actors=True, trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(run_dir), verbose=0,
                                  callbacks=[ProgressCallback()],
                                  failure_config=tune.FailureConfig(max_failures=NODE_FAILURE_RETRIES),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    say(f"search: {config.trials} trials, {concurrent} at a time on {n_nodes} node(s), sampler "
        f"{config.sampler}" + (f" ({resolve_sampler(config.sampler, config.trials)} for "
                               f"{config.trials} trials)" if config.sampler == "auto" else "")
        + f", {config.epochs} epochs max" + (
            f", MO-ASHA rungs at {ParetoASHAScheduler(run_dir, max_epochs=config.epochs).milestones} epochs"
            if config.scheduler == "mo-asha" else "") + (
            ", training clips up to each rung: " + ", ".join(f"{f:.0%} to epoch {e}" for e, f in data_schedule(config))
            if data_schedule(config) else ""))
    return tuner


def count_finished(progress: SearchProgress, run_dir: Path, n_classes: int) -> None:
    """Start a resumed run's progress from the trials its first session finished."""
    for r in rows_from_tune(run_dir, n_classes):
        if r["status"] == "completed":
            progress.add(float(r["best_val_accuracy"]), int(r["macs"]), int(r["int8_bytes"]))
        elif r["status"] == "failed":
            progress.failed += 1
        elif r["status"] == "stopped":
            progress.stopped += 1
        elif r["status"] == "rejected":
            progress.rejected += 1
