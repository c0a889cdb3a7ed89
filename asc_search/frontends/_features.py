"""Clip features for training and evaluation, computed once per front-end and cached on disk.

A clip is zero-padded so that patches of ``chunk_s`` with 50 % overlap (rounded to whole frames) cover
it; its static spectrogram is computed once; a patch is a crop of ``patch_frames`` frames, which equals
the spectrogram of the patch's own audio because frames are not centred. Delta channels are added per
patch (``add_deltas``), as the device does.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from asc_search._errors import UserInputError
from asc_search._io import atomic_write, read_jsonl
from asc_search.data import DecodedDataset, count_patches, pad_to_patches
from asc_search.frontends._registry import FrontendConfig, build_frontend, compute_deltas

log = logging.getLogger(__name__)

EVENTS_FILE = "events.jsonl"


@dataclass(frozen=True, kw_only=True)
class PatchLayout:
    """How a clip is cut into model inputs (patches).

    Args:
        frontend: Front-end parameters.
        chunk_s: Patch length (s).
    """

    frontend: FrontendConfig
    chunk_s: float

    @property
    def chunk_samples(self) -> int:
        """Patch length in samples."""
        return int(round(self.chunk_s * self.frontend.sample_rate_hz))

    @property
    def patch_frames(self) -> int:
        """Frames per patch (the model's input width)."""
        return self.frontend.n_frames(self.chunk_samples)

    @property
    def patch_hop_frames(self) -> int:
        """Patch hop in frames: half a patch (50 % overlap), rounded to whole frames, at least 1."""
        return max(1, int(round(self.chunk_samples / 2 / self.frontend.hop_samples)))

    @property
    def patch_hop_samples(self) -> int:
        """Patch hop in samples."""
        return self.patch_hop_frames * self.frontend.hop_samples

    def patches_per_second(self) -> int:
        """Patches that cover 1 s of audio (a 1 s clip), by the rule of ``pad_to_patches``: 1 when ``chunk_s >= 1``."""
        return count_patches(self.frontend.sample_rate_hz, chunk_samples=self.chunk_samples,
                             patch_hop_samples=self.patch_hop_samples)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Model input ``(channels, n_bins, patch_frames)``."""
        return (self.frontend.channels, self.frontend.n_bins, self.patch_frames)

    def key(self) -> dict:
        """JSON-ready description of the static features (cache key, reports): deltas are left out, since
        they are added per patch and do not change what is cached."""
        static = replace(self.frontend, deltas=0)
        return {"frontend": static.to_dict(), "chunk_s": self.chunk_s}


@dataclass(kw_only=True)
class ClipFeatures:
    """Log-mel of every clip, concatenated along time.

    Args:
        features: Shape ``(n_bins, total_frames)``, float16, dB (static features).
        offsets: Start frame of each clip, shape ``(n_clips + 1,)`` (the last entry is ``total_frames``).
        layout: How patches are cut.
    """

    features: np.ndarray
    offsets: np.ndarray
    layout: PatchLayout

    def clip(self, i: int) -> np.ndarray:
        """Features of clip ``i``, shape ``(n_bins, frames_i)``."""
        return self.features[:, self.offsets[i]:self.offsets[i + 1]]

    def patch_starts(self, i: int) -> np.ndarray:
        """Start frames (within clip ``i``) of its evaluation patches (50 % overlap)."""
        n = int(self.offsets[i + 1] - self.offsets[i])
        last = n - self.layout.patch_frames
        return np.arange(0, last + 1, self.layout.patch_hop_frames)

    def patches(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Evaluation patches (static channel) of the clips ``indices``.

        Returns:
            ``(x, owner)``: ``x`` of shape ``(n_patches, 1, n_bins, patch_frames)`` float32 and
            ``owner`` of shape ``(n_patches,)``: the position in ``indices`` each patch belongs to.
        """
        xs, owner = [], []
        t = self.layout.patch_frames
        for k, i in enumerate(indices):
            c = self.clip(int(i))
            for s in self.patch_starts(int(i)):
                xs.append(c[:, s:s + t])
                owner.append(k)
        x = np.stack(xs).astype(np.float32)[:, None]
        return x, np.asarray(owner, dtype=np.int64)


def add_deltas(x: np.ndarray, order: int) -> np.ndarray:
    """Stack delta (and delta-delta) channels onto static patches.

    Args:
        x: Static patches, shape ``(n, 1, n_bins, frames)``.
        order: 0 (returned as is), 1 or 2.

    Returns:
        Shape ``(n, 1 + order, n_bins, frames)`` float32.
    """
    if order == 0:
        return np.asarray(x, dtype=np.float32)
    with torch.inference_mode():
        return compute_deltas(torch.from_numpy(np.asarray(x, dtype=np.float32)), order).numpy()


def compute_clip_features(data: DecodedDataset, layout: PatchLayout, *, batch_clips: int = 32,
                          out: str | Path | None = None, device: str = "cpu") -> ClipFeatures:
    """Compute the static spectrogram of every (padded) clip with the layout's front-end, in bounded memory.

    Clips go through the front-end in batches of ``batch_clips`` (sorted by length, so a batch pads little);
    only one batch of waveforms is read at a time (a store-backed dataset reads them from its memory-mapped
    shards), and the features are written into ``out`` (a memory-mapped ``.npy`` file) when it is given.

    Args:
        data: Decoded clips; ``data.sample_rate_hz`` must equal the front-end's.
        layout: Front-end and patch length.
        batch_clips: Clips per front-end call (memory bound).
        out: ``.npy`` file to write the features into (memory-mapped); None: an in-memory array.
        device: Where the front-end runs (``cpu`` or ``cuda``: a trial given a GPU computes its features there).

    Returns:
        Features of shape ``(n_bins, total_frames)`` float16 (a read-write memmap of ``out`` when given).

    Raises:
        UserInputError: The sample rates differ.
    """
    if data.sample_rate_hz != layout.frontend.sample_rate_hz:
        raise UserInputError(
            f"front-end expects {layout.frontend.sample_rate_hz} Hz, data is at {data.sample_rate_hz} Hz"
        )
    frontend = build_frontend(replace(layout.frontend, deltas=0)).eval().to(device)
    chunk, hop = layout.chunk_samples, layout.patch_hop_samples
    padded_lengths = [chunk + (count_patches(int(n), chunk_samples=chunk, patch_hop_samples=hop) - 1) * hop
                      for n in data.clip_lengths()]
    frames = np.asarray([layout.frontend.n_frames(n) for n in padded_lengths], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(frames)]).astype(np.int64)
    order = np.argsort(padded_lengths)
    features = None
    with torch.inference_mode():
        for start in range(0, len(order), batch_clips):
            idx = order[start:start + batch_clips]
            n = max(padded_lengths[i] for i in idx)
            batch = np.zeros((len(idx), n), dtype=np.float32)
            for r, i in enumerate(idx):
                batch[r, :padded_lengths[i]] = pad_to_patches(np.asarray(data.waveforms[int(i)], dtype=np.float32),
                                                              chunk_samples=chunk, patch_hop_samples=hop)
            mel = frontend(torch.from_numpy(batch).to(device)).cpu().numpy()
            if features is None:
                shape = (mel.shape[1], int(offsets[-1]))
                features = (np.lib.format.open_memmap(out, mode="w+", dtype=np.float16, shape=shape)
                            if out is not None else np.empty(shape, dtype=np.float16))
            for r, i in enumerate(idx):
                features[:, offsets[i]:offsets[i + 1]] = mel[r, :, :frames[i]].astype(np.float16)
    if isinstance(features, np.memmap):
        features.flush()
    return ClipFeatures(features=features, offsets=offsets, layout=layout)


class FeatureCache:
    """Per-run cache of clip features: a pair of ``.npy`` files per distinct front-end (static features).

    Features are float16 ``.npy`` files under ``root``; a file lock makes concurrent trials on one
    machine compute each front-end once; writes go to a temporary name and are moved into place.

    Args:
        root: Cache folder (created when missing); several runs may share one (``--cache DIR``).
        run: The run using it (its folder), written with each hit and miss so that ``stats(run=...)`` counts one
            run's events in a shared cache.
    """

    def __init__(self, root: str | Path, *, run: str = "") -> None:
        self.root = Path(root)
        self.run = str(run)
        self.root.mkdir(parents=True, exist_ok=True)

    def key(self, data: DecodedDataset, layout: PatchLayout) -> str:
        """Cache key of a dataset and layout."""
        blob = json.dumps({"data": data.fingerprint(), **layout.key()}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    def get(self, data: DecodedDataset, layout: PatchLayout, *, device: str = "cpu") -> tuple[ClipFeatures, bool]:
        """Load the features of ``layout`` or compute and store them (the front-end on ``device``).

        Returns:
            ``(features, hit)``: ``hit`` is True when they came from the cache.
        """
        key = self.key(data, layout)
        feat_path, off_path = self.root / f"{key}.features.npy", self.root / f"{key}.offsets.npy"
        with open(self.root / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if feat_path.exists() and off_path.exists():
                    feats = np.load(feat_path, mmap_mode="r")
                    self._event(key, layout, hit=True, seconds=0.0)
                    return ClipFeatures(features=feats, offsets=np.load(off_path), layout=layout), True
                t0 = time.perf_counter()
                tmp = feat_path.with_name(f".{feat_path.name}.{os.getpid()}.tmp")
                try:
                    cf = compute_clip_features(data, layout, out=tmp, device=device)
                    del cf.features  # the memmap is closed before the file is moved into place
                    atomic_write(off_path, lambda p: _save_npy(p, cf.offsets))
                    os.replace(tmp, feat_path)
                finally:
                    tmp.unlink(missing_ok=True)
                self._event(key, layout, hit=False, seconds=time.perf_counter() - t0)
                log.info("computed features %s (%s)", key, layout.key())
                feats = np.load(feat_path, mmap_mode="r")
                return ClipFeatures(features=feats, offsets=cf.offsets, layout=layout), False
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _event(self, key: str, layout: PatchLayout, *, hit: bool, seconds: float) -> None:
        with open(self.root / EVENTS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, "hit": hit, "seconds": round(seconds, 3), "layout": layout.key(),
                                "time": time.time(), "run": self.run}) + "\n")

    def stats(self, run: str | None = None) -> dict:
        """Hit and miss counts of this cache (all processes), per front-end key and in total.

        Args:
            run: Count only this run's events (a run folder, as given to ``FeatureCache(run=...)``); events
                written without a run count for every run. None: every event.

        Returns:
            ``{"hits": int, "misses": int, "seconds_computing": float, "keys": {key: {"hits", "misses",
            "layout"}}}``; every key has ``misses == 1`` when each front-end was computed once.
        """
        out = {"hits": 0, "misses": 0, "seconds_computing": 0.0, "keys": {}}
        path = self.root / EVENTS_FILE
        if not path.exists():
            return out
        for e in read_jsonl(path):
            if run is not None and e.get("run", "") not in ("", str(run)):
                continue
            k = out["keys"].setdefault(e["key"], {"hits": 0, "misses": 0, "layout": e["layout"]})
            field = "hits" if e["hit"] else "misses"
            k[field] += 1
            out[field] += 1
            out["seconds_computing"] += e["seconds"]
        out["seconds_computing"] = round(out["seconds_computing"], 2)
        return out


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)
