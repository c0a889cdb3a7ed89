"""Dataset layouts (TAU22, ESC-50, CSV, folders), their detection order, and the dataset check."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from asc_search import UserInputError
from asc_search.data import (
    check_dataset,
    decode_dataset,
    format_check,
    load_manifest,
    native_sample_rate_hz,
    tau22_device_city,
)
from tests.conftest import copy_clip
from tests.data.tau22_fixture import CITIES, SCENE_OF_ESC_CLASS, build_tau22_fixture

SCENES = tuple(SCENE_OF_ESC_CLASS.values())


@pytest.fixture(scope="module")
def tau22(esc10, tmp_path_factory) -> Path:
    """The default fixture: 4 scenes x 24 clips (18 train, 6 evaluate) + 2 left out per scene, 16 kHz."""
    return build_tau22_fixture(tmp_path_factory.mktemp("tau22"), esc10)


def _small_tau22(esc10: Path, root: Path) -> Path:
    return build_tau22_fixture(root, esc10, n_scenes=2, clips_per_scene=4, left_out_per_scene=1)


def _esc10_rows(esc10: Path) -> list[dict]:
    with open(esc10 / "metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


# --- TAU Urban Acoustic Scenes 2022 Mobile ------------------------------------------------------------------


def test_tau22_layout_splits_devices_cities_and_left_out_rows(tau22):
    m = load_manifest(tau22)
    assert m.layout == "tau22" and m.source == tau22
    assert m.class_names == tuple(sorted(SCENES[:4]))
    assert len(m.clips) == 96 and sum(c.is_test for c in m.clips) == 24
    assert {c.group for c in m.clips if c.is_test} == {"evaluate"}
    assert {c.group for c in m.clips if not c.is_test} == {"train"}
    # validation is carved from fold1_train: every scene has validation clips, and train keeps most of them
    val = [c for c in m.clips if c.is_validation]
    assert {c.label for c in val} == set(m.class_names) and 8 <= len(val) <= 24
    assert {c.device for c in m.clips if c.split == "train"} == {"a", "b", "c"}
    assert {c.device for c in m.clips if c.is_test} == {"a", "b", "c", "s1", "s2"}
    assert {c.city for c in m.clips} == set(CITIES[:4])
    for c in m.clips:
        stem = c.path.stem.split("-")
        assert (c.device, c.city, c.label) == (stem[-1], stem[1], stem[0])
        assert c.path.is_file() and c.location
    assert len(m.left_out) == 8
    assert all(Path(x.path).stem.endswith("-s3") for x in m.left_out)
    assert {x.reason for x in m.left_out} == {"in meta.csv but in neither fold1_train.csv nor fold1_evaluate.csv"}
    assert m.summary()["left_out_clips"] == 8 and m.summary()["layout"] == "tau22"
    assert "fold1_evaluate.csv = test" in m.split_rule and "no location in both" in m.split_rule


def test_tau22_no_recording_location_and_no_clip_is_in_two_splits(tau22):
    """The DCASE practice: validation is a group split of fold1_train by recording location (meta.csv's
    identifier); test is fold1_evaluate. No location, and no file, is in two of the three splits, whatever the
    seed."""
    for seed in range(4):
        m = load_manifest(tau22, seed=seed)
        where: dict[str, set[str]] = {}
        for c in m.clips:
            where.setdefault(c.location, set()).add(c.split)
        assert all(len(s) == 1 for s in where.values()), {k: v for k, v in where.items() if len(v) > 1}
        assert len({c.path for c in m.clips}) == len(m.clips)
        assert m.location_summary()["in_two_splits"] == 0
        assert all(m.location_summary()[s] > 0 for s in ("train", "validation", "test"))
    assert [c.split for c in load_manifest(tau22, seed=0).clips] != [c.split for c in load_manifest(tau22, seed=1).clips]


def test_tau22_files_are_tab_separated_as_in_the_real_set(tau22):
    header = (tau22 / "meta.csv").read_text().splitlines()[0]
    assert header == "filename\tscene_label\tidentifier\tsource_label"
    setup = (tau22 / "evaluation_setup" / "fold1_train.csv").read_text().splitlines()
    assert setup[0] == "filename\tscene_label" and setup[1].startswith("audio/") and len(setup) == 73


def test_tau22_is_detected_before_the_generic_meta_csv_and_from_the_csv_itself(tau22):
    assert load_manifest(tau22 / "meta.csv").layout == "tau22"
    assert load_manifest(tau22 / "meta.csv").clips == load_manifest(tau22).clips


def test_tau22_device_and_city_come_from_the_file_name():
    assert tau22_device_city("audio/airport-barcelona-0-0-0-a.wav") == ("a", "barcelona")
    assert tau22_device_city("street_traffic-lyon-1161-44860-3-s6.wav") == ("s6", "lyon")
    assert tau22_device_city("noise.wav") == ("", "")


def test_tau22_file_in_a_setup_csv_but_not_in_meta_names_file_csv_and_fix(esc10, tmp_path):
    root = _small_tau22(esc10, tmp_path)
    with open(root / "evaluation_setup" / "fold1_evaluate.csv", "a") as f:
        f.write("audio/airport-paris-99-0-0-s2.wav\tairport\n")
    with pytest.raises(UserInputError) as err:
        load_manifest(root)
    msg = str(err.value)
    assert "fold1_evaluate.csv line" in msg and "'audio/airport-paris-99-0-0-s2.wav'" in msg
    assert f"not in {root / 'meta.csv'}" in msg and "restore the dataset's original meta.csv" in msg


def test_tau22_clip_in_both_splits_or_with_two_labels_is_a_user_error(esc10, tmp_path):
    root = _small_tau22(esc10, tmp_path)
    train = root / "evaluation_setup" / "fold1_train.csv"
    evaluate = root / "evaluation_setup" / "fold1_evaluate.csv"
    first_train = train.read_text().splitlines()[1]
    original = evaluate.read_text()
    evaluate.write_text(original + first_train + "\n")
    with pytest.raises(UserInputError, match="in both fold1_train.csv and fold1_evaluate.csv"):
        load_manifest(root)
    name, label = first_train.split("\t")
    other = next(s for s in SCENES if s != label)
    train.write_text(train.read_text().replace(first_train, f"{name}\t{other}"))
    evaluate.write_text(original)
    with pytest.raises(UserInputError, match=f"has scene_label '{other}' but .*meta.csv says '{label}'"):
        load_manifest(root)


def test_tau22_test_fold_names_the_setup_fold_and_val_fold_is_refused(tau22):
    assert load_manifest(tau22, test_fold="1").clips == load_manifest(tau22).clips
    with pytest.raises(UserInputError, match=r"fold2_train.csv does not exist.*folds of .* are \['1'\]"):
        load_manifest(tau22, test_fold="2")
    with pytest.raises(UserInputError, match="group split of fold1_train.csv by recording location.*drop --val-fold"):
        load_manifest(tau22, val_fold="1")


def test_tau22_without_the_evaluate_file_or_setup_folder_says_what_to_restore(esc10, tmp_path):
    root = _small_tau22(esc10, tmp_path)
    (root / "evaluation_setup" / "fold1_evaluate.csv").unlink()
    with pytest.raises(UserInputError, match="fold1_evaluate.csv is missing.*restore the evaluation_setup"):
        load_manifest(root)
    (root / "evaluation_setup" / "fold1_train.csv").unlink()
    with pytest.raises(UserInputError, match="has no 'label' column.*looks like TAU.*fold1_train.csv"):
        load_manifest(root)


def test_tau22_at_44k1_decodes_with_devices_and_cities(esc10, tmp_path):
    root = build_tau22_fixture(tmp_path, esc10, n_scenes=3, clips_per_scene=8, sample_rate_hz=44100)
    m = load_manifest(root)
    assert native_sample_rate_hz(m) == 44100
    d = decode_dataset(m, sample_rate_hz=16000)
    assert len(d.waveforms) == 24 and not d.skipped
    assert {len(w) for w in d.waveforms} == {16000}
    assert d.devices == [c.device for c in m.clips] and d.cities == [c.city for c in m.clips]
    assert all(np.abs(w).max() > 1e-3 for w in d.waveforms)  # the loudest pieces: no digital silence


# --- ESC-50 ------------------------------------------------------------------------------------------------


def _esc50(esc10: Path, root: Path, *, n_per_class: int = 5, classes: tuple[str, ...] = ("dog", "rain", "rooster")):
    """An ESC-50 layout (meta/esc50.csv, audio/) whose audio are symlinks to real esc10 clips; fold = take 1..5."""
    rows = []
    (root / "audio").mkdir(parents=True)
    for target, label in enumerate(classes):
        clips = [r for r in _esc10_rows(esc10) if r["label"] == label][:n_per_class]
        for fold, r in enumerate(clips, start=1):
            name = Path(r["filename"]).name
            (root / "audio" / name).symlink_to((esc10 / r["filename"]).resolve())
            rows.append({"filename": name, "fold": fold, "target": target, "category": label, "esc10": "True",
                         "src_file": r["freesound_id"], "take": r["take"]})
    (root / "meta").mkdir()
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        w.writeheader()
        w.writerows(rows)
    return root


def test_esc50_layout_uses_category_and_holds_out_fold_5(esc10, tmp_path):
    root = _esc50(esc10, tmp_path)
    (root / "metadata.csv").write_text("filename,label\nx.wav,a\n")  # ESC-50 is detected before a manifest
    m = load_manifest(root)
    assert m.layout == "esc50" and m.class_names == ("dog", "rain", "rooster")
    assert len(m.clips) == 15 and all(c.is_test == (c.group == "5") for c in m.clips)
    assert all(c.is_validation == (c.group == "4") for c in m.clips)
    assert all(c.path.parent == (root / "audio").resolve() and c.path.is_file() for c in m.clips)
    assert "ESC-50 fold 5 = test, fold 4 = validation" in m.split_rule
    assert load_manifest(root / "meta" / "esc50.csv").clips == m.clips
    m2 = load_manifest(root, val_fold="2", test_fold="1")
    assert {c.group for c in m2.clips if c.is_validation} == {"2"} and {c.group for c in m2.clips if c.is_test} == {"1"}
    with pytest.raises(UserInputError, match=r"--val-fold '9' is not a fold of .*esc50.csv; its folds are"):
        load_manifest(root, val_fold="9")
    with pytest.raises(UserInputError, match=r"--val-fold '5' is also the test fold"):
        load_manifest(root, val_fold="5")
    assert not any(c.is_test for c in load_manifest(root, test_fold="none").clips)
    d = decode_dataset(m, sample_rate_hz=16000)
    assert len(d.waveforms) == 15


def test_esc50_csv_without_category_names_the_columns(esc10, tmp_path):
    root = _esc50(esc10, tmp_path)
    text = (root / "meta" / "esc50.csv").read_text().replace("category", "cat")
    (root / "meta" / "esc50.csv").write_text(text)
    with pytest.raises(UserInputError, match=r"esc50.csv has no 'category' column.*restore the original file"):
        load_manifest(root)


# --- generic layouts ---------------------------------------------------------------------------------------


def test_val_fold_on_a_layout_without_folds_is_a_user_error(fsdd, esc10, tmp_path):
    with pytest.raises(UserInputError, match="--val-fold '1' needs a 'fold' column.*'split' column"):
        load_manifest(fsdd, val_fold="1")
    for label in ("dog", "rain"):
        for i, r in enumerate([r for r in _esc10_rows(esc10) if r["label"] == label][:3]):
            copy_clip(esc10 / r["filename"], tmp_path / label / f"{i}.flac")
    with pytest.raises(UserInputError, match="folder per class"):
        load_manifest(tmp_path, val_fold="1")
    assert load_manifest(tmp_path).layout == "folders"


def test_csv_manifest_reads_device_and_city_columns(esc10, tmp_path):
    a, b = (str((esc10 / r["filename"]).resolve()) for r in _esc10_rows(esc10)[:2])
    (tmp_path / "m.csv").write_text(f"filename,label,split,device,city\n{a},x,train,a,paris\n{b},y,test,s1,lyon\n")
    m = load_manifest(tmp_path / "m.csv", require_split=False)
    assert m.layout == "csv" and [(c.device, c.city) for c in m.clips] == [("a", "paris"), ("s1", "lyon")]
    assert [c.split for c in m.clips] == ["train", "test"]


# --- check_dataset / format_check ---------------------------------------------------------------------------


def test_check_esc10_counts(esc10):
    r = check_dataset(esc10)
    assert r["layout"] == "csv" and r["clips"] == 240 and r["readable_clips"] == 240
    assert len(r["classes"]) == 10 and all(v == {"clips": 24, "train": 8, "validation": 8, "test": 8}
                                           for v in r["classes"].values())
    assert r["groups"] == {"1": {"clips": 80, "train": 80, "validation": 0, "test": 0},
                           "2": {"clips": 80, "train": 0, "validation": 80, "test": 0},
                           "3": {"clips": 80, "train": 0, "validation": 0, "test": 80}}
    assert (r["train_clips"], r["validation_clips"], r["test_clips"]) == (80, 80, 80)
    assert r["sample_rates_hz"] == {16000: 240} and r["channels"] == {1: 240}
    assert r["unreadable_files"] == 0 and r["unreadable"] == [] and r["left_out_clips"] == 0
    assert r["devices"] == {} and r["cities"] == {}
    assert 3.0 < r["duration_s"]["min"] <= r["duration_s"]["median"] == pytest.approx(5.0, abs=0.01)
    assert r["duration_s"]["max"] < 8.0 and r["short_clips"] == [] and r["notes"] == []
    assert json.loads(json.dumps(r))["sample_rates_hz"] == {"16000": 240}  # the report is JSON-serialisable
    text = format_check(r)
    assert "Clips: 240 in the splits (80 train, 80 validation, 80 test); 240 readable, 0 unreadable" in text
    assert "Classes (10)" in text and "Folds/splits (3)" in text and "16000 Hz: 240" in text
    assert "Unreadable files (0): none" in text and "Devices (0): none in this layout" in text


def test_check_reports_stereo_odd_rate_short_corrupt_empty_and_missing_files(esc10, tmp_path):
    rows = _esc10_rows(esc10)
    for label in ("dog", "rain"):
        for i, r in enumerate([r for r in rows if r["label"] == label][:3]):
            copy_clip(esc10 / r["filename"], tmp_path / label / f"{i}.flac")
    x, rate = sf.read(esc10 / rows[0]["filename"], dtype="float32")
    sf.write(tmp_path / "dog" / "stereo.wav", np.stack([x, x], axis=1), rate)
    sf.write(tmp_path / "rain" / "fast.wav", soxr.resample(x, rate, 44100), 44100)
    sf.write(tmp_path / "dog" / "short.wav", x[: int(0.3 * rate)], rate)
    sf.write(tmp_path / "rain" / "empty.wav", np.zeros(0, dtype=np.float32), rate)
    (tmp_path / "rain" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")

    r = check_dataset(tmp_path, seed=3)
    assert r["layout"] == "folders" and r["clips"] == 11 and r["readable_clips"] == 9
    assert r["classes"]["dog"]["clips"] == 5 and r["classes"]["rain"]["clips"] == 6
    assert r["sample_rates_hz"] == {16000: 8, 44100: 1}
    assert r["channels"] == {1: 8, 2: 1}
    assert r["duration_s"]["min"] == pytest.approx(0.3, abs=1e-3)
    assert [Path(s["path"]).name for s in r["short_clips"]] == ["short.wav"]
    reasons = {Path(u["path"]).name: u["reason"] for u in r["unreadable"]}
    assert set(reasons) == {"corrupt.wav", "empty.wav"} and r["unreadable_files"] == 2
    assert reasons["empty.wav"] == "no samples" and reasons["corrupt.wav"].startswith("cannot read header")
    notes = "\n".join(r["notes"])
    assert "fast.wav (44100 Hz)" in notes and "stereo.wav" in notes and "short.wav (0.30 s)" in notes
    assert "2 file(s) cannot be read" in notes

    text = format_check(r)
    assert "9 readable, 2 unreadable" in text
    assert "16000 Hz: 8, 44100 Hz: 1" in text and "1 (mono): 8, 2 (stereo): 1" in text
    assert "Durations: min 0.30 s" in text and "Clips shorter than 1 s: 1" in text
    assert "Unreadable files (2):" in text and "corrupt.wav: cannot read header" in text
    assert "empty.wav: no samples" in text

    # the files a run skips are the files the check calls unreadable
    d = decode_dataset(load_manifest(tmp_path, seed=3), sample_rate_hz=16000)
    assert sorted(Path(s.path).name for s in d.skipped) == sorted(reasons)


def test_check_reports_missing_files_of_a_manifest(esc10, tmp_path):
    a = (esc10 / _esc10_rows(esc10)[0]["filename"]).resolve()
    (tmp_path / "m.csv").write_text(f"filename,label,split\n{a},x,train\ngone.wav,y,test\n")
    r = check_dataset(tmp_path / "m.csv")
    assert r["unreadable"] == [{"path": str((tmp_path / "gone.wav").resolve()), "reason": "file not found"}]
    assert "gone.wav: file not found" in format_check(r)


def test_check_tau22_devices_cities_and_left_out(tau22):
    r = check_dataset(tau22)
    assert r["layout"] == "tau22" and (r["clips"], r["test_clips"]) == (96, 24)
    assert r["train_clips"] + r["validation_clips"] == 72 and r["validation_clips"] >= 8
    assert r["left_out_clips"] == 8
    assert r["left_out_reasons"] == {"in meta.csv but in neither fold1_train.csv nor fold1_evaluate.csv": 8}
    assert set(r["devices"]) == {"a", "b", "c", "s1", "s2"}
    assert r["devices"]["s1"]["train"] == 0 and r["devices"]["a"]["train"] + r["devices"]["a"]["validation"] == 24
    assert set(r["cities"]) == set(CITIES[:4]) and sum(v["clips"] for v in r["cities"].values()) == 96
    assert r["groups"]["evaluate"] == {"clips": 24, "train": 0, "validation": 0, "test": 24}
    assert r["duration_s"] == {"min": 1.0, "median": 1.0, "max": 1.0} and r["sample_rates_hz"] == {16000: 96}
    assert r["short_clips"] == [] and r["unreadable_files"] == 0
    text = format_check(r)
    assert "TAU Urban Acoustic Scenes 2022 Mobile" in text and "8 left out by the layout" in text
    assert "Devices (5)" in text and "Cities (4)" in text and "s1, s2 appear only outside the train split" in text
    assert "8 in meta.csv but in neither fold1_train.csv nor fold1_evaluate.csv" in text
