"""Run report: ``pareto.json``, ``pareto.png`` and ``report.md``."""

from __future__ import annotations

from pathlib import Path

from asc_search._io import write_json, write_text
from asc_search.constraints import Budget
from asc_search.frontends import FeatureCache
from asc_search.report._plots import plot_pareto

FRONT_KEYS = ("trial_id", "genome_id", "summary", "best_val_accuracy", "best_val_log_loss", "best_val_uar",
              "macs", "int8_bytes", "params", "genome")


def write_report(result, budget: Budget) -> dict[str, Path]:
    """Write ``pareto.json``, ``pareto.png`` and ``report.md`` into the run directory.

    Args:
        result: A ``RunResult``.
        budget: The run's budget.

    Returns:
        Paths written, by name.
    """
    run_dir = Path(result.run_dir)
    by_id = {v.get("trial_id"): v for v in result.exported}
    front = []
    for r in result.front:
        d = {k: r[k] for k in FRONT_KEYS}
        v = by_id.get(r["trial_id"])
        if v is not None:
            d["validation"] = f"models/{r['trial_id']}/validation.json"
            d["int8_accuracy"] = v.get("int8", {}).get("accuracy")
            d["int8_float_agreement"] = v.get("int8_float_agreement")
            d["deployable"] = v.get("deployable")
        front.append(d)
    counts = {s: sum(r["status"] == s for r in result.trials) for s in ("completed", "rejected", "failed", "stopped")}
    paths = {
        "pareto.json": write_json(run_dir / "pareto.json", {
            "objectives": {"best_val_accuracy": "max", "macs": "min", "int8_bytes": "min"},
            "budget": budget.__dict__, "counts": counts, "front": front,
            "feature_cache": {k: v for k, v in FeatureCache(run_dir / "cache").stats().items() if k != "keys"},
        }),
        "pareto.png": plot_pareto(result.trials, budget, run_dir / "pareto.png",
                                  title=f"{run_dir.name}: Pareto front under {budget.name}"),
    }
    lines = [f"# asc-search run `{run_dir.name}`", "", f"Budget: {budget.describe()}", "",
             "## Data", ""]
    ds = result.data_summary
    lines += [f"- clips: {ds.get('clips')} (train {ds.get('train_clips')}, validation {ds.get('validation_clips')})",
              f"- classes: {len(ds.get('classes', []))}; sample rate {ds.get('sample_rate_hz')} Hz",
              f"- split: {ds.get('split_rule', '')}; layout {ds.get('layout', '')}; "
              f"clips left out by the layout: {ds.get('left_out_clips', 0)}",
              f"- skipped files: {ds.get('skipped_files', 0)}"]
    lines += [f"  - `{s['path']}`: {s['reason']}" for s in ds.get("skipped", [])]
    lines += ["", "## Candidates", "", "| status | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in counts.items()]
    lines += ["", "## Pareto front", "", "| trial | genome | accuracy | M MACs | INT8 bytes | INT8 accuracy | "
              "INT8/float agreement | deployable |", "|---|---|---|---|---|---|---|---|"]
    for d in front:
        lines.append(
            f"| {d['trial_id']} | `{_cell(d['summary'])}` | {d['best_val_accuracy']:.3f} | {d['macs'] / 1e6:.2f} | "
            f"{d['int8_bytes']:,} | {_fmt(d.get('int8_accuracy'))} | {_fmt(d.get('int8_float_agreement'))} | "
            f"{d.get('deployable', 'not exported')} |")
    devices = sorted({d for v in result.exported for d in v.get("int8_per_device_accuracy", {})})
    if devices:
        lines += ["", "## Per-device accuracy of the exported models (INT8, validation split)", "",
                  "| trial | " + " | ".join(devices) + " |", "|---" * (len(devices) + 1) + "|"]
        for v in result.exported:
            acc = v.get("int8_per_device_accuracy", {})
            lines.append(f"| {v['trial_id']} | " + " | ".join(_fmt(acc.get(d)) for d in devices) + " |")
    cache = FeatureCache(run_dir / "cache").stats()
    lines += ["", "## Feature cache", "",
              f"- distinct front-ends computed (misses): {cache['misses']}; cache hits: {cache['hits']}; "
              f"seconds computing features: {cache['seconds_computing']}"]
    lines += [f"  - `{k}`: {v['misses']} miss, {v['hits']} hits: {_layout_text(v['layout'])}"
              for k, v in sorted(cache["keys"].items())]
    failed = [r for r in result.trials if r["status"] in ("failed", "stopped")]
    if failed:
        lines += ["", "## Failed trials", ""] + [f"- {r['trial_id']}: {r['error'] or r['status']}" for r in failed]
    lines += ["", "![Pareto front](pareto.png)", ""]
    paths["report.md"] = write_text(run_dir / "report.md", "\n".join(lines))
    return paths


def _layout_text(layout: dict) -> str:
    fe = layout.get("frontend", {})
    return (f"{fe.get('kind', 'logmel')} {fe.get('n_bins', fe.get('n_mels'))} bins, {fe.get('sample_rate_hz')} Hz, "
            f"hop {fe.get('hop_ms')} ms, chunk {layout.get('chunk_s')} s")


def _cell(text: str) -> str:
    """Escape the pipes of a table cell (GitHub-flavoured Markdown)."""
    return text.replace("|", "\\|")


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"
