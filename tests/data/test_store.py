"""The waveform store on real ESC-10 audio: the same clips, labels and features as decoding into memory; a
pickle of a few hundred bytes; byte-identical shards from the Ray Data pipeline and in-process; an interrupted
preparation (SIGKILL) resumed to the same store; bad files counted with their reasons, nothing else lost."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asc_search.data import decode_dataset, load_manifest, prepare_waveform_store
from asc_search.frontends import FeatureCache, FrontendConfig, PatchLayout, compute_clip_features
from tests.conftest import REPO, write_subset_manifest


def _digest(root: Path) -> str:
    """SHA-256 over every file of a store (names and bytes), in name order."""
    h = hashlib.sha256()
    for p in sorted(Path(root).rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def manifest(esc10):
    return load_manifest(esc10)


def test_store_holds_the_same_clips_as_decoding_into_memory(manifest, tmp_path):
    ref = decode_dataset(manifest, sample_rate_hz=8000)
    data = prepare_waveform_store(manifest, sample_rate_hz=8000, cache_dir=tmp_path, shard_clips=64)
    assert len(data.waveforms) == len(ref.waveforms) == 240
    assert all(np.array_equal(a, b) for a, b in zip(data.waveforms, ref.waveforms, strict=True))
    assert np.array_equal(data.labels, ref.labels) and np.array_equal(data.is_validation, ref.is_validation)
    assert list(data.paths) == ref.paths and list(data.devices) == ref.devices and list(data.cities) == ref.cities
    assert data.class_names == ref.class_names and data.fingerprint() == ref.fingerprint()
    assert data.summary() == ref.summary()
    assert data.preparation["reused"] is False and data.preparation["kept_clips"] == 240
    # a second preparation of the same files reuses the store and decodes nothing
    again = prepare_waveform_store(manifest, sample_rate_hz=8000, cache_dir=tmp_path, shard_clips=64)
    assert again.preparation["reused"] is True and again.store == data.store


def test_a_stored_dataset_pickles_as_its_path_not_its_audio(manifest, tmp_path):
    data = prepare_waveform_store(manifest, sample_rate_hz=16000, cache_dir=tmp_path)
    blob = pickle.dumps(data)
    audio_bytes = sum(w.nbytes for w in data.waveforms)
    assert audio_bytes > 30_000_000 and len(blob) < 2_000  # 240 clips of 5 s at 16 kHz vs. a path
    back = pickle.loads(blob)
    assert np.array_equal(back.waveforms[17], data.waveforms[17]) and np.array_equal(back.labels, data.labels)
    ref = decode_dataset(manifest, sample_rate_hz=16000)
    assert len(pickle.dumps(ref)) > audio_bytes  # the in-memory dataset carries its audio


def test_store_features_equal_the_in_memory_features(manifest, tmp_path):
    """The features a trial maps from the store equal those computed from clips decoded into memory (float16)."""
    layout = PatchLayout(frontend=FrontendConfig(kind="logmel", sample_rate_hz=16000, n_bins=40, win_ms=32.0,
                                                 hop_ms=16.0), chunk_s=1.0)
    ref = compute_clip_features(decode_dataset(manifest, sample_rate_hz=16000), layout)
    data = prepare_waveform_store(manifest, sample_rate_hz=16000, cache_dir=tmp_path)
    cached, hit = FeatureCache(tmp_path).get(data, layout)
    assert not hit and isinstance(cached.features, np.memmap)
    assert cached.features.dtype == np.float16 and np.array_equal(cached.offsets, ref.offsets)
    assert np.array_equal(np.asarray(cached.features), ref.features)
    again, hit = FeatureCache(tmp_path).get(data, layout)
    assert hit and np.array_equal(np.asarray(again.features), ref.features)


def test_ray_data_pipeline_writes_the_same_store_as_one_process(manifest, tmp_path):
    import ray

    local = prepare_waveform_store(manifest, sample_rate_hz=8000, cache_dir=tmp_path / "a", shard_clips=32,
                                   use_ray=False)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        seen = []
        piped = prepare_waveform_store(manifest, sample_rate_hz=8000, cache_dir=tmp_path / "b", shard_clips=32,
                                       use_ray=True, on_progress=lambda done, total: seen.append((done, total)))
    finally:
        if started:
            ray.shutdown()
    assert _digest(local.store[0]) == _digest(piped.store[0])
    assert seen[-1] == (240, 240) and len(seen) == 8  # one update per shard


_PREPARE = """
import sys
from asc_search.data import load_manifest, prepare_waveform_store
prepare_waveform_store(load_manifest(sys.argv[1]), sample_rate_hz=8000, cache_dir=sys.argv[2], shard_clips=8,
                       use_ray=False)
"""


def test_a_preparation_killed_halfway_resumes_to_the_same_store(esc10, manifest, tmp_path):
    clean = prepare_waveform_store(manifest, sample_rate_hz=8000, cache_dir=tmp_path / "clean", shard_clips=8,
                                   use_ray=False)
    cache = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", _PREPARE, str(esc10), str(cache)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 120
    shards = []
    while time.monotonic() < deadline and len(shards) < 10:
        shards = list(cache.glob("waves/*/shards/*.json"))
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    store = next(cache.glob("waves/*"))
    assert 10 <= len(list(store.glob("shards/*.json"))) < 30 and not (store / "store.json").exists()
    resumed = prepare_waveform_store(manifest, sample_rate_hz=8000, cache_dir=cache, shard_clips=8, use_ray=False)
    assert resumed.preparation["shards_on_disk_before"] >= 10
    assert not list(store.rglob("*.tmp"))
    assert _digest(resumed.store[0]) == _digest(clean.store[0])


def test_bad_files_are_counted_with_their_reasons_and_nothing_else_is_lost(esc10, tmp_path):
    csv_path = write_subset_manifest(esc10, tmp_path / "data" / "metadata.csv", per_class_per_group=2,
                                     columns=("filename", "label", "fold"), group_column="fold", copy_audio=True)
    root = csv_path.parent
    rows = csv_path.read_text().splitlines()
    names = [r.split(",")[0] for r in rows[1:]]
    bad = {names[0]: "cannot decode", names[7]: "cannot decode", names[13]: "no samples",
           names[21]: "file not found"}
    (root / names[0]).write_bytes(os.urandom(4000))  # garbage under a .flac name
    data_bytes = (root / names[7]).read_bytes()
    (root / names[7]).write_bytes(data_bytes[:60])  # a header cut off
    wave, rate = sf.read(root / names[13])
    sf.write(root / names[13], np.zeros((0,)), rate, format="WAV")  # a valid file (WAV inside) without samples
    (root / names[21]).unlink()
    other_rate = names[30]  # a valid file at another rate: resampled, not skipped
    wave, rate = sf.read(root / other_rate)
    shutil.move(root / other_rate, root / (other_rate + ".orig"))
    sf.write(root / other_rate, wave[::2], rate // 2, format="FLAC")
    manifest = load_manifest(root)
    data = prepare_waveform_store(manifest, sample_rate_hz=8000, cache_dir=tmp_path / "cache", shard_clips=16)
    reasons = {Path(s.path).name: s.reason for s in data.skipped}
    assert set(reasons) == {Path(n).name for n in bad}
    for name, reason in bad.items():
        assert reasons[Path(name).name].startswith(reason), (name, reasons[Path(name).name])
    assert len(data.waveforms) == len(names) - len(bad)  # every other clip is there
    assert data.native_rates_hz == {16000: len(names) - len(bad) - 1, 8000: 1}
    kept = [Path(p).name for p in data.paths]
    assert Path(other_rate).name in kept and len(data.waveforms[kept.index(Path(other_rate).name)]) > 0
    # ... and listed with its reason, in the report's data section too
    assert [(Path(o["path"]).name, o["native_rate_hz"]) for o in data.other_rate] == [(Path(other_rate).name, 8000)]
    assert "resampled and kept" in data.other_rate[0]["reason"]
    assert data.summary()["other_rate_files"] == 1


@pytest.mark.slow
def test_a_tau22_layout_set_with_one_percent_bad_files_lists_each_and_loses_nothing_else(esc10, tmp_path):
    """Issue 15's bad-input point at 2,000 clips (``bench/scale.py --bad-fraction 0.01`` runs it at 20,000):
    corrupt, truncated, empty, other-rate and missing files in turn, each counted and listed with its reason."""
    from tests.data.tau22_fixture import build_tau22_scale_fixture

    fx = build_tau22_scale_fixture(tmp_path / "tau22", esc10, 2000, bad_fraction=0.01)
    assert len(fx["bad"]) == 20
    manifest = load_manifest(fx["root"])
    data = prepare_waveform_store(manifest, sample_rate_hz=16_000, cache_dir=tmp_path / "cache", shard_clips=256)
    skipped = {s.path: s.reason for s in data.skipped}
    other = {o["path"]: o["reason"] for o in data.other_rate}
    expected = {"corrupt": "cannot decode", "truncated": "cannot decode", "empty": "cannot decode",
                "missing": "file not found"}
    for path, kind in fx["bad"].items():
        if kind == "other_rate":
            assert path in other and "22050 Hz" in other[path], path
        else:
            assert skipped[str(path)].startswith(expected[kind]), (path, kind, skipped.get(str(path)))
    assert set(skipped) | set(other) == set(fx["bad"])  # nothing else is skipped or flagged
    assert len(data.waveforms) == 2000 - len(skipped)  # every other clip is kept
    assert data.native_rates_hz == {44_100: 2000 - len(skipped) - len(other), 22_050: len(other)}
