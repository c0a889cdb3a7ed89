"""DCASE 2024 training subsets: nested, class-stratified draws, and the split files where the data has them."""

from __future__ import annotations

import csv
import math
from collections import Counter

import numpy as np
import pytest

from asc_search import UserInputError
from asc_search.data import (
    SPLIT_SETUP_DIR,
    TRAIN_SUBSETS_PCT,
    fidelity_fractions,
    load_manifest,
    nested_ranks,
    subset_mask,
    train_subset,
)
from tests.data.tau22_fixture import build_tau22_fixture


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_nested_subsets_are_stratified_and_each_part_of_the_next(seed):
    labels = np.array(["a"] * 40 + ["b"] * 13 + ["c"] * 3)
    ranks = nested_ranks(labels, seed)
    masks = [subset_mask(ranks, p / 100) for p in TRAIN_SUBSETS_PCT]
    for small, large in zip(masks, masks[1:], strict=False):
        assert not (small & ~large).any()
    for p, m in zip(TRAIN_SUBSETS_PCT, masks, strict=True):
        got = Counter(labels[m])
        assert got == {k: math.ceil(p / 100 * n) for k, n in Counter(labels).items()}
    assert masks[-1].all()
    assert np.array_equal(nested_ranks(labels, seed), ranks)
    assert not np.array_equal(nested_ranks(labels, seed + 1), ranks)


def test_a_random_subset_of_esc10_limits_only_the_training_clips(esc10):
    full = load_manifest(esc10, val_fold="2", test_fold="3")
    kept = {}
    for pct in TRAIN_SUBSETS_PCT:
        m = train_subset(full, pct, seed=0)
        split = Counter(c.split for c in m.clips)
        assert split["validation"] == 80 and split["test"] == 80
        # fold 1: 8 clips of each of the 10 classes
        assert Counter(c.label for c in m.clips if c.split == "train") == {
            lab: math.ceil(pct / 100 * 8) for lab in full.class_names}
        assert len(m.left_out) == 80 - split["train"]
        assert all(f"{pct} % training subset" in x.reason for x in m.left_out)
        kept[pct] = {c.path for c in m.clips if c.split == "train"}
        assert (f"{pct} % subset" in m.split_rule) is (pct < 100)
    for small, large in zip(TRAIN_SUBSETS_PCT, TRAIN_SUBSETS_PCT[1:], strict=False):
        assert kept[small] <= kept[large]


def test_the_dcase2024_split_file_gives_the_subset_where_the_data_has_one(esc10, tmp_path):
    """TAU22 with ``split_setup/split25.csv``: exactly its training clips are trained on; a listed clip that the run
    puts in validation stays there; without the file, the random subset."""
    root = build_tau22_fixture(tmp_path, esc10, n_scenes=3, clips_per_scene=8)
    full = load_manifest(root)
    train = [c for c in full.clips if c.split == "train"]
    val = [c for c in full.clips if c.split == "validation"]
    listed = [c for i, c in enumerate(train) if i % 3 == 0]
    seen = {c.label for c in listed}
    listed += [next(c for c in train if c.label == lab) for lab in full.class_names if lab not in seen]
    (root / SPLIT_SETUP_DIR).mkdir()
    with open(root / SPLIT_SETUP_DIR / "split25.csv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["filename", "scene_label"])
        for c in [*listed, val[0]]:
            w.writerow([c.path.relative_to(root.resolve()).as_posix(), c.label])
    m = train_subset(full, 25, seed=0)
    assert {c.path for c in m.clips if c.split == "train"} == {c.path for c in listed}
    assert {c.path for c in m.clips if c.split != "train"} == {c.path for c in full.clips if c.split != "train"}
    assert "split_setup/split25.csv" in m.split_rule
    assert len(m.left_out) == len(full.left_out) + len(train) - len(set(c.path for c in listed))
    # 10 %: no file, the random subset
    assert "nested random subset" in train_subset(full, 10, seed=0).split_rule


def test_bad_subsets_are_user_errors_that_name_the_fix(esc10, tmp_path):
    full = load_manifest(esc10, val_fold="2", test_fold="3")
    with pytest.raises(UserInputError, match="--train-subset must be one of 5, 10, 25, 50, 100"):
        train_subset(full, 30)
    root = build_tau22_fixture(tmp_path, esc10, n_scenes=2, clips_per_scene=4)
    (root / SPLIT_SETUP_DIR).mkdir()
    (root / SPLIT_SETUP_DIR / "split5.csv").write_text("name\nx.wav\n")
    with pytest.raises(UserInputError, match="filename"):
        train_subset(load_manifest(root), 5)
    (root / SPLIT_SETUP_DIR / "split5.csv").write_text("filename\nnot-there.wav\n")
    with pytest.raises(UserInputError, match="holds no training clip of class"):
        train_subset(load_manifest(root), 5)


def test_fidelity_fractions_grow_to_the_last_rung():
    assert fidelity_fractions([2, 6], 3) == [0.1, 0.25]
    assert fidelity_fractions([1, 3, 9], 3) == [0.05, 0.1, 0.25]
    assert fidelity_fractions([], 3) == []
