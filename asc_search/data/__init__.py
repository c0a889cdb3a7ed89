"""Datasets: layouts (TAU22, ESC-50, CSV manifest, folder per class), checks, decoding, resampling, splits."""

from asc_search.data._audio import count_patches, decode_dataset, native_sample_rate_hz, pad_to_patches
from asc_search.data._check import check_dataset, format_check
from asc_search.data._manifest import ClipRecord, LeftOutClip, Manifest, load_manifest, tau22_device_city
from asc_search.data._store import (
    SHARD_CLIPS,
    DecodedDataset,
    SkippedFile,
    StoredWaveforms,
    decode_clip,
    open_waveform_store,
    prepare_waveform_store,
    store_key,
)
from asc_search.data._subsets import (
    SPLIT_SETUP_DIR,
    TRAIN_SUBSETS_PCT,
    fidelity_fractions,
    nested_ranks,
    subset_mask,
    train_subset,
)

__all__ = [
    "SPLIT_SETUP_DIR",
    "TRAIN_SUBSETS_PCT",
    "fidelity_fractions",
    "nested_ranks",
    "subset_mask",
    "train_subset",
    "SHARD_CLIPS",
    "ClipRecord",
    "DecodedDataset",
    "LeftOutClip",
    "Manifest",
    "SkippedFile",
    "check_dataset",
    "StoredWaveforms",
    "count_patches",
    "decode_clip",
    "decode_dataset",
    "format_check",
    "load_manifest",
    "native_sample_rate_hz",
    "open_waveform_store",
    "pad_to_patches",
    "prepare_waveform_store",
    "store_key",
    "tau22_device_city",
]
