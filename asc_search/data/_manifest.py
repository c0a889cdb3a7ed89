"""Dataset manifests: which clips exist, their labels and which split each belongs to.

Two layouts are read:

* a CSV manifest with columns ``filename,label[,fold|split][,device]`` (paths relative to the CSV),
  e.g. ``esc10-dev/metadata.csv`` (``fold``) and ``fsdd/metadata.csv`` (``split``);
* a folder per class (``DIR/<label>/*.wav|flac|ogg``).
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asc_search._errors import UserInputError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
VALIDATION_SPLIT_NAMES = frozenset({"test", "val", "valid", "validation", "eval", "evaluate", "evaluation", "dev"})
TRAIN_SPLIT_NAMES = frozenset({"train", "training"})
MANIFEST_NAMES = ("metadata.csv", "manifest.csv", "meta.csv")


@dataclass(frozen=True, kw_only=True)
class ClipRecord:
    """One labelled clip of a manifest.

    Args:
        path: Absolute path of the audio file.
        label: Class name.
        is_validation: True when the clip belongs to the validation split.
        group: Fold or split value as written in the manifest ("" when none).
        device: Recording device ("" when the manifest has no device column).
    """

    path: Path
    label: str
    is_validation: bool
    group: str = ""
    device: str = ""


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """The clips of a dataset and how they are split.

    Args:
        source: The CSV file or folder the manifest was read from.
        clips: Every clip, in manifest order.
        class_names: Sorted class names; a clip's class index is its position here.
        split_rule: Human-readable description of the train/validation split.
    """

    source: Path
    clips: tuple[ClipRecord, ...]
    class_names: tuple[str, ...]
    split_rule: str

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def summary(self) -> dict:
        """Counts for reports: clips, classes, train and validation sizes."""
        n_val = sum(c.is_validation for c in self.clips)
        return {
            "source": str(self.source),
            "clips": len(self.clips),
            "classes": len(self.class_names),
            "train_clips": len(self.clips) - n_val,
            "validation_clips": n_val,
            "split_rule": self.split_rule,
        }


def load_manifest(data: str | Path, *, val_fold: str | None = None, seed: int = 0,
                  val_fraction: float = 0.2) -> Manifest:
    """Read the manifest of a dataset folder or CSV file.

    Args:
        data: A CSV manifest, or a folder holding one (``metadata.csv``, ``manifest.csv``, ``meta.csv``),
            or a folder with one sub-folder of audio files per class.
        val_fold: Fold value used for validation when the CSV has a ``fold`` column
            (default: the highest fold, e.g. fold 3 of esc10-dev).
        seed: Seed of the stratified random split used when there is neither ``fold`` nor ``split``.
        val_fraction: Share of clips held out by that random split.

    Returns:
        The manifest.

    Raises:
        UserInputError: The path does not exist, the CSV lacks ``filename``/``label`` columns, the
            named ``val_fold`` is absent, or no clip / class is found.
    """
    path = Path(data).expanduser()
    if not path.exists():
        raise UserInputError(f"--data {str(data)!r} does not exist; pass a dataset folder or a CSV manifest")
    if path.is_file():
        return _read_csv(path, val_fold=val_fold, seed=seed, val_fraction=val_fraction)
    for name in MANIFEST_NAMES:
        if (path / name).is_file():
            return _read_csv(path / name, val_fold=val_fold, seed=seed, val_fraction=val_fraction)
    return _read_folders(path, seed=seed, val_fraction=val_fraction)


def _read_csv(csv_path: Path, *, val_fold: str | None, seed: int, val_fraction: float) -> Manifest:
    with open(csv_path, newline="", encoding="utf-8") as f:
        sample = f.read(4096)
        f.seek(0)
        delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in ("filename", "label") if c not in columns]
        if missing:
            raise UserInputError(
                f"{csv_path} has no {' or '.join(repr(m) for m in missing)} column (columns: {columns}); "
                "a manifest needs 'filename' (path relative to the CSV) and 'label'"
            )
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    if not rows:
        raise UserInputError(f"{csv_path} lists no clips; add one row per clip")
    root = csv_path.parent
    labels = [r["label"] for r in rows]
    devices = [r.get("device", "") for r in rows]
    if "split" in columns:
        splits = [r["split"].lower() for r in rows]
        unknown = sorted(set(splits) - VALIDATION_SPLIT_NAMES - TRAIN_SPLIT_NAMES)
        if unknown:
            raise UserInputError(
                f"{csv_path}: unknown split value(s) {unknown}; use 'train' or one of "
                f"{sorted(VALIDATION_SPLIT_NAMES)}"
            )
        is_val = [s in VALIDATION_SPLIT_NAMES for s in splits]
        groups = splits
        rule = "split column: " + ", ".join(sorted({s for s, v in zip(splits, is_val, strict=True) if v}))
        rule += " = validation"
    elif "fold" in columns:
        groups = [r["fold"] for r in rows]
        folds = sorted(set(groups), key=_fold_key)
        chosen = folds[-1] if val_fold is None else str(val_fold)
        if chosen not in folds:
            raise UserInputError(f"--val-fold {val_fold!r} is not a fold of {csv_path}; its folds are {folds}")
        is_val = [g == chosen for g in groups]
        rule = f"fold {chosen} = validation, folds {[f for f in folds if f != chosen]} = train"
    else:
        groups = [""] * len(rows)
        is_val = _stratified_split(labels, seed=seed, val_fraction=val_fraction)
        rule = f"stratified random split, {val_fraction:.0%} validation, seed {seed}"
    clips = tuple(
        ClipRecord(path=(root / r["filename"]).resolve(), label=lab, is_validation=v, group=g, device=d)
        for r, lab, v, g, d in zip(rows, labels, is_val, groups, devices, strict=True)
    )
    return _finish(csv_path, clips, rule)


def _read_folders(root: Path, *, seed: int, val_fraction: float) -> Manifest:
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [(f, d.name) for d in class_dirs for f in sorted(d.rglob("*")) if f.suffix.lower() in AUDIO_SUFFIXES]
    if not files:
        raise UserInputError(
            f"--data {str(root)!r} has no manifest ({', '.join(MANIFEST_NAMES)}) and no class folders with "
            f"audio files ({', '.join(AUDIO_SUFFIXES)}); pass a CSV manifest or a folder per class"
        )
    labels = [lab for _, lab in files]
    is_val = _stratified_split(labels, seed=seed, val_fraction=val_fraction)
    clips = tuple(
        ClipRecord(path=f.resolve(), label=lab, is_validation=v, group="") for (f, lab), v in zip(files, is_val, strict=True)
    )
    return _finish(root, clips, f"folder per class, stratified random split, {val_fraction:.0%} validation, seed {seed}")


def _finish(source: Path, clips: tuple[ClipRecord, ...], rule: str) -> Manifest:
    class_names = tuple(sorted({c.label for c in clips}, key=_fold_key))
    if len(class_names) < 2:
        raise UserInputError(f"{source} has {len(class_names)} class(es); classification needs at least 2")
    if not any(c.is_validation for c in clips) or all(c.is_validation for c in clips):
        raise UserInputError(f"{source}: the split ({rule}) leaves the train or validation part empty")
    return Manifest(source=source, clips=clips, class_names=class_names, split_rule=rule)


def _fold_key(value: str):
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _stratified_split(labels: list[str], *, seed: int, val_fraction: float) -> list[bool]:
    rng = np.random.default_rng(seed)
    is_val = [False] * len(labels)
    by_label: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_label.setdefault(lab, []).append(i)
    for idx in by_label.values():
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        for i in rng.permutation(idx)[:n_val]:
            is_val[int(i)] = True
    return is_val


def label_counts(manifest: Manifest) -> Counter:
    """Clips per class."""
    return Counter(c.label for c in manifest.clips)
