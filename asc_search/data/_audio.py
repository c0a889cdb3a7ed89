"""Decoding, mono mix-down and resampling of the clips of a manifest.

Audio is read with soundfile and resampled with soxr (a well-kept, anti-aliased resampler). A file that
cannot be decoded, or holds no samples, is skipped and counted with its reason; nothing is dropped silently.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import soxr

from asc_search._errors import UserInputError
from asc_search.data._manifest import Manifest

log = logging.getLogger(__name__)


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
        devices: Device name per clip ("" when unknown).
        paths: Source file per clip.
        class_names: Class names; ``labels`` index into them.
        sample_rate_hz: Sample rate of every waveform.
        skipped: Files left out, with reasons.
        native_rates_hz: Count of files per native sample rate.
        cities: City per clip ("" when unknown); empty when built without cities.
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
    cities: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def fingerprint(self) -> str:
        """A short hash of the clip list, labels, split and sample rate (for feature-cache keys)."""
        import hashlib

        h = hashlib.sha1()
        h.update(str(self.sample_rate_hz).encode())
        for p, lab, v, w in zip(self.paths, self.labels, self.is_validation, self.waveforms, strict=True):
            h.update(f"{p}|{lab}|{int(v)}|{len(w)}\n".encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        """Counts for the run report."""
        durations = np.array([len(w) / self.sample_rate_hz for w in self.waveforms])
        return {
            "clips": len(self.waveforms),
            "train_clips": int((~self.is_validation).sum()),
            "validation_clips": int(self.is_validation.sum()),
            "classes": list(self.class_names),
            "sample_rate_hz": self.sample_rate_hz,
            "native_sample_rates_hz": {str(k): v for k, v in sorted(self.native_rates_hz.items())},
            "duration_s": {"min": float(durations.min()), "median": float(np.median(durations)),
                           "max": float(durations.max())},
            "skipped_files": len(self.skipped),
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
        }


def native_sample_rate_hz(manifest: Manifest) -> int:
    """The most common native sample rate of the readable files of ``manifest`` (Hz).

    Raises:
        UserInputError: No file of the manifest can be read.
    """
    rates: Counter = Counter()
    for clip in manifest.clips:
        try:
            rates[sf.info(str(clip.path)).samplerate] += 1
        except Exception:  # noqa: BLE001 - unreadable files are counted when decoding
            continue
    if not rates:
        raise UserInputError(f"no readable audio file in {manifest.source}; check the paths in the manifest")
    return rates.most_common(1)[0][0]


def decode_dataset(manifest: Manifest, *, sample_rate_hz: int) -> DecodedDataset:
    """Decode every clip of ``manifest`` to mono float32 at ``sample_rate_hz``.

    Multi-channel audio is averaged to mono; other rates are resampled with soxr (high quality,
    anti-aliased). Unreadable, empty or non-finite files are skipped and listed in ``skipped``.

    Args:
        manifest: The clips to read.
        sample_rate_hz: Target sample rate in Hz (> 0).

    Returns:
        The decoded dataset, with classes that kept no clip still listed in ``class_names``.

    Raises:
        UserInputError: ``sample_rate_hz`` is not positive, or no clip is left after skipping,
            or one split is left empty.
    """
    if sample_rate_hz <= 0:
        raise UserInputError(f"sample_rate_hz must be > 0, got {sample_rate_hz}")
    class_index = {c: i for i, c in enumerate(manifest.class_names)}
    waves, labels, is_val, devices, cities, paths = [], [], [], [], [], []
    skipped: list[SkippedFile] = []
    native: Counter = Counter()
    for clip in manifest.clips:
        try:
            audio, rate = sf.read(str(clip.path), dtype="float32", always_2d=True)
        except Exception as exc:  # noqa: BLE001 - soundfile raises several types for bad files
            reason = "file not found" if not clip.path.exists() else f"cannot decode ({type(exc).__name__}: {exc})"
            skipped.append(SkippedFile(path=str(clip.path), reason=reason))
            continue
        if audio.size == 0:
            skipped.append(SkippedFile(path=str(clip.path), reason="no samples"))
            continue
        if not np.isfinite(audio).all():
            skipped.append(SkippedFile(path=str(clip.path), reason="non-finite samples"))
            continue
        native[rate] += 1
        mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
        if rate != sample_rate_hz:
            mono = soxr.resample(mono, rate, sample_rate_hz, quality="HQ").astype(np.float32)
        waves.append(np.ascontiguousarray(mono, dtype=np.float32))
        labels.append(class_index[clip.label])
        is_val.append(clip.is_validation)
        devices.append(clip.device)
        cities.append(clip.city)
        paths.append(str(clip.path))
    for s in skipped:
        log.warning("skipped %s: %s", s.path, s.reason)
    if not waves:
        raise UserInputError(f"none of the {len(manifest.clips)} clips of {manifest.source} could be decoded")
    is_val_arr = np.asarray(is_val, dtype=bool)
    if is_val_arr.all() or not is_val_arr.any():
        raise UserInputError(f"{manifest.source}: after skipping unreadable files one split is empty")
    return DecodedDataset(
        waveforms=waves, labels=np.asarray(labels, dtype=np.int64), is_validation=is_val_arr, devices=devices,
        paths=paths, class_names=manifest.class_names, sample_rate_hz=int(sample_rate_hz), skipped=skipped,
        native_rates_hz=dict(native), cities=cities,
    )


def count_patches(n_samples: int, *, chunk_samples: int, patch_hop_samples: int, tail_tolerance: float = 0.1) -> int:
    """Patches that cover ``n_samples`` of audio (the rule of ``pad_to_patches``)."""
    if n_samples <= chunk_samples:
        return 1
    whole = (n_samples - chunk_samples) // patch_hop_samples + 1
    tail = n_samples - (chunk_samples + (whole - 1) * patch_hop_samples)
    return whole if tail <= tail_tolerance * chunk_samples else whole + 1


def pad_to_patches(wave: np.ndarray, *, chunk_samples: int, patch_hop_samples: int,
                   tail_tolerance: float = 0.1) -> np.ndarray:
    """Zero-pad (or trim) a clip so that patches of ``chunk_samples`` every ``patch_hop_samples`` cover it exactly.

    A clip shorter than one chunk is padded to one chunk. A longer clip gets
    ``ceil((len - chunk) / hop) + 1`` patches, except that a tail shorter than ``tail_tolerance`` of a
    chunk past the last whole patch is trimmed rather than padded into a nearly empty patch
    (ESC-50 clips are 5.001 s long: 9 patches of 1 s, not 10).

    Args:
        wave: Shape ``(samples,)``.
        chunk_samples: Patch length in samples (> 0).
        patch_hop_samples: Patch hop in samples (> 0).
        tail_tolerance: Largest trimmed tail, as a fraction of ``chunk_samples``.

    Returns:
        Shape ``(chunk_samples + (n_patches - 1) * patch_hop_samples,)``.
    """
    n = len(wave)
    n_patches = count_patches(n, chunk_samples=chunk_samples, patch_hop_samples=patch_hop_samples,
                              tail_tolerance=tail_tolerance)
    target = chunk_samples + (n_patches - 1) * patch_hop_samples
    if target == n:
        return wave
    out = np.zeros(target, dtype=np.float32)
    out[:min(n, target)] = wave[:target]
    return out
