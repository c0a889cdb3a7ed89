"""Front-end speed: ms of compute per second of audio, per front-end, at 16 and 44.1 kHz; feature-cache speed-up.

Run: ``.venv/bin/python bench/frontends.py`` (prints a table, writes ``bench/results/frontends.json``).
Audio: the first 64 clips of ../shared/data/esc10-dev (5 s, 16 kHz; resampled with soxr for 44.1 kHz).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from asc_search.data import decode_dataset, load_manifest
from asc_search.frontends import FeatureCache, FrontendConfig, PatchLayout, build_frontend

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ASC_SHARED_DATA", REPO.parent / "shared" / "data")) / "esc10-dev"
RATES_HZ = (16000, 44100)
KINDS = {"logmel": {}, "gammatone": {}, "cqt": {"f_min_hz": 50.0}}
REPEATS = 3


def time_frontend(config: FrontendConfig, audio: torch.Tensor) -> float:
    """Median seconds of ``REPEATS`` front-end passes over ``audio`` (batch, samples)."""
    fe = build_frontend(config)
    with torch.inference_mode():
        fe(audio[:2])  # warm-up
        times = []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            fe(audio)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    torch.set_num_threads(2)
    manifest = load_manifest(DATA)
    manifest = replace(manifest, clips=manifest.clips[:64])
    rows = []
    for rate in RATES_HZ:
        data = decode_dataset(manifest, sample_rate_hz=rate)
        n = 5 * rate
        audio = torch.from_numpy(np.stack([np.pad(w[:n], (0, max(0, n - len(w)))) for w in data.waveforms]))
        seconds_of_audio = audio.shape[0] * audio.shape[1] / rate
        for kind, extra in KINDS.items():
            cfg = FrontendConfig(kind=kind, sample_rate_hz=rate, n_bins=64, win_ms=40.0, hop_ms=20.0, **extra)
            s = time_frontend(cfg, audio)
            rows.append({"frontend": kind, "sample_rate_hz": rate, "ms_per_s_audio": 1000 * s / seconds_of_audio})
    data = decode_dataset(manifest, sample_rate_hz=16000)
    layout = PatchLayout(frontend=FrontendConfig(kind="logmel", sample_rate_hz=16000, n_bins=64, win_ms=40.0,
                                                 hop_ms=20.0), chunk_s=1.0)
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(tmp)
        t0 = time.perf_counter()
        _, hit1 = cache.get(data, layout)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, hit2 = cache.get(data, layout)
        second = time.perf_counter() - t0
    cache_row = {"first_trial_s": first, "second_trial_s": second, "speed_up": first / second,
                 "hits": [hit1, hit2]}
    print(f"{'front-end':<10} {'rate':>7} {'ms per s of audio':>18}   (64 clips x 5 s, 2 threads, median of {REPEATS})")
    for r in rows:
        print(f"{r['frontend']:<10} {r['sample_rate_hz']:>7} {r['ms_per_s_audio']:>18.2f}")
    ref = {r["sample_rate_hz"]: r["ms_per_s_audio"] for r in rows if r["frontend"] == "logmel"}
    for r in rows:
        r["ratio_to_logmel"] = r["ms_per_s_audio"] / ref[r["sample_rate_hz"]]
    print("ratio to log-mel at the same rate: " + ", ".join(
        f"{r['frontend']}@{r['sample_rate_hz']}: {r['ratio_to_logmel']:.2f}" for r in rows))
    print(f"feature cache: first trial {first:.3f} s (computes), second trial {second:.4f} s (memory-mapped load), "
          f"speed-up {cache_row['speed_up']:.0f}x")
    out = REPO / "bench" / "results" / "frontends.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"frontends": rows, "cache": cache_row, "torch_threads": 2}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
