"""The Ray Tune function trainable: features from the cache, model from the genome, fit, checkpoint.

A trial that fails for a reason of its own (an exception, a NaN/inf training loss, running out of CPU or GPU
memory) does not raise into Ray: it reports ``{"failed": True, "error": "<reason>"}`` and ends, so the search
records it and goes on, and Ray's retries (``FailureConfig``) stay for what is not the trial's fault: a
worker process or a whole node that disappears. A trial Ray restarts after such a loss, or after the driver
crashed and the run was resumed, first looks for its own finished checkpoint and, when there is one, reports
it again instead of training twice.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from ray import tune

from asc_search.constraints import count_complexity, patch_layout
from asc_search.data import DecodedDataset
from asc_search.frontends import FeatureCache
from asc_search.search_spaces import Genome, build_model
from asc_search.trainers import Normalisation, TrainSettings, fit, grouped_accuracy
from asc_search.trainers._fit import training_device

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
    """

    cache_dir: str
    epochs: int
    patience: int
    batch_size: int
    seed: int
    threads: int = 1
    tune_dir: str = ""
    faults: dict[int, str] = field(default_factory=dict)


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


def save_candidate(path: Path, *, genome: Genome, state_dict: dict, n_classes: int, class_names: list[str],
                   norm: Normalisation, metrics: dict) -> None:
    """Write ``model.pt``: weights plus everything needed to rebuild and feed the model.

    Everything but the weights is plain Python (dicts, lists, strings, numbers), so the file loads with
    ``torch.load(..., weights_only=True)``.
    """
    torch.save({"state_dict": state_dict, "genome": genome.to_dict(), "n_classes": n_classes,
                "class_names": class_names, "sample_rate_hz": genome.frontend.sample_rate_hz,
                "normalisation": norm.to_dict(), "metrics": _plain(metrics)}, path)


def load_candidate(path: str | Path) -> dict:
    """Read a ``model.pt`` written by ``save_candidate`` (``weights_only=True``: no code is unpickled)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _plain(obj):
    """JSON-like copy (numpy scalars to Python numbers), loadable with ``weights_only=True``."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _finished_checkpoint(settings: TrialSettings, trial_id: str) -> tuple[dict, Path] | None:
    """The final metrics and folder of this trial's finished checkpoint, from Ray or from the trial folder."""
    candidates: list[Path] = []
    ckpt = tune.get_checkpoint()
    if ckpt is not None and not str(ckpt.path).startswith(("s3:", "gs:")):
        candidates.append(Path(ckpt.path))
    if settings.tune_dir:
        candidates += sorted((Path(settings.tune_dir) / f"trial_{trial_id}").glob("checkpoint_*"), reverse=True)
    for folder in candidates:
        model_pt = folder / "model.pt"
        if not model_pt.is_file():
            continue
        try:
            metrics = load_candidate(model_pt).get("metrics", {})
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
    import ray

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
    import ray

    torch.set_num_threads(max(1, settings.threads))
    if fault == "raise":
        raise RuntimeError(f"injected fault (ASC_SEARCH_INJECT_FAULTS) in trial {static['trial_id']}")
    if fault == "oom":
        raise MemoryError(f"injected fault (ASC_SEARCH_INJECT_FAULTS) in trial {static['trial_id']}")
    data = data_by_rate[genome.frontend.sample_rate_hz]
    c = count_complexity(genome, n_classes=data.n_classes)
    device = training_device(ray.get_gpu_ids())
    static = {**static, "macs": c.macs, "int8_bytes": c.int8_bytes, "params": c.params, "device": device}
    cache = FeatureCache(settings.cache_dir)
    features, hit = cache.get(data, patch_layout(genome))
    train = np.flatnonzero(~data.is_validation)
    val = np.flatnonzero(data.is_validation)
    norm = Normalisation.fit(features, train, deltas=genome.frontend.deltas, seed=settings.seed)
    torch.manual_seed(settings.seed)  # initialisation independent of what a reused actor ran before
    model = build_model(genome, data.n_classes)
    if fault == "nan":  # poison the weights: the loss really becomes NaN and fit's check catches it
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
    train_settings = TrainSettings(epochs=settings.epochs, learning_rate=genome.learning_rate,
                                   batch_size=settings.batch_size, patience=settings.patience, seed=settings.seed)
    reports: list[dict] = []

    def on_epoch(row: dict) -> None:
        if reports:  # report the previous epoch now, so the last report can carry the checkpoint
            tune.report(reports[-1])
        reports.append({**row, **static, "feature_cache_hit": hit, "final": False})

    result = fit(model, features, data.labels, train, val, norm, train_settings, on_epoch=on_epoch, device=device)
    y_val, pred = data.labels[val], result.val_probs.argmax(1)
    final = {**reports[-1], "final": True, "best_val_accuracy": result.val_metrics["accuracy"],
             "val_per_device_accuracy": grouped_accuracy(y_val, pred, [data.devices[i] for i in val]),
             "val_per_class_accuracy": grouped_accuracy(y_val, pred, [data.class_names[i] for i in y_val]),
             "best_val_log_loss": result.val_metrics["log_loss"], "best_val_uar": result.val_metrics["uar"],
             "best_epoch": result.best_epoch, "stop_reason": result.stop_reason, "finished_at": time.time()}
    with tempfile.TemporaryDirectory() as tmp:
        save_candidate(Path(tmp) / "model.pt", genome=genome, state_dict=result.state_dict,
                       n_classes=data.n_classes, class_names=list(data.class_names), norm=norm, metrics=final)
        (Path(tmp) / "history.json").write_text(json.dumps(result.history))
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(tmp))
