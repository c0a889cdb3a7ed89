"""Read a run directory back: trials, front, exported models, data summary and budget.

``asc-search report RUN`` and the end of every search both go through ``load_run`` so that a report
rebuilt later is byte-for-byte the report written by the search. A run interrupted before ``trials.csv``
was written is read from Ray Tune's trial folders (``rows_from_tune``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from asc_search._errors import UserInputError
from asc_search._pareto import mark_front, sort_rows
from asc_search.config import RunConfig
from asc_search.constraints import Budget
from asc_search.rundir._layout import (
    CONFIG_FILE,
    DATA_REPORT_FILE,
    MODELS_DIR,
    TRIALS_FILE,
    VALIDATION_FILE,
    cache_dir,
)
from asc_search.rundir._trials import read_trials, rows_from_tune, typed_row


@dataclass(kw_only=True)
class LoadedRun:
    """A run directory as data.

    Args:
        run_dir: The run directory.
        budget: The run's budget.
        trials: One row a candidate, typed (ints, floats, bools), sorted rejected last, then by trial id.
        front: Pareto-front rows, sorted by MACs, then accuracy (descending), then trial id.
        exported: ``validation.json`` of each exported model, sorted by trial id.
        data_summary: ``data_report.json``.
        interrupted: True when ``trials.csv`` was missing and the rows came from Ray's trial folders.
        config: ``config.yaml``.
    """

    run_dir: Path
    budget: Budget
    trials: list[dict]
    front: list[dict]
    exported: list[dict] = field(default_factory=list)
    data_summary: dict = field(default_factory=dict)
    interrupted: bool = False
    config: dict = field(default_factory=dict)

    @property
    def run_config(self) -> RunConfig:
        """The run's ``RunConfig`` (``config.yaml``'s ``run`` section)."""
        return RunConfig.from_dict(self.config["run"])


def read_run_config(run_dir: str | Path) -> dict:
    """``config.yaml`` of a run directory.

    Raises:
        UserInputError: ``run_dir`` is not a run directory (no ``config.yaml``).
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserInputError(f"{Path(run_dir)} is not an asc-search run directory (no {CONFIG_FILE}); "
                             "pass the --out folder of a search")
    return yaml.safe_load(path.read_text())


def run_cache_dir(run_dir: str | Path) -> Path:
    """The prepared-data folder of a run: its ``--cache`` (``config.yaml``) when it had one, else ``RUN/cache``."""
    path = Path(run_dir) / CONFIG_FILE
    cache = (yaml.safe_load(path.read_text()) or {}).get("run", {}).get("cache") if path.is_file() else None
    return cache_dir(Path(run_dir), cache)


def load_run(run_dir: str | Path) -> LoadedRun:
    """Read a run directory.

    Raises:
        UserInputError: ``run_dir`` is not a run directory (no ``config.yaml``).
    """
    run_dir = Path(run_dir).expanduser().resolve()
    cfg = read_run_config(run_dir)
    budget = Budget(**cfg["budget"])
    trials_csv = run_dir / TRIALS_FILE
    if trials_csv.exists():
        rows, interrupted = read_trials(trials_csv), False
    else:
        rows, interrupted = [typed_row(r) for r in rows_from_tune(run_dir, len(cfg.get("classes", [])))], True
    rows = sort_rows(rows)
    front = mark_front(rows)
    exported = [json.loads(p.read_text()) for p in sorted((run_dir / MODELS_DIR).glob(f"*/{VALIDATION_FILE}"))]
    data_path = run_dir / DATA_REPORT_FILE
    data_summary = json.loads(data_path.read_text()) if data_path.exists() else {}
    return LoadedRun(run_dir=run_dir, budget=budget, trials=rows, front=front, exported=exported,
                     data_summary=data_summary, interrupted=interrupted, config=cfg)
