"""Dataset manifests: which clips exist, their labels and which split each belongs to.

Layouts, detected in this order when ``load_manifest`` is given a folder:

1. TAU Urban Acoustic Scenes 2022 Mobile development set (``meta.csv`` and
   ``evaluation_setup/fold1_train.csv``): test = rows of ``fold1_evaluate.csv`` (the official
   development-test split); validation = a group split of ``fold1_train.csv`` in which no recording location
   (``meta.csv``'s ``identifier``, else the city-location part of the file name) is in both parts, as DCASE
   participants do it; train = the rest of ``fold1_train.csv``. Device and city are parsed from the file
   name; ``meta.csv`` rows in neither file are left out and counted in ``Manifest.left_out``.
2. ESC-50 (``meta/esc50.csv`` with audio under ``audio/``): label = ``category``; folds as below.
3. A CSV manifest (``metadata.csv``, ``manifest.csv`` or ``meta.csv``) with columns
   ``filename,label[,fold|split][,device][,city]`` (paths relative to the CSV), e.g.
   ``esc10-dev/metadata.csv`` (``fold``) and ``fsdd/metadata.csv`` (``split``).
4. A folder per class (``DIR/<label>/*.wav|flac|ogg``), split at random, stratified by class.

Every layout gives three splits: **train**; **validation**, carved from the training material, which picks
each trial's epoch and is the search's objective; **test**, which neither the search, the Pareto front, the
ensemble nor ``deploy --pick`` ever reads (only the export scores it). With a ``fold`` column: test = the
highest fold (``--test-fold``, ``none`` for no test split), validation = the highest of the other folds
(``--val-fold``; with one other fold, a stratified random share of it). With a ``split`` column: ``test`` /
``eval`` / ``evaluate`` / ``evaluation`` = test, ``val`` / ``valid`` / ``validation`` / ``dev`` = validation,
``train`` / ``training`` = train; without validation rows a stratified random share of train is carved out.
Without either column, and for a folder per class: stratified at random, 20 % test (seed 0, whatever the
run's ``--seed``, so that runs of different seeds score the same test clips), then 20 % validation
(``--seed``) of the rest.

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
VALIDATION_SPLIT_NAMES = frozenset({"val", "valid", "validation", "dev"})
TEST_SPLIT_NAMES = frozenset({"test", "eval", "evaluate", "evaluation"})
TRAIN_SPLIT_NAMES = frozenset({"train", "training"})
SPLITS = ("train", "validation", "test")
NO_TEST_FOLD = "none"
"""``--test-fold none``: a fold layout without a test split (the report then has selection figures only)."""
TEST_SPLIT_SEED = 0
"""Seed of the random test carve (no fold or split column): fixed, so that runs of any ``--seed`` share it."""
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
        is_test: True when the clip belongs to the test split (never read by the search or the selection).
        group: Fold or split value as written in the manifest ("" when none); TAU22: ``train`` or ``evaluate``.
        location: Recording location (TAU22: ``identifier``, e.g. ``barcelona-203``; "" when the layout has
            none); no location is in two splits.
        device: Recording device ("" when the layout has none), e.g. ``a`` or ``s1`` in TAU22.
        city: City of the recording ("" when the layout has none), e.g. ``barcelona`` in TAU22.
    """

    path: Path
    label: str
    is_validation: bool
    is_test: bool = False
    group: str = ""
    device: str = ""
    city: str = ""
    location: str = ""

    def __post_init__(self) -> None:
        if self.is_validation and self.is_test:
            raise ValueError(f"{self.path}: a clip is in one split, not in both validation and test")

    @property
    def split(self) -> str:
        """``train``, ``validation`` or ``test``."""
        return "test" if self.is_test else "validation" if self.is_validation else "train"


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
        split_rule: Human-readable description of the train/validation/test split.
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
        """Counts for reports: clips, classes, train, validation and test sizes, clips left out by the layout."""
        n = Counter(c.split for c in self.clips)
        return {
            "source": str(self.source),
            "layout": self.layout,
            "clips": len(self.clips),
            "classes": len(self.class_names),
            "train_clips": n["train"],
            "validation_clips": n["validation"],
            "test_clips": n["test"],
            "split_rule": self.split_rule,
            **({"locations": self.location_summary()} if any(c.location for c in self.clips) else {}),
            "left_out_clips": len(self.left_out),
        }


    def location_summary(self) -> dict:
        """Recording locations per split and how many are in two splits (0 for a group split), e.g.
        ``{"train": 120, "validation": 30, "test": 60, "in_two_splits": 0}``."""
        where: dict[str, set[str]] = {}
        for c in self.clips:
            if c.location:
                where.setdefault(c.location, set()).add(c.split)
        out = {s: sum(s in v for v in where.values()) for s in SPLITS}
        out["in_two_splits"] = sum(len(v) > 1 for v in where.values())
        return out


def load_manifest(data: str | Path, *, val_fold: str | None = None, test_fold: str | None = None, seed: int = 0,
                  val_fraction: float = 0.2, test_fraction: float = 0.2, require_split: bool = True) -> Manifest:
    """Read the manifest of a dataset folder or CSV file, with its train, validation and test splits.

    A folder is matched against the layouts in this order: TAU Urban Acoustic Scenes 2022 Mobile
    (``meta.csv`` + ``evaluation_setup/fold1_train.csv``), ESC-50 (``meta/esc50.csv``), a CSV manifest
    (``metadata.csv``, ``manifest.csv``, ``meta.csv``), a folder per class. The splits of each are in the
    module docstring.

    Args:
        data: A dataset folder, or a CSV file: ``meta.csv`` of a TAU22 folder, ``meta/esc50.csv`` of an
            ESC-50 folder, or a manifest with ``filename`` and ``label`` columns.
        val_fold: Validation fold of a layout with a ``fold`` column (default: the highest fold that is not
            the test fold). Other layouts reject it (TAU22's validation is a location group split).
        test_fold: Test fold of a layout with a ``fold`` column (default: the highest; ``none``: no test
            split). With TAU22: the evaluation-setup fold whose ``fold<N>_evaluate.csv`` is the test split and
            whose ``fold<N>_train.csv`` is split into train and validation (default: 1). Layouts without folds
            reject it.
        seed: Seed of the validation carve (stratified random, or TAU22's location group split).
        val_fraction: Share of the clips the validation carve holds out (of the training material's clips).
        test_fraction: Share of the clips held out for test where there is neither ``fold`` nor ``split``.
        require_split: Raise when the split leaves the train or the validation part empty, or the set has one
            class (a search needs both parts and two classes); False reads such a set as it is (scoring a model on
            new recordings: all ``test``, or of one class).

    Returns:
        The manifest; ``layout`` names the layout that was detected and ``left_out`` lists the clips
        the layout puts in no split.

    Raises:
        UserInputError: The path does not exist; a CSV lacks a required column; the named ``val_fold`` or
            ``test_fold`` is absent, the same fold, or the layout has no folds; a TAU22 setup CSV lists a file
            that ``meta.csv`` does not (documented: the dataset files disagree, restore them); a file is in two
            splits or carries two labels; no clip; (with ``require_split``) fewer than two classes or an empty
            train or validation split.
    """
    try:
        return _load_manifest(data, val_fold=val_fold, test_fold=test_fold, seed=seed, val_fraction=val_fraction,
                              test_fraction=test_fraction)
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


def _load_manifest(data: str | Path, *, val_fold: str | None, test_fold: str | None, seed: int,
                   val_fraction: float, test_fraction: float) -> Manifest:
    """``load_manifest`` without the choice of ``require_split``: raises ``_NotSearchable``."""
    path = Path(data).expanduser()
    if not path.exists():
        raise UserInputError(f"--data {str(data)!r} does not exist; pass a dataset folder or a CSV manifest")
    carve = {"seed": seed, "val_fraction": val_fraction}
    if path.is_file():
        if path.name == TAU22_META and _is_tau22(path.parent):
            return _read_tau22(path.parent, val_fold=val_fold, test_fold=test_fold, **carve)
        if path.name == ESC50_META.name and path.parent.name == ESC50_META.parent.name:
            return _read_esc50(path, val_fold=val_fold, test_fold=test_fold, **carve)
        return _read_csv(path, val_fold=val_fold, test_fold=test_fold, test_fraction=test_fraction, **carve)
    if _is_tau22(path):
        return _read_tau22(path, val_fold=val_fold, test_fold=test_fold, **carve)
    if (path / ESC50_META).is_file():
        return _read_esc50(path / ESC50_META, val_fold=val_fold, test_fold=test_fold, **carve)
    for name in MANIFEST_NAMES:
        if (path / name).is_file():
            return _read_csv(path / name, val_fold=val_fold, test_fold=test_fold, test_fraction=test_fraction,
                             **carve)
    for flag, value in (("--val-fold", val_fold), ("--test-fold", test_fold)):
        if value is not None:
            raise UserInputError(
                f"{flag} {value!r} needs a layout with folds, but {path} is read as a folder per class "
                f"(stratified random split); drop {flag} or pass a CSV manifest with a 'fold' column"
            )
    return _read_folders(path, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)


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


def _fold_split(groups: list[str], labels: list[str], *, val_fold: str | None, test_fold: str | None,
                source: Path, seed: int, val_fraction: float) -> tuple[list[bool], list[bool], str]:
    """Validation and test masks and the rule text for a fold column (module docstring: test = the highest fold,
    validation = the highest of the others, or a stratified share of the one other fold)."""
    folds = sorted(set(groups), key=_fold_key)
    no_test = test_fold is not None and str(test_fold).strip().lower() == NO_TEST_FOLD
    test = None if no_test else folds[-1] if test_fold is None else str(test_fold)
    if test is not None and test not in folds:
        raise UserInputError(f"--test-fold {test_fold!r} is not a fold of {source}; its folds are {folds} "
                             f"(or '{NO_TEST_FOLD}' for no test split)")
    rest = [f for f in folds if f != test]
    if val_fold is not None and str(val_fold) == test:
        raise UserInputError(f"--val-fold {val_fold!r} is also the test fold of {source}; pass another --val-fold "
                             f"or --test-fold (folds: {folds})")
    if val_fold is not None and str(val_fold) not in rest:
        raise UserInputError(f"--val-fold {val_fold!r} is not a fold of {source}; its folds are {folds}")
    is_test = [g == test for g in groups]
    test_text = f"fold {test} = test" if test is not None else "no test fold (--test-fold none)"
    if val_fold is None and len(rest) == 1:  # one training fold: validation is a stratified share of it
        idx = [i for i, g in enumerate(groups) if g == rest[0]]
        carved = _stratified_split([labels[i] for i in idx], seed=seed, val_fraction=val_fraction)
        is_val = [False] * len(groups)
        for i, v in zip(idx, carved, strict=True):
            is_val[i] = v
        return is_val, is_test, (f"{test_text}; fold {rest[0]}: stratified random {val_fraction:.0%} = validation "
                                 f"(seed {seed}), the rest = train")
    if not rest:  # a single fold, and it is the test fold: a set to score, not to search
        return [False] * len(groups), is_test, f"{test_text}; no other fold"
    chosen = rest[-1] if val_fold is None else str(val_fold)
    is_val = [g == chosen for g in groups]
    return is_val, is_test, (f"{test_text}, fold {chosen} = validation, folds "
                             f"{[f for f in rest if f != chosen]} = train")


def _read_csv(csv_path: Path, *, val_fold: str | None, test_fold: str | None, seed: int, val_fraction: float,
              test_fraction: float) -> Manifest:
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
        for flag, value in (("--val-fold", val_fold), ("--test-fold", test_fold)):
            if value is not None:
                raise UserInputError(
                    f"{flag} {value!r} needs a 'fold' column, but {csv_path} splits by its 'split' column; "
                    f"drop {flag}"
                )
        splits = [r["split"].lower() for r in rows]
        unknown = sorted(set(splits) - VALIDATION_SPLIT_NAMES - TEST_SPLIT_NAMES - TRAIN_SPLIT_NAMES)
        if unknown:
            raise UserInputError(
                f"{csv_path}: unknown split value(s) {unknown}; use 'train', one of "
                f"{sorted(VALIDATION_SPLIT_NAMES)} (validation) or one of {sorted(TEST_SPLIT_NAMES)} (test)"
            )
        is_test = [s in TEST_SPLIT_NAMES for s in splits]
        is_val = [s in VALIDATION_SPLIT_NAMES for s in splits]
        groups = splits
        named = lambda mask: ", ".join(sorted({s for s, m in zip(splits, mask, strict=True) if m}))  # noqa: E731
        rule = "split column: " + (f"{named(is_test)} = test" if any(is_test) else "no test rows")
        if any(is_val):
            rule += f", {named(is_val)} = validation, {named([not (t or v) for t, v in zip(is_test, is_val, strict=True)]) or 'none'} = train"
        else:  # validation carved from the train rows
            is_val = _carve(labels, [not t for t in is_test], seed=seed, fraction=val_fraction)
            rule += f"; train rows: stratified random {val_fraction:.0%} = validation (seed {seed}), the rest = train"
    elif "fold" in columns:
        groups = [r["fold"] for r in rows]
        is_val, is_test, rule = _fold_split(groups, labels, val_fold=val_fold, test_fold=test_fold, source=csv_path,
                                            seed=seed, val_fraction=val_fraction)
    else:
        for flag, value in (("--val-fold", val_fold), ("--test-fold", test_fold)):
            if value is not None:
                raise UserInputError(
                    f"{flag} {value!r} needs a 'fold' column, but {csv_path} has none (columns: {columns}); "
                    f"add a 'fold' column or drop {flag}"
                )
        groups = [""] * len(rows)
        is_val, is_test, rule = _random_split(labels, seed=seed, val_fraction=val_fraction,
                                              test_fraction=test_fraction)
    clips = tuple(
        ClipRecord(path=(root / r["filename"]).resolve(), label=lab, is_validation=v, is_test=t, group=g, device=d,
                   city=c)
        for r, lab, v, t, g, d, c in zip(rows, labels, is_val, is_test, groups, devices, cities, strict=True)
    )
    return _finish(csv_path, clips, rule, layout="csv")


def _peek_columns(csv_path: Path) -> list[str]:
    with open(csv_path, encoding="utf-8") as f:
        first = f.readline()
    return [c.strip() for c in first.replace("\t", ",").split(",")]


def _read_esc50(csv_path: Path, *, val_fold: str | None, test_fold: str | None, seed: int,
                val_fraction: float) -> Manifest:
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
    labels = [r["category"] for r in rows]
    is_val, is_test, rule = _fold_split(groups, labels, val_fold=val_fold, test_fold=test_fold, source=csv_path,
                                        seed=seed, val_fraction=val_fraction)
    clips = tuple(
        ClipRecord(path=audio_dir / r["filename"], label=lab, is_validation=v, is_test=t, group=g)
        for r, lab, v, t, g in zip(rows, labels, is_val, is_test, groups, strict=True)
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


def tau22_location(filename: str) -> str:
    """Recording location of a TAU Urban Acoustic Scenes file name: ``<city>-<location>``, the second and third
    dash-separated tokens of the stem (``meta.csv``'s ``identifier``), e.g. ``barcelona-0`` for
    ``audio/airport-barcelona-0-0-0-a.wav``; "" when the name has fewer tokens."""
    tokens = PurePosixPath(filename.replace("\\", "/")).stem.split("-")
    return f"{tokens[1]}-{tokens[2]}" if len(tokens) >= 4 else ""


def _read_tau22(root: Path, *, val_fold: str | None, test_fold: str | None, seed: int,
                val_fraction: float) -> Manifest:
    """TAU Urban Acoustic Scenes 2022 Mobile development layout (see the module docstring)."""
    if val_fold is not None:
        raise UserInputError(
            f"--val-fold {val_fold!r}: TAU22's validation split is a group split of fold1_train.csv by recording "
            "location (no location in both parts), not a fold; drop --val-fold (--test-fold N picks the "
            "evaluation-setup fold whose evaluate file is the test split)"
        )
    fold = "1" if test_fold is None else str(test_fold).strip().removeprefix("fold")
    setup = root / TAU22_SETUP_DIR
    train_csv = setup / f"fold{fold}_train.csv"
    eval_csv = setup / f"fold{fold}_evaluate.csv"
    if not train_csv.is_file():
        folds = sorted(p.name.removeprefix("fold").removesuffix("_train.csv") for p in setup.glob("fold*_train.csv"))
        raise UserInputError(
            f"--test-fold {test_fold!r}: {train_csv} does not exist; the evaluation-setup folds of {root} are "
            f"{folds}; pass one of them or drop --test-fold (default: 1)"
        )
    if not eval_csv.is_file():
        raise UserInputError(
            f"{eval_csv} is missing; the TAU22 layout takes its test clips from it (columns filename, "
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
    kept: list[tuple[str, dict[str, str], str, bool]] = []  # (name, meta row, group, is_test)
    left_out: list[LeftOutClip] = []
    reason = f"in meta.csv but in neither {train_csv.name} nor {eval_csv.name}"
    mismatched = 0
    for name, r in meta.items():
        device, _ = tau22_device_city(name)
        source_label = r.get("source_label", "")
        if source_label and device != source_label:
            mismatched += 1
        if name not in assigned:
            left_out.append(LeftOutClip(path=str(base / name), reason=reason))
            continue
        kept.append((name, r, *assigned[name]))
    locations = [r.get("identifier", "") or tau22_location(name) for name, r, _, _ in kept]
    labels = [r["scene_label"] for _, r, _, _ in kept]
    is_val = _group_split(labels, locations, [not t for _, _, _, t in kept], seed=seed, fraction=val_fraction)
    clips: list[ClipRecord] = []
    for (name, r, group, is_test), loc, v in zip(kept, locations, is_val, strict=True):
        device, city = tau22_device_city(name)
        clips.append(ClipRecord(path=base / name, label=r["scene_label"], is_validation=v, is_test=is_test,
                                group=group, device=device, city=city, location=loc))
    shared = {c.location for c in clips if c.is_test and c.location} & {
        c.location for c in clips if not c.is_test and c.location}
    if mismatched:
        log.warning("%s: %d file name(s) end in a device other than their source_label; the file name is used",
                    meta_csv, mismatched)
    if left_out:
        log.info("%s: %d clip(s) of meta.csv are in neither %s nor %s; left out", root, len(left_out),
                 train_csv.name, eval_csv.name)
    if shared:
        log.warning("%s: %d recording location(s) are in both %s and %s (e.g. %s)", root, len(shared),
                    train_csv.name, eval_csv.name, sorted(shared)[0])
    rule = (f"TAU22 evaluation setup fold {fold}: {eval_csv.name} = test; {train_csv.name}: recording locations "
            f"(identifier) split {val_fraction:.0%} validation / the rest train, stratified by scene, seed {seed}, "
            "no location in both")
    return _finish(root, tuple(clips), rule, layout="tau22", left_out=tuple(left_out))


def _read_folders(root: Path, *, seed: int, val_fraction: float, test_fraction: float) -> Manifest:
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [(f, d.name) for d in class_dirs for f in sorted(d.rglob("*")) if f.suffix.lower() in AUDIO_SUFFIXES]
    if not files:
        raise UserInputError(
            f"--data {str(root)!r} has no manifest ({', '.join(MANIFEST_NAMES)}), no TAU22 layout (meta.csv + "
            f"evaluation_setup/fold1_train.csv), no ESC-50 layout (meta/esc50.csv) and no class folders with "
            f"audio files ({', '.join(AUDIO_SUFFIXES)}); pass a CSV manifest or a folder per class"
        )
    labels = [lab for _, lab in files]
    is_val, is_test, rule = _random_split(labels, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    clips = tuple(
        ClipRecord(path=f.resolve(), label=lab, is_validation=v, is_test=t, group="")
        for (f, lab), v, t in zip(files, is_val, is_test, strict=True)
    )
    return _finish(root, clips, "folder per class, " + rule, layout="folders")


def _finish(source: Path, clips: tuple[ClipRecord, ...], rule: str, *, layout: str,
            left_out: tuple[LeftOutClip, ...] = ()) -> Manifest:
    class_names = tuple(sorted({c.label for c in clips}, key=_fold_key))
    if not class_names:
        raise UserInputError(f"{source} has no labelled clip")
    manifest = Manifest(source=source, clips=clips, class_names=class_names, split_rule=rule, layout=layout,
                        left_out=left_out)
    if len(class_names) < 2:
        raise _NotSearchable(f"{source} has {len(class_names)} class(es); classification needs at least 2", manifest)
    parts = Counter(c.split for c in clips)
    if not parts["train"] or not parts["validation"]:
        raise _NotSearchable(f"{source}: the split ({rule}) leaves the train or validation part empty", manifest)
    return manifest


def _fold_key(value: str):
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _stratified_split(labels: list[str], *, seed: int, val_fraction: float) -> list[bool]:
    """A stratified random mask holding ``val_fraction`` of each class (at least one clip, and one left, of a
    class of two or more)."""
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


def _carve(labels: list[str], eligible: list[bool], *, seed: int, fraction: float) -> list[bool]:
    """``_stratified_split`` over the ``eligible`` clips only; False elsewhere."""
    idx = [i for i, e in enumerate(eligible) if e]
    mask = [False] * len(labels)
    for i, v in zip(idx, _stratified_split([labels[i] for i in idx], seed=seed, val_fraction=fraction), strict=True):
        mask[i] = v
    return mask


def _random_split(labels: list[str], *, seed: int, val_fraction: float,
                  test_fraction: float) -> tuple[list[bool], list[bool], str]:
    """Stratified random test (``TEST_SPLIT_SEED``) then validation (``seed``) masks, and the rule text."""
    is_test = _stratified_split(labels, seed=TEST_SPLIT_SEED, val_fraction=test_fraction) if test_fraction > 0 else [
        False] * len(labels)
    is_val = _carve(labels, [not t for t in is_test], seed=seed, fraction=val_fraction)
    return is_val, is_test, (f"stratified random split: {test_fraction:.0%} test (seed {TEST_SPLIT_SEED}), then "
                             f"{val_fraction:.0%} of the rest validation (seed {seed}), the rest train")


def _group_split(labels: list[str], groups: list[str], eligible: list[bool], *, seed: int,
                 fraction: float) -> list[bool]:
    """A validation mask over the ``eligible`` clips in which no group (recording location) is in both parts.

    Groups are taken in a random order (``seed``) and each goes to validation while its most frequent class holds
    fewer than ``fraction`` of that class's eligible clips in validation, keeping at least one group of every
    class in train. A clip without a group is a group of its own.
    """
    keys = [g or f"\0clip{i}" for i, g in enumerate(groups)]
    members: dict[str, list[int]] = {}
    for i, (k, e) in enumerate(zip(keys, eligible, strict=True)):
        if e:
            members.setdefault(k, []).append(i)
    per_class = Counter(labels[i] for idx in members.values() for i in idx)
    groups_of_class = Counter(Counter(labels[i] for i in idx).most_common(1)[0][0] for idx in members.values())
    in_val: Counter = Counter()
    val_groups: Counter = Counter()
    mask = [False] * len(labels)
    rng = np.random.default_rng(seed)
    names = sorted(members)
    for j in rng.permutation(len(names)):
        idx = members[names[int(j)]]
        main = Counter(labels[i] for i in idx).most_common(1)[0][0]
        if in_val[main] >= fraction * per_class[main] or val_groups[main] + 1 >= groups_of_class[main]:
            continue
        val_groups[main] += 1
        for i in idx:
            mask[i] = True
            in_val[labels[i]] += 1
    return mask


def label_counts(manifest: Manifest) -> Counter:
    """Clips per class."""
    return Counter(c.label for c in manifest.clips)
