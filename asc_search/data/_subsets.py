"""Training subsets of 5, 10, 25, 50 and 100 % (DCASE 2024 Task 1, "Data-Efficient Low-Complexity Acoustic
Scene Classification"), and the nested order of training clips that the data fidelity of a search trains by.

DCASE 2024 ships its subsets as ``split_setup/split5.csv`` ... ``split100.csv`` beside TAU22's ``meta.csv``
(tab-separated, a ``filename`` column; CPJKU/dcase2024_task1_baseline ``dataset/dcase24.py``); each smaller
subset is part of the larger ones. Where a data folder has those files, ``train_subset`` reads them; elsewhere
it draws the same nested subsets at random, stratified by class (``nested_ranks``), so that a run on any data set
can train on a share of its training clips. Validation and test clips are never dropped: a subset limits only
what is trained on.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from asc_search._errors import UserInputError
from asc_search.data._manifest import LeftOutClip, Manifest, _read_table

TRAIN_SUBSETS_PCT = (5, 10, 25, 50, 100)
"""The DCASE 2024 training subsets, percent of the training clips."""
SPLIT_SETUP_DIR = "split_setup"
"""DCASE 2024's folder of subset files (``split5.csv`` ... ``split100.csv``), beside ``meta.csv``."""


def nested_ranks(labels, seed: int) -> np.ndarray:
    """Position of each clip in a nested, class-stratified order, as a fraction in [0, 1).

    Within each class the clips are shuffled (``seed``); the k-th (from 0) of a class of n gets ``k / n``. The
    subset of a fraction ``f`` is ``ranks < f`` (``subset_mask``): ``ceil(f * n)`` clips of each class, so at
    least one, and a smaller subset is part of every larger one.

    Args:
        labels: Class per clip, shape ``(n,)`` (any values that compare equal within a class).
        seed: Seed of the shuffle.

    Returns:
        Shape ``(n,)`` float64 in [0, 1).
    """
    labels = np.asarray(labels)
    ranks = np.zeros(len(labels), dtype=np.float64)
    rng = np.random.default_rng(seed)
    for lab in sorted(set(labels.tolist()), key=str):
        idx = np.flatnonzero(labels == lab)
        ranks[idx[rng.permutation(len(idx))]] = np.arange(len(idx)) / len(idx)
    return ranks


def subset_mask(ranks: np.ndarray, fraction: float) -> np.ndarray:
    """The clips of the nested subset of ``fraction``: ``ranks < fraction`` (``nested_ranks``).

    Raises:
        ValueError: ``fraction`` outside (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"a subset's fraction must be in (0, 1], got {fraction}")
    return np.asarray(ranks) < fraction - 1e-12 if fraction < 1 else np.ones(len(ranks), dtype=bool)


def train_subset(manifest: Manifest, pct: int, *, seed: int = 0) -> Manifest:
    """The manifest with its training clips limited to the ``pct`` % subset; the other training clips move to
    ``left_out`` (counted, with the reason), validation and test stay as they are.

    Where the data folder has DCASE 2024's ``split_setup/split<pct>.csv`` (beside ``meta.csv``), the subset is
    the training clips that file lists; otherwise it is the nested, class-stratified random subset of the
    training clips (``nested_ranks`` with ``seed``: the 5 % subset is part of the 10 % one, and so on).

    Args:
        manifest: A manifest from ``load_manifest``.
        pct: One of ``TRAIN_SUBSETS_PCT``; 100 returns ``manifest`` unchanged.
        seed: Seed of the random subset (the run's ``--seed``).

    Returns:
        The limited manifest; its ``split_rule`` says which subset and from where.

    Raises:
        UserInputError: ``pct`` is not a DCASE 2024 subset; the split file lacks a ``filename`` column; the
            subset leaves a class without a training clip.
    """
    if pct not in TRAIN_SUBSETS_PCT:
        raise UserInputError(f"--train-subset must be one of {', '.join(map(str, TRAIN_SUBSETS_PCT))} (percent of "
                             f"the training clips, the DCASE 2024 subsets), got {pct!r}")
    if pct == 100:
        return manifest
    root = manifest.source if manifest.source.is_dir() else manifest.source.parent
    split_csv = root / SPLIT_SETUP_DIR / f"split{pct}.csv"
    train = [i for i, c in enumerate(manifest.clips) if c.split == "train"]
    if split_csv.is_file():
        _, rows = _read_table(split_csv, required=("filename",),
                              hint="DCASE 2024 split files are tab-separated with a filename column")
        listed = {str((root / r["filename"]).resolve()) for r in rows}
        keep = {i for i in train if str(Path(manifest.clips[i].path).resolve()) in listed}
        source = f"{SPLIT_SETUP_DIR}/{split_csv.name}"
    else:
        ranks = nested_ranks([manifest.clips[i].label for i in train], seed)
        keep = {i for i, m in zip(train, subset_mask(ranks, pct / 100), strict=True) if m}
        source = f"a nested random subset stratified by class (seed {seed}; no {SPLIT_SETUP_DIR}/{split_csv.name})"
    missing = sorted({manifest.clips[i].label for i in train} - {manifest.clips[i].label for i in keep})
    if missing:
        raise UserInputError(f"--train-subset {pct}: {source} holds no training clip of class(es) "
                             f"{', '.join(missing)}; use a larger subset")
    reason = f"training clip outside the {pct} % training subset ({source})"
    left = tuple(LeftOutClip(path=str(manifest.clips[i].path), reason=reason) for i in train if i not in keep)
    clips = tuple(c for i, c in enumerate(manifest.clips) if c.split != "train" or i in keep)
    rule = (f"{manifest.split_rule}; training limited to the {pct} % subset: {len(keep)} of {len(train)} training "
            f"clips, from {source}")
    return dataclasses.replace(manifest, clips=clips, split_rule=rule, left_out=manifest.left_out + left)


def fidelity_fractions(milestones: list[int], reduction_factor: float) -> list[float]:
    """The share of the training clips a trial trains on before each rung of a data-and-epochs fidelity: the
    DCASE 2024 subset nearest (in log) to ``reduction_factor ** -(k)`` for the k-th rung from the last, so the
    first rung of three sees about 1/eta^3 of the data ... and the last rung's segment 1/eta; after the last rung
    a trial trains on every clip.

    Args:
        milestones: The rungs (epochs), ascending.
        reduction_factor: ASHA's eta (> 1).

    Returns:
        One fraction per rung, non-decreasing, each one of ``TRAIN_SUBSETS_PCT / 100``.
    """
    out = []
    for k in range(len(milestones), 0, -1):
        target = reduction_factor ** -k
        out.append(min((p / 100 for p in TRAIN_SUBSETS_PCT), key=lambda f: abs(math.log(f / target))))
    return out
