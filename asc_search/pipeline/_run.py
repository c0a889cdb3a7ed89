"""One search run end to end: prepare (budget, space, data) -> the Ray Tune phase -> ensemble -> Pareto front
-> INT8 export -> report; and resuming an interrupted run."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import ray
import yaml
from ray import tune

from asc_search._errors import UserInputError
from asc_search._io import write_json, write_text
from asc_search._pareto import mark_front
from asc_search.config import RunConfig
from asc_search.constraints import Budget
from asc_search.data import DecodedDataset
from asc_search.deploy import export_and_validate, export_ensemble, export_front, model_to_export
from asc_search.frontends import FeatureCache
from asc_search.pipeline._prepare import (
    DataPlan,
    fit_options_to_data,
    plan_data,
    prepare_data,
    resolve_budget,
    space_options,
)
from asc_search.report import report_run
from asc_search.rundir import (
    CONFIG_FILE,
    DATA_REPORT_FILE,
    ENSEMBLE_ID,
    TRIALS_FILE,
    TUNE_DIR,
    VAL_PROBS_FILE,
    VAL_PROBS_INT8_FILE,
    VALIDATION_FILE,
    LoadedRun,
    blank_row,
    cache_dir,
    check_new_run_dir,
    model_dir,
    read_run_config,
    run_cache_dir,
    write_trials,
)
from asc_search.search import (
    MODES,
    OBJECTIVES,
    SearchProgress,
    alive_nodes,
    check_storage_reachable,
    nodes_seeing,
    refit_checkpoint,
    run_tune,
    start_ray,
    trial_settings,
)
from asc_search.trainers import (
    EnsembleSelection,
    ensemble_candidates_from_rows,
    select_ensemble,
    training_device,
)

log = logging.getLogger(__name__)


def run_search(config: RunConfig, *, on_progress: Callable[[str], None] | None = None,
               on_state: Callable[[SearchProgress], None] | None = None) -> LoadedRun:
    """Run a whole search and write the run directory of DESIGN.md.

    Args:
        config: The run configuration.
        on_progress: Called with short status lines (the CLI prints them).
        on_state: Called with the live ``PreparationProgress`` while the data is prepared, then ``SearchProgress``
            after each trial starts or ends.

    Returns:
        The run as ``asc_search.rundir.LoadedRun``: trials, Pareto front, exported models, data summary.

    Raises:
        UserInputError: Bad data or budget.
        AscSearchError: The search could not run (e.g. no feasible genome in the space).
    """
    say = on_progress or (lambda msg: log.info("%s", msg))
    budget = resolve_budget(config)
    run_dir = check_new_run_dir(config.out)
    options = space_options(config)
    plan = plan_data(config)
    started = start_ray(config)  # the data is prepared on the cluster's CPUs (Ray Data), then searched there
    try:
        cache = _shared_folders(run_dir, config)
        data_by_rate, data_report = prepare_data(plan, cache, say, on_state, pin_node=_decoding_node(plan, say))
        options = fit_options_to_data(options, config, data_by_rate, data_report)
        data = next(iter(data_by_rate.values()))
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / CONFIG_FILE, yaml.safe_dump({
            "run": config.to_dict(), "budget": budget.__dict__, "sample_rates_hz": list(options.sample_rates_hz),
            "classes": list(data.class_names), "search_space": options.to_dict(),
            "objectives": dict(zip(OBJECTIVES, MODES, strict=True)),
        }, sort_keys=False))
        write_json(run_dir / DATA_REPORT_FILE, data_report)
        say(f"data: {len(data.waveforms)} clips, {data.n_classes} classes, {sorted(data_by_rate)} Hz, "
            f"{len(data.skipped)} skipped file(s), prepared in {_preparation_line(data_report)}; "
            f"budget {budget.describe()}")
        rows = run_tune(config, options, budget, data_by_rate, run_dir, say, on_state)
    finally:
        if started:
            ray.shutdown()
    return _finish(config, run_dir, rows, data_by_rate, budget, say)


def _shared_folders(run_dir: Path, config: RunConfig) -> Path:
    """Create the run directory and the prepared-data folder and check that every node sees both; return the
    latter.

    Raises:
        UserInputError: A node of the cluster does not see one of them.
    """
    cache = cache_dir(run_dir, config.cache)
    run_dir.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    nodes = alive_nodes()
    check_storage_reachable(run_dir, nodes, flag="--out")
    if config.cache:
        check_storage_reachable(cache, nodes, flag="--cache")
    return cache


def _decoding_node(plan: DataPlan, say: Callable[[str], None]) -> str | None:
    """None when every node sees the audio (the preparation runs on all of them); else the driver's node, the one
    that read the manifest (the audio may live on the head only; the trials read the store, not the audio)."""
    nodes = alive_nodes()
    if len(nodes) < 2 or not plan.manifest.clips:
        return None
    seeing = nodes_seeing(plan.manifest.clips[0].path, nodes)
    if len(seeing) == len(nodes):
        return None
    say(f"the audio is on {len(seeing)} of {len(nodes)} nodes: it is decoded on this node only")
    return ray.get_runtime_context().get_node_id()


def _preparation_line(data_report: dict) -> str:
    """``12.3 s (2 stores: 1 reused, ...)`` for the data line."""
    prep = data_report["preparation"]
    stores = prep["stores"]
    reused = sum(s["reused"] for s in stores)
    return (f"{prep['seconds']:.1f} s ({len(stores)} store(s) in {prep['cache']}"
            + (f", {reused} reused" if reused else "") + ")")


def resume_search(run_dir: str | Path, *, address: str | None = None, cpus_per_trial: float | None = None,
                  gpus_per_trial: float | None = None, on_progress: Callable[[str], None] | None = None,
                  on_state: Callable[[SearchProgress], None] | None = None) -> LoadedRun:
    """Continue an interrupted search (driver killed, machine or head rebooted) from its run directory.

    ``Tuner.restore`` brings back Ray Tune's trial states and the searcher's saved state: finished trials are
    kept and not run again (a trial whose final checkpoint was written just before the crash reports that
    checkpoint instead of training again), unfinished ones are started again, and the Optuna sampler goes on
    from the study in ``optuna.db``, which holds every candidate told before the crash. The run then
    finishes its trial count, and the Pareto front, export and report cover the trials of both sessions.

    Args:
        run_dir: The run directory (the ``--out`` of the interrupted search).
        address: Ray cluster to resume on (``auto`` or ``HOST:PORT``); None: the run's own setting.
        cpus_per_trial: CPUs per trial; None: the run's own setting.
        gpus_per_trial: GPUs per trial (may be fractional); None: the run's own setting.
        on_progress: Called with short status lines.
        on_state: Called with the live ``SearchProgress``.

    Returns:
        The run as ``asc_search.rundir.LoadedRun``.

    Raises:
        UserInputError: ``run_dir`` is not a run, has finished already, or has no Ray Tune state to restore.
    """
    say = on_progress or (lambda msg: log.info("%s", msg))
    run_dir = Path(run_dir).expanduser().resolve()
    saved = _resumable_config(run_dir)
    overrides = {"address": address, "cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial}
    config = replace(RunConfig.from_dict(saved["run"]), out=run_dir,
                     **{k: v for k, v in overrides.items() if v is not None})
    budget = Budget(**saved["budget"])
    plan = plan_data(config)
    started = start_ray(config)
    try:
        data_by_rate, _ = prepare_data(plan, _shared_folders(run_dir, config), say, on_state,
                                       pin_node=_decoding_node(plan, say))
        data = next(iter(data_by_rate.values()))
        if list(data.class_names) != list(saved.get("classes", data.class_names)):
            raise UserInputError(f"the data at {config.data} now has classes {list(data.class_names)}, the run was "
                                 f"started with {saved['classes']}; resume on the same data")
        say(f"resuming {run_dir}: {len(data.waveforms)} clips, budget {budget.describe()}")
        rows = run_tune(config, None, budget, data_by_rate, run_dir, say, on_state, resume=True)
    finally:
        if started:
            ray.shutdown()
    return _finish(config, run_dir, rows, data_by_rate, budget, say)


def _resumable_config(run_dir: Path) -> dict:
    """``config.yaml`` of a run that can be resumed.

    Raises:
        UserInputError: Not a run, finished already, or no Ray Tune state to restore.
    """
    if not (run_dir / CONFIG_FILE).is_file():
        raise UserInputError(f"{run_dir} is not an asc-search run directory (no {CONFIG_FILE}); pass the --out "
                             "folder of the interrupted search")
    if (run_dir / TRIALS_FILE).exists():
        raise UserInputError(f"{run_dir} has finished ({TRIALS_FILE} exists); nothing to resume: look at it with "
                             f"asc-search report {run_dir}")
    if not tune.Tuner.can_restore(str(run_dir / TUNE_DIR)):
        raise UserInputError(f"{run_dir} has no Ray Tune state to resume ({TUNE_DIR}/ is missing or empty: the "
                             "search stopped before its first trial); start a new search with another --out")
    return read_run_config(run_dir)


def _finish(config: RunConfig, run_dir: Path, rows: list[dict], data_by_rate: dict[int, DecodedDataset],
            budget: Budget, say: Callable[[str], None]) -> LoadedRun:
    """After the search: the ensemble, the Pareto front, ``trials.csv``, the exports and the report."""
    selection = _select_ensemble(rows, data_by_rate, budget, say) if config.ensemble else None
    if selection is not None:
        rows.append(_ensemble_row(selection))
    front = mark_front(rows)
    write_trials(run_dir, rows)
    for r in rows:
        if r["status"] == "failed":
            say(f"failed trial {r['trial_id']}: {r['error'] or 'no reason recorded'}")
    singles = [r for r in front if r["trial_id"] != ENSEMBLE_ID]
    refit = _refit(config, run_dir, data_by_rate, say) if config.refit else None
    export_front(run_dir, singles, data_by_rate, budget, max_export=config.max_export, say=say, refit=refit)
    if selection is not None and any(r["trial_id"] == ENSEMBLE_ID for r in front):
        _export_ensemble(run_dir, selection, rows, data_by_rate, budget, say, refit)
    return report_run(run_dir)


def _refit(config: RunConfig, run_dir: Path, data_by_rate: dict[int, DecodedDataset],
           say: Callable[[str], None]) -> Callable[[Path, Path], Path]:
    """``refit(search_model_pt, out)``: train an exported model again on train + validation for its selected epochs
    (``asc_search.search.refit_checkpoint``), in this process, with the run's trial settings."""
    # the search is over: the refit may use every CPU of this machine, and a GPU where the trials had one
    settings = replace(trial_settings(config, run_dir), threads=max(1, os.cpu_count() or 1))
    cache = FeatureCache(run_cache_dir(run_dir), run=str(run_dir))
    device = training_device([0] if config.gpus_per_trial > 0 else [])

    def refit(search_pt: Path, out: Path) -> Path:
        done = refit_checkpoint(search_pt, data_by_rate, cache=cache, settings=settings, out=out, device=device)
        say(f"refit {out.parent.name} on train + validation: {_epochs_line(done)}")
        return done

    return refit


def _epochs_line(model_pt: Path) -> str:
    from asc_search.rundir import load_checkpoint

    r = load_checkpoint(model_pt).metrics.get("refit") or {}
    return (", ".join(f"{stage} {n} epochs" for stage, n in (r.get("epochs") or {}).items())
            + f", {r.get('train_clips')} clips, {r.get('seconds')} s")


def _select_ensemble(rows: list[dict], data_by_rate: dict[int, DecodedDataset], budget: Budget,
                     say: Callable[[str], None]) -> EnsembleSelection | None:
    """Greedy ensemble selection over the completed trials under the budget; None unless it picks 2+ members."""
    data = next(iter(data_by_rate.values()))
    val = np.flatnonzero(data.is_validation)
    candidates = ensemble_candidates_from_rows(rows, data.n_classes, probs_file=VAL_PROBS_FILE)
    if len(candidates) < 2:
        return None
    sel = select_ensemble(candidates, data.labels[val], budget, class_names=list(data.class_names),
                          groups=[data.devices[i] for i in val] if any(data.devices) else None)
    if not sel.is_ensemble:
        say(f"ensemble: no ensemble beats the best single model under {budget.name} ({sel.reason})")
        return None
    best = sel.best_single or {}
    say(f"ensemble: {' + '.join(sel.members)} ({sel.fusion} fusion), validation accuracy "
        f"{sel.val_metrics['accuracy']:.3f} vs {best.get('val_metrics', {}).get('accuracy', float('nan')):.3f} for "
        f"the best single model; {sel.int8_bytes:,} INT8 bytes, {sel.macs:,} MACs in all")
    return sel


def _ensemble_row(sel: EnsembleSelection) -> dict:
    """The ensemble as a ``trials.csv`` row (``EnsembleSelection.as_row``): a Pareto candidate with the members'
    summed complexity; the columns it has no value for are empty."""
    return {**blank_row(), **sel.as_row(ENSEMBLE_ID), "on_front": False, "finished_at": time.time(),
            "_checkpoint": None}


def _export_ensemble(run_dir: Path, sel: EnsembleSelection, rows: list[dict], data_by_rate: dict[int, DecodedDataset],
                     budget: Budget, say: Callable[[str], None], refit: Callable[[Path, Path], Path] | None) -> None:
    """Export the members not yet exported, then the ensemble (``models/ensemble/``); a failure is recorded."""
    by_id = {r["trial_id"]: r for r in rows}
    cache = FeatureCache(run_cache_dir(run_dir), run=str(run_dir))
    dest = model_dir(run_dir, ENSEMBLE_ID)
    try:
        for member in sel.members:
            if not (model_dir(run_dir, member) / VAL_PROBS_INT8_FILE).exists():
                say(f"export ensemble member {member} ({by_id[member]['summary']})")
                model_pt, search_pt = model_to_export(by_id[member], model_dir(run_dir, member), refit)
                export_and_validate(model_pt, data_by_rate, cache, budget, search_model_pt=search_pt)
        data = next(iter(data_by_rate.values()))
        val = np.flatnonzero(data.is_validation)
        trained_on = data.is_train | data.is_validation if refit is not None else data.is_train
        v = export_ensemble(run_dir, sel, budget, y_val=data.labels[val], class_names=list(data.class_names),
                            test_devices=[data.devices[int(i)] for i in np.flatnonzero(data.is_test)],
                            seen_devices={data.devices[int(i)] for i in np.flatnonzero(trained_on)})
        say(f"ensemble INT8 accuracy {v['int8']['accuracy']:.3f}, deployable {v['deployable']}")
    except Exception as exc:  # noqa: BLE001 - the single models and the report must not be lost
        log.error("export of the ensemble failed: %s: %s", type(exc).__name__, exc)
        dest.mkdir(parents=True, exist_ok=True)
        write_json(dest / VALIDATION_FILE, {"trial_id": ENSEMBLE_ID, "error": f"{type(exc).__name__}: {exc}",
                                            "deployable": False, "members": list(sel.members)})
