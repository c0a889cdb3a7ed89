import numpy as np
import pytest
import soundfile as sf

from asc_search import UserInputError
from asc_search.data import decode_dataset, load_manifest, native_sample_rate_hz, pad_to_patches
from tests.conftest import copy_clip


def test_esc10_manifest_holds_out_fold_3_for_test_and_fold_2_for_validation(esc10):
    m = load_manifest(esc10)
    assert len(m.clips) == 240 and m.n_classes == 10
    assert sum(c.is_validation for c in m.clips) == 80 and sum(c.is_test for c in m.clips) == 80
    assert all(c.is_test == (c.group == "3") and c.is_validation == (c.group == "2") for c in m.clips)
    assert all(c.path.exists() for c in m.clips)
    assert m.summary()["test_clips"] == 80 and "fold 3 = test, fold 2 = validation" in m.split_rule


def test_esc10_val_and_test_folds_can_be_chosen_and_must_exist(esc10):
    m = load_manifest(esc10, val_fold="1", test_fold="2")
    assert all(c.is_validation == (c.group == "1") and c.is_test == (c.group == "2") for c in m.clips)
    with pytest.raises(UserInputError, match="--val-fold '7'.*folds are"):
        load_manifest(esc10, val_fold="7")
    with pytest.raises(UserInputError, match="--test-fold '7'.*folds are"):
        load_manifest(esc10, test_fold="7")
    # no test fold: validation is the highest fold, as before the three splits
    m = load_manifest(esc10, test_fold="none")
    assert not any(c.is_test for c in m.clips) and all(c.is_validation == (c.group == "3") for c in m.clips)


def test_one_training_fold_gives_validation_a_stratified_share_of_it(esc10, tmp_path):
    rows = (esc10 / "metadata.csv").read_text().splitlines()
    kept = [r for r in rows[1:] if r.split(",")[2] in ("1", "3")]
    (tmp_path / "two_folds.csv").write_text("\n".join([rows[0], *kept]).replace("audio/", f"{esc10}/audio/") + "\n")
    m = load_manifest(tmp_path / "two_folds.csv", seed=2)
    assert all(c.is_test == (c.group == "3") for c in m.clips)
    val = [c for c in m.clips if c.is_validation]
    assert {c.group for c in val} == {"1"} and len(val) == 20 and len({c.label for c in val}) == 10
    assert "fold 1: stratified random 20% = validation (seed 2)" in m.split_rule


def test_a_single_fold_is_a_test_set_to_score_not_to_search(esc10, tmp_path):
    rows = (esc10 / "metadata.csv").read_text().splitlines()
    kept = [r for r in rows[1:] if r.split(",")[2] == "2"]
    (tmp_path / "one_fold.csv").write_text("\n".join([rows[0], *kept]).replace("audio/", f"{esc10}/audio/") + "\n")
    with pytest.raises(UserInputError, match="leaves the train or validation part empty"):
        load_manifest(tmp_path / "one_fold.csv")
    m = load_manifest(tmp_path / "one_fold.csv", require_split=False)
    assert len(m.clips) == 80 and all(c.is_test for c in m.clips) and "no other fold" in m.split_rule


def test_no_clip_is_in_two_splits_on_any_layout_and_seed(esc10, fsdd, tmp_path):
    for label in ("dog", "rain", "rooster"):
        for i, c in enumerate([c for c in load_manifest(esc10).clips if c.label == label][:10]):
            copy_clip(c.path, tmp_path / "folders" / label / f"{i}.flac")
    for data in (esc10, fsdd, tmp_path / "folders"):
        for seed in (0, 1):
            m = load_manifest(data, seed=seed)
            assert len({c.path for c in m.clips}) == len(m.clips)
            assert all(sum((c.split == s) for s in ("train", "validation", "test")) == 1 for c in m.clips)
            assert all(m.summary()[f"{s}_clips"] > 0 for s in ("train", "validation", "test"))
    # the random test carve does not follow --seed: runs of any seed score the same test clips
    tests = [{c.path for c in load_manifest(tmp_path / "folders", seed=s).clips if c.is_test} for s in (0, 1, 2)]
    assert tests[0] == tests[1] == tests[2] and len(tests[0]) == 6


def test_fsdd_manifest_uses_split_column(fsdd):
    m = load_manifest(fsdd / "metadata.csv")
    assert len(m.clips) == 3000 and m.class_names == tuple(str(d) for d in range(10))
    assert sum(c.is_test for c in m.clips) == 300  # takes 0-4 of 6 speakers x 10 digits
    assert sum(c.is_validation for c in m.clips) == 540  # 20 % of each digit's train rows
    assert "test = test" in m.split_rule and "stratified random 20% = validation" in m.split_rule
    assert native_sample_rate_hz(m) == 8000


def test_csv_without_label_column_names_file_and_fix(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("filename,category\na.wav,dog\n")
    with pytest.raises(UserInputError, match=r"bad.csv has no 'label' column"):
        load_manifest(p)


def test_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_manifest(tmp_path / "nope")


def test_folder_per_class_layout_with_corrupt_and_empty_files_counted(esc10, tmp_path):
    src = load_manifest(esc10)
    by_label: dict[str, list] = {}
    for c in src.clips:
        by_label.setdefault(c.label, []).append(c.path)
    for label in ("dog", "rain"):
        for i, p in enumerate(by_label[label][:5]):
            copy_clip(p, tmp_path / label / f"{i}.flac")
    (tmp_path / "dog" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")
    sf.write(tmp_path / "rain" / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    m = load_manifest(tmp_path, seed=1)
    assert m.class_names == ("dog", "rain") and len(m.clips) == 12
    assert "folder per class" in m.split_rule
    d = decode_dataset(m, sample_rate_hz=16000)
    assert len(d.waveforms) == 10
    assert sorted(s.path.rsplit("/", 1)[-1] for s in d.skipped) == ["corrupt.wav", "empty.wav"]
    assert d.summary()["skipped_files"] == 2


def test_decode_resamples_and_mixes_stereo_to_mono(esc10, tmp_path):
    clip = load_manifest(esc10).clips[0]
    x, rate = sf.read(clip.path, dtype="float32")
    sf.write(tmp_path / "st.wav", np.stack([x, x], axis=1), rate)
    (tmp_path / "m.csv").write_text("filename,label,split\nst.wav,a,train\nst.wav,b,validation\n")
    d = decode_dataset(load_manifest(tmp_path / "m.csv"), sample_rate_hz=8000)
    assert d.waveforms[0].ndim == 1
    assert abs(len(d.waveforms[0]) - len(x) / 2) <= 2
    assert d.native_rates_hz == {16000: 2}


def test_pad_to_patches_covers_clip_with_whole_patches():
    assert len(pad_to_patches(np.ones(500, np.float32), chunk_samples=1000, patch_hop_samples=500)) == 1000
    y = pad_to_patches(np.ones(2700, np.float32), chunk_samples=1000, patch_hop_samples=500)
    assert len(y) == 3000 and y[:2700].all() and not y[2700:].any()
    assert len(pad_to_patches(np.ones(2050, np.float32), chunk_samples=1000, patch_hop_samples=500)) == 2000


def test_a_set_that_is_all_one_part_is_refused_for_a_search_and_read_whole_for_scoring(tmp_path, fsdd):
    """Every row ``test``: a search needs a train part, so load_manifest refuses it; ``require_split=False`` (what
    ``asc-search validate`` reads) returns every clip as it is."""
    import csv

    from asc_search import UserInputError
    from asc_search.data import load_manifest

    with open(fsdd / "metadata.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test" and r["take"] in ("0", "1")][:20]
    path = tmp_path / "new.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["filename", "label", "split"])
        w.writeheader()
        w.writerows({"filename": str(fsdd / r["filename"]), "label": r["label"], "split": "test"} for r in rows)
    with pytest.raises(UserInputError, match="leaves the train or validation part empty"):
        load_manifest(path)
    m = load_manifest(path, require_split=False)
    assert len(m.clips) == 20 and all(c.is_test for c in m.clips) and m.n_classes > 1
    one = tmp_path / "one_class.csv"  # new recordings of a single class: scored, not searched
    one.write_text("filename,label\n" + "".join(f"{fsdd / r['filename']},{r['label']}\n" for r in rows[:2]
                                                 if r["label"] == rows[0]["label"]))
    with pytest.raises(UserInputError, match="1 class"):
        load_manifest(one)
    assert load_manifest(one, require_split=False).class_names == (rows[0]["label"],)
