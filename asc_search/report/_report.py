"""Run report: ``pareto.json``, ``pareto.png``, ``pareto.html``, ``hypervolume.png`` and ``report.md``.

Everything is rebuilt from the run directory (``load_run``), at the end of a search and by
``asc-search report RUN`` alike, so the two give the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

from asc_search._io import write_json, write_text
from asc_search._pareto import hypervolume_limits, knee_point, normalised_hypervolume
from asc_search.frontends import FeatureCache
from asc_search.report._html import plot_pareto_html
from asc_search.report._plots import plot_hypervolume, plot_pareto
from asc_search.rundir import (
    CLUSTER_FILE,
    HYPERVOLUME_PNG,
    MODELS_DIR,
    PARETO_HTML,
    PARETO_JSON,
    PARETO_PNG,
    REPORT_FILE,
    VALIDATION_FILE,
    LoadedRun,
    load_run,
    run_cache_dir,
)

FRONT_KEYS = ("trial_id", "genome_id", "summary", "best_val_accuracy", "best_val_log_loss", "best_val_uar",
              "macs", "int8_bytes", "params", "genome")


def hypervolume_reference(run: LoadedRun) -> tuple[float, float, float]:
    """Reference point of the (accuracy, MACs, INT8 bytes) hypervolume: accuracy 0 and the budget's MACs and
    INT8-byte limits (1.1x the run's largest value where the budget sets none)."""
    pts = [(r["best_val_accuracy"], r["macs"], r["int8_bytes"]) for r in run.trials if r["status"] == "completed"]
    return (0.0, *hypervolume_limits(pts, run.budget.max_macs, run.budget.max_int8_bytes))


def hypervolume_by_trial(run: LoadedRun) -> list[float]:
    """Exact normalised hypervolume of (accuracy, MACs, INT8 bytes) after each completed trial, in order of
    completion (``normalised_hypervolume`` against ``hypervolume_reference``)."""
    done = sorted((r for r in run.trials if r["status"] == "completed"),
                  key=lambda r: (float(r.get("finished_at") or 0), str(r["trial_id"])))
    _, max_macs, max_bytes = hypervolume_reference(run)
    pts: list[tuple[float, float, float]] = []
    out = []
    for r in done:
        pts.append((r["best_val_accuracy"], r["macs"], r["int8_bytes"]))
        out.append(normalised_hypervolume(pts, max_macs=max_macs, max_int8_bytes=max_bytes))
    return out


def report_run(run_dir: str | Path) -> LoadedRun:
    """Read a run directory and (re)write its report files; return the run."""
    run = load_run(run_dir)
    write_report(run)
    return run


def write_report(run: LoadedRun) -> dict[str, Path]:
    """Write the report files of ``run`` into its directory.

    Returns:
        Paths written, by name.
    """
    run_dir, budget = run.run_dir, run.budget
    by_id = {v.get("trial_id"): v for v in run.exported}
    knee_idx = knee_point([(r["best_val_accuracy"], r["macs"]) for r in run.front])
    knee = run.front[knee_idx]["trial_id"] if knee_idx is not None else None
    front = _front_entries(run, by_id, knee)
    counts = {s: sum(r["status"] == s for r in run.trials) for s in ("completed", "rejected", "failed", "stopped")}
    cache = FeatureCache(run_cache_dir(run_dir)).stats(run=str(Path(run_dir).resolve()))
    hv = hypervolume_by_trial(run)
    exported = set(by_id)
    title = f"{run_dir.name}: Pareto front under {budget.name}"
    paths = {
        PARETO_JSON: write_json(run_dir / PARETO_JSON, {
            "objectives": {"best_val_accuracy": "max", "macs": "min", "int8_bytes": "min"},
            "budget": budget.__dict__, "counts": counts, "knee_trial_id": knee,
            "hypervolume": {"objectives": ["best_val_accuracy", "macs", "int8_bytes"],
                            "reference": list(hypervolume_reference(run)),
                            "normalised_by_trial": [round(h, 6) for h in hv]},
            "front": front, "feature_cache": {k: v for k, v in cache.items() if k != "keys"},
        }),
        PARETO_PNG: plot_pareto(run.trials, budget, run_dir / PARETO_PNG, exported=exported, knee=knee, title=title),
        PARETO_HTML: plot_pareto_html(run.trials, budget, run_dir / PARETO_HTML, exported=exported, title=title),
        HYPERVOLUME_PNG: plot_hypervolume(hv, run_dir / HYPERVOLUME_PNG,
                                          title=f"{run_dir.name}: hypervolume (accuracy, MACs, INT8 bytes)"),
    }
    lines = [f"# asc-search run `{run_dir.name}`", "", f"Budget: {budget.describe()}", ""]
    lines += _config_lines(run) + _data_lines(run) + _cluster_lines(run)
    lines += ["", "## Candidates", "", "| status | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in counts.items()]
    if hv:
        ref = hypervolume_reference(run)
        lines += ["", f"Hypervolume of (validation accuracy, MACs, INT8 bytes), exact, against (0, {ref[1]:,.0f} MACs, "
                      f"{ref[2]:,.0f} B) and normalised by that box: {hv[-1]:.4f} after {len(hv)} trained candidates "
                      "(`hypervolume.png`)."]
    lines += (_front_lines(front, knee) + _exported_lines(run) + _preparation_lines(run.data_summary)
              + _cache_lines(cache) + _failure_lines(run))
    lines += ["", "![Pareto front](pareto.png)", ""]
    paths[REPORT_FILE] = write_text(run_dir / REPORT_FILE, "\n".join(lines))
    return paths


def _front_entries(run: LoadedRun, by_id: dict, knee: str | None) -> list[dict]:
    """``pareto.json``'s front: each member's objectives and genome, whether it is the knee, and its export."""
    front = []
    for r in run.front:
        d = {k: r[k] for k in FRONT_KEYS}
        d["knee"] = r["trial_id"] == knee
        v = by_id.get(r["trial_id"])
        if v is not None:
            d["validation"] = f"{MODELS_DIR}/{r['trial_id']}/{VALIDATION_FILE}"
            d["int8_accuracy"] = v.get("int8", {}).get("accuracy")
            d["int8_float_agreement"] = v.get("int8_float_agreement")
            d["deployable"] = v.get("deployable")
        front.append(d)
    return front


def _config_lines(run: LoadedRun) -> list[str]:
    lines: list[str] = []
    cfg = run.config.get("run", {})
    if cfg:
        keys = ("data", "trials", "time_budget_s", "seed", "sampler", "epochs", "patience", "batch_size",
                "frontends", "sample_rates_hz", "chunks_s", "deltas", "cpus_per_trial", "gpus_per_trial", "address")
        lines += ["## Configuration", "", "| option | value |", "|---|---|"]
        lines += [f"| {k} | {_cell(str(cfg.get(k)))} |" for k in keys if k in cfg]
        lines += ["", "Full resolved configuration and search space: `config.yaml`.", ""]
    if run.interrupted:
        lines += ["**Interrupted run**: no trials.csv; the rows below come from Ray Tune's trial folders.", ""]
    return lines


def _data_lines(run: LoadedRun) -> list[str]:
    ds = run.data_summary
    lines = ["## Data", "",
             f"- clips: {ds.get('clips')} (train {ds.get('train_clips')}, validation {ds.get('validation_clips')})",
             f"- classes: {len(ds.get('classes', []))}; sample rates {ds.get('sample_rates_hz')} Hz",
             f"- split: {ds.get('split_rule', '')}; layout {ds.get('layout', '')}; "
             f"clips left out by the layout: {ds.get('left_out_clips', 0)}",
             f"- skipped files: {ds.get('skipped_files', 0)}"]
    lines += [f"  - `{s['path']}`: {s['reason']}" for s in ds.get("skipped", [])]
    if ds.get("other_rate_files"):
        lines.append(f"- files at another native rate (resampled, kept): {ds['other_rate_files']}")
        lines += [f"  - `{o['path']}`: {o['reason']}" for o in ds.get("other_rate", [])]
    return lines


def _front_lines(front: list[dict], knee: str | None) -> list[str]:
    lines = ["", "## Pareto front", "", f"Knee point: {knee or '-'}. Interactive plot: `pareto.html`.", "",
             "| trial | genome | accuracy | M MACs | INT8 bytes | INT8 accuracy | INT8/float agreement | deployable |",
             "|---|---|---|---|---|---|---|---|"]
    for d in front:
        lines.append(
            f"| {d['trial_id']}{' (knee)' if d['knee'] else ''} | `{_cell(d['summary'])}` | "
            f"{d['best_val_accuracy']:.3f} | {d['macs'] / 1e6:.2f} | "
            f"{d['int8_bytes']:,} | {_fmt(d.get('int8_accuracy'))} | {_fmt(d.get('int8_float_agreement'))} | "
            f"{d.get('deployable', 'not exported')} |")
    return lines


def _exported_lines(run: LoadedRun) -> list[str]:
    lines: list[str] = []
    if run.exported:
        lines += ["", "## Exported models (INT8 TFLite, validated with LiteRT)", "",
                  "| trial | .tflite bytes | INT8 weight bytes (graph) | M MACs (graph) | INT8 accuracy | log loss | "
                  "UAR | INT8/float agreement (XNNPACK, builtin, TFLM) | TFLM arena bytes | LiteRT ms (XNNPACK, "
                  "builtin) | deployable |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for v in run.exported:
            if "error" in v:
                lines.append(f"| {v['trial_id']} | export failed: {_cell(v['error'][:120])} | | | | | | | | | False |")
                continue
            q = v["int8"]
            lines.append(f"| {v['trial_id']} | {v['file_bytes']:,} | {v['int8_bytes_tflite']:,} | "
                         f"{v['macs_tflite'] / 1e6:.2f} | {q['accuracy']:.3f} | {q['log_loss']:.3f} | {q['uar']:.3f} | "
                         f"{v['int8_float_agreement']:.3f}, {_fmt(v.get('int8_builtin_float_agreement'))}, "
                         f"{_fmt(v.get('tflm_float_agreement'))} | {v.get('tflm_arena_bytes', '-')} | "
                         f"{_fmt(v.get('latency_ms_litert_xnnpack'))}, {_fmt(v.get('latency_ms_litert_builtin'))} | "
                         f"{v['deployable']} |")
    devices = sorted({d for v in run.exported for d in v.get("int8_per_device_accuracy", {})})
    if devices:
        lines += ["", "## Per-device accuracy of the exported models (INT8, validation split)", "",
                  "| trial | " + " | ".join(devices) + " |", "|---" * (len(devices) + 1) + "|"]
        for v in run.exported:
            acc = v.get("int8_per_device_accuracy", {})
            lines.append(f"| {v['trial_id']} | " + " | ".join(_fmt(acc.get(d)) for d in devices) + " |")
    return lines


def _preparation_lines(data_summary: dict) -> list[str]:
    """The waveform stores of the run: reused, or prepared at what throughput, and their size."""
    prep = data_summary.get("preparation")
    if not prep:
        return []
    lines = ["", "## Data preparation (waveform stores)", "",
             f"- in `{prep['cache']}`, {prep['seconds']:.1f} s in all"]
    for st in prep["stores"]:
        how = ("reused (prepared by an earlier run)" if st["reused"] else
               f"prepared: {st['clips']:,} clips in {st['seconds']:.1f} s ({st['clips_per_s']:,.0f} clips/s)"
               + (f", {st['shards_on_disk_before']} shard(s) already on disk" if st["shards_on_disk_before"] else ""))
        lines.append(f"  - {st['sample_rate_hz']} Hz: {how}; {st['kept_clips']:,} clips kept, {st['skipped']} "
                     f"skipped; {st['bytes'] / 1e9:.2f} GB")
    return lines


def _cache_lines(cache: dict) -> list[str]:
    lines = ["", "## Feature cache", "",
             f"- distinct front-ends computed (misses): {cache['misses']}; cache hits: {cache['hits']}; "
             f"seconds computing features: {cache['seconds_computing']}"]
    return lines + [f"  - `{k}`: {v['misses']} miss, {v['hits']} hits: {_layout_text(v['layout'])}"
                    for k, v in sorted(cache["keys"].items())]


def _failure_lines(run: LoadedRun) -> list[str]:
    lines: list[str] = []
    failed = [r for r in run.trials if r["status"] == "failed"]
    if failed:
        lines += ["", "## Failures", "",
                  "Trials that raised, whose training loss became NaN/inf, that ran out of memory, or that Ray "
                  "gave up on after their worker or node died (retried on another node first). The search went on "
                  "without them.", "", "| trial | genome | reason | node |", "|---|---|---|---|"]
        lines += [f"| {r['trial_id']} | `{_cell(str(r.get('summary', '')))}` | "
                  f"{_cell(str(r.get('error') or 'no reason recorded'))} | {_cell(str(r.get('node_ip') or '-'))} |"
                  for r in failed]
    stopped = [r for r in run.trials if r["status"] == "stopped"]
    if stopped:
        lines += ["", "## Stopped trials", ""]
        lines += [f"- {r['trial_id']}: {r.get('stop_reason') or r['status']}" for r in stopped]
    return lines


def _cluster_lines(run: LoadedRun) -> list[str]:
    """The Ray sessions of the run (``cluster.json``: a resumed run has several) and trials per node."""
    path = run.run_dir / CLUSTER_FILE
    if not path.exists():
        return []
    sessions = json.loads(path.read_text())
    per_node: dict[str, int] = {}
    for r in run.trials:
        if r["status"] != "rejected" and r.get("node_id"):
            per_node[str(r["node_id"])] = per_node.get(str(r["node_id"]), 0) + 1
    lines = ["", "## Ray cluster", "", "| session | address | nodes (CPUs, GPUs) |", "|---|---|---|"]
    for i, s in enumerate(sessions, 1):
        nodes = ", ".join(f"{n['ip']} {n['node_id'][:8]} ({n['cpus']:g}, {n['gpus']:g})" for n in s["nodes"])
        lines.append(f"| {i}{' (resumed)' if s.get('resumed') else ''} | {s['address']} | {nodes} |")
    if per_node:
        lines += ["", "Trials per node: " + ", ".join(f"{k[:8]}: {v}" for k, v in sorted(per_node.items()))]
    return lines


def _layout_text(layout: dict) -> str:
    fe = layout.get("frontend", {})
    return (f"{fe.get('kind', 'logmel')} {fe.get('n_bins')} bins, {fe.get('sample_rate_hz')} Hz, "
            f"hop {fe.get('hop_ms')} ms, chunk {layout.get('chunk_s')} s")


def _cell(text: str) -> str:
    """Escape the pipes of a table cell (GitHub-flavoured Markdown)."""
    return text.replace("|", "\\|")


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"
