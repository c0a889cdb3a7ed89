"""Export: seconds to export one model to INT8 TFLite, and INT8 latency in LiteRT (XNNPACK, builtin kernels) and
TFLite-Micro.

Run: ``.venv/bin/python bench/export.py [--quick]`` (prints a table, writes ``bench/results/export.json``).

Models: the named references ``lowcomplexity_cnn`` and ``dcase2022_baseline`` at 16 kHz (seeded initial
weights: export time and latency do not depend on training), calibrated on 64 real ESC-10 training patches.
Export seconds: PyTorch -> ONNX -> onnx2tf -> INT8 ``.tflite``; the first export of the process also imports
TensorFlow and is reported apart; the figure is the median of the following exports. Latency: one 1-thread
inference of one patch, median of 50 runs after 5 warm-up runs (LiteRT through ``litert_latency_ms``;
TFLite-Micro's ``invoke`` timed the same way, arena as measured by ``tflm_arena_bytes``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import DATA, command_line, spread, write_result  # noqa: I001 - sets sys.path

from asc_search.constraints import count_complexity, patch_layout
from asc_search.data import decode_dataset, load_manifest
from asc_search.deploy import export_int8_tflite, litert_latency_ms, tflm_arena_bytes
from asc_search.frontends import FeatureCache
from asc_search.search_spaces import build_model, reference_genome
from asc_search.trainers import Normalisation

MODELS = ("lowcomplexity_cnn", "dcase2022_baseline")


def tflm_latency_ms(path: Path, *, runs: int = 50, warmup: int = 5) -> tuple[float, int]:
    from tflite_micro import runtime

    arena = tflm_arena_bytes(path)
    it = runtime.Interpreter.from_file(str(path), arena_size=arena + 1024)
    inp = it.get_input_details(0)
    x = np.zeros(inp["shape"], dtype=inp["dtype"])
    times = []
    for i in range(warmup + runs):
        it.set_input(x, 0)
        t0 = time.perf_counter()
        it.invoke()
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times), arena


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one model, one timed export (smoke run)")
    ap.add_argument("--exports", type=int, default=3, help="timed exports per model after the first")
    args = ap.parse_args()
    models, exports = (MODELS[:1], 1) if args.quick else (MODELS, args.exports)
    torch.set_num_threads(1)
    manifest = load_manifest(DATA)
    data = decode_dataset(manifest, sample_rate_hz=16000)
    train = np.flatnonzero(data.is_train)
    rows, first_export_s = [], None
    with tempfile.TemporaryDirectory(prefix="asc-bench-export-") as tmp:
        for name in models:
            genome = reference_genome(name, sample_rate_hz=16000)
            c = count_complexity(genome, n_classes=data.n_classes)
            features, _ = FeatureCache(Path(tmp) / "cache").get(data, patch_layout(genome))
            norm = Normalisation.fit(features, train)
            x, _ = features.patches(train[:16])
            calib = norm.apply(x)[:64]
            torch.manual_seed(0)
            model = build_model(genome, data.n_classes).eval()
            out = Path(tmp) / f"{name}.tflite"
            times = []
            for _ in range(exports + (1 if first_export_s is None else 0)):
                t0 = time.perf_counter()
                export_int8_tflite(model, calib, out)
                dt = time.perf_counter() - t0
                if first_export_s is None:
                    first_export_s = dt
                else:
                    times.append(dt)
            xnn = [litert_latency_ms(out, xnnpack=True) for _ in range(3)]
            builtin = [litert_latency_ms(out, xnnpack=False) for _ in range(3)]
            tflm = [tflm_latency_ms(out) for _ in range(3)]
            row = {"model": name, "macs_per_patch": c.macs_per_patch, "macs": c.macs, "int8_bytes": c.int8_bytes,
                   "tflite_bytes": out.stat().st_size, "export_s": spread(times),
                   "litert_xnnpack_ms": spread(xnn), "litert_builtin_ms": spread(builtin),
                   "tflm_ms": spread([t for t, _ in tflm]), "tflm_arena_bytes": tflm[0][1]}
            rows.append(row)
            print(f"{name:<20} export {row['export_s']['median']:.1f} s | LiteRT XNNPACK "
                  f"{row['litert_xnnpack_ms']['median']:.3f} ms, builtin {row['litert_builtin_ms']['median']:.3f} ms "
                  f"| TFLite-Micro {row['tflm_ms']['median']:.2f} ms (arena {row['tflm_arena_bytes']:,} B) | "
                  f"{c.macs_per_patch / 1e6:.2f} M MACs per patch", flush=True)
    print(f"first export of the process (imports TensorFlow): {first_export_s:.1f} s")
    write_result("export", {"quick": args.quick, "threads": 1, "first_export_s": first_export_s, "models": rows},
                 command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
