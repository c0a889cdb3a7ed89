"""The Ray Tune function trainable: features from the cache, model from the genome, fit, checkpoint."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ray import tune

from asc_search.constraints import count_complexity, patch_layout
from asc_search.data import DecodedDataset
from asc_search.frontends import FeatureCache
from asc_search.search_spaces import Genome, build_model
from asc_search.trainers import Normalisation, TrainSettings, fit, grouped_accuracy


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
    """

    cache_dir: str
    epochs: int
    patience: int
    batch_size: int
    seed: int
    threads: int = 1


def save_candidate(path: Path, *, genome: Genome, state_dict: dict, n_classes: int, class_names: list[str],
                   norm: Normalisation, metrics: dict) -> None:
    """Write ``model.pt``: weights plus everything needed to rebuild and feed the model."""
    torch.save({"state_dict": state_dict, "genome": genome.to_dict(), "n_classes": n_classes,
                "class_names": class_names, "sample_rate_hz": genome.frontend.sample_rate_hz,
                "normalisation": norm.to_dict(), "metrics": metrics}, path)


def train_candidate(config: dict, data_by_rate: dict[int, DecodedDataset], settings: TrialSettings) -> None:
    """Train the genome in ``config["genome"]`` on the data at its sample rate; report each epoch; checkpoint
    the best epoch.

    Every report carries ``best_val_accuracy``, ``macs`` and ``int8_bytes`` (the search objectives), so
    the final report holds the best epoch's accuracy.
    """
    torch.set_num_threads(max(1, settings.threads))
    genome = Genome.from_dict(config["genome"])
    data = data_by_rate[genome.frontend.sample_rate_hz]
    c = count_complexity(genome, n_classes=data.n_classes)
    static = {"macs": c.macs, "int8_bytes": c.int8_bytes, "params": c.params, "genome_id": genome.genome_id}
    cache = FeatureCache(settings.cache_dir)
    features, hit = cache.get(data, patch_layout(genome))
    train = np.flatnonzero(~data.is_validation)
    val = np.flatnonzero(data.is_validation)
    norm = Normalisation.fit(features, train, deltas=genome.frontend.deltas, seed=settings.seed)
    torch.manual_seed(settings.seed)  # initialisation independent of what a reused actor ran before
    model = build_model(genome, data.n_classes)
    train_settings = TrainSettings(epochs=settings.epochs, learning_rate=genome.learning_rate,
                                   batch_size=settings.batch_size, patience=settings.patience, seed=settings.seed)
    reports: list[dict] = []

    def on_epoch(row: dict) -> None:
        if reports:  # report the previous epoch now, so the last report can carry the checkpoint
            tune.report(reports[-1])
        reports.append({**row, **static, "feature_cache_hit": hit, "final": False})

    result = fit(model, features, data.labels, train, val, norm, train_settings, on_epoch=on_epoch)
    y_val, pred = data.labels[val], result.val_probs.argmax(1)
    final = {**reports[-1], "final": True, "best_val_accuracy": result.val_metrics["accuracy"],
             "val_per_device_accuracy": grouped_accuracy(y_val, pred, [data.devices[i] for i in val]),
             "val_per_class_accuracy": grouped_accuracy(y_val, pred, [data.class_names[i] for i in y_val]),
             "best_val_log_loss": result.val_metrics["log_loss"], "best_val_uar": result.val_metrics["uar"],
             "best_epoch": result.best_epoch, "stop_reason": result.stop_reason}
    with tempfile.TemporaryDirectory() as tmp:
        save_candidate(Path(tmp) / "model.pt", genome=genome, state_dict=result.state_dict,
                       n_classes=data.n_classes, class_names=list(data.class_names), norm=norm, metrics=final)
        (Path(tmp) / "history.json").write_text(json.dumps(result.history))
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(tmp))
