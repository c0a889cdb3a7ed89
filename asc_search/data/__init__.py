"""Datasets: manifests (CSV, folder per class), decoding, resampling and splits."""

from asc_search.data._audio import (
    DecodedDataset,
    SkippedFile,
    count_patches,
    decode_dataset,
    native_sample_rate_hz,
    pad_to_patches,
)
from asc_search.data._manifest import ClipRecord, Manifest, load_manifest

__all__ = [
    "ClipRecord",
    "DecodedDataset",
    "Manifest",
    "SkippedFile",
    "count_patches",
    "decode_dataset",
    "load_manifest",
    "native_sample_rate_hz",
    "pad_to_patches",
]
