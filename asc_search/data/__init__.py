"""Datasets: layouts (TAU22, ESC-50, CSV manifest, folder per class), checks, decoding, resampling, splits."""

from asc_search.data._audio import (
    DecodedDataset,
    SkippedFile,
    count_patches,
    decode_dataset,
    native_sample_rate_hz,
    pad_to_patches,
)
from asc_search.data._check import check_dataset, format_check
from asc_search.data._manifest import ClipRecord, LeftOutClip, Manifest, load_manifest, tau22_device_city

__all__ = [
    "ClipRecord",
    "DecodedDataset",
    "LeftOutClip",
    "Manifest",
    "SkippedFile",
    "check_dataset",
    "count_patches",
    "decode_dataset",
    "format_check",
    "load_manifest",
    "native_sample_rate_hz",
    "pad_to_patches",
    "tau22_device_city",
]
