"""Trainer throughput: samples/s of ``asc_search.trainers.fit`` against a bare PyTorch loop, same model, same data.

Run: ``.venv/bin/python bench/trainer.py [--quick]`` (prints a table, writes ``bench/results/trainer.json``).

Data: ESC-10 dev (folds 1-2 train, fold 3 validates), log-mel 64 bins, 20 ms hop, 1 s patches at 16 kHz, from
the feature cache. Three CNNs of about 1, 10 and 30 M MACs per 1 s. Both loops do the same work per epoch:
as many random 1 s crops as the training clips have patches (Adam, batch 64, cross-entropy), then a
clip-level validation pass; both start from the same initial weights; 1 torch thread (what a trial gets).
The bare loop keeps the normalised features as one float32 tensor and gathers crops with tensor indexing.
The loops alternate (ours, bare, ours, bare ...) so machine load hits both alike; samples/s is the median
over repeats and the ratio is ours / bare per repeat pair (median and spread).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from _common import DATA, command_line, spread, write_result  # noqa: I001 - sets sys.path
from torch import nn

from asc_search.constraints import count_complexity, patch_layout
from asc_search.data import decode_dataset, load_manifest
from asc_search.frontends import FeatureCache
from asc_search.search_spaces import ArchSpec, FrontendGenes, Genome, build_model
from asc_search.trainers import Normalisation, TrainSettings, fit

FRONTEND = FrontendGenes(kind="logmel", sample_rate_hz=16000, n_bins=64, hop_ms=20.0, chunk_s=1.0)
MODELS = {
    "~1M": (("conv_c8_k3_s2x2_relu",), ("conv_c16_k3_relu",)),
    "~10M": (("conv_c16_k3_relu", "maxpool_k2"), ("conv_c32_k3_relu",), ("conv_c48_k3_relu",)),
    "~30M": (("conv_c24_k3_relu",), ("conv_c32_k3_relu", "maxpool_k2"), ("conv_c32_k3_relu",)),
}
BATCH = 64


def bare_loop(model: nn.Module, features, labels: np.ndarray, train: np.ndarray, val: np.ndarray,
              norm: Normalisation, epochs: int, seed: int) -> float:
    """A plain PyTorch loop doing ``fit``'s work; returns its seconds."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    mean = torch.tensor(norm.mean_db[0], dtype=torch.float32)
    std = torch.tensor(norm.std_db[0], dtype=torch.float32)
    feats = (torch.from_numpy(np.asarray(features.features, dtype=np.float32)) - mean) / std  # (F, frames)
    t = features.layout.patch_frames
    offsets = np.asarray(features.offsets)
    frames = np.diff(offsets)
    n_crops = np.array([len(features.patch_starts(int(i))) for i in train])
    sample_clips = np.repeat(train, n_crops)
    xv, owner = features.patches(val)
    xv = torch.from_numpy(norm.apply(xv))
    owner_t = torch.from_numpy(np.asarray(owner, dtype=np.int64))
    y_all = torch.from_numpy(labels.astype(np.int64))
    ar = torch.arange(t)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        order = rng.permutation(sample_clips)
        starts = torch.from_numpy(offsets[order] + (rng.random(len(order)) * (frames[order] - t + 1)).astype(np.int64))
        order_t = torch.from_numpy(order)
        for s in range(0, len(order), BATCH):
            cols = starts[s:s + BATCH, None] + ar  # (B, t)
            xb = feats[:, cols].permute(1, 0, 2).unsqueeze(1)  # (B, 1, F, t)
            yb = y_all[order_t[s:s + BATCH]]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.inference_mode():
            probs = torch.cat([torch.softmax(model(xv[s:s + 256]), 1) for s in range(0, len(xv), 256)])
            clip = torch.zeros(len(val), probs.shape[1]).index_add_(0, owner_t, probs)
            (clip.argmax(1).numpy() == labels[val]).mean()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 epoch, 1 repeat (smoke run)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    epochs, repeats = (1, 1) if args.quick else (args.epochs, args.repeats)
    torch.set_num_threads(1)
    # One-time cost: the first torch.optim.Adam imports torch._dynamo (about 2 s); paid once per process (a
    # reused Ray actor pays it once per worker), so it is measured apart and kept out of both loops.
    t0 = time.perf_counter()
    torch.optim.Adam(nn.Linear(1, 1).parameters())
    first_adam_s = time.perf_counter() - t0
    print(f"first torch.optim.Adam in this process: {first_adam_s:.2f} s (one-time import of torch._dynamo)")
    manifest = load_manifest(DATA)
    data = decode_dataset(manifest, sample_rate_hz=FRONTEND.sample_rate_hz)
    train, val = np.flatnonzero(data.is_train), np.flatnonzero(data.is_validation)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        genome0 = Genome(frontend=FRONTEND, arch=ArchSpec(stages=MODELS["~1M"]))
        features, _ = FeatureCache(tmp).get(data, patch_layout(genome0))
        norm = Normalisation.fit(features, train, deltas=0, seed=0)
        n_samples = int(sum(len(features.patch_starts(int(i))) for i in train)) * epochs
        for name, stages in MODELS.items():
            genome = Genome(frontend=FRONTEND, arch=ArchSpec(stages=stages))
            c = count_complexity(genome, n_classes=data.n_classes)
            ours_s, bare_s = [], []
            for _ in range(repeats):
                torch.manual_seed(0)
                model = build_model(genome, data.n_classes)
                t0 = time.perf_counter()
                fit(model, features, data.labels, train, val, norm,
                    TrainSettings(epochs=epochs, batch_size=BATCH, patience=epochs, seed=0))
                ours_s.append(time.perf_counter() - t0)
                torch.manual_seed(0)
                model = build_model(genome, data.n_classes)
                bare_s.append(bare_loop(model, features, data.labels, train, val, norm, epochs, seed=0))
            ratios = [b / o for o, b in zip(ours_s, bare_s, strict=True)]  # (n/o) / (n/b)
            row = {"model": name, "stages": [list(s) for s in stages], "macs": c.macs, "int8_bytes": c.int8_bytes,
                   "samples": n_samples, "ours_samples_per_s": n_samples / statistics.median(ours_s),
                   "bare_samples_per_s": n_samples / statistics.median(bare_s), "ours_s": ours_s, "bare_s": bare_s,
                   "ratio": spread(ratios)}
            rows.append(row)
            print(f"{name:>5} {c.macs / 1e6:6.2f} M MACs: ours {row['ours_samples_per_s']:7.0f} samples/s, bare "
                  f"{row['bare_samples_per_s']:7.0f} samples/s, ratio {row['ratio']['median']:.3f} "
                  f"[{row['ratio']['min']:.3f}-{row['ratio']['max']:.3f}]", flush=True)
    overall = spread([r["ratio"]["median"] for r in rows])
    print(f"trainer / bare loop samples/s: median ratio over sizes {overall['median']:.3f} "
          f"(epochs {epochs}, repeats {repeats}, 1 thread)")
    write_result("trainer", {"epochs": epochs, "repeats": repeats, "threads": 1, "batch_size": BATCH,
                             "train_clips": int(len(train)), "val_clips": int(len(val)), "models": rows,
                             "ratio_over_sizes": overall, "first_adam_import_s": first_adam_s, "quick": args.quick}, command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
