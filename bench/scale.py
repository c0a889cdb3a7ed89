"""Scale (issue 15): a TAU22-layout data set of N one-second 44.1 kHz clips, prepared and searched on this machine.

Run: ``.venv/bin/python bench/scale.py N [--work DIR] [--bad-fraction 0.01] [--trials 2] [--epochs 1] [-- ASC-SEARCH
OPTIONS]``
(prints the figures, writes ``bench/results/scale-N.json``; BENCHMARKS.md's "Data at scale" table reads them).

1. Builds the set into ``--work`` (default: a new folder under the system's temporary directory, outside the
   repository; 230,350 clips take about 20 GB) from the real audio of ../shared/data/esc10-dev: 1-s pieces cut,
   resampled to 44.1 kHz, devices and cities assigned, TAU22's fold1 split (``build_tau22_scale_fixture``);
   ``--bad-fraction`` replaces that share by corrupt, truncated, empty, 22.05 kHz and missing files.
2. Runs ``asc-search --budget dcase2022 --trials T --epochs E --sampler random --seed 0`` on it with a fresh
   ``--cache`` (the run prepares its waveform store), sampling the memory in use of the whole process tree (driver,
   Ray's processes and workers, the object store's shared memory; ``RssAnon``, so the page cache of the
   memory-mapped store is left out, as ``free`` leaves out buff/cache) every 0.5 s.
3. Measures, on the first ``--reference-clips`` clips of the same set, in this process: the preparation pipeline
   from files to features (Ray Data waveform store + the feature store of a log-mel front-end at the run's rate)
   against the bare nnAudio log-mel front-end on the same clips already in memory (the kernel), as clips/s.
4. Prints peak memory, throughputs and their ratio, the store's disk use, the wall time per stage, and (with
   ``--bad-fraction``) whether every planted bad file is listed with its reason; removes the work folder
   unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _common import DATA, REPO, command_line, write_result  # noqa: I001 - sets sys.path

from tests._memory import TreeMemorySampler
from tests.data.tau22_fixture import build_tau22_scale_fixture
from tests.search._cluster_util import env

GB = 1e9


def _du(path: Path) -> int:
    """Bytes of the files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _search(data: Path, work: Path, args) -> dict:
    """Run the CLI's search on ``data`` with a fresh cache; memory sampled over its process tree."""
    run, cache, log_path = work / "run", work / "cache", work / "run.log"
    cmd = [sys.executable, "-m", "asc_search.cli", "--data", str(data), "--budget", "dcase2022",
           "--trials", str(args.trials), "--epochs", str(args.epochs), "--sampler", "random", "--seed", "0",
           "--out", str(run), "--cache", str(cache), *args.extra]
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=work, env=env(), stdout=log, stderr=subprocess.STDOUT)
        with TreeMemorySampler(proc.pid, interval_s=0.5) as mem:
            rc = proc.wait()
    wall = time.perf_counter() - t0
    text = log_path.read_text()
    if rc != 0:
        sys.exit(f"the search failed (rc {rc}); its log {log_path} ends:\n{text[-3000:]}")
    found = re.findall(r"search finished in ([\d.]+) s", text)
    report = json.loads((run / "data_report.json").read_text())
    prep = report["preparation"]
    search_s = float(found[-1]) if found else float("nan")
    return {"wall_s": wall, "preparation_s": prep["seconds"], "search_s": search_s,
            "rest_s": wall - prep["seconds"] - search_s, "stores": prep["stores"],
            "peak_tree_bytes": mem.peak_tree, "peak_driver_bytes": mem.peak_root,
            "peak_child_bytes": mem.peak_child, "baseline_tree_bytes": mem.baseline_tree, "samples": mem.samples,
            "cache_bytes": {"waveform store": _du(cache / "waves"),
                            "features": sum(p.stat().st_size for p in cache.glob("*.npy"))} if cache.exists() else {},
            "data_report": {k: report[k] for k in ("clips", "train_clips", "validation_clips", "skipped_files",
                                                   "other_rate_files", "sample_rate_hz") if k in report},
            "skipped": report.get("skipped", []), "other_rate": report.get("other_rate", []), "log": str(log_path)}


def _throughput(data_root: Path, work: Path, n_clips: int, sample_rate_hz: int) -> dict:
    """Files -> waveform store (Ray Data) -> log-mel feature store, against the bare front-end on the same clips."""
    import ray

    from asc_search.data import decode_clip, load_manifest, prepare_waveform_store
    from asc_search.frontends import FeatureCache, FrontendConfig, PatchLayout, build_frontend

    manifest = load_manifest(data_root)
    manifest = replace(manifest, clips=manifest.clips[:n_clips])
    layout = PatchLayout(frontend=FrontendConfig(kind="logmel", sample_rate_hz=sample_rate_hz, n_bins=64,
                                                 win_ms=40.0, hop_ms=20.0), chunk_s=1.0)
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        data = prepare_waveform_store(manifest, sample_rate_hz=sample_rate_hz, cache_dir=work / "ref-cache")
        store_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        FeatureCache(work / "ref-cache" / "features").get(data, layout)
        features_s = time.perf_counter() - t0
    finally:
        ray.shutdown()
    n = len(data.waveforms)
    chunk = layout.chunk_samples
    audio = torch.from_numpy(np.stack([np.pad(np.asarray(w[:chunk]), (0, max(0, chunk - len(w))))
                                       for w in data.waveforms]))
    frontend = build_frontend(layout.frontend).eval()

    kernel, kernel_cpu = [], []
    with torch.inference_mode():
        frontend(audio[:2])
        for _ in range(3):
            t0, c0 = time.perf_counter(), time.process_time()
            for s in range(0, n, 32):
                frontend(audio[s:s + 32])
            kernel.append(time.perf_counter() - t0)
            kernel_cpu.append(time.process_time() - c0)
    kernel_s = float(np.median(kernel))
    # The bare loop: the same files through the same front-end in one process, no Ray, no store, no feature file.
    paths = [str(c.path) for c in manifest.clips[:n_clips]]
    t0, c0, decode_cpu = time.perf_counter(), time.process_time(), 0.0
    with torch.inference_mode():
        for s in range(0, len(paths), 32):
            d0 = time.process_time()
            waves = [w for w, _, _ in (decode_clip(q, sample_rate_hz) for q in paths[s:s + 32]) if w is not None]
            decode_cpu += time.process_time() - d0
            frontend(torch.from_numpy(np.stack([np.pad(w[:chunk], (0, max(0, chunk - len(w)))) for w in waves])))
    loop_s = time.perf_counter() - t0
    pipeline_s = store_s + features_s
    cpus = os.cpu_count() or 1
    # No pipeline on this machine can beat its CPUs: decode + resample + the kernel's CPU time, spread over all CPUs.
    ceiling_s = (decode_cpu + float(np.median(kernel_cpu))) / cpus
    return {"clips": n, "sample_rate_hz": sample_rate_hz, "store_s": store_s, "features_s": features_s,
            "pipeline_clips_per_s": n / pipeline_s, "store_clips_per_s": n / store_s,
            "features_clips_per_s": n / features_s,
            "kernel_clips_per_s": n / kernel_s, "kernel_runs_s": kernel, "kernel_cpu_s": kernel_cpu,
            "torch_threads": torch.get_num_threads(), "cpus": cpus,
            "bare_loop_clips_per_s": len(paths) / loop_s,
            "decode_resample_ms_per_clip": 1000 * decode_cpu / len(paths),
            "ratio_pipeline_to_kernel": kernel_s / pipeline_s, "ratio_pipeline_to_bare_loop": loop_s / pipeline_s,
            "ceiling_ratio_to_kernel": kernel_s / ceiling_s}


def _bad_check(planted: dict[str, str], result: dict) -> dict:
    """Is every planted bad file listed (skipped, or kept at another rate), and nothing else?"""
    listed = {s["path"]: s["reason"] for s in result["skipped"]} | {o["path"]: o["reason"]
                                                                    for o in result["other_rate"]}
    return {"planted": len(planted), "listed": len(set(planted) & set(listed)),
            "unlisted": sorted(set(planted) - set(listed)), "listed_but_not_planted": sorted(set(listed) - set(planted)),
            "kinds": {k: sum(1 for v in planted.values() if v == k) for k in sorted(set(planted.values()))}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("n_clips", type=int, help="clips in the set (TAU22 reads 169,300 of 230,350)")
    p.add_argument("--work", default="", help="folder for the data set, the run and its cache (removed at the end "
                   "unless --keep; default: a new folder under the system's temporary directory)")
    p.add_argument("--bad-fraction", type=float, default=0.0, help="share of bad files planted (e.g. 0.01)")
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--reference-clips", type=int, default=10_000, help="clips of the throughput comparison (Ray Data's start-up, a few seconds, is in the store's time: fewer clips understate it)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:cut])
    args.extra = argv[cut + 1:]  # after --: more asc-search options
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="asc-scale-"))
    if work == REPO or REPO in work.parents:
        sys.exit(f"--work {work} is inside the repository; give a folder outside it")
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        fx = build_tau22_scale_fixture(work / "tau22", DATA, args.n_clips, bad_fraction=args.bad_fraction)
        build_s = time.perf_counter() - t0
        print(f"data set: {fx['clips']:,} clips written ({fx['train']:,} train, {fx['evaluate']:,} evaluate), "
              f"{fx['bytes'] / GB:.2f} GB, {len(fx['bad'])} bad, built in {build_s:.0f} s", flush=True)
        search = _search(fx["root"], work, args)
        rate = search["data_report"]["sample_rate_hz"]
        ref = _throughput(fx["root"], work, min(args.reference_clips, args.n_clips), rate)
        bad = _bad_check(fx["bad"], search) if fx["bad"] else None
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    store_bytes = sum(s["bytes"] for s in search["stores"])
    print(f"\nscale: {args.n_clips:,} clips, {args.trials} trials x {args.epochs} epoch(s), store at {rate} Hz")
    print(f"peak memory in use, whole process tree: {search['peak_tree_bytes'] / GB:.2f} GB (driver "
          f"{search['peak_driver_bytes'] / GB:.2f} GB, largest worker {search['peak_child_bytes'] / GB:.2f} GB; "
          f"{search['baseline_tree_bytes'] / GB:.2f} GB at the start; {search['samples']} samples)")
    for s in search["stores"]:
        print(f"preparation in the run: {s.get('kept_clips', s.get('clips', '?'))} clips at {s['sample_rate_hz']} "
              f"Hz, {s.get('clips_per_s', 0):,.0f} clips/s, {s['bytes'] / GB:.2f} GB")
    print(f"throughput on {ref['clips']:,} of the clips: files -> waveform store -> log-mel features "
          f"{ref['pipeline_clips_per_s']:,.0f} clips/s (store alone {ref['store_clips_per_s']:,.0f}, features alone "
          f"{ref['features_clips_per_s']:,.0f}); bare nnAudio log-mel on the clips in memory "
          f"{ref['kernel_clips_per_s']:,.0f} clips/s: ratio {ref['ratio_pipeline_to_kernel']:.2f} (the CPUs allow at "
          f"most {ref['ceiling_ratio_to_kernel']:.2f}: decode + resample {ref['decode_resample_ms_per_clip']:.2f} ms "
          f"CPU per clip); bare loop from the files {ref['bare_loop_clips_per_s']:,.0f} clips/s: ratio "
          f"{ref['ratio_pipeline_to_bare_loop']:.2f}")
    print("disk: store " f"{store_bytes / GB:.2f} GB; cache folders "
          + ", ".join(f"{k} {v / GB:.2f} GB" for k, v in search["cache_bytes"].items()))
    print(f"wall: build {build_s:.0f} s; run {search['wall_s']:.0f} s = preparation {search['preparation_s']:.0f} s "
          f"+ search {search['search_s']:.0f} s + start-up, export and report {search['rest_s']:.0f} s")
    if bad:
        print(f"bad files: {bad['planted']} planted {bad['kinds']}, {bad['listed']} listed with a reason, "
              f"{len(bad['unlisted'])} unlisted, {len(bad['listed_but_not_planted'])} good files listed; clips kept "
              f"{search['data_report'].get('clips')} of {fx['clips']} ")
    write_result(f"scale-{args.n_clips}", {"n_clips": args.n_clips, "trials": args.trials, "epochs": args.epochs,
                                            "bad_fraction": args.bad_fraction, "build_s": build_s,
                                            "data_bytes": fx["bytes"], "store_bytes": store_bytes,
                                            "search": {k: v for k, v in search.items()
                                                       if k not in ("skipped", "other_rate")},
                                            "throughput": ref, "bad": bad}, command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
