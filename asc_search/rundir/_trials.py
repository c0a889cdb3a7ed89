"""``trials.csv``: its columns and their types, and its rows from Ray Tune results, from Tune's trial folders
(an interrupted run) and from the candidates rejected before training."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from asc_search._io import read_jsonl, write_text
from asc_search._pareto import sort_rows
from asc_search.constraints import count_complexity
from asc_search.rundir._layout import REJECTED_FILE, TRIALS_FILE, TUNE_DIR
from asc_search.search_spaces import Genome

TRIAL_COLUMNS = [
    "trial_id", "status", "reasons", "genome_id", "genome", "summary", "kind", "sample_rate_hz", "n_bins", "hop_ms",
    "chunk_s", "deltas", "params",
    "int8_bytes", "macs", "best_val_accuracy", "best_val_log_loss", "best_val_uar", "best_epoch", "epochs_run",
    "stop_reason", "on_front", "node_id", "node_ip", "device", "error", "feature_cache_hit", "per_device_accuracy",
    "finished_at",
]
"""The columns of ``trials.csv``, in order. A row in memory also carries the private ``_checkpoint`` (the folder
of the trial's best checkpoint), which is not written."""

INT_COLUMNS = ("params", "int8_bytes", "macs", "best_epoch", "epochs_run", "sample_rate_hz", "n_bins", "deltas")
"""Columns read back as ``int`` (empty stays ``""``)."""
FLOAT_COLUMNS = ("best_val_accuracy", "best_val_log_loss", "best_val_uar", "hop_ms", "chunk_s", "finished_at")
"""Columns read back as ``float`` (empty stays ``""``)."""


def typed_row(row: dict) -> dict:
    """A row as read from CSV with its ints, floats and ``on_front`` bool restored (empty cells stay ``""``)."""
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


def blank_row() -> dict:
    """A row with every column empty (a row kind that has no value for most columns starts from it)."""
    return {k: "" for k in TRIAL_COLUMNS}


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


def row_from_result(result, n_classes: int) -> dict:
    """The row of one ``ray.tune.Result`` (an entry of ``Tuner.fit()``'s grid): completed when its last report
    is final, failed when it raised or reported a failure, stopped otherwise."""
    cfg = result.config or {}
    m = result.metrics or {}
    failed = result.error is not None or bool(m.get("failed"))
    ok = not failed and m.get("final", False)
    return candidate_row(
        trial_id=m.get("trial_id") or Path(result.path).name.removeprefix("trial_"),
        status="completed" if ok else ("failed" if failed else "stopped"),
        genome=Genome.from_dict(cfg["genome"]) if "genome" in cfg else None, n_classes=n_classes, metrics=m,
        error=_error_line(result.error) or m.get("error", ""),
        finished_at=m.get("finished_at", m.get("timestamp", "")),
        checkpoint=result.checkpoint.path if (ok and result.checkpoint) else None,
    )


def _error_line(err) -> str:
    if err is None:
        return ""
    text = str(err).strip().splitlines()
    return text[-1][:300] if text else type(err).__name__


def rejected_rows(path: Path, n_classes: int) -> list[dict]:
    """Rows of the candidates rejected before training, from ``rejected.jsonl`` (none when it is missing)."""
    if not path.exists():
        return []
    return [candidate_row(trial_id=d["trial_id"], status="rejected", genome=Genome.from_dict(d["genome"]),
                          n_classes=n_classes, reasons="; ".join(d["reasons"]), finished_at=d.get("time", ""))
            for d in read_jsonl(path)]


def rows_from_tune(run_dir: Path, n_classes: int) -> list[dict]:
    """The rows of a run interrupted before ``trials.csv`` was written, from Ray Tune's trial folders
    (``tune/trial_*/params.json`` and ``result.json``) and ``rejected.jsonl``; an unfinished trial is ``stopped``
    with ``stop_reason`` ``interrupted``."""
    rows = []
    for trial_dir in sorted((Path(run_dir) / TUNE_DIR).glob("trial_*")):
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
    return rows + rejected_rows(Path(run_dir) / REJECTED_FILE, n_classes)


def write_trials(run_dir: Path, rows: list[dict]) -> Path:
    """Write ``trials.csv`` (``TRIAL_COLUMNS``, rows in ``sort_rows`` order) atomically; return its path."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TRIAL_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in sort_rows(rows):
        w.writerow(r)
    return write_text(Path(run_dir) / TRIALS_FILE, buf.getvalue())


def read_trials(path: Path) -> list[dict]:
    """The typed rows of a ``trials.csv``."""
    with open(path, newline="", encoding="utf-8") as f:
        return [typed_row(r) for r in csv.DictReader(f)]
