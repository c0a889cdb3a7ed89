"""A front-end kind is one registered class: a linear-frequency STFT log-power front-end defined and registered here
alone is sampled by the space, computes features, feeds a model that trains, and carries exactly its own fields
in frontend.json, without any other file of the package knowing it."""

import json
import math

import numpy as np
import optuna
import pytest
import torch
import torch.nn.functional as F

from asc_search import UserInputError
from asc_search.constraints import count_complexity
from asc_search.frontends import (
    DERIVED_FIELDS,
    Frontend,
    FrontendConfig,
    build_frontend,
    compute_clip_features,
    list_frontends,
    register_frontend,
    unregister_frontend,
)
from asc_search.search_spaces import SpaceOptions, build_model, patch_layout, sample_genome


class LinearSTFTFrontend(Frontend):
    """Linear-frequency log-power STFT: the ``n_bins`` lowest DFT bins of Hann-windowed, non-centred frames,
    ``|X_k|^2`` in dB. Built from a conv1d with cosine and sine bases (the window centred in ``n_fft``, as
    ``torch.stft`` places it), so it exports like the nnAudio front-ends.

    Shapes: ``(batch, samples) -> (batch, n_bins, 1 + (samples - n_fft) // hop)``.
    """

    config_fields = ("kind", "sample_rate_hz", "n_bins", "win_ms", "hop_ms", "deltas", "amin")

    @classmethod
    def check_config(cls, config):
        if config.n_bins > config.n_fft // 2 + 1:
            raise UserInputError(f"linstft keeps at most n_fft // 2 + 1 = {config.n_fft // 2 + 1} bins, "
                                 f"got n_bins={config.n_bins}")

    def __init__(self, config):
        super().__init__(config)
        n, win = config.n_fft, config.win_samples
        window = torch.zeros(n, dtype=torch.float64)
        left = (n - win) // 2
        window[left:left + win] = torch.hann_window(win, periodic=True, dtype=torch.float64)
        angle = 2 * math.pi * torch.outer(torch.arange(config.n_bins, dtype=torch.float64),
                                          torch.arange(n, dtype=torch.float64)) / n
        basis = torch.cat([window * torch.cos(angle), -window * torch.sin(angle)])
        self.register_buffer("basis", basis.to(torch.float32)[:, None, :])

    def forward(self, waveform):
        """``(batch, samples)`` float audio -> ``(batch, n_bins, frames)`` log-power in dB."""
        y = F.conv1d(waveform[:, None], self.basis, stride=self.config.hop_samples)
        re, im = y.chunk(2, dim=1)
        return self.to_db(re * re + im * im)


@pytest.fixture
def linstft():
    register_frontend("linstft")(LinearSTFTFrontend)
    try:
        yield LinearSTFTFrontend
    finally:
        unregister_frontend("linstft")
    assert "linstft" not in list_frontends()


SR = 8000
CONFIG = dict(kind="linstft", sample_rate_hz=SR, n_bins=48, win_ms=32.0, hop_ms=16.0)


def test_the_features_are_the_stft_power(linstft):
    config = FrontendConfig(**CONFIG)
    x = torch.randn(2, SR, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        got = build_frontend(config)(x)
    ref = torch.stft(x, config.n_fft, config.hop_samples, win_length=config.win_samples,
                     window=torch.hann_window(config.win_samples), center=False, return_complex=True)
    ref_db = 10 * torch.log10(torch.clamp(ref.abs()[:, :config.n_bins] ** 2, min=config.amin))
    assert got.shape == (2, config.n_bins, config.n_frames(SR)) == ref_db.shape
    assert torch.allclose(got, ref_db, atol=1e-2)
    with pytest.raises(UserInputError, match="at most n_fft // 2 \\+ 1 = 129 bins"):
        FrontendConfig(**{**CONFIG, "n_bins": 200})
    with pytest.raises(UserInputError, match="linstft does not use f_min_hz"):
        FrontendConfig(**CONFIG, f_min_hz=100.0)


def test_frontend_json_carries_the_fields_the_class_declares(linstft, tmp_path):
    config = FrontendConfig(**CONFIG, deltas=1)
    carried = config.to_json()
    assert set(carried) == set(LinearSTFTFrontend.config_fields) | set(DERIVED_FIELDS)
    assert "bins_per_octave" not in carried and "f_min_hz" not in carried
    assert FrontendConfig.from_json(json.loads(json.dumps(carried))) == config
    with pytest.raises(UserInputError, match="stored sizes differ"):
        FrontendConfig.from_json({**carried, "n_fft": 512})
    with pytest.raises(UserInputError, match="unknown front-end kind 'nope'; registered: cqt, gammatone, linstft"):
        FrontendConfig.from_json({**carried, "kind": "nope"})
    # a built-in kind carries every field, as frontend.json always did
    logmel = FrontendConfig(kind="logmel", sample_rate_hz=SR, n_bins=32, win_ms=32.0, hop_ms=16.0)
    assert logmel.to_json() == logmel.to_dict() and FrontendConfig.from_json(logmel.to_json()) == logmel

    # the deploy front-end reads it back from a frontend.json
    from asc_search.deploy import load_frontend

    path = tmp_path / "frontend.json"
    path.write_text(json.dumps({"frontend": carried, "chunk_s": 1.0,
                                "normalisation": {"mean_db": [-40.0, 0.0], "std_db": [10.0, 1.0]}}))
    deploy, _ = load_frontend(path)
    with torch.inference_mode():
        y = deploy(torch.randn(1, SR))
    assert y.shape == (1, 2, config.n_bins, config.n_frames(SR))


def test_the_space_samples_it_and_a_model_trains_on_its_features(linstft, esc10, tmp_path):
    from asc_search.data import decode_dataset, load_manifest
    from asc_search.trainers import Normalisation, TrainSettings, fit
    from tests.conftest import write_subset_manifest

    options = SpaceOptions(frontends=("logmel", "linstft"), sample_rates_hz=(SR,), n_bins=(32, 48), hop_ms=(16.0,),
                           chunk_s=(1.0,), block_types=("conv", "ds"), max_stages=2)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    genomes = []
    for _ in range(12):
        trial = study.ask()
        genomes.append(sample_genome(trial, options))
        study.tell(trial, 0.0)
    ours = [g for g in genomes if g.frontend.kind == "linstft"]
    assert ours and all(g.frontend.f_min_hz == LinearSTFTFrontend.default_f_min_hz for g in ours)
    genome = ours[0]
    assert count_complexity(genome, n_classes=10).buildable

    csv = write_subset_manifest(esc10, tmp_path / "subset.csv", per_class_per_group=1,
                                columns=("filename", "label", "fold"), group_column="fold")
    data = decode_dataset(load_manifest(csv, test_fold="none"), sample_rate_hz=SR)
    layout = patch_layout(genome)
    features = compute_clip_features(data, layout)
    assert features.features.shape[0] == genome.frontend.n_bins and np.isfinite(features.features).all()
    train, val = np.flatnonzero(data.is_train), np.flatnonzero(data.is_validation)
    norm = Normalisation.fit(features, train)
    torch.manual_seed(0)
    model = build_model(genome, data.n_classes)
    before = [p.detach().clone() for p in model.parameters()]
    result = fit(model, features, data.labels, train, val, norm, TrainSettings(epochs=1, batch_size=16, seed=0))
    assert 0.0 <= result.val_metrics["accuracy"] <= 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
