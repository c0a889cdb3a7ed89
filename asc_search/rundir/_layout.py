"""The run directory's layout: every file and folder name a run writes, in one place (DESIGN.md, "the run
directory").

::

    RUN/
      config.yaml  data_report.json  cluster.json  optuna.db  rejected.jsonl  trials.csv
      report.md  pareto.json  pareto.png  pareto.html  hypervolume.png
      cache/                      prepared data, unless --cache DIR: waves/ (waveform stores, one per sample
                                  rate) and one feature file per front-end config and sample rate
      tune/trial_<id>/checkpoint_*/model.pt, history.json, val_probs.npy
      models/<trial_id>/          model.pt, model_int8.tflite, frontend.json, labels.txt, validation.json, ...
      models/ensemble/            the ensemble's validation.json and members
"""

from __future__ import annotations

import os
from pathlib import Path

from asc_search._errors import UserInputError

CONFIG_FILE = "config.yaml"
"""The run's configuration, budget, classes, search space and objectives."""
DATA_REPORT_FILE = "data_report.json"
"""Counts, split rule, layout and skipped files of the data."""
CLUSTER_FILE = "cluster.json"
"""One entry per session: address and nodes."""
OPTUNA_DB = "optuna.db"
"""The Optuna study (SQLite; optuna-dashboard opens it)."""
REJECTED_FILE = "rejected.jsonl"
"""Candidates rejected before training, one JSON object a line."""
TRIALS_FILE = "trials.csv"
"""One row a candidate (``TRIAL_COLUMNS``), written when the search ends."""
REPORT_FILE = "report.md"
PARETO_JSON = "pareto.json"
PARETO_PNG = "pareto.png"
PARETO_HTML = "pareto.html"
HYPERVOLUME_PNG = "hypervolume.png"
CACHE_DIR = "cache"
"""The prepared data of the run (waveform stores and features) when no ``--cache`` folder is given."""
TUNE_DIR = "tune"
"""Ray Tune's experiment folder (``Tuner(name=TUNE_DIR, storage_path=RUN)``)."""
MODELS_DIR = "models"
"""One folder per exported model."""
ENSEMBLE_ID = "ensemble"
"""Trial id of the ensemble's ``trials.csv`` row and name of its folder under ``models/``."""

MODEL_FILE = "model.pt"
"""Weights plus what rebuilds and feeds the model (``save_checkpoint``)."""
HISTORY_FILE = "history.json"
"""Per-epoch training history of a trial."""
VAL_PROBS_FILE = "val_probs.npy"
"""Clip-level float validation probabilities ``(n_val, K)`` a trial checkpoint carries beside ``model.pt``."""
VAL_PROBS_FLOAT_FILE = "val_probs_float.npy"
VAL_PROBS_INT8_FILE = "val_probs_int8.npy"
MODEL_INT8_FILE = "model_int8.tflite"
FRONTEND_JSON = "frontend.json"
LABELS_FILE = "labels.txt"
VALIDATION_FILE = "validation.json"


def model_dir(run_dir: Path, trial_id: str) -> Path:
    """``RUN/models/<trial_id>``: the folder of an exported model (``ENSEMBLE_ID`` for the ensemble)."""
    return Path(run_dir) / MODELS_DIR / trial_id


def check_new_run_dir(run_dir: str | os.PathLike, flag: str = "--out") -> Path:
    """Check that a new run can be written into ``run_dir``; return it resolved.

    Allowed: a folder that does not exist yet (its nearest existing parent writable), an empty folder, or one
    that holds only what an earlier attempt of a run left before its search started (``config.yaml``,
    ``data_report.json``, ``cluster.json``, ``cache/``).

    Raises:
        UserInputError: ``run_dir`` (or a parent) is a file, holds a run (``trials.csv`` or ``tune/``), is a
            non-empty folder of something else, or cannot be written; the message names the path and the fix.
    """
    run_dir = Path(run_dir).expanduser().resolve()
    if (run_dir / TRIALS_FILE).exists() or (run_dir / TUNE_DIR).exists():
        raise UserInputError(f"{flag} {run_dir} already holds a run; choose a new {flag} or delete it (an interrupted "
                             f"run continues with: asc-search resume {run_dir})")
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserInputError(f"{flag} {run_dir}: {existing} is a file, not a folder; give a folder path for the run")
    if existing == run_dir:
        ours = {CONFIG_FILE, DATA_REPORT_FILE, CLUSTER_FILE, CACHE_DIR}
        foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in ours)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise UserInputError(f"{flag} {run_dir} is a folder of something else ({shown}); give a new or empty "
                                 "folder for the run")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserInputError(f"{flag} {run_dir}: {existing} is not writable; give a folder you can write to")
    return run_dir


def cache_dir(run_dir: Path, cache: str | Path | None = None) -> Path:
    """The run's prepared-data folder: ``cache`` (``--cache DIR``) when given, else ``RUN/cache``."""
    return Path(cache) if cache else Path(run_dir) / CACHE_DIR


def trial_dirname(trial) -> str:
    """Ray Tune's folder name for a trial (``trial_<id>``; the ``trial_dirname_creator`` of the run)."""
    return f"trial_{trial.trial_id}"
