"""export_and_validate in bounded memory: validation clips are read a group at a time, and the figures and the
saved clip probabilities do not depend on the group size."""

import shutil
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from asc_search import UserInputError
from asc_search.constraints import get_budget, patch_layout
from asc_search.data import decode_clip, load_manifest, prepare_waveform_store
from asc_search.deploy import ClipMeans, _bundle, audio_groups
from asc_search.deploy._deploy import audio_patches
from asc_search.frontends import FeatureCache
from asc_search.rundir import save_checkpoint
from asc_search.search_spaces import ArchSpec, FrontendGenes, Genome, build_model
from asc_search.trainers import Normalisation, TrainSettings, clip_probabilities, deterministic_torch, fit
from tests.conftest import train_validation_only

TIMING = {"latency_ms_litert_xnnpack", "latency_ms_litert_builtin", "export_s", "trial_id"}
SAVED = ("val_probs_float.npy", "val_probs_int8.npy", "val_labels.npy")


class CountingWaveforms(Sequence):
    """A dataset's waveforms that record which clips are read."""

    def __init__(self, waveforms):
        self.waveforms, self.reads = waveforms, []

    def __len__(self):
        return len(self.waveforms)

    def __getitem__(self, i):
        self.reads.append(int(i))
        return self.waveforms[i]


# --- the grouping itself (fast) -------------------------------------------------------------------------------

def _clips(rng, n):
    return [rng.standard_normal(int(rng.integers(50, 400))).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("group_clips", [1, 3, 7, 1000])
def test_blocks_are_whole_batches_of_the_patches_of_all_clips_in_order(group_clips):
    rng = np.random.default_rng(0)
    waves = _clips(rng, 40)
    val = np.sort(rng.permutation(40)[:25])
    want_chunks, want_owner = audio_patches([waves[i] for i in val], chunk_samples=100, hop_samples=50)
    assert len(want_chunks) > 3 * 16  # several batches
    blocks = list(_bundle._validation_patches(waves, val, chunk_samples=100, hop_samples=50,
                                              group_clips=group_clips, batch=16))
    assert all(len(c) % 16 == 0 for c, _ in blocks[:-1]) and len(blocks[-1][0]) > 0
    np.testing.assert_array_equal(np.concatenate([c for c, _ in blocks]), want_chunks)
    np.testing.assert_array_equal(np.concatenate([o for _, o in blocks]), want_owner)
    # a block holds at most one group's patches and fewer than a batch carried over from the groups before
    most_per_clip = int(np.bincount(want_owner).max())
    assert max(len(c) for c, _ in blocks) <= min(len(want_chunks), group_clips * most_per_clip + 15)


def test_clip_means_summed_block_by_block_equal_clip_probabilities_bit_for_bit():
    rng = np.random.default_rng(1)
    owner = np.sort(rng.integers(0, 30, size=500))
    owner[-1] = 30  # clip 29 may have no patch, clip 30 has one
    probs = rng.dirichlet(np.ones(5), size=500).astype(np.float32)
    means = ClipMeans(32, 5)  # clip 31 has no patch
    for s, e in [(0, 7), (7, 256), (256, 257), (257, 500)]:
        means.add(probs[s:e], owner[s:e])
    np.testing.assert_array_equal(means.means(), clip_probabilities(probs, owner, 32))


def test_tflm_blocks_are_enough_once_the_cut_clip_is_complete(monkeypatch):
    monkeypatch.setattr(_bundle, "TFLM_MAX_PATCHES", 4)

    def parts(*owners):
        return [(None, np.asarray(o), None) for o in owners]

    assert not _bundle._holds_tflm_clips([])
    assert not _bundle._holds_tflm_clips(parts([0, 0, 1]))  # 3 patches
    assert not _bundle._holds_tflm_clips(parts([0, 0, 1], [2, 2]))  # patch 4 is clip 2's: more of it may follow
    assert _bundle._holds_tflm_clips(parts([0, 0, 1], [2, 2, 3]))
    assert _bundle._holds_tflm_clips(parts([0, 0, 1, 1, 2]))


def test_audio_groups_decode_a_group_at_a_time_and_count_bad_files(esc10, tmp_path):
    """validate and the bundle's parity read clips in groups: the patches of every decodable clip in order, the
    undecodable ones listed with their reason, never more than one group's audio at once."""
    m = load_manifest(esc10)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not audio")
    clips = [*m.clips[:4], replace(m.clips[4], path=bad), *m.clips[5:9]]
    skipped = []
    blocks = list(audio_groups(m, clips, sample_rate_hz=16000, chunk_samples=16000, hop_samples=8000,
                               skipped=skipped, group_clips=3))
    assert [s.path for s in skipped] == [str(bad)] and skipped[0].reason
    good = [i for i in range(len(clips)) if i != 4]
    want, want_owner = audio_patches([decode_clip(clips[i].path, 16000)[0] for i in good], chunk_samples=16000,
                                     hop_samples=8000)
    np.testing.assert_array_equal(np.concatenate([c for c, _ in blocks]), want)
    np.testing.assert_array_equal(np.concatenate([o for _, o in blocks]), np.asarray(good)[want_owner])
    assert len(blocks) == 3 and max(len(np.unique(o)) for _, o in blocks) <= 3


def test_audio_groups_name_the_manifest_when_nothing_decodes(esc10, tmp_path):
    m = load_manifest(esc10)
    bad = tmp_path / "empty.wav"
    bad.write_bytes(b"")
    with pytest.raises(UserInputError, match="none of the 1 clips"):
        list(audio_groups(m, [replace(m.clips[0], path=bad)], sample_rate_hz=16000, chunk_samples=16000,
                          hop_samples=8000, skipped=[]))


# --- a real export (slow) -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(fsdd, tmp_path_factory):
    """A store-backed FSDD subset at 8 kHz (480 clips, 120 validation clips, 148 validation patches), a model
    trained on it for 3 epochs (model.pt), and the feature cache."""
    root = tmp_path_factory.mktemp("bundle_memory")
    m = train_validation_only(load_manifest(fsdd))
    m = replace(m, clips=tuple(c for c in m.clips if int(c.path.stem.rsplit("_", 1)[1]) in (0, 1, 5, 6, 7, 8, 9, 10)))
    data = prepare_waveform_store(m, sample_rate_hz=8000, cache_dir=root / "cache", use_ray=False)
    g = Genome(frontend=FrontendGenes(sample_rate_hz=8000, n_bins=32, hop_ms=16, chunk_s=0.5, deltas=1),
               arch=ArchSpec(stages=(("conv_c16_k5_relu", "maxpool_k2"), ("conv_c24_k3_relu", "avgpool_k2")),
                             head_width=32))
    cache = FeatureCache(root / "cache")
    feats, _ = cache.get(data, patch_layout(g))
    train, val = np.flatnonzero(data.is_train), np.flatnonzero(data.is_validation)
    norm = Normalisation.fit(feats, train, deltas=g.frontend.deltas)
    with deterministic_torch(seed=0):
        model = build_model(g, data.n_classes)
        fit(model, feats, data.labels, train, val, norm, TrainSettings(epochs=3, learning_rate=3e-3, seed=0),
            deterministic=True)
    model_pt = root / "model.pt"
    save_checkpoint(model_pt, genome=g, state_dict=model.state_dict(), n_classes=data.n_classes,
                    class_names=list(data.class_names), norm=norm, metrics={})
    return data, cache, model_pt, patch_layout(g)


def _export(model_pt, folder, data, cache):
    folder.mkdir()
    shutil.copyfile(model_pt, folder / "model.pt")
    return _bundle.export_and_validate(folder / "model.pt", {8000: data}, cache, get_budget("none"))


@pytest.mark.slow
def test_validation_in_groups_of_three_clips_gives_the_same_report_and_files(trained, tmp_path, monkeypatch):
    data, cache, model_pt, layout = trained
    val = np.flatnonzero(data.is_validation)
    # small batches and TFLite-Micro share, so the 148 validation patches span many batches and the TFLite-Micro
    # clips span several groups of 3 clips
    monkeypatch.setattr(_bundle, "PATCH_BATCH", 16)
    monkeypatch.setattr(_bundle, "TFLM_MAX_PATCHES", 50)
    monkeypatch.setattr(_bundle, "VALIDATION_GROUP_CLIPS", len(val) + 1)  # one group: every clip at once
    whole = _export(model_pt, tmp_path / "whole", data, cache)

    # the second export reuses the first's .tflite: an export's tensor names depend on the exports before it in
    # the process (file_bytes), and the validation, not the conversion, is under test
    def same_tflite(model, calib, path):
        shutil.copyfile(tmp_path / "whole" / "model_int8.tflite", path)
        return path

    group_sizes, block_sizes = [], []

    def recording_audio_patches(waves, **kw):
        group_sizes.append(len(waves))
        return audio_patches(waves, **kw)

    real_run_int8 = _bundle.run_int8

    def recording_run_int8(path, x, **kw):
        block_sizes.append(len(x))
        return real_run_int8(path, x, **kw)

    counting = CountingWaveforms(data.waveforms)
    monkeypatch.setattr(_bundle, "export_int8_tflite", same_tflite)
    monkeypatch.setattr(_bundle, "audio_patches", recording_audio_patches)
    monkeypatch.setattr(_bundle, "run_int8", recording_run_int8)
    monkeypatch.setattr(_bundle, "VALIDATION_GROUP_CLIPS", 3)
    grouped = _export(model_pt, tmp_path / "grouped", replace(data, waveforms=counting), cache)

    assert {k: v for k, v in grouped.items() if k not in TIMING} == {k: v for k, v in whole.items() if k not in TIMING}
    for name in SAVED:
        assert (tmp_path / "grouped" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name

    # every validation clip read once, in order, at most 3 clips' audio cut into patches at a time
    assert counting.reads == list(val)
    assert max(group_sizes) == 3 and sum(group_sizes) == len(val)
    chunks, owner = audio_patches([data.waveforms[i] for i in val], chunk_samples=layout.chunk_samples,
                                  hop_samples=layout.patch_hop_samples)
    assert whole["validation_patches"] == len(chunks) == sum(block_sizes) // 2  # XNNPACK and builtin kernels
    assert max(block_sizes) <= 3 * int(np.bincount(owner).max()) + 16 - 1 < len(chunks)
    # TFLite-Micro ran on whole clips, up to the clip of patch 50, as over all patches at once
    assert whole["tflm_validation_clips"] == int(owner[49]) + 1 < len(val)
    assert "tflm_error" not in whole
