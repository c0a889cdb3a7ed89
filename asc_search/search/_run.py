"""One search run end to end: data -> Ray Tune + Optuna search -> Pareto front -> INT8 export -> report."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml
from ray.tune import Callback

from asc_search._errors import AscSearchError, UserInputError
from asc_search._io import read_jsonl, write_json, write_text
from asc_search.config import RunConfig
from asc_search.constraints import Budget, count_complexity, get_budget
from asc_search.data import DecodedDataset, decode_dataset, load_manifest, native_sample_rate_hz
from asc_search.deploy._ensemble import ENSEMBLE_DIR as ENSEMBLE_ID
from asc_search.search._pareto import hypervolume_2d, mark_front, pareto_front, sort_rows
from asc_search.search._searcher import MODES, OBJECTIVES, DefineByRunSpace, FeasibleOptunaSearch
from asc_search.search._trainable import TrialSettings, parse_faults, train_candidate
from asc_search.search_spaces import FULL_CLIP, Genome, SpaceOptions

log = logging.getLogger(__name__)

TRIAL_COLUMNS = [
    "trial_id", "status", "reasons", "genome_id", "genome", "summary", "kind", "sample_rate_hz", "n_bins", "hop_ms",
    "chunk_s", "deltas", "params",
    "int8_bytes", "macs", "best_val_accuracy", "best_val_log_loss", "best_val_uar", "best_epoch", "epochs_run",
    "stop_reason", "on_front", "node_id", "node_ip", "device", "error", "feature_cache_hit", "per_device_accuracy",
    "finished_at",
]

NODE_FAILURE_RETRIES = 2
"""Times Ray restarts a trial whose worker process or node died (the trial's own errors are not retried)."""


def resolve_budget(config: RunConfig) -> Budget:
    """The budget preset with the CLI's overrides applied."""
    budget = get_budget(config.budget)
    if config.max_int8_bytes is not None or config.max_macs is not None:
        budget = replace(
            budget, name=f"{budget.name}+custom",
            max_int8_bytes=config.max_int8_bytes if config.max_int8_bytes is not None else budget.max_int8_bytes,
            max_macs=config.max_macs if config.max_macs is not None else budget.max_macs,
        )
    return budget


def prepare_data(config: RunConfig) -> tuple[dict[int, DecodedDataset], dict]:
    """Read the manifest and decode every clip once at each sample rate the search may pick.

    Returns:
        The decoded data by sample rate (Hz) and the data report (``data_report.json``): counts, split rule,
        layout, clips the layout left out, skipped files with reasons, the rates.

    Raises:
        UserInputError: A requested rate is above the data's native rate (upsampling adds no information).
    """
    manifest = load_manifest(config.data, val_fold=config.val_fold, seed=config.seed)
    native = native_sample_rate_hz(manifest)
    students = tuple(sorted(set(config.sample_rates_hz))) or (native,)
    too_high = [r for r in students if r > native]
    if too_high:
        raise UserInputError(
            f"--sample-rates-hz {too_high} is above the data's native rate ({native} Hz); upsampling adds no "
            f"information: use rates <= {native}"
        )
    rates = students
    if "cssd" in config.kd:
        teacher = config.kd_teacher_rate_hz or native
        if teacher > native:
            raise UserInputError(f"--kd-teacher-rate-hz {teacher} is above the data's native rate ({native} Hz); "
                                 f"use a rate <= {native}")
        if teacher < max(students):
            raise UserInputError(f"--kd-teacher-rate-hz {teacher} is below the student rate {max(students)} Hz; the "
                                 "CSSD teacher must run at the student's rate or higher")
        rates = tuple(sorted({*students, teacher}))
    data_by_rate = {r: decode_dataset(manifest, sample_rate_hz=r) for r in rates}
    data = data_by_rate[rates[-1]]
    log.info("data: %d clips (%d skipped), %d classes, rates %s Hz, split: %s", len(data.waveforms),
             len(data.skipped), data.n_classes, list(rates), manifest.split_rule)
    ms = manifest.summary()
    report = {**data.summary(), "sample_rates_hz": list(students), "decoded_rates_hz": list(rates),
              "source": ms["source"],
              "layout": ms.get("layout", ""), "split_rule": manifest.split_rule,
              "left_out_clips": ms.get("left_out_clips", 0)}
    return data_by_rate, report


def _make_sampler(name: str, seed: int):
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=8,
                                      constant_liar=True)


def _start_ray(config: RunConfig) -> bool:
    """Start or join Ray; returns True when this call started it (and must shut it down).

    Joining a cluster (``--address``) uses Ray's token authentication (``RAY_AUTH_MODE=token`` unless the
    environment says otherwise): a driver whose auth mode differs from the cluster's connects, but every
    trial then dies, so the mode is set before connecting.

    Raises:
        UserInputError: No cluster at the address, or the token is missing or wrong.
    """
    import ray
    from ray.exceptions import AuthenticationError

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if config.address:
        _check_reachable(config.address)
        _token_auth_for_this_process()
        try:
            ray.init(address=config.address, log_to_driver=False)
        except ConnectionError as exc:
            raise UserInputError(
                f"--address {config.address}: no Ray cluster found there ({str(exc).splitlines()[0]}); start one "
                "(ray up ray_cluster.yaml, or ray start --head) or drop --address to run on this machine"
            ) from None
        except AuthenticationError as exc:
            raise UserInputError(
                f"--address {config.address}: token authentication failed ({str(exc).splitlines()[0]}); copy the "
                "cluster's token (ray get-auth-token, on the head) to ~/.ray/auth_token or set RAY_AUTH_TOKEN"
            ) from None
    else:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    return True


def _check_reachable(address: str) -> None:
    """Fail at once when nothing listens at ``HOST:PORT`` (``ray.init`` would retry for minutes).

    Raises:
        UserInputError: The address is malformed or nothing accepts a connection there.
    """
    if address == "auto" or address.startswith(("ray://", "local")):
        return
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserInputError(f"--address {address!r} is not auto or HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise UserInputError(
            f"--address {address}: no Ray cluster found there ({exc.strerror or exc}); start one (ray up "
            "ray_cluster.yaml, or ray start --head) or drop --address to run on this machine"
        ) from None


def _token_auth_for_this_process() -> None:
    """``RAY_AUTH_MODE=token`` unless the environment chose a mode; Ray caches its configuration when it is
    imported, so the cached copy is refreshed as ``ray start`` does for itself."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    from ray._raylet import Config

    Config.initialize("")


def _alive_nodes() -> list[dict]:
    import ray

    return [{"node_id": n["NodeID"], "ip": n["NodeManagerAddress"], "cpus": n["Resources"].get("CPU", 0.0),
             "gpus": n["Resources"].get("GPU", 0.0)} for n in ray.nodes() if n.get("Alive")]


def _record_cluster(run_dir: Path, config: RunConfig, *, resumed: bool) -> list[dict]:
    """Append this session's cluster (address, nodes, resources) to ``cluster.json``; return the nodes."""
    import ray

    nodes = _alive_nodes()
    path = run_dir / "cluster.json"
    sessions = json.loads(path.read_text()) if path.exists() else []
    sessions.append({"started_at": time.time(), "resumed": resumed, "address": config.address or "local",
                     "gcs_address": ray.get_runtime_context().gcs_address,
                     "driver_node_id": ray.get_runtime_context().get_node_id(), "nodes": nodes})
    write_json(path, sessions)
    return nodes


def _check_storage_reachable(run_dir: Path, nodes: list[dict]) -> None:
    """Every node must see the run directory: trials write their checkpoints and the feature cache there.

    Raises:
        UserInputError: A node does not see it (the run directory is not on shared storage).
    """
    if len(nodes) < 2:
        return
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    marker = run_dir / f".storage-check-{uuid.uuid4().hex}"
    marker.write_text("asc-search")
    try:
        probe = ray.remote(num_cpus=0)(os.path.exists)
        refs = {n["node_id"]: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["node_id"], soft=False))
                .remote(str(marker)) for n in nodes}
        blind = [f"{node_id[:12]} ({next(n['ip'] for n in nodes if n['node_id'] == node_id)})"
                 for node_id, seen in zip(refs, ray.get(list(refs.values()), timeout=120), strict=True) if not seen]
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise UserInputError(
            f"--out {run_dir} is not visible on node(s) {', '.join(blind)}: trials write checkpoints and the "
            "feature cache there; put the run directory on storage every node mounts (e.g. NFS)"
        )


def run_search(config: RunConfig, *, on_progress: Callable[[str], None] | None = None,
               on_state: Callable[[SearchProgress], None] | None = None):
    """Run a whole search and write the run directory of DESIGN.md.

    Args:
        config: The run configuration.
        on_progress: Called with short status lines (the CLI prints them).
        on_state: Called with the live ``SearchProgress`` after each trial starts or ends.

    Returns:
        The run as ``asc_search.report.LoadedRun``: trials, Pareto front, exported models, data summary.

    Raises:
        UserInputError: Bad data or budget.
        AscSearchError: The search could not run (e.g. no feasible genome in the space).
    """
    say = on_progress or (lambda msg: log.info("%s", msg))
    budget = resolve_budget(config)
    run_dir = Path(config.out).expanduser().resolve()
    if (run_dir / "trials.csv").exists() or (run_dir / "tune").exists():
        raise UserInputError(f"--out {run_dir} already holds a run; choose a new --out or delete it")
    options = space_options(config)
    data_by_rate, data_report = prepare_data(config)
    data = next(iter(data_by_rate.values()))
    full_s = math.ceil(max(len(w) for w in data.waveforms) / data.sample_rate_hz * 10) / 10
    students = tuple(data_report["sample_rates_hz"])
    options = replace(options, sample_rates_hz=students,
                      chunk_s=tuple(sorted({full_s if c == FULL_CLIP else c for c in options.chunk_s})),
                      kd_teacher_rate_hz=max(data_report["decoded_rates_hz"]) if "cssd" in config.kd else 0)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", yaml.safe_dump({
        "run": config.to_dict(), "budget": budget.__dict__, "sample_rates_hz": list(students),
        "classes": list(data.class_names), "search_space": options.to_dict(),
        "objectives": dict(zip(OBJECTIVES, MODES, strict=True)),
    }, sort_keys=False))
    write_json(run_dir / "data_report.json", data_report)
    say(f"data: {len(data.waveforms)} clips, {data.n_classes} classes, {sorted(data_by_rate)} Hz, "
        f"{len(data.skipped)} skipped file(s); budget {budget.describe()}")
    rows = _search(config, options, budget, data_by_rate, run_dir, say, on_state)
    return _finish(config, run_dir, rows, data_by_rate, budget, say)


def _finish(config: RunConfig, run_dir: Path, rows: list[dict], data_by_rate: dict[int, DecodedDataset],
            budget: Budget, say: Callable[[str], None]):
    selection = _select_ensemble(rows, data_by_rate, budget, say) if config.ensemble else None
    if selection is not None:
        rows.append(_ensemble_row(selection))
    front = mark_front(rows)
    _write_trials(run_dir, rows)
    failed = [r for r in rows if r["status"] == "failed"]
    for r in failed:
        say(f"failed trial {r['trial_id']}: {r['error'] or 'no reason recorded'}")
    from asc_search.deploy._bundle import export_front

    singles = [r for r in front if r["trial_id"] != ENSEMBLE_ID]
    export_front(run_dir, singles, data_by_rate, budget, max_export=config.max_export, say=say)
    if selection is not None and any(r["trial_id"] == ENSEMBLE_ID for r in front):
        _export_ensemble(run_dir, selection, rows, data_by_rate, budget, say)
    from asc_search.report import report_run

    return report_run(run_dir)


def _select_ensemble(rows: list[dict], data_by_rate: dict[int, DecodedDataset], budget: Budget,
                     say: Callable[[str], None]):
    """Greedy ensemble selection over the completed trials under the budget; None unless it picks 2+ members."""
    from asc_search.search._ensemble import ensemble_candidates_from_rows, select_ensemble

    data = next(iter(data_by_rate.values()))
    val = np.flatnonzero(data.is_validation)
    candidates = ensemble_candidates_from_rows(rows, data.n_classes)
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


def _ensemble_row(sel) -> dict:
    """The ensemble as a ``trials.csv`` row (``EnsembleSelection.as_row``): a Pareto candidate with the members'
    summed complexity; the columns it has no value for are empty."""
    return {**{k: "" for k in TRIAL_COLUMNS}, **sel.as_row(ENSEMBLE_ID), "on_front": False,
            "finished_at": time.time(), "_checkpoint": None}


def _export_ensemble(run_dir: Path, sel, rows: list[dict], data_by_rate: dict[int, DecodedDataset], budget: Budget,
                     say: Callable[[str], None]) -> None:
    """Export the members not yet exported, then the ensemble (``models/ensemble/``); a failure is recorded."""
    from asc_search.deploy._bundle import export_and_validate
    from asc_search.deploy._ensemble import export_ensemble
    from asc_search.frontends import FeatureCache

    by_id = {r["trial_id"]: r for r in rows}
    cache = FeatureCache(run_dir / "cache")
    dest = run_dir / "models" / ENSEMBLE_ID
    try:
        for member in sel.members:
            if not (run_dir / "models" / member / "val_probs_int8.npy").exists():
                say(f"export ensemble member {member} ({by_id[member]['summary']})")
                export_and_validate(copy_checkpoint(by_id[member], run_dir / "models" / member), data_by_rate,
                                    cache, budget)
        data = next(iter(data_by_rate.values()))
        val = np.flatnonzero(data.is_validation)
        v = export_ensemble(run_dir, sel, budget, y_val=data.labels[val], class_names=list(data.class_names))
        say(f"ensemble INT8 accuracy {v['int8']['accuracy']:.3f}, deployable {v['deployable']}")
    except Exception as exc:  # noqa: BLE001 - the single models and the report must not be lost
        log.error("export of the ensemble failed: %s: %s", type(exc).__name__, exc)
        dest.mkdir(parents=True, exist_ok=True)
        write_json(dest / "validation.json", {"trial_id": ENSEMBLE_ID, "error": f"{type(exc).__name__}: {exc}",
                                              "deployable": False, "members": list(sel.members)})


def resume_search(run_dir: str | Path, *, address: str | None = None, cpus_per_trial: float | None = None,
                  gpus_per_trial: float | None = None, on_progress: Callable[[str], None] | None = None,
                  on_state: Callable[[SearchProgress], None] | None = None):
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
        The run as ``asc_search.report.LoadedRun``.

    Raises:
        UserInputError: ``run_dir`` is not a run, has finished already, or has no Ray Tune state to restore.
    """
    from ray import tune

    say = on_progress or (lambda msg: log.info("%s", msg))
    run_dir = Path(run_dir).expanduser().resolve()
    if not (run_dir / "config.yaml").is_file():
        raise UserInputError(f"{run_dir} is not an asc-search run directory (no config.yaml); pass the --out "
                             "folder of the interrupted search")
    if (run_dir / "trials.csv").exists():
        raise UserInputError(f"{run_dir} has finished (trials.csv exists); nothing to resume: look at it with "
                             f"asc-search report {run_dir}")
    if not tune.Tuner.can_restore(str(run_dir / "tune")):
        raise UserInputError(f"{run_dir} has no Ray Tune state to resume (tune/ is missing or empty: the search "
                             "stopped before its first trial); start a new search with another --out")
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    config = RunConfig.from_dict(saved["run"])
    changes: dict = {"out": run_dir}
    if address is not None:
        changes["address"] = address
    if cpus_per_trial is not None:
        changes["cpus_per_trial"] = cpus_per_trial
    if gpus_per_trial is not None:
        changes["gpus_per_trial"] = gpus_per_trial
    config = replace(config, **changes)
    budget = Budget(**saved["budget"])
    data_by_rate, _ = prepare_data(config)
    data = next(iter(data_by_rate.values()))
    if list(data.class_names) != list(saved.get("classes", data.class_names)):
        raise UserInputError(f"the data at {config.data} now has classes {list(data.class_names)}, the run was "
                             f"started with {saved['classes']}; resume on the same data")
    say(f"resuming {run_dir}: {len(data.waveforms)} clips, budget {budget.describe()}")
    rows = _search(config, None, budget, data_by_rate, run_dir, say, on_state, resume=True)
    return _finish(config, run_dir, rows, data_by_rate, budget, say)


def space_options(config: RunConfig) -> SpaceOptions:
    """The search space of a run: the defaults with the run's front-end, rate, chunk and delta choices and its
    training-gene choices (augmentation, schedule, distillation, pruning, QAT). The CSSD teacher's rate is the
    configured one (0: the native rate, which ``run_search`` fills in once the data is read)."""
    return SpaceOptions(frontends=tuple(config.frontends), sample_rates_hz=tuple(config.sample_rates_hz) or (1,),
                        chunk_s=tuple(config.chunks_s), deltas=tuple(config.deltas),
                        augmentations=tuple(config.augment), sapaugment=(False, True) if config.sapaugment else (False,),
                        weight_decays=tuple(config.weight_decays), warmup_epochs=tuple(config.warmup_epochs),
                        epochs=tuple(config.epoch_choices) or (0,), batch_sizes=tuple(config.batch_size_choices) or (0,),
                        kd_teachers=tuple(config.kd), kd_alphas=tuple(config.kd_alphas),
                        kd_temperatures=tuple(config.kd_temperatures),
                        kd_teacher_rate_hz=config.kd_teacher_rate_hz if "cssd" in config.kd else 0,
                        prune_ratios=tuple(config.prune_ratios), prune_criteria=tuple(config.prune_criteria),
                        qat=config.qat_choices)


def _search(config: RunConfig, options: SpaceOptions | None, budget: Budget,
            data_by_rate: dict[int, DecodedDataset], run_dir: Path, say: Callable[[str], None],
            on_state: Callable[[SearchProgress], None] | None = None, *, resume: bool = False) -> list[dict]:
    import ray
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    data = next(iter(data_by_rate.values()))
    rejections = run_dir / "rejected.jsonl"
    searcher = None
    if not resume:
        space = DefineByRunSpace(options=options, budget=budget, n_classes=data.n_classes)
        _check_space_has_feasible(space)
        import optuna

        storage = optuna.storages.RDBStorage(f"sqlite:///{run_dir / 'optuna.db'}")  # optuna-dashboard opens it
        searcher = FeasibleOptunaSearch(space=space, rejections_path=rejections, metric=list(OBJECTIVES),
                                        mode=list(MODES), sampler=_make_sampler(config.sampler, config.seed),
                                        storage=storage, study_name="asc-search")
    progress = SearchProgress(total=config.trials, time_budget_s=config.time_budget_s, max_macs=budget.max_macs)
    if resume:
        _count_finished(progress, run_dir, data.n_classes)
    started = _start_ray(config)
    global _LISTENER
    try:
        nodes = _record_cluster(run_dir, config, resumed=resume)
        _check_storage_reachable(run_dir, nodes)
        concurrent = _concurrency(config)
        faults = parse_faults(os.environ.get("ASC_SEARCH_INJECT_FAULTS", ""))
        settings = TrialSettings(cache_dir=str(run_dir / "cache"), epochs=config.epochs, patience=config.patience,
                                 batch_size=config.batch_size, seed=config.seed,
                                 threads=max(1, int(config.cpus_per_trial)), tune_dir=str(run_dir / "tune"),
                                 faults=faults)
        resources = {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}
        # tune.with_parameters puts the decoded data into Ray's object store once; every worker on a node
        # maps the same copy, no trial reads the dataset again.
        trainable = tune.with_resources(tune.with_parameters(train_candidate, data_by_rate=data_by_rate,
                                                             settings=settings), resources)
        _LISTENER = _Listener(say=say, on_state=on_state, progress=progress, searcher=searcher,
                              rejections=rejections)
        if resume:
            tuner = tune.Tuner.restore(str(run_dir / "tune"), trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
            say(f"search resumed: {progress.done} trial(s) finished before, {config.trials} in all, "
                f"{len(nodes)} node(s)")
        else:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrent),
                                            num_samples=config.trials, time_budget_s=config.time_budget_s,
                                            reuse_actors=True, trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(name="tune", storage_path=str(run_dir), verbose=0,
                                          callbacks=[_ProgressCallback()],
                                          failure_config=tune.FailureConfig(max_failures=NODE_FAILURE_RETRIES),
                                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
            )
            say(f"search: {config.trials} trials, {concurrent} at a time on {len(nodes)} node(s), sampler "
                f"{config.sampler}, {config.epochs} epochs max")
        t0 = time.time()
        grid = tuner.fit()
        say(f"search finished in {time.time() - t0:.1f} s")
        rows = [_row_from_result(r, data.n_classes) for r in grid]
    finally:
        _LISTENER = None
        if started:
            ray.shutdown()
    rows += rejected_rows(rejections, data.n_classes)
    return rows


def _concurrency(config: RunConfig) -> int:
    """Trials at once: what the cluster's CPUs (and GPUs, when trials ask for them) allow.

    Raises:
        UserInputError: A trial asks for more CPUs or GPUs than the cluster has.
    """
    import ray

    res = ray.cluster_resources()
    cpus, gpus = res.get("CPU", 1.0), res.get("GPU", 0.0)
    if config.cpus_per_trial > cpus:
        raise UserInputError(f"--cpus-per-trial {config.cpus_per_trial:g} is more than the {cpus:g} CPUs Ray "
                             "has; lower it (or join a larger cluster with --address)")
    if config.gpus_per_trial > gpus:
        raise UserInputError(f"--gpus-per-trial {config.gpus_per_trial:g} is more than the {gpus:g} GPUs Ray has; "
                             "lower it, drop it to train on CPUs, or join a cluster with GPU workers (--address)")
    limit = int(cpus // config.cpus_per_trial)
    if config.gpus_per_trial > 0:
        limit = min(limit, int(round(gpus / config.gpus_per_trial, 6)))
    return config.max_concurrent or max(1, limit)


def _count_finished(progress: SearchProgress, run_dir: Path, n_classes: int) -> None:
    """Start a resumed run's progress from the trials its first session finished."""
    from asc_search.report._rundir import _rows_from_tune

    for r in _rows_from_tune(run_dir, n_classes):
        if r["status"] == "completed":
            progress.add(float(r["best_val_accuracy"]), int(r["macs"]), int(r["int8_bytes"]))
        elif r["status"] == "failed":
            progress.failed += 1
        elif r["status"] == "rejected":
            progress.rejected += 1


@dataclass(kw_only=True)
class SearchProgress:
    """Live state of a search, for progress displays.

    Args:
        total: Trials the run trains.
        time_budget_s: The search's wall-clock limit (s), or None.
        max_macs: MACs limit of the budget (hypervolume reference), or None.
        started_at: ``time.time()`` at the start of the search.
        done: Trials completed. running: Trials running. failed: Trials that raised.
        rejected: Candidates rejected before training.
        best_accuracy: Best validation accuracy so far.
        front_size: Members of the (accuracy, MACs, INT8 bytes) Pareto front so far.
        hypervolume: Normalised (accuracy, MACs) hypervolume so far.
    """

    total: int
    time_budget_s: float | None
    max_macs: int | None
    started_at: float = field(default_factory=time.time)
    done: int = 0
    running: int = 0
    failed: int = 0
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
        ref_macs = float(self.max_macs or 1.1 * max(p[1] for p in self.points))
        self.hypervolume = hypervolume_2d([(p[0], p[1]) for p in self.points], (0.0, ref_macs)) / ref_macs


@dataclass(kw_only=True)
class _Listener:
    say: Callable[[str], None]
    on_state: Callable[[SearchProgress], None] | None
    progress: SearchProgress
    searcher: FeasibleOptunaSearch | None
    rejections: Path


_LISTENER: _Listener | None = None
"""The running search's listeners and live state (one search per process at a time)."""


class _ProgressCallback(Callback):
    """Ray Tune callback: keeps ``SearchProgress`` and says one line a finished trial.

    Ray pickles its callbacks with the experiment (``tuner.pkl``) and a resumed run unpickles them in a new
    process, so the callback holds no state: the listeners (a terminal display holds locks) and the live
    progress stay in the module-level ``_LISTENER`` of the process running the search.
    """

    def say(self, line: str) -> None:
        if _LISTENER is not None:
            _LISTENER.say(line)

    def _changed(self) -> None:
        if _LISTENER is None:
            return
        if _LISTENER.searcher is not None:
            _LISTENER.progress.rejected = _LISTENER.searcher.rejected
        elif _LISTENER.rejections.exists():  # resumed run: the restored searcher is Ray's copy
            _LISTENER.progress.rejected = sum(1 for line in open(_LISTENER.rejections) if line.strip())
        if _LISTENER.on_state is not None:
            _LISTENER.on_state(_LISTENER.progress)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if _LISTENER is not None:
            _LISTENER.progress.running += 1
        self._changed()

    def _finished(self, trial, verdict: str) -> None:
        if _LISTENER is None:
            return
        p = _LISTENER.progress
        p.running = max(0, p.running - 1)
        r = trial.last_result or {}
        acc = r.get("best_val_accuracy")
        if r.get("failed"):
            verdict = "FAILED"
        if verdict == "done" and acc is not None and r.get("final"):
            p.add(acc, r.get("macs", 0), r.get("int8_bytes", 0))
        else:
            p.failed += verdict == "FAILED"
        self._changed()
        if r.get("failed") or (verdict == "FAILED" and acc is None):
            text = f"{r.get('error') or 'error (see tune/)'}"
        else:
            acc_text = f"acc {acc:.3f}" if acc is not None else "no result"
            text = (f"{acc_text}, {r.get('macs', 0) / 1e6:.2f} M MACs, {r.get('int8_bytes', 0):,} B; "
                    f"best {p.best_accuracy:.3f}; front {p.front_size}; {p.rejected} rejected before training")
        self.say(f"trial {p.done + p.failed}/{p.total} {trial.trial_id} {verdict}: {text}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._finished(trial, "done")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._finished(trial, "FAILED")


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def _check_space_has_feasible(space: DefineByRunSpace) -> None:
    """Fail fast when even the smallest networks of the space break the budget (every front-end choice)."""
    from asc_search.search_spaces import smallest_genomes

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


def candidate_row(*, trial_id: str, status: str, genome: Genome | None, n_classes: int, metrics: dict | None = None,
                  reasons: str = "", error: str = "", finished_at: float | str = "",
                  checkpoint: str | None = None) -> dict:
    """One row of ``trials.csv`` (all ``TRIAL_COLUMNS`` plus the private ``_checkpoint``).

    Args:
        trial_id: Ray trial id, or ``rejected_NNNNN``.
        status: ``completed``, ``rejected``, ``failed`` or ``stopped``.
        genome: The candidate (None when Ray lost its config).
        n_classes: Output classes (complexity counting).
        metrics: The trial's last Tune report.
        reasons: Why the candidate was rejected before training.
        error: Last line of a failed trial's error.
        finished_at: Unix time the trial ended or was rejected.
        checkpoint: Folder of the trial's best checkpoint.
    """
    m = dict(metrics or {})
    if m.get("failed"):
        status = "failed"
        for k in ("best_val_accuracy", "best_val_log_loss", "best_val_uar"):  # placeholders Tune insisted on
            m.pop(k, None)
    error = error or m.get("error", "")
    c = count_complexity(genome, n_classes=n_classes) if genome else None
    keys = ("kind", "sample_rate_hz", "n_bins", "hop_ms", "chunk_s", "deltas")
    return {
        "trial_id": trial_id, "status": status, "reasons": reasons,
        "genome_id": genome.genome_id if genome else "", "genome": genome.to_json() if genome else "",
        "summary": genome.summary() if genome else "",
        **{k: getattr(genome.frontend, k) if genome else "" for k in keys},
        "params": c.params if c else "", "int8_bytes": c.int8_bytes if c else "", "macs": c.macs if c else "",
        "best_val_accuracy": m.get("best_val_accuracy", ""), "best_val_log_loss": m.get("best_val_log_loss", ""),
        "best_val_uar": m.get("best_val_uar", ""), "best_epoch": m.get("best_epoch", ""),
        "epochs_run": m.get("epoch", 0 if status == "rejected" else ""), "stop_reason": m.get("stop_reason", ""),
        "on_front": False, "node_id": m.get("node_id", ""), "node_ip": m.get("node_ip", ""),
        "device": m.get("device", ""), "error": error,
        "feature_cache_hit": m.get("feature_cache_hit", ""),
        "per_device_accuracy": json.dumps(m.get("val_per_device_accuracy", {})) if genome and status != "rejected"
        else "",
        "finished_at": finished_at, "_checkpoint": checkpoint,
    }


def _row_from_result(r, n_classes: int) -> dict:
    cfg = r.config or {}
    m = r.metrics or {}
    failed = r.error is not None or bool(m.get("failed"))
    ok = not failed and m.get("final", False)
    return candidate_row(
        trial_id=m.get("trial_id") or Path(r.path).name.removeprefix("trial_"),
        status="completed" if ok else ("failed" if failed else "stopped"),
        genome=Genome.from_dict(cfg["genome"]) if "genome" in cfg else None, n_classes=n_classes, metrics=m,
        error=_error_line(r.error) or m.get("error", ""), finished_at=m.get("finished_at", m.get("timestamp", "")),
        checkpoint=r.checkpoint.path if (ok and r.checkpoint) else None,
    )


def _error_line(err) -> str:
    if err is None:
        return ""
    text = str(err).strip().splitlines()
    return text[-1][:300] if text else type(err).__name__


def rejected_rows(path: Path, n_classes: int) -> list[dict]:
    """Rows of the candidates rejected before training, from ``rejected.jsonl``."""
    if not path.exists():
        return []
    rows = []
    for d in read_jsonl(path):
        rows.append(candidate_row(trial_id=d["trial_id"], status="rejected", genome=Genome.from_dict(d["genome"]),
                                  n_classes=n_classes, reasons="; ".join(d["reasons"]), finished_at=d.get("time", "")))
    return rows


def _write_trials(run_dir: Path, rows: list[dict]) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TRIAL_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in sort_rows(rows):
        w.writerow(r)
    write_text(run_dir / "trials.csv", buf.getvalue())


def copy_checkpoint(row: dict, dest: Path) -> Path:
    """Copy a trial's ``model.pt`` from its Ray checkpoint into ``dest``.

    Raises:
        AscSearchError: The trial has no checkpoint.
    """
    src = row.get("_checkpoint")
    if not src or not (Path(src) / "model.pt").exists():
        raise AscSearchError(f"trial {row['trial_id']} has no checkpoint with model.pt")
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / ".model.pt.tmp"
    shutil.copyfile(Path(src) / "model.pt", tmp)
    os.replace(tmp, dest / "model.pt")
    if (Path(src) / "history.json").exists():
        shutil.copyfile(Path(src) / "history.json", dest / ".history.json.tmp")
        os.replace(dest / ".history.json.tmp", dest / "history.json")
    return dest / "model.pt"


__all__ = ["copy_checkpoint", "prepare_data", "resolve_budget", "resume_search", "run_search", "space_options"]
