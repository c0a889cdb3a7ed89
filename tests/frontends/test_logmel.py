import numpy as np
import pytest
import torch

from asc_search import UserInputError
from asc_search.data import decode_dataset, load_manifest
from asc_search.frontends import FrontendConfig, PatchLayout, build_frontend, compute_clip_features


@pytest.fixture(scope="module")
def few_clips(esc10):
    m = load_manifest(esc10, test_fold="none")
    from dataclasses import replace

    m = replace(m, clips=m.clips[:3] + m.clips[-3:])
    return decode_dataset(m, sample_rate_hz=16000)


def test_patch_features_equal_the_logmel_of_the_patch_audio(few_clips):
    fe_config = FrontendConfig(kind="logmel", sample_rate_hz=16000, n_bins=40, win_ms=40, hop_ms=20)
    layout = PatchLayout(frontend=fe_config, chunk_s=1.0)
    cf = compute_clip_features(few_clips, layout)
    fe = build_frontend(fe_config)
    i = 1
    starts = cf.patch_starts(i)
    assert len(starts) == 9  # a 5.001 s clip, 1 s patches, 50 % overlap
    s = int(starts[3])
    a0 = s * layout.frontend.hop_samples
    audio = few_clips.waveforms[i][a0:a0 + layout.chunk_samples]
    with torch.inference_mode():
        direct = fe(torch.from_numpy(audio)[None])[0].numpy()
    crop = np.asarray(cf.clip(i)[:, s:s + layout.patch_frames], dtype=np.float32)
    assert direct.shape == (40, layout.patch_frames)
    np.testing.assert_allclose(crop, direct, atol=0.1)  # float16 storage of dB values


def test_patches_per_second_counts_overlapping_patches():
    fe = FrontendConfig(kind="logmel", sample_rate_hz=16000, n_bins=40, win_ms=40, hop_ms=20)
    assert PatchLayout(frontend=fe, chunk_s=1.0).patches_per_second() == 1
    assert PatchLayout(frontend=fe, chunk_s=0.5).patches_per_second() == 3


def test_frontend_config_rejects_bad_values():
    with pytest.raises(UserInputError, match="f_max_hz"):
        FrontendConfig(kind="logmel", sample_rate_hz=8000, n_bins=40, win_ms=40, hop_ms=20, f_max_hz=6000)
    with pytest.raises(UserInputError, match="hop_ms"):
        FrontendConfig(kind="logmel", sample_rate_hz=8000, n_bins=40, win_ms=10, hop_ms=20)
