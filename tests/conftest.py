"""Shared fixtures: the real audio of ../shared/data (never copied into the repo)."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ASC_SHARED_DATA", REPO.parent / "shared" / "data"))
ESC10 = SHARED_DATA / "esc10-dev"
FSDD = SHARED_DATA / "fsdd"


def _require(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI must have ../shared/data beside the clone")
        pytest.skip(f"real audio not found at {path} (set ASC_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def esc10() -> Path:
    """The esc10-dev folder (240 clips, 16 kHz, folds 1-3)."""
    return _require(ESC10)


@pytest.fixture(scope="session")
def fsdd() -> Path:
    """The fsdd folder (3,000 clips, 8 kHz, split column)."""
    return _require(FSDD)


def write_subset_manifest(src: Path, dest_csv: Path, *, per_class_per_group: int, columns: tuple[str, ...],
                          group_column: str | None, copy_audio: bool = False) -> Path:
    """Write a CSV manifest with the first ``per_class_per_group`` rows of each (label, group) of
    ``src/metadata.csv``: absolute paths to the audio in ../shared/data, or, with ``copy_audio``, a
    self-contained folder (the clips copied beside ``dest_csv``, relative paths)."""
    with open(src / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    seen: dict[tuple[str, str], int] = {}
    out = []
    for r in rows:
        key = (r["label"], r[group_column] if group_column else "")
        if seen.get(key, 0) < per_class_per_group:
            seen[key] = seen.get(key, 0) + 1
            if copy_audio:
                (dest_csv.parent / r["filename"]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / r["filename"], dest_csv.parent / r["filename"])
                path = r["filename"]
            else:
                path = str((src / r["filename"]).resolve())
            out.append({c: (path if c == "filename" else r[c]) for c in columns})
    dest_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(dest_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        w.writerows(out)
    return dest_csv


def copy_clip(src: Path, dest: Path) -> Path:
    """Copy one real clip into a temporary test layout."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest


def train_validation_only(manifest):
    """``manifest`` with its test split read as validation and its validation carve given back to train: the
    two-way split the unit tests' measured tolerances were taken on (fsdd: ``test`` rows = validation)."""
    from dataclasses import replace

    clips = tuple(replace(c, is_validation=c.is_test, is_test=False) for c in manifest.clips)
    return replace(manifest, clips=clips)
