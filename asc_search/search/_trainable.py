"""The Ray Tune function trainable: features from the cache, model from the genome, fit, checkpoint.

A trial that fails for a reason of its own (an exception, a NaN/inf training loss, running out of CPU or GPU
memory) does not raise into Ray: it reports ``{"failed": True, "error": "<reason>"}`` and ends, so the search
records it and goes on, and Ray's retries (``FailureConfig``) stay for what is not the trial's fault: a
worker process or a whole node that disappears. A trial Ray restarts after such a loss, or after the driver
crashed and the run was resumed, first looks for its own finished checkpoint and, when there is one, reports
it again instead of training twice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray
import torch
from ray import tune

from asc_search._pareto import pareto_front
from asc_search.constraints import count_complexity
from asc_search.data import DecodedDataset
from asc_search.frontends import FeatureCache
from asc_search.rundir import HISTORY_FILE, MODEL_FILE, VAL_PROBS_FILE, load_checkpoint, save_checkpoint
from asc_search.search_spaces import Genome, build_model, patch_layout
from asc_search.trainers import (
    FitResult,
    Normalisation,
    SapAugment,
    TeacherLogits,
    TrainSettings,
    compute_teacher_logits,
    fit,
    get_augmentation,
    grouped_accuracy,
    prune_model,
    qat_finetune,
    training_device,
)

log = logging.getLogger(__name__)

FAULTS = ("raise", "nan", "oom")


@dataclass(frozen=True, kw_only=True)
class TrialSettings:
    """What every trial of a run shares.

    Args:
        cache_dir: Feature cache folder (reachable by every worker).
        epochs: Most epochs per trial.
        patience: Early-stopping patience (epochs).
        batch_size: Patches per step.
        seed: Training seed.
        threads: Torch threads per trial.
        tune_dir: Ray Tune's experiment folder (``RUN/tune``); a restarted trial looks for its finished
            checkpoint in ``tune_dir/trial_<id>/``.
        faults: Fault injection for tests, trial index (``config["index"]``: the n-th candidate) -> one of
            ``FAULTS`` (``raise``: a RuntimeError; ``nan``: NaN weights, so the training loss is NaN;
            ``oom``: a MemoryError). Set through ``ASC_SEARCH_INJECT_FAULTS="1:raise,3:nan"``.
        hold_file: For tests: while this file exists, every trial waits after reporting each epoch, so a test
            can act on a trial that is known to be mid-training (kill its node, say). Set through
            ``ASC_SEARCH_HOLD_FILE``; empty (the default) holds nothing.
        data_schedule: The data fidelity (``--fidelity epochs+data``): ``((last_epoch, fraction), ...)`` over the
            trial's epochs counted across its stages, as the rungs count them; up to each ``last_epoch`` the trial
            trains on that nested share of the training clips (``TrainSettings.data_schedule``). Empty: all clips.
            A refit never uses it.
    """

    cache_dir: str
    epochs: int
    patience: int
    batch_size: int
    seed: int
    threads: int = 1
    tune_dir: str = ""
    faults: dict[int, str] = field(default_factory=dict)
    hold_file: str = ""
    data_schedule: tuple[tuple[int, float], ...] = ()


def shift_schedule(schedule: tuple[tuple[int, float], ...], epochs_done: int) -> tuple[tuple[int, float], ...]:
    """A trial's data schedule as seen by a stage that starts after ``epochs_done`` epochs of earlier stages:
    the entries still ahead, with their epochs counted from the stage's start."""
    return tuple((until - epochs_done, f) for until, f in schedule if until > epochs_done)


def parse_faults(text: str) -> dict[int, str]:
    """``"1:raise,3:nan"`` -> ``{1: "raise", 3: "nan"}`` (the ``ASC_SEARCH_INJECT_FAULTS`` format).

    Raises:
        ValueError: An entry is not ``INDEX:FAULT`` with a known fault.
    """
    out: dict[int, str] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        index, _, fault = item.partition(":")
        if not index.isdigit() or fault not in FAULTS:
            raise ValueError(f"ASC_SEARCH_INJECT_FAULTS entry {item!r} is not INDEX:FAULT with FAULT one of "
                             f"{', '.join(FAULTS)} (e.g. '1:raise,3:nan')")
        out[int(index)] = fault
    return out


def _finished_checkpoint(settings: TrialSettings, trial_id: str) -> tuple[dict, Path] | None:
    """The final metrics and folder of this trial's finished checkpoint, from Ray or from the trial folder."""
    candidates: list[Path] = []
    ckpt = tune.get_checkpoint()
    if ckpt is not None and not str(ckpt.path).startswith(("s3:", "gs:")):
        candidates.append(Path(ckpt.path))
    if settings.tune_dir:
        candidates += sorted((Path(settings.tune_dir) / f"trial_{trial_id}").glob("checkpoint_*"), reverse=True)
    for folder in candidates:
        model_pt = folder / MODEL_FILE
        if not model_pt.is_file():
            continue
        try:
            metrics = load_checkpoint(model_pt).metrics
        except Exception as exc:  # a checkpoint cut off by a crash: train again
            log.warning("trial %s: checkpoint %s unreadable (%s); training again", trial_id, model_pt, exc)
            continue
        if metrics.get("final"):
            return metrics, folder
    return None


def train_candidate(config: dict, data_by_rate: dict[int, DecodedDataset], settings: TrialSettings) -> None:
    """Train the genome in ``config["genome"]`` on the data at its sample rate; report each epoch; checkpoint
    the best epoch.

    Every report carries ``best_val_accuracy``, ``macs`` and ``int8_bytes`` (the search objectives), the
    Ray node id and IP the trial ran on and the device it trained on, so the final report holds the best
    epoch's accuracy. A failure of the trial itself is reported as ``failed`` with its reason (see the
    module docstring); a trial whose finished checkpoint exists reports it again without training.
    """
    ctx = ray.get_runtime_context()
    trial_id = tune.get_context().get_trial_id() or ""
    where = {"node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "pid": os.getpid(),
             "trial_id": trial_id}
    done = _finished_checkpoint(settings, trial_id)
    if done is not None:
        metrics, folder = done
        log.info("trial %s already finished (%s): reporting its checkpoint again", trial_id, folder)
        tune.report({**where, **metrics, "resumed_from_checkpoint": True},
                    checkpoint=tune.Checkpoint.from_directory(str(folder)))
        return
    genome = Genome.from_dict(config["genome"])
    static: dict = {"genome_id": genome.genome_id, **where}
    try:
        _train(genome, data_by_rate, settings, static, fault=settings.faults.get(int(config.get("index", 0))))
    except Exception as exc:  # the trial's own failure: record it, let the search go on
        reason = _failure_reason(exc)
        log.warning("trial %s (%s) failed: %s", trial_id, genome.summary(), reason)
        # Tune insists on the objectives in every result; the searcher tells Optuna a failed trial as FAIL.
        objectives = {"best_val_accuracy": 0.0, "macs": 0, "int8_bytes": 0}
        try:
            c = count_complexity(genome, n_classes=next(iter(data_by_rate.values())).n_classes)
            objectives.update(macs=c.macs, int8_bytes=c.int8_bytes)
        except Exception:  # noqa: S110 - the placeholders stand
            pass
        tune.report({**static, **objectives, "failed": True, "error": reason, "final": True,
                     "finished_at": time.time()})


def _hold(path: str) -> None:
    """Wait while the test hold file ``path`` exists (``TrialSettings.hold_file``; no-op when empty)."""
    while path and os.path.exists(path):
        time.sleep(0.2)


def _failure_reason(exc: BaseException) -> str:
    if isinstance(exc, FloatingPointError):
        kind = "NaN/inf loss"
    elif isinstance(exc, MemoryError | torch.OutOfMemoryError):
        kind = "out of memory"
    else:
        kind = type(exc).__name__
    text = str(exc).strip().splitlines()
    return f"{kind}: {text[-1] if text else type(exc).__name__}"[:300]


def _train(genome: Genome, data_by_rate: dict[int, DecodedDataset], settings: TrialSettings, static: dict,
           fault: str | None) -> None:
    torch.set_num_threads(max(1, settings.threads))
    if fault == "raise":
        raise RuntimeError(f"injected fault (ASC_SEARCH_INJECT_FAULTS) in trial {static['trial_id']}")
    if fault == "oom":
        raise MemoryError(f"injected fault (ASC_SEARCH_INJECT_FAULTS) in trial {static['trial_id']}")
    data = data_by_rate[genome.frontend.sample_rate_hz]
    c = count_complexity(genome, n_classes=data.n_classes)
    device = training_device(ray.get_gpu_ids())
    static = {**static, "macs": c.macs, "int8_bytes": c.int8_bytes, "params": c.params, "device": device}
    cache = FeatureCache(settings.cache_dir, run=str(Path(settings.tune_dir).parent) if settings.tune_dir else "")
    features, hit = cache.get(data, patch_layout(genome), device=device)
    reports: list[dict] = []
    history: list[dict] = []  # every epoch of every stage (teacher, train, pruned_finetune, qat)
    epochs_done = [0]

    def on_epoch(row: dict, stage: str) -> None:
        if reports:  # report the previous epoch now, so the last report can carry the checkpoint
            tune.report(reports[-1])
            _hold(settings.hold_file)
        epochs_done[0] += 1
        history.append({**row, "epoch": epochs_done[0], "stage_epoch": row["epoch"], "stage": stage})
        reports.append({**history[-1], **static, "feature_cache_hit": hit, "final": False})

    trained = train_genome(genome, data_by_rate, features, cache=cache, settings=settings, device=device,
                           on_epoch=on_epoch, poison=fault == "nan", tune_dir=settings.tune_dir)
    result = trained.result
    val = np.flatnonzero(data.is_validation)
    y_val, pred = data.labels[val], result.val_probs.argmax(1)
    final = {**reports[-1], "final": True, "best_val_accuracy": result.val_metrics["accuracy"],
             "val_per_device_accuracy": grouped_accuracy(y_val, pred, [data.devices[i] for i in val]),
             "val_per_class_accuracy": grouped_accuracy(y_val, pred, [data.class_names[i] for i in y_val]),
             "best_val_log_loss": result.val_metrics["log_loss"], "best_val_uar": result.val_metrics["uar"],
             "best_epoch": result.best_epoch, "stop_reason": result.stop_reason, "stages": trained.stages,
             "finished_at": time.time()}
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(Path(tmp) / MODEL_FILE, genome=genome, state_dict=result.state_dict,
                       n_classes=data.n_classes, class_names=list(data.class_names), norm=trained.norm, metrics=final)
        (Path(tmp) / HISTORY_FILE).write_text(json.dumps(history))
        np.save(Path(tmp) / VAL_PROBS_FILE, result.val_probs.astype(np.float32))
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(tmp))


@dataclass(kw_only=True)
class TrainedGenome:
    """What ``train_genome`` returns.

    Args:
        result: The last stage's ``FitResult``: the deployed (pruned, QAT-trained) network's weights and metrics.
        norm: The model input's normalisation (fit on the training clips).
        stages: Per stage (``teacher_basd``, ``train``, ``pruned_finetune``, ``qat`` ...): best validation accuracy,
            epochs, and what it did.
    """

    result: FitResult
    norm: Normalisation
    stages: dict


def train_genome(genome: Genome, data_by_rate: dict[int, DecodedDataset], features, *, cache: FeatureCache,
                 settings: TrialSettings, device: str = "cpu", on_epoch=None, poison: bool = False,
                 tune_dir: str = "", refit_epochs: dict[str, int] | None = None) -> TrainedGenome:
    """Train a genome through every stage its training genes ask for, in order:

    1. a teacher, when distilling: BASD (the same network, a first generation), CSSD (the same network on
       ``kd_teacher_rate_hz`` audio) or the run's finished Pareto members (``ensemble``); its logits are cached;
    2. the network of ``genome.arch`` with its augmentations, schedule and the distillation loss;
    3. pruning to ``genome.deployed_arch`` (``training.prune_ratios``, ``prune_criterion``), then fine-tuning for
       half the epochs;
    4. quantisation-aware fine-tuning (``training.qat``) for a quarter of the epochs at a tenth of the learning
       rate.

    Args:
        genome: The candidate.
        data_by_rate: Decoded data by sample rate (the CSSD teacher's rate included).
        features: The genome's features (``FeatureCache.get``).
        cache: The feature cache (teachers at other front-ends read theirs from it).
        settings: The run's trial settings (epochs, batch size, patience, seed).
        device: ``cpu`` or ``cuda``.
        on_epoch: ``on_epoch(row, stage)`` after every epoch of every stage.
        poison: Fill the weights with NaN (fault injection: the loss becomes NaN).
        tune_dir: The run's Tune folder (the ensemble teacher's members are its finished trials).
        refit_epochs: The refit before export: epochs per stage (``train``, ``pruned_finetune``, ``qat``,
            ``teacher_basd`` ...: each the stage's selected epoch in the search). The model then trains on train +
            validation, for exactly those epochs, and keeps its last weights (``TrainSettings.keep_last``). None:
            the search's training (train clips, best validation epoch, early stopping).

    Returns:
        The last stage's result, the normalisation and the per-stage record. The test clips are never read.
    """
    t = genome.training
    data = data_by_rate[genome.frontend.sample_rate_hz]
    train = np.flatnonzero(data.is_train)
    val = np.flatnonzero(data.is_validation)
    if refit_epochs is not None:
        train = np.flatnonzero(data.is_train | data.is_validation)
    norm = Normalisation.fit(features, train, deltas=genome.frontend.deltas, seed=settings.seed)
    epochs = t.epochs or settings.epochs
    base = TrainSettings(epochs=epochs, learning_rate=genome.learning_rate, batch_size=t.batch_size or settings.batch_size,
                         patience=settings.patience, weight_decay=t.weight_decay, seed=settings.seed,
                         warmup_epochs=min(t.warmup_epochs, epochs - 1), schedule=t.schedule,
                         kd_alpha=t.kd_alpha, kd_temperature=t.kd_temperature)
    augs = [get_augmentation(name) for name in t.augmentations]
    sap = SapAugment() if t.sapaugment else None
    stages: dict = {}

    def refit(st: TrainSettings, stage: str) -> TrainSettings:
        if refit_epochs is None:
            return st
        n = max(1, int(refit_epochs.get(stage, st.epochs)))
        return dataclasses.replace(st, epochs=n, warmup_epochs=min(st.warmup_epochs, n - 1), keep_last=True)

    def fidelity(st: TrainSettings) -> TrainSettings:
        # the data fidelity of the search's rungs, which count the epochs of every stage (not in a refit)
        if refit_epochs is not None or not settings.data_schedule:
            return st
        done = sum(int(v.get("epochs", 0)) for v in stages.values())
        return dataclasses.replace(st, data_schedule=shift_schedule(settings.data_schedule, done))

    def run(model, stage: str, st: TrainSettings, teacher=None, feats=features, nm=norm):
        # labels and clip order are the same at every decoded rate (one manifest)
        st = fidelity(refit(st, stage))
        hook = (lambda row: on_epoch(row, stage)) if on_epoch else None
        r = fit(model, feats, data.labels, train, val, nm, st, on_epoch=hook, device=device, augmentations=augs,
                sapaugment=sap, teacher=teacher)
        stages[stage] = {"best_val_accuracy": r.val_metrics["accuracy"], "best_epoch": r.best_epoch,
                         "epochs": len(r.history), **({"augmentation": r.augmentation_log} if r.augmentation_log
                                                      else {})}
        return r

    teacher = _teacher(genome, data_by_rate, features, norm, cache, settings, base, run, stages, tune_dir, train)
    torch.manual_seed(settings.seed)  # initialisation independent of what a reused actor ran before
    model = build_model(genome, data.n_classes, before_pruning=True)
    if poison:  # the loss really becomes NaN and fit's check catches it
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
    result = run(model, "train", base, teacher=teacher)
    if t.prunes:
        model = prune_model(model.cpu(), genome.arch, t.prune_ratios, t.prune_criterion)
        ft = dataclasses.replace(base, epochs=max(1, epochs // 2), warmup_epochs=0)
        result = run(model, "pruned_finetune", ft, teacher=teacher)
        stages["pruned_finetune"]["prune_ratios"] = list(t.prune_ratios)
    if t.qat:
        qs = fidelity(refit(dataclasses.replace(base, epochs=max(1, epochs // 4), warmup_epochs=0,
                                                learning_rate=genome.learning_rate / 10), "qat"))
        hook = (lambda row: on_epoch(row, "qat")) if on_epoch else None
        result = qat_finetune(model.cpu(), features, data.labels, train, val, norm, qs, device=device, on_epoch=hook)
        stages["qat"] = {"best_val_accuracy": result.val_metrics["accuracy"], "best_epoch": result.best_epoch,
                         "epochs": len(result.history)}
    return TrainedGenome(result=result, norm=norm, stages=stages)


def refit_checkpoint(model_pt: Path, data_by_rate: dict[int, DecodedDataset], *, cache: FeatureCache,
                     settings: TrialSettings, out: Path, device: str = "cpu") -> Path:
    """Train a searched candidate again on train + validation before its export, and save it to ``out``.

    The genome, the seed and every training gene are the trial's; each stage (teacher, train, pruned fine-tune,
    QAT) runs for the epoch its validation accuracy selected in the search (``metrics["stages"][s]["best_epoch"]``)
    and keeps its last weights, as DCASE systems are retrained on the whole development-train material once the
    recipe is fixed. The test clips are not read. The checkpoint's metrics are the search's, with ``refit``:
    ``{"epochs": {stage: n}, "train_clips": n, "seconds": s}``.

    Args:
        model_pt: The search's ``model.pt`` (``metrics`` holding ``stages``).
        data_by_rate: Decoded data by sample rate.
        cache: The run's feature cache.
        settings: The run's ``TrialSettings``.
        out: Where to write the refit ``model.pt`` (through a temporary name).
        device: ``cpu`` or ``cuda``.

    Returns:
        ``out``.

    Raises:
        AscSearchError: The checkpoint records no selected epochs (a run written before the refit existed).
    """
    from asc_search._errors import AscSearchError

    ckpt = load_checkpoint(model_pt)
    stages = ckpt.metrics.get("stages") or {}
    epochs = {name: int(s["best_epoch"]) for name, s in stages.items() if s.get("best_epoch")}
    if "train" not in epochs:
        raise AscSearchError(f"{model_pt}: no selected epoch recorded per stage; export it with --no-refit")
    genome = ckpt.genome
    data = data_by_rate[genome.frontend.sample_rate_hz]
    features, _ = cache.get(data, patch_layout(genome), device=device)
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, settings.threads))
    trained = train_genome(genome, data_by_rate, features, cache=cache, settings=settings, device=device,
                           tune_dir=settings.tune_dir, refit_epochs=epochs)
    metrics = {**ckpt.metrics, "refit": {"epochs": epochs, "train_clips": int((data.is_train | data.is_validation).sum()),
                                         "seconds": round(time.perf_counter() - t0, 2)}}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    save_checkpoint(tmp, genome=genome, state_dict=trained.result.state_dict, n_classes=ckpt.n_classes,
                    class_names=list(ckpt.class_names), norm=trained.norm, metrics=metrics)
    os.replace(tmp, out)
    return out


def _teacher(genome: Genome, data_by_rate: dict[int, DecodedDataset], features, norm: Normalisation,
             cache: FeatureCache, settings: TrialSettings, base: TrainSettings, run, stages: dict,
             tune_dir: str, train: np.ndarray) -> TeacherLogits | None:
    """The distillation teacher's cached logits (None without distillation): BASD trains the same network
    first; CSSD trains it on ``kd_teacher_rate_hz`` audio; ``ensemble`` combines the run's finished Pareto
    members. ``run(model, stage, settings, feats=, nm=)`` trains a stage and records it in ``stages``; ``train``
    are the clips the student trains on."""
    t = genome.training
    data = data_by_rate[genome.frontend.sample_rate_hz]
    if t.kd_teacher == "ensemble":
        teacher, members = _ensemble_teacher(tune_dir, data_by_rate, cache, train)
        stages["teacher_ensemble"] = {"members": members}
        return teacher
    if t.kd_teacher not in ("basd", "cssd"):
        return None
    plain = dataclasses.replace(genome, training=dataclasses.replace(t, kd_teacher="none", kd_teacher_rate_hz=0,
                                                                     prune_ratios=(), qat=False))
    feats, nm = features, norm
    if t.kd_teacher == "cssd":
        plain = dataclasses.replace(plain, frontend=dataclasses.replace(genome.frontend,
                                                                        sample_rate_hz=t.kd_teacher_rate_hz))
        tdata = data_by_rate.get(t.kd_teacher_rate_hz)
        if tdata is None or len(tdata.labels) != len(data.labels):
            raise RuntimeError(f"the CSSD teacher's rate {t.kd_teacher_rate_hz} Hz was not decoded for this run")
        feats, _ = cache.get(tdata, patch_layout(plain))
        nm = Normalisation.fit(feats, train, deltas=genome.frontend.deltas, seed=settings.seed)
    torch.manual_seed(settings.seed + 1)
    tmodel = build_model(plain, data.n_classes, before_pruning=True)
    run(tmodel, f"teacher_{t.kd_teacher}", base, feats=feats, nm=nm)
    return compute_teacher_logits(tmodel, feats, nm, train)


def _ensemble_teacher(tune_dir: str, data_by_rate: dict[int, DecodedDataset], cache: FeatureCache,
                      train: np.ndarray, max_members: int = 3):
    """The run's finished Pareto members so far (accuracy vs MACs), at most ``max_members`` most accurate, as one
    teacher (the mean of their softened probabilities); ``(None, [])`` when none has finished yet."""
    found = []
    for model_pt in sorted(Path(tune_dir).glob(f"trial_*/checkpoint_*/{MODEL_FILE}")) if tune_dir else []:
        try:
            ckpt = load_checkpoint(model_pt)
        except Exception:  # noqa: BLE001 - a checkpoint being written or cut off: not a member
            continue
        m = ckpt.metrics
        if m.get("final") and not m.get("failed") and m.get("best_val_accuracy") is not None:
            found.append((float(m["best_val_accuracy"]), float(m.get("macs", 0)), model_pt, ckpt))
    if not found:
        log.info("ensemble teacher: no finished trial yet; training without distillation")
        return None, []
    front = [found[i] for i in pareto_front([(a, m) for a, m, _, _ in found], ["max", "min"])]
    front = sorted(front, key=lambda f: -f[0])[:max_members]
    teachers, names = [], []
    for _acc, _macs, model_pt, ckpt in front:
        data = data_by_rate.get(ckpt.sample_rate_hz)
        if data is None:
            continue
        feats, _ = cache.get(data, patch_layout(ckpt.genome))
        teachers.append(compute_teacher_logits(ckpt.build_model(), feats, ckpt.normalisation, train))
        names.append(model_pt.parent.parent.name.removeprefix("trial_"))
    if not teachers:
        return None, []
    return TeacherLogits.combine(teachers), names
