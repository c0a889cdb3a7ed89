"""Read a run directory back: trials, front, exported models, data summary and budget.

``asc-search report RUN`` and the end of every search both go through ``load_run`` so that a report
rebuilt later is byte-for-byte the report written by the search. A run interrupted before ``trials.csv``
was written is read from Ray Tune's trial folders (``tune/trial_*/params.json`` and ``result.json``) and
``rejected.jsonl``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from asc_search._errors import UserInputError
from asc_search._io import read_jsonl
from asc_search.constraints import Budget
from asc_search.search._pareto import mark_front, sort_rows
from asc_search.search_spaces import Genome

INT_COLUMNS = ("params", "int8_bytes", "macs", "best_epoch", "epochs_run", "sample_rate_hz", "n_bins", "deltas")
FLOAT_COLUMNS = ("best_val_accuracy", "best_val_log_loss", "best_val_uar", "hop_ms", "chunk_s", "finished_at")


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


def _typed(row: dict) -> dict:
    out = dict(row)
    for k in INT_COLUMNS:
        if out.get(k) not in ("", None):
            out[k] = int(float(out[k]))
    for k in FLOAT_COLUMNS:
        if out.get(k) not in ("", None):
            out[k] = float(out[k])
    if isinstance(out.get("on_front"), str):
        out["on_front"] = out["on_front"] == "True"
    return out


def _rows_from_tune(run_dir: Path, n_classes: int) -> list[dict]:
    from asc_search.search._run import candidate_row, rejected_rows

    rows = []
    for trial_dir in sorted((run_dir / "tune").glob("trial_*")):
        params_path, result_path = trial_dir / "params.json", trial_dir / "result.json"
        if not params_path.exists():
            continue
        cfg = json.loads(params_path.read_text())
        results = read_jsonl(result_path) if result_path.exists() else []
        m = results[-1] if results else {}
        done = bool(m.get("final")) and not m.get("failed")
        failed = (trial_dir / "error.txt").exists() or bool(m.get("failed"))
        if not done and not failed:
            m.setdefault("stop_reason", "interrupted")
        error = ((trial_dir / "error.txt").read_text(errors="replace").strip().splitlines()[-1:]
                 if (trial_dir / "error.txt").exists() else [m.get("error", "")])
        rows.append(candidate_row(
            trial_id=m.get("trial_id", trial_dir.name.removeprefix("trial_")),
            status="completed" if done else ("failed" if failed else "stopped"), error="".join(error)[:300],
            genome=Genome.from_dict(cfg["genome"]) if "genome" in cfg else None, n_classes=n_classes, metrics=m,
            finished_at=m.get("finished_at", m.get("timestamp", "")),
        ))
    return rows + rejected_rows(run_dir / "rejected.jsonl", n_classes)


def load_run(run_dir: str | Path) -> LoadedRun:
    """Read a run directory.

    Raises:
        UserInputError: ``run_dir`` is not a run directory (no ``config.yaml``).
    """
    run_dir = Path(run_dir).expanduser().resolve()
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise UserInputError(f"{run_dir} is not an asc-search run directory (no config.yaml); "
                             "pass the --out folder of a search")
    cfg = yaml.safe_load(cfg_path.read_text())
    budget = Budget(**cfg["budget"])
    trials_csv = run_dir / "trials.csv"
    if trials_csv.exists():
        with open(trials_csv, newline="", encoding="utf-8") as f:
            rows = [_typed(r) for r in csv.DictReader(f)]
        interrupted = False
    else:
        rows = [_typed(r) for r in _rows_from_tune(run_dir, len(cfg.get("classes", [])))]
        interrupted = True
    rows = sort_rows(rows)
    front = mark_front(rows)
    exported = []
    for path in sorted((run_dir / "models").glob("*/validation.json")):
        exported.append(json.loads(path.read_text()))
    data_path = run_dir / "data_report.json"
    data_summary = json.loads(data_path.read_text()) if data_path.exists() else {}
    return LoadedRun(run_dir=run_dir, budget=budget, trials=rows, front=front, exported=exported,
                     data_summary=data_summary, interrupted=interrupted, config=cfg)
