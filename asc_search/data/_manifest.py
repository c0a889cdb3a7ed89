"""Dataset manifests: which clips exist, their labels and which split each belongs to.

Layouts, detected in this order when ``load_manifest`` is given a folder:

1. TAU Urban Acoustic Scenes 2022 Mobile development set (``meta.csv`` and
   ``evaluation_setup/fold1_train.csv``): train = rows of ``fold1_train.csv``, validation = rows of
   ``fold1_evaluate.csv``; device and city are parsed from the file name; ``meta.csv`` rows in neither
   file are left out and counted in ``Manifest.left_out``.
2. ESC-50 (``meta/esc50.csv`` with audio under ``audio/``): label = ``category``, validation = the
   highest fold (5) unless another is named.
3. A CSV manifest (``metadata.csv``, ``manifest.csv`` or ``meta.csv``) with columns
   ``filename,label[,fold|split][,device][,city]`` (paths relative to the CSV), e.g.
   ``esc10-dev/metadata.csv`` (``fold``) and ``fsdd/metadata.csv`` (``split``).
4. A folder per class (``DIR/<label>/*.wav|flac|ogg``), split at random, stratified by class.

A CSV file may also be passed directly: ``.../meta.csv`` of a TAU22 folder and ``.../meta/esc50.csv``
are read with their own layout, any other CSV as a manifest.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from asc_search._errors import UserInputError

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
VALIDATION_SPLIT_NAMES = frozenset({"test", "val", "valid", "validation", "eval", "evaluate", "evaluation", "dev"})
TRAIN_SPLIT_NAMES = frozenset({"train", "training"})
MANIFEST_NAMES = ("metadata.csv", "manifest.csv", "meta.csv")
TAU22_META = "meta.csv"
TAU22_SETUP_DIR = "evaluation_setup"
ESC50_META = Path("meta") / "esc50.csv"


@dataclass(frozen=True, kw_only=True)
class ClipRecord:
    """One labelled clip of a manifest.

    Args:
        path: Absolute path of the audio file.
        label: Class name.
        is_validation: True when the clip belongs to the validation split.
        group: Fold or split value as written in the manifest ("" when none).
        device: Recording device ("" when the layout has none), e.g. ``a`` or ``s1`` in TAU22.
        city: City of the recording ("" when the layout has none), e.g. ``barcelona`` in TAU22.
    """

    path: Path
    label: str
    is_validation: bool
    group: str = ""
    device: str = ""
    city: str = ""


@dataclass(frozen=True, kw_only=True)
class LeftOutClip:
    """A clip the layout lists but leaves out of both splits, and why.

    Args:
        path: Absolute path of the audio file.
        reason: Why it is left out, e.g. "in meta.csv but in neither fold1_train.csv nor fold1_evaluate.csv".
    """

    path: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """The clips of a dataset and how they are split.

    Args:
        source: The CSV file or folder the manifest was read from.
        clips: Every clip, in manifest order.
        class_names: Sorted class names; a clip's class index is its position here.
        split_rule: Human-readable description of the train/validation split.
        layout: Name of the layout that was detected ("tau22", "esc50", "csv", "folders"; "" if unknown).
        left_out: Clips the layout lists but puts in neither split (each with its reason).
    """

    source: Path
    clips: tuple[ClipRecord, ...]
    class_names: tuple[str, ...]
    split_rule: str
    layout: str = ""
    left_out: tuple[LeftOutClip, ...] = ()

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def summary(self) -> dict:
        """Counts for reports: clips, classes, train and validation sizes, clips left out by the layout."""
        n_val = sum(c.is_validation for c in self.clips)
        return {
            "source": str(self.source),
            "layout": self.layout,
            "clips": len(self.clips),
            "classes": len(self.class_names),
            "train_clips": len(self.clips) - n_val,
            "validation_clips": n_val,
            "split_rule": self.split_rule,
            "left_out_clips": len(self.left_out),
        }


def load_manifest(data: str | Path, *, val_fold: str | None = None, seed: int = 0,
                  val_fraction: float = 0.2, require_split: bool = True) -> Manifest:
    """Read the manifest of a dataset folder or CSV file.

    A folder is matched against the layouts in this order: TAU Urban Acoustic Scenes 2022 Mobile
    (``meta.csv`` + ``evaluation_setup/fold1_train.csv``), ESC-50 (``meta/esc50.csv``), a CSV manifest
    (``metadata.csv``, ``manifest.csv``, ``meta.csv``), a folder per class.

    Args:
        data: A dataset folder, or a CSV file: ``meta.csv`` of a TAU22 folder, ``meta/esc50.csv`` of an
            ESC-50 folder, or a manifest with ``filename`` and ``label`` columns.
        val_fold: Validation fold. With a ``fold`` column (CSV manifest, ESC-50): the fold value held
            out (default: the highest, e.g. fold 3 of esc10-dev, fold 5 of ESC-50). With TAU22: the
            evaluation-setup fold whose ``fold<N>_train.csv`` / ``fold<N>_evaluate.csv`` are used
            (default: 1). Layouts without folds reject it.
        seed: Seed of the stratified random split used when there is neither ``fold`` nor ``split``.
        val_fraction: Share of clips held out by that random split.
        require_split: Raise when the split leaves the train or the validation part empty, or the set has one
            class (a search needs both parts and two classes); False reads such a set as it is (scoring a model on
            new recordings: all ``test``, or of one class).

    Returns:
        The manifest; ``layout`` names the layout that was detected and ``left_out`` lists the clips
        the layout puts in neither split.

    Raises:
        UserInputError: The path does not exist; a CSV lacks a required column; the named ``val_fold``
            is absent or the layout has no folds; a TAU22 setup CSV lists a file that ``meta.csv``
            does not (documented: the dataset files disagree, restore them); a file is in both splits
            or carries two labels; no clip; (with ``require_split``) fewer than two classes or an empty split.
    """
    try:
        return _load_manifest(data, val_fold=val_fold, seed=seed, val_fraction=val_fraction)
    except _NotSearchable as exc:
        if require_split:
            raise
        return exc.manifest


class _NotSearchable(UserInputError):
    """The set cannot be searched (one class, or an empty train or validation part); ``manifest`` is the set as
    read."""

    def __init__(self, message: str, manifest: Manifest) -> None:
        super().__init__(message)
        self.manifest = manifest


def _load_manifest(data: str | Path, *, val_fold: str | None, seed: int, val_fraction: float) -> Manifest:
    """``load_manifest`` without the choice of ``require_split``: raises ``_NotSearchable``."""
    path = Path(data).expanduser()
    if not path.exists():
        raise UserInputError(f"--data {str(data)!r} does not exist; pass a dataset folder or a CSV manifest")
    if path.is_file():
        if path.name == TAU22_META and _is_tau22(path.parent):
            return _read_tau22(path.parent, val_fold=val_fold)
        if path.name == ESC50_META.name and path.parent.name == ESC50_META.parent.name:
            return _read_esc50(path, val_fold=val_fold)
        return _read_csv(path, val_fold=val_fold, seed=seed, val_fraction=val_fraction)
    if _is_tau22(path):
        return _read_tau22(path, val_fold=val_fold)
    if (path / ESC50_META).is_file():
        return _read_esc50(path / ESC50_META, val_fold=val_fold)
    for name in MANIFEST_NAMES:
        if (path / name).is_file():
            return _read_csv(path / name, val_fold=val_fold, seed=seed, val_fraction=val_fraction)
    if val_fold is not None:
        raise UserInputError(
            f"--val-fold {val_fold!r} needs a layout with folds, but {path} is read as a folder per class "
            "(stratified random split); drop --val-fold or pass a CSV manifest with a 'fold' column"
        )
    return _read_folders(path, seed=seed, val_fraction=val_fraction)


def _is_tau22(root: Path) -> bool:
    return (root / TAU22_META).is_file() and (root / TAU22_SETUP_DIR / "fold1_train.csv").is_file()


def _read_table(csv_path: Path, *, required: tuple[str, ...], hint: str) -> tuple[list[str], list[dict[str, str]]]:
    """Rows of a comma- or tab-separated file (the delimiter is sniffed), keys and values stripped.

    Raises:
        UserInputError: A column of ``required`` is missing (``hint`` says what the file should hold).
    """
    with open(csv_path, newline="", encoding="utf-8") as f:
        sample = f.read(4096)
        f.seek(0)
        delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in columns]
        if missing:
            raise UserInputError(
                f"{csv_path} has no {' or '.join(repr(m) for m in missing)} column (columns: {columns}); {hint}"
            )
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    return columns, rows


def _fold_split(groups: list[str], *, val_fold: str | None, source: Path) -> tuple[list[bool], str]:
    """Validation mask and rule text for a fold column: ``val_fold`` (default: the highest fold) is held out."""
    folds = sorted(set(groups), key=_fold_key)
    chosen = folds[-1] if val_fold is None else str(val_fold)
    if chosen not in folds:
        raise UserInputError(f"--val-fold {val_fold!r} is not a fold of {source}; its folds are {folds}")
    is_val = [g == chosen for g in groups]
    return is_val, f"fold {chosen} = validation, folds {[f for f in folds if f != chosen]} = train"


def _read_csv(csv_path: Path, *, val_fold: str | None, seed: int, val_fraction: float) -> Manifest:
    columns, rows = _read_table(
        csv_path, required=("filename", "label"),
        hint="a manifest needs 'filename' (path relative to the CSV) and 'label'" + (
            f"; {csv_path.name} looks like TAU Urban Acoustic Scenes metadata, which also needs "
            f"{csv_path.parent / TAU22_SETUP_DIR / 'fold1_train.csv'} and fold1_evaluate.csv: restore the "
            "evaluation_setup folder of the dataset"
            if "scene_label" in _peek_columns(csv_path) else ""
        ),
    )
    if not rows:
        raise UserInputError(f"{csv_path} lists no clips; add one row per clip")
    root = csv_path.parent
    labels = [r["label"] for r in rows]
    devices = [r.get("device", "") for r in rows]
    cities = [r.get("city", "") for r in rows]
    if "split" in columns:
        if val_fold is not None:
            raise UserInputError(
                f"--val-fold {val_fold!r} needs a 'fold' column, but {csv_path} splits by its 'split' column; "
                "drop --val-fold"
            )
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
        is_val, rule = _fold_split(groups, val_fold=val_fold, source=csv_path)
    else:
        if val_fold is not None:
            raise UserInputError(
                f"--val-fold {val_fold!r} needs a 'fold' column, but {csv_path} has none (columns: {columns}); "
                "add a 'fold' column or drop --val-fold"
            )
        groups = [""] * len(rows)
        is_val = _stratified_split(labels, seed=seed, val_fraction=val_fraction)
        rule = f"stratified random split, {val_fraction:.0%} validation, seed {seed}"
    clips = tuple(
        ClipRecord(path=(root / r["filename"]).resolve(), label=lab, is_validation=v, group=g, device=d, city=c)
        for r, lab, v, g, d, c in zip(rows, labels, is_val, groups, devices, cities, strict=True)
    )
    return _finish(csv_path, clips, rule, layout="csv")


def _peek_columns(csv_path: Path) -> list[str]:
    with open(csv_path, encoding="utf-8") as f:
        first = f.readline()
    return [c.strip() for c in first.replace("\t", ",").split(",")]


def _read_esc50(csv_path: Path, *, val_fold: str | None) -> Manifest:
    """ESC-50: ``meta/esc50.csv`` (filename, fold, target, category, esc10, src_file, take), audio in ``audio/``."""
    _, rows = _read_table(
        csv_path, required=("filename", "fold", "category"),
        hint="ESC-50's meta/esc50.csv has columns filename, fold, target, category, esc10, src_file, take; "
             "restore the original file",
    )
    if not rows:
        raise UserInputError(f"{csv_path} lists no clips; restore the original ESC-50 meta/esc50.csv")
    audio_dir = csv_path.parent.parent.resolve() / "audio"
    groups = [r["fold"] for r in rows]
    is_val, rule = _fold_split(groups, val_fold=val_fold, source=csv_path)
    clips = tuple(
        ClipRecord(path=audio_dir / r["filename"], label=r["category"], is_validation=v, group=g)
        for r, v, g in zip(rows, is_val, groups, strict=True)
    )
    return _finish(csv_path, clips, "ESC-50 " + rule, layout="esc50")


def tau22_device_city(filename: str) -> tuple[str, str]:
    """Device and city of a TAU Urban Acoustic Scenes file name.

    The stem is ``<scene>-<city>-<location>-<segment>-<n>-<device>``: the device is the last dash-separated
    token, the city the second.

    Args:
        filename: File name or path, e.g. ``audio/airport-barcelona-0-0-0-a.wav``.

    Returns:
        ``(device, city)``, e.g. ``("a", "barcelona")``; "" for a part the name does not hold.
    """
    tokens = PurePosixPath(filename.replace("\\", "/")).stem.split("-")
    device = tokens[-1] if len(tokens) >= 2 else ""
    city = tokens[1] if len(tokens) >= 3 else ""
    return device, city


def _read_tau22(root: Path, *, val_fold: str | None) -> Manifest:
    """TAU Urban Acoustic Scenes 2022 Mobile development layout (see the module docstring)."""
    fold = "1" if val_fold is None else str(val_fold).strip().removeprefix("fold")
    setup = root / TAU22_SETUP_DIR
    train_csv = setup / f"fold{fold}_train.csv"
    eval_csv = setup / f"fold{fold}_evaluate.csv"
    if not train_csv.is_file():
        folds = sorted(p.name.removeprefix("fold").removesuffix("_train.csv") for p in setup.glob("fold*_train.csv"))
        raise UserInputError(
            f"--val-fold {val_fold!r}: {train_csv} does not exist; the evaluation-setup folds of {root} are "
            f"{folds}; pass one of them or drop --val-fold (default: 1)"
        )
    if not eval_csv.is_file():
        raise UserInputError(
            f"{eval_csv} is missing; the TAU22 layout takes validation clips from it (columns filename, "
            f"scene_label) beside {train_csv.name}: restore the evaluation_setup folder of the dataset"
        )
    meta_csv = root / TAU22_META
    _, meta_rows = _read_table(
        meta_csv, required=("filename", "scene_label"),
        hint="TAU22 meta.csv is tab-separated with columns filename, scene_label, identifier, source_label; "
             "restore the original file",
    )
    meta: dict[str, dict[str, str]] = {}
    for line, r in enumerate(meta_rows, start=2):
        if r["filename"] in meta:
            raise UserInputError(
                f"{meta_csv} line {line}: {r['filename']!r} is listed twice; restore the original meta.csv "
                "or delete the duplicate row"
            )
        meta[r["filename"]] = r
    assigned: dict[str, tuple[str, bool]] = {}
    for group, csv_path, is_val in (("train", train_csv, False), ("evaluate", eval_csv, True)):
        _, rows = _read_table(csv_path, required=("filename",),
                              hint="TAU22 evaluation-setup files are tab-separated with columns filename, "
                                   "scene_label; restore the original file")
        missing = [(line, r["filename"]) for line, r in enumerate(rows, start=2) if r["filename"] not in meta]
        if missing:
            line, name = missing[0]
            more = f" (and {len(missing) - 1} more of its rows)" if len(missing) > 1 else ""
            raise UserInputError(
                f"{csv_path} line {line} lists {name!r}, which is not in {meta_csv}{more}; every file of the "
                f"evaluation setup must have a row in meta.csv: restore the dataset's original meta.csv, or "
                f"delete the row(s) from {csv_path.name}"
            )
        for line, r in enumerate(rows, start=2):
            name = r["filename"]
            if name in assigned:
                where = "twice" if assigned[name][0] == group else f"in both {train_csv.name} and {eval_csv.name}"
                raise UserInputError(
                    f"{csv_path} line {line}: {name!r} is listed {where}; a clip belongs to one split: restore "
                    "the original evaluation_setup files or delete the duplicate row"
                )
            setup_label = r.get("scene_label", "")
            if setup_label and setup_label != meta[name]["scene_label"]:
                raise UserInputError(
                    f"{csv_path} line {line}: {name!r} has scene_label {setup_label!r} but {meta_csv} says "
                    f"{meta[name]['scene_label']!r}; restore the original dataset files"
                )
            assigned[name] = (group, is_val)
    base = root.resolve()
    clips: list[ClipRecord] = []
    left_out: list[LeftOutClip] = []
    reason = f"in meta.csv but in neither {train_csv.name} nor {eval_csv.name}"
    mismatched = 0
    for name, r in meta.items():
        device, city = tau22_device_city(name)
        source_label = r.get("source_label", "")
        if source_label and device != source_label:
            mismatched += 1
        if name not in assigned:
            left_out.append(LeftOutClip(path=str(base / name), reason=reason))
            continue
        group, is_val = assigned[name]
        clips.append(ClipRecord(path=base / name, label=r["scene_label"], is_validation=is_val, group=group,
                                device=device, city=city))
    if mismatched:
        log.warning("%s: %d file name(s) end in a device other than their source_label; the file name is used",
                    meta_csv, mismatched)
    if left_out:
        log.info("%s: %d clip(s) of meta.csv are in neither %s nor %s; left out", root, len(left_out),
                 train_csv.name, eval_csv.name)
    rule = f"TAU22 evaluation setup fold {fold}: {train_csv.name} = train, {eval_csv.name} = validation"
    return _finish(root, tuple(clips), rule, layout="tau22", left_out=tuple(left_out))


def _read_folders(root: Path, *, seed: int, val_fraction: float) -> Manifest:
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [(f, d.name) for d in class_dirs for f in sorted(d.rglob("*")) if f.suffix.lower() in AUDIO_SUFFIXES]
    if not files:
        raise UserInputError(
            f"--data {str(root)!r} has no manifest ({', '.join(MANIFEST_NAMES)}), no TAU22 layout (meta.csv + "
            f"evaluation_setup/fold1_train.csv), no ESC-50 layout (meta/esc50.csv) and no class folders with "
            f"audio files ({', '.join(AUDIO_SUFFIXES)}); pass a CSV manifest or a folder per class"
        )
    labels = [lab for _, lab in files]
    is_val = _stratified_split(labels, seed=seed, val_fraction=val_fraction)
    clips = tuple(
        ClipRecord(path=f.resolve(), label=lab, is_validation=v, group="") for (f, lab), v in zip(files, is_val, strict=True)
    )
    return _finish(root, clips, f"folder per class, stratified random split, {val_fraction:.0%} validation, seed {seed}",
                   layout="folders")


def _finish(source: Path, clips: tuple[ClipRecord, ...], rule: str, *, layout: str,
            left_out: tuple[LeftOutClip, ...] = ()) -> Manifest:
    class_names = tuple(sorted({c.label for c in clips}, key=_fold_key))
    if not class_names:
        raise UserInputError(f"{source} has no labelled clip")
    manifest = Manifest(source=source, clips=clips, class_names=class_names, split_rule=rule, layout=layout,
                        left_out=left_out)
    if len(class_names) < 2:
        raise _NotSearchable(f"{source} has {len(class_names)} class(es); classification needs at least 2", manifest)
    if not any(c.is_validation for c in clips) or all(c.is_validation for c in clips):
        raise _NotSearchable(f"{source}: the split ({rule}) leaves the train or validation part empty", manifest)
    return manifest


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
