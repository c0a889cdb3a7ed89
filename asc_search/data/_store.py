"""The waveform store: every clip of a manifest decoded once at one sample rate into memory-mapped shards on disk.

A data set the size of TAU22 (169,300 clips read, 1 s at 44.1 kHz) does not fit in a process, so nothing holds
it whole. The clips are cut into shards of ``SHARD_CLIPS`` in manifest order; each shard is read (soundfile),
mixed down to mono and resampled (soxr) by one worker, and written as one float32 ``.npy`` file plus a small
JSON record (clip lengths, native rates, why a clip was skipped). With Ray running, the shards are a Ray Data
pipeline over the cluster's CPUs (``ray.data.from_items(...).map(...)``), so every node decodes in parallel
and only the shards' small records travel back; otherwise this process decodes them one after another. Either
way the files are the same.

A shard's JSON record is written after its ``.npy`` file, both through a temporary name, so an interrupted
preparation (SIGKILL, a lost node) resumes at the first shard without a record and gives byte-identical files.
The store is keyed by the clips' paths, sizes and modification times and the sample rate, and can live outside
a run (``--cache DIR``): a second run on the same files reuses it. The labels and split of a run are a small
*view* next to the shards (several runs with different splits share the waveforms).

A ``DecodedDataset`` opened from the store holds only per-clip numbers (labels, lengths, offsets) and
memory-maps the waveforms; it pickles as its store path, so Ray's object store never carries audio.

Layout of a store (``<cache>/waves/<rate>hz-<key>/``)::

    shards/00000.npy   float32 (samples,): the shard's kept clips, concatenated
    shards/00000.json  {"lengths": [...], "native_rates_hz": [...], "reasons": [...]} (one entry per clip)
    index.npz          shard, start, length of every kept clip; the manifest position of each
    store.json         sample rate, counts, skipped files with reasons, native rates (written last)
    views/<key>.npz    one run's labels, split, devices, cities, paths (+ views/<key>.json: classes, fingerprint)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from asc_search._errors import UserInputError
from asc_search._io import atomic_write, write_json
from asc_search.data._manifest import Manifest

log = logging.getLogger(__name__)

STORE_VERSION = 1
SHARD_CLIPS = 256
WAVES_DIR = "waves"
STORE_FILE = "store.json"
INDEX_FILE = "index.npz"
SHARDS_DIR = "shards"
VIEWS_DIR = "views"


@dataclass(frozen=True, kw_only=True)
class SkippedFile:
    """A clip that was left out, and why."""

    path: str
    reason: str


@dataclass(kw_only=True)
class DecodedDataset:
    """Every readable clip of a manifest as mono float32 at one sample rate.

    Args:
        waveforms: One array per clip, shape ``(samples,)``, float32 in [-1, 1].
        labels: Class index per clip, shape ``(n_clips,)``.
        is_validation: Validation-split mask, shape ``(n_clips,)``.
        is_test: Test-split mask, shape ``(n_clips,)`` (None: no test clip); the search and the selection never
            read these clips (``is_train`` excludes them).
        devices: Device name per clip ("" when unknown).
        paths: Source file per clip.
        class_names: Class names; ``labels`` index into them.
        sample_rate_hz: Sample rate of every waveform.
        skipped: Files left out, with reasons.
        native_rates_hz: Count of files per native sample rate.
        other_rate: Kept files whose native rate differs from the set's most common one (resampled, listed
            so that a stray 22.05 kHz file in a 44.1 kHz set is seen): ``{"path", "native_rate_hz", "reason"}``.
        cities: City per clip ("" when unknown); empty when built without cities.
        store: ``(store folder, view)`` when the waveforms are memory-mapped from a waveform store
            (``prepare_waveform_store``); such a dataset pickles as this pair, so no audio is copied.
        stored_fingerprint: ``fingerprint()`` as computed when the store's view was written.
        preparation: How the store was prepared (reused, seconds, clips/s, bytes); empty otherwise.
    """

    waveforms: list[np.ndarray]
    labels: np.ndarray
    is_validation: np.ndarray
    devices: list[str]
    paths: list[str]
    class_names: tuple[str, ...]
    sample_rate_hz: int
    skipped: list[SkippedFile] = field(default_factory=list)
    native_rates_hz: dict[int, int] = field(default_factory=dict)
    other_rate: list[dict] = field(default_factory=list)
    cities: list[str] = field(default_factory=list)
    store: tuple[str, str] | None = None
    stored_fingerprint: str = ""
    preparation: dict = field(default_factory=dict)
    is_test: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.is_validation = np.asarray(self.is_validation, dtype=bool)
        self.is_test = (np.zeros(len(self.is_validation), dtype=bool) if self.is_test is None
                        else np.asarray(self.is_test, dtype=bool))
        if (self.is_validation & self.is_test).any():
            raise ValueError("a clip is in both the validation and the test split")

    @property
    def is_train(self) -> np.ndarray:
        """Training-split mask, shape ``(n_clips,)``: neither validation nor test."""
        return ~(self.is_validation | self.is_test)

    def split_codes(self) -> np.ndarray:
        """Split per clip, shape ``(n_clips,)`` int8: 0 train, 1 validation, 2 test."""
        return self.is_validation.astype(np.int8) + 2 * self.is_test.astype(np.int8)

    def __reduce__(self):
        if self.store is not None:
            return (open_waveform_store, self.store)
        return super().__reduce__()

    def clip_lengths(self) -> np.ndarray:
        """Samples per clip, shape ``(n_clips,)`` int64 (read from the store's index, no audio touched)."""
        length = getattr(self.waveforms, "length", None)
        if length is not None:
            return np.asarray(length, dtype=np.int64)
        return np.asarray([len(w) for w in self.waveforms], dtype=np.int64)

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def fingerprint(self) -> str:
        """A short hash of the clip list, labels, split and sample rate (for feature-cache keys)."""
        import hashlib

        if self.stored_fingerprint:
            return self.stored_fingerprint
        h = hashlib.sha1()
        h.update(str(self.sample_rate_hz).encode())
        for p, lab, v, n in zip(self.paths, self.labels, self.split_codes(), self.clip_lengths(), strict=True):
            h.update(f"{p}|{lab}|{int(v)}|{n}\n".encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        """Counts for the run report."""
        durations = self.clip_lengths() / self.sample_rate_hz
        return {
            "clips": len(self.waveforms),
            "train_clips": int(self.is_train.sum()),
            "validation_clips": int(self.is_validation.sum()),
            "test_clips": int(self.is_test.sum()),
            "classes": list(self.class_names),
            "sample_rate_hz": self.sample_rate_hz,
            "native_sample_rates_hz": {str(k): v for k, v in sorted(self.native_rates_hz.items())},
            "duration_s": {"min": float(durations.min()), "median": float(np.median(durations)),
                           "max": float(durations.max())},
            "skipped_files": len(self.skipped),
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "other_rate_files": len(self.other_rate),
            "other_rate": list(self.other_rate),
        }


def decode_clip(path: str | os.PathLike, sample_rate_hz: int) -> tuple[np.ndarray | None, int, str]:
    """Read one file as mono float32 at ``sample_rate_hz``.

    Multi-channel audio is averaged to mono; another native rate is resampled with soxr (high quality,
    anti-aliased).

    Returns:
        ``(wave, native_rate_hz, reason)``: ``wave`` of shape ``(samples,)`` and ``reason == ""``, or
        ``(None, 0, reason)`` for a file that is missing, cannot be decoded, holds no samples or non-finite ones.
    """
    path = Path(path)
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - soundfile raises several types for bad files
        reason = "file not found" if not path.exists() else f"cannot decode ({type(exc).__name__}: {exc})"
        return None, 0, reason
    if audio.size == 0:
        return None, 0, "no samples"
    if not np.isfinite(audio).all():
        return None, 0, "non-finite samples"
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if rate != sample_rate_hz:
        mono = soxr.resample(mono, rate, sample_rate_hz, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate), ""


def prepare_shard(task: dict) -> dict:
    """Decode one shard of a store and write its two files (a Ray Data ``map`` function; also run in-process).

    Args:
        task: ``{"root": store folder, "shard": index, "paths": [file, ...], "sample_rate_hz": int}``.

    Returns:
        ``{"shard", "clips", "kept", "resumed"}``: ``resumed`` is True when the shard was already on disk.
    """
    root, k = Path(task["root"]), int(task["shard"])
    npy, record = _shard_paths(root, k)
    if npy.is_file() and record.is_file():
        meta = json.loads(record.read_text())
        return {"shard": k, "clips": len(meta["lengths"]), "kept": sum(1 for r in meta["reasons"] if not r),
                "resumed": True}
    waves, lengths, rates, reasons = [], [], [], []
    for path in task["paths"]:
        wave, rate, reason = decode_clip(path, int(task["sample_rate_hz"]))
        if wave is not None:
            waves.append(wave)
        lengths.append(0 if wave is None else len(wave))
        rates.append(rate)
        reasons.append(reason)
    joined = np.concatenate(waves) if waves else np.zeros(0, dtype=np.float32)
    atomic_write(npy, lambda p: _save_npy(p, joined))
    atomic_write(record, lambda p: p.write_text(json.dumps({"lengths": lengths, "native_rates_hz": rates,
                                                             "reasons": reasons})))
    return {"shard": k, "clips": len(lengths), "kept": len(waves), "resumed": False}


def store_key(manifest: Manifest, sample_rate_hz: int, shard_clips: int = SHARD_CLIPS) -> str:
    """Key of the waveform store of ``manifest`` at ``sample_rate_hz``: the files' paths, sizes and modification
    times, the rate, the shard size and the store format (a changed file gives a new store)."""
    h = hashlib.sha1(f"v{STORE_VERSION}|{sample_rate_hz}|{shard_clips}\n".encode())
    for clip in manifest.clips:
        try:
            st = os.stat(clip.path)
            stamp = f"{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{clip.path}|{stamp}\n".encode())
    return h.hexdigest()[:16]


def prepare_waveform_store(manifest: Manifest, *, sample_rate_hz: int, cache_dir: str | os.PathLike,
                           on_progress: Callable[[int, int], None] | None = None,
                           shard_clips: int = SHARD_CLIPS, use_ray: bool | None = None,
                           pin_node: str | None = None) -> DecodedDataset:
    """Decode ``manifest`` at ``sample_rate_hz`` into a waveform store under ``cache_dir`` (or reuse the one there)
    and open it.

    Args:
        manifest: The clips.
        sample_rate_hz: Target rate (Hz, > 0).
        cache_dir: Folder of stores (``--cache``; the run's ``cache/`` by default); the store goes to
            ``cache_dir/waves/<rate>hz-<key>/``.
        on_progress: ``on_progress(clips_done, clips_total)`` after each shard.
        shard_clips: Clips per shard (one worker's unit of work and memory).
        use_ray: Decode the shards as a Ray Data pipeline; None: when Ray is initialised.
        pin_node: Ray node id every shard is decoded on (the driver's, when the audio is not on every node);
            None: any node.

    Returns:
        The dataset, its waveforms memory-mapped; ``preparation`` tells whether the store was reused, how many
        shards were on disk already, the seconds and clips/s of this preparation, and the store's bytes.

    Raises:
        UserInputError: ``sample_rate_hz`` is not positive, no clip could be decoded, or one split is left empty.
    """
    if sample_rate_hz <= 0:
        raise UserInputError(f"sample_rate_hz must be > 0, got {sample_rate_hz}")
    t0 = time.perf_counter()
    root = Path(cache_dir) / WAVES_DIR / f"{sample_rate_hz}hz-{store_key(manifest, sample_rate_hz, shard_clips)}"
    (root / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:  # one preparation of a store at a time (two runs on one --cache)
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            reused = (root / STORE_FILE).is_file()
            resumed = 0
            if not reused:
                for stale in (root / SHARDS_DIR).glob(".*.tmp"):  # cut off by a killed preparation
                    stale.unlink(missing_ok=True)
                tasks = [{"root": str(root), "shard": k, "sample_rate_hz": int(sample_rate_hz),
                          "paths": [str(c.path) for c in manifest.clips[s:s + shard_clips]]}
                         for k, s in enumerate(range(0, len(manifest.clips), shard_clips))]
                done = 0
                for row in _run_shards(tasks, use_ray, pin_node):
                    done += int(row["clips"])
                    resumed += bool(row["resumed"])
                    if on_progress is not None:
                        on_progress(done, len(manifest.clips))
                _write_index(root, manifest, sample_rate_hz, n_shards=len(tasks))
            view = _write_view(root, manifest)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    data = open_waveform_store(root, view)
    seconds = time.perf_counter() - t0
    data.preparation = {"sample_rate_hz": int(sample_rate_hz), "path": str(root), "reused": reused,
                        "shards_on_disk_before": resumed, "clips": len(manifest.clips),
                        "kept_clips": len(data.labels), "skipped": len(data.skipped),
                        "seconds": round(seconds, 2),
                        "clips_per_s": round(len(manifest.clips) / seconds, 1) if seconds > 0 else 0.0,
                        "bytes": _folder_bytes(root)}
    return data


def _run_shards(tasks: list[dict], use_ray: bool | None, pin_node: str | None = None) -> Iterator[dict]:
    """Run ``prepare_shard`` on every task: a Ray Data pipeline (one CPU per shard, streamed; on ``pin_node``
    only when given) or in-process."""
    import ray

    if use_ray is None:
        use_ray = ray.is_initialized()
    todo = [t for t in tasks if not all(p.is_file() for p in _shard_paths(Path(t["root"]), t["shard"]))]
    for t in tasks:
        if t not in todo:
            yield {"shard": t["shard"], "clips": len(t["paths"]), "kept": 0, "resumed": True}
    if not todo:
        return
    if not use_ray or len(todo) == 1:
        for t in todo:
            yield prepare_shard(t)
        return
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the run shows its own progress (on_progress)
    ctx.print_on_execution_start = False
    # One map operator: reserving resources per operator only idles CPUs (measured on 2 CPUs, 10,000 clips: 9.6 s
    # with the reservation, 7.9 s without; bench/scale.py).
    ctx.op_resource_reservation_enabled = False
    remote_args = {}
    if pin_node is not None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        remote_args["scheduling_strategy"] = NodeAffinitySchedulingStrategy(pin_node, soft=False)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its per-dataset INFO lines would fill the console
    ds = ray.data.from_items(todo, override_num_blocks=len(todo)).map(prepare_shard, num_cpus=1, **remote_args)
    yield from ds.iter_rows()


def _write_index(root: Path, manifest: Manifest, sample_rate_hz: int, *, n_shards: int) -> None:
    """Assemble the shards' records into ``index.npz`` and ``store.json`` (the mark of a complete store)."""
    shard, start, length, position = [], [], [], []
    skipped: list[dict] = []
    native: Counter = Counter()
    kept_rates: list[int] = []
    i = 0
    for k in range(n_shards):
        meta = json.loads(_shard_paths(root, k)[1].read_text())
        offset = 0
        for n, rate, reason in zip(meta["lengths"], meta["native_rates_hz"], meta["reasons"], strict=True):
            if reason:
                skipped.append({"path": str(manifest.clips[i].path), "reason": reason})
            else:
                shard.append(k)
                start.append(offset)
                length.append(n)
                position.append(i)
                native[rate] += 1
                kept_rates.append(int(rate))
                offset += n
            i += 1
    if i != len(manifest.clips):
        raise RuntimeError(f"store {root}: the shards hold {i} clips, the manifest {len(manifest.clips)}")
    for s in skipped:
        log.warning("skipped %s: %s", s["path"], s["reason"])
    if not position:
        raise UserInputError(f"none of the {len(manifest.clips)} clips of {manifest.source} could be decoded "
                             f"({skipped[0]['reason'] if skipped else 'no clips'}); check the paths in the manifest")
    common_rate = native.most_common(1)[0][0]
    other_rate = [{"path": str(manifest.clips[j].path), "native_rate_hz": r,
                   "reason": f"native rate {r} Hz where {native[common_rate]:,} of {len(position):,} files are "
                             f"{common_rate} Hz; resampled and kept"}
                  for j, r in zip(position, kept_rates, strict=True) if r != common_rate]
    for o in other_rate:
        log.warning("%s: %s", o["path"], o["reason"])
    atomic_write(root / INDEX_FILE, lambda p: _save_npz(p, shard=np.asarray(shard, np.int32),
                                                         start=np.asarray(start, np.int64),
                                                         length=np.asarray(length, np.int64),
                                                         position=np.asarray(position, np.int64)))
    write_json(root / STORE_FILE, {"version": STORE_VERSION, "sample_rate_hz": int(sample_rate_hz),
                                   "clips": len(manifest.clips), "kept_clips": len(position), "shards": n_shards,
                                   "native_rates_hz": {str(k): v for k, v in sorted(native.items())},
                                   "skipped": skipped, "other_rate": other_rate})


def _write_view(root: Path, manifest: Manifest) -> str:
    """Write (once) the run's labels, split and clip names for the kept clips; returns the view's name."""
    index = np.load(root / INDEX_FILE)
    position, length = index["position"], index["length"]
    blob = json.dumps([manifest.class_names, [(str(c.path), c.label, c.is_validation, c.device, c.city)
                                              + ((True,) if c.is_test else ()) for c in manifest.clips]])
    name = hashlib.sha1(blob.encode()).hexdigest()[:16]
    if (root / VIEWS_DIR / f"{name}.json").is_file():
        return name
    class_index = {c: i for i, c in enumerate(manifest.class_names)}
    clips = [manifest.clips[int(i)] for i in position]
    labels = np.asarray([class_index[c.label] for c in clips], dtype=np.int64)
    is_val = np.asarray([c.is_validation for c in clips], dtype=bool)
    is_test = np.asarray([c.is_test for c in clips], dtype=bool)
    if not is_val.any() or (is_val | is_test).all():
        raise UserInputError(f"{manifest.source}: after skipping unreadable files the train or validation split "
                             "is empty")
    codes = is_val.astype(np.int8) + 2 * is_test.astype(np.int8)
    store = json.loads((root / STORE_FILE).read_text())
    h = hashlib.sha1(str(store["sample_rate_hz"]).encode())  # DecodedDataset.fingerprint's formula
    for c, lab, v, n in zip(clips, labels, codes, length, strict=True):
        h.update(f"{c.path}|{lab}|{int(v)}|{n}\n".encode())
    arrays = {"labels": labels, "is_validation": is_val, "is_test": is_test}
    for column in ("path", "device", "city"):
        arrays.update(_encode_strings(column, [str(getattr(c, column)) for c in clips]))
    atomic_write(root / VIEWS_DIR / f"{name}.npz", lambda p: _save_npz(p, **arrays))
    write_json(root / VIEWS_DIR / f"{name}.json", {"class_names": list(manifest.class_names),
                                                   "fingerprint": h.hexdigest()[:16]})
    return name


def open_waveform_store(root: str | os.PathLike, view: str) -> DecodedDataset:
    """Open a prepared store and one of its views as a ``DecodedDataset`` whose waveforms are memory-mapped.

    Raises:
        UserInputError: ``root`` holds no complete store or lacks the view (prepare it again).
    """
    root = Path(root)
    if not (root / STORE_FILE).is_file() or not (root / VIEWS_DIR / f"{view}.json").is_file():
        raise UserInputError(f"{root} holds no complete waveform store with view {view}; prepare the data again "
                             "(the run's --cache folder may have been removed)")
    store = json.loads((root / STORE_FILE).read_text())
    meta = json.loads((root / VIEWS_DIR / f"{view}.json").read_text())
    index = np.load(root / INDEX_FILE)
    v = np.load(root / VIEWS_DIR / f"{view}.npz")
    return DecodedDataset(
        waveforms=StoredWaveforms(root, index["shard"], index["start"], index["length"]),
        labels=v["labels"], is_validation=v["is_validation"], devices=StoredStrings(v, "device"),
        is_test=v["is_test"] if "is_test" in v.files else None,
        paths=StoredStrings(v, "path"), class_names=tuple(meta["class_names"]),
        sample_rate_hz=int(store["sample_rate_hz"]),
        skipped=[SkippedFile(path=s["path"], reason=s["reason"]) for s in store["skipped"]],
        native_rates_hz={int(k): n for k, n in store["native_rates_hz"].items()},
        other_rate=store.get("other_rate", []), cities=StoredStrings(v, "city"),
        store=(str(root), view), stored_fingerprint=meta["fingerprint"],
    )


class StoredWaveforms(Sequence):
    """The waveforms of a store, read on demand: ``w[i]`` is clip ``i``, a read-only float32 view of shape
    ``(samples,)`` into its memory-mapped shard (nothing is read until it is used)."""

    def __init__(self, root: Path, shard: np.ndarray, start: np.ndarray, length: np.ndarray) -> None:
        self.root, self.shard, self.start, self.length = Path(root), shard, start, length
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.length)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        k = int(self.shard[i])
        m = self._maps.get(k)
        if m is None:
            m = self._maps[k] = np.load(_shard_paths(self.root, k)[0], mmap_mode="r")
        s = int(self.start[i])
        return m[s:s + int(self.length[i])]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))

    def __reduce__(self):
        return (StoredWaveforms, (self.root, self.shard, self.start, self.length))


class StoredStrings(Sequence):
    """A column of strings (paths, devices, cities) kept as one UTF-8 buffer and offsets, decoded per item."""

    def __init__(self, arrays, column: str) -> None:
        self.blob, self.offsets = arrays[f"{column}_blob"], arrays[f"{column}_offsets"]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i) + (len(self) if int(i) < 0 else 0)
        return bytes(self.blob[self.offsets[i]:self.offsets[i + 1]]).decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other) -> bool:
        return list(self) == list(other)


def _encode_strings(column: str, values: list[str]) -> dict[str, np.ndarray]:
    encoded = [v.encode("utf-8") for v in values]
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype(np.int64)
    return {f"{column}_blob": np.frombuffer(b"".join(encoded), dtype=np.uint8), f"{column}_offsets": offsets}


def _shard_paths(root: Path, k: int) -> tuple[Path, Path]:
    return root / SHARDS_DIR / f"{k:05d}.npy", root / SHARDS_DIR / f"{k:05d}.json"


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
