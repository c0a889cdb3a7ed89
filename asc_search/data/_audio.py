"""Decoding, mono mix-down and resampling of the clips of a manifest.

Audio is read with soundfile and resampled with soxr (a well-kept, anti-aliased resampler). A file that
cannot be decoded, or holds no samples, is skipped and counted with its reason; nothing is dropped silently.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import soundfile as sf

from asc_search._errors import UserInputError
from asc_search.data._manifest import Manifest
from asc_search.data._store import DecodedDataset, SkippedFile, decode_clip

log = logging.getLogger(__name__)


def native_sample_rate_hz(manifest: Manifest, *, max_files: int = 2000) -> int:
    """The most common native sample rate of the readable files of ``manifest`` (Hz), read from the headers of
    at most ``max_files`` files spread evenly over the manifest (TAU22's 230,350 headers would take minutes on a
    network file system; the store counts every file's native rate when it decodes them).

    Raises:
        UserInputError: No file of the sample can be read.
    """
    clips = manifest.clips
    step = max(1, len(clips) // max_files)
    rates: Counter = Counter()
    for clip in clips[::step]:
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
    waves, labels, is_val, is_test, devices, cities, paths = [], [], [], [], [], [], []
    skipped: list[SkippedFile] = []
    native: Counter = Counter()
    for clip in manifest.clips:
        mono, rate, reason = decode_clip(clip.path, sample_rate_hz)
        if mono is None:
            skipped.append(SkippedFile(path=str(clip.path), reason=reason))
            continue
        native[rate] += 1
        waves.append(mono)
        labels.append(class_index[clip.label])
        is_val.append(clip.is_validation)
        is_test.append(clip.is_test)
        devices.append(clip.device)
        cities.append(clip.city)
        paths.append(str(clip.path))
    for s in skipped:
        log.warning("skipped %s: %s", s.path, s.reason)
    if not waves:
        raise UserInputError(f"none of the {len(manifest.clips)} clips of {manifest.source} could be decoded")
    is_val_arr, is_test_arr = np.asarray(is_val, dtype=bool), np.asarray(is_test, dtype=bool)
    if not is_val_arr.any() or (is_val_arr | is_test_arr).all():
        raise UserInputError(f"{manifest.source}: after skipping unreadable files the train or validation split "
                             "is empty")
    return DecodedDataset(
        waveforms=waves, labels=np.asarray(labels, dtype=np.int64), is_validation=is_val_arr, is_test=is_test_arr,
        devices=devices,
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
