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
    lines += _test_lines(run, knee) + _config_lines(run) + _data_lines(run) + _cluster_lines(run)
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
            d["validation_int8_accuracy"] = v.get("int8", {}).get("accuracy")
            t = v.get("test") or {}
            d["test_int8_accuracy"] = t.get("int8", {}).get("accuracy")
            d["test_int8_accuracy_ci95"] = t.get("int8", {}).get("accuracy_ci95")
            d["test_model"] = t.get("model")
            # after a refit the exported model trained on the validation clips: its figure there checks the
            # export (INT8 against float) and estimates nothing
            d["exported_trained_on_validation"] = bool(v.get("refit"))
            d["int8_float_agreement"] = v.get("int8_float_agreement")
            d["deployable"] = v.get("deployable")
        front.append(d)
    return front


def _ci(m: dict, key: str) -> str:
    """``0.812 [0.734, 0.881]``: a figure and its 95 % bootstrap interval."""
    ci = m.get(f"{key}_ci95")
    return _fmt(m.get(key)) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _test_lines(run: LoadedRun, knee: str | None) -> list[str]:
    """The report's lead: every exported model's figures on the test split, which the search never read."""
    ds = run.data_summary
    n_test = ds.get("test_clips", 0)
    val_acc = {r["trial_id"]: r.get("best_val_accuracy") for r in run.trials}
    scored = [v for v in run.exported if v.get("test")]
    if not n_test:
        return ["## Test figures", "",
                "**No test split** (the data's layout or `--test-fold none` holds none): every figure in this report "
                "is a validation figure, the one that selected the models. It is optimistic as an estimate of "
                "accuracy on new recordings.", ""]
    lines = ["## Test figures (held-out test split)", "",
             f"{n_test} test clips, never read by the search, the Pareto front, the knee, the ensemble or "
             "`deploy --pick`; each exported model was scored on them once, after the export. Intervals: 95 % "
             "percentile bootstrap over the test clips. The validation accuracy is the search's selection figure, "
             "for comparison only.", "",
             "| model | weights | test INT8 accuracy | test macro class accuracy (UAR) | test log loss | "
             "test float accuracy | search weights, test float accuracy | validation accuracy (selection) |",
             "|---|---|---|---|---|---|---|---|"]
    for v in scored:
        t = v["test"]
        q = t["int8"]
        search = t.get("search_model_float")
        lines.append(f"| {v['trial_id']}{' (knee)' if v['trial_id'] == knee else ''} | {t.get('model', '')} | "
                     f"{_ci(q, 'accuracy')} | {_ci(q, 'uar')} | {_ci(q, 'log_loss')} | "
                     f"{_fmt(t['float'].get('accuracy'))} | {_fmt(search.get('accuracy')) if search else '-'} | "
                     f"{_fmt(_validation_accuracy(v, val_acc))} |")
    if not scored:
        lines.append("| (no exported model was scored: see the export errors below) | | | | | | | |")
    groups = [v for v in scored if v["test"]["int8"].get("device_groups")]
    if groups:
        devices = sorted({d for v in groups for d in v["test"]["int8"]["per_device"]})
        seen = {d for v in groups for d, x in v["test"]["int8"]["per_device"].items() if x["seen"]}
        lines += ["", "Test INT8 accuracy per device (devices seen in training apart from unseen ones):", "",
                  "| model | seen devices | unseen devices | " + " | ".join(
                      f"{d}{'' if d in seen else ' (unseen)'}" for d in devices) + " |",
                  "|---" * (len(devices) + 3) + "|"]
        for v in groups:
            g, per = v["test"]["int8"]["device_groups"], v["test"]["int8"]["per_device"]
            lines.append(f"| {v['trial_id']} | {_ci(g.get('seen', {}), 'accuracy')} | "
                         f"{_ci(g.get('unseen', {}), 'accuracy')} | "
                         + " | ".join(_fmt(per.get(d, {}).get("accuracy")) for d in devices) + " |")
    classes = list(ds.get("classes", []))
    if scored and classes:
        lines += ["", "Test INT8 accuracy per class:", "", "| model | " + " | ".join(_cell(str(c)) for c in classes)
                  + " |", "|---" * (len(classes) + 1) + "|"]
        for v in scored:
            per = v["test"]["int8"].get("per_class", {})
            lines.append(f"| {v['trial_id']} | " + " | ".join(_fmt(per.get(str(c), {}).get("accuracy"))
                                                              for c in classes) + " |")
    return lines + [""]


def _validation_accuracy(v: dict, val_acc: dict) -> float | None:
    """The search's validation accuracy of an exported model (an ensemble: its selection's)."""
    if v.get("kind") == "ensemble":
        return ((v.get("selection") or {}).get("val_metrics") or {}).get("accuracy")
    return val_acc.get(v.get("trial_id"))


def _config_lines(run: LoadedRun) -> list[str]:
    lines: list[str] = []
    cfg = run.config.get("run", {})
    if cfg:
        keys = ("data", "trials", "time_budget_s", "seed", "sampler", "epochs", "patience", "batch_size", "val_fold",
                "test_fold", "refit",
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
             f"- clips: {ds.get('clips')} (train {ds.get('train_clips')}, validation {ds.get('validation_clips')}, "
             f"test {ds.get('test_clips', 0)})",
             f"- classes: {len(ds.get('classes', []))}; sample rates {ds.get('sample_rates_hz')} Hz",
             f"- split: {ds.get('split_rule', '')}; layout {ds.get('layout', '')}; "
             f"clips left out by the layout: {ds.get('left_out_clips', 0)}",
             f"- skipped files: {ds.get('skipped_files', 0)}"]
    lines += [f"  - `{s['path']}`: {s['reason']}" for s in ds.get("skipped", [])]
    for name, part in (ds.get("splits") or {}).items():
        lines.append(f"- {name} ({part['clips']} clips): {part['role']}")
    if ds.get("locations"):
        loc = ds["locations"]
        lines.append(f"- recording locations: train {loc['train']}, validation {loc['validation']}, test {loc['test']}; "
                     f"in two splits: {loc['in_two_splits']}")
    if ds.get("other_rate_files"):
        lines.append(f"- files at another native rate (resampled, kept): {ds['other_rate_files']}")
        lines += [f"  - `{o['path']}`: {o['reason']}" for o in ds.get("other_rate", [])]
    return lines


def _front_lines(front: list[dict], knee: str | None) -> list[str]:
    lines = ["", "## Pareto front (validation: the selection split)", "",
             f"Knee point: {knee or '-'}. Interactive plot: `pareto.html`. The validation accuracies (the search's "
             "weights) selected the front; the test figures are at the top. The exported model's INT8 accuracy on "
             "the validation clips checks the export; marked *trained on*, the model was refit on them and the "
             "figure estimates nothing.", "",
             "| trial | genome | validation accuracy | M MACs | INT8 bytes | exported INT8 accuracy on validation | "
             "INT8/float agreement | deployable |",
             "|---|---|---|---|---|---|---|---|"]
    for d in front:
        lines.append(
            f"| {d['trial_id']}{' (knee)' if d['knee'] else ''} | `{_cell(d['summary'])}` | "
            f"{d['best_val_accuracy']:.3f} | {d['macs'] / 1e6:.2f} | "
            f"{d['int8_bytes']:,} | {_fmt(d.get('validation_int8_accuracy'))}"
            f"{' (*trained on*)' if d.get('exported_trained_on_validation') else ''} | "
            f"{_fmt(d.get('int8_float_agreement'))} | "
            f"{d.get('deployable', 'not exported')} |")
    return lines


def _exported_lines(run: LoadedRun) -> list[str]:
    lines: list[str] = []
    if run.exported:
        lines += ["", "## Exported models (INT8 TFLite, validated with LiteRT on the validation split)", "",
                  "After a refit the models trained on the validation clips too: these columns check the export "
                  "(INT8 against float), the test figures at the top estimate accuracy.", "",
                  "| trial | .tflite bytes | INT8 weight bytes (graph) | M MACs (graph) | validation INT8 accuracy | "
                  "log loss | UAR | INT8/float agreement (XNNPACK, builtin, TFLM) | TFLM arena bytes | LiteRT ms (XNNPACK, "
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
                  "A check of the export, as the table above: after a refit the models trained on these clips.", "",
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
