"""The training loop with augmentation genes on real ESC-10 features."""

import numpy as np
import torch

from asc_search.search_spaces import build_model
from asc_search.trainers import Normalisation, SapAugment, TrainSettings, fit, get_augmentation


def test_fit_with_mixup_specaugment_and_sapaugment_logs_what_each_did(esc10_small):
    data, genome, features = esc10_small
    train, val = np.flatnonzero(~data.is_validation), np.flatnonzero(data.is_validation)
    norm = Normalisation.fit(features, train)
    torch.manual_seed(0)
    model = build_model(genome, data.n_classes)
    augs = [get_augmentation("mixup"), get_augmentation("specaugment")]
    r = fit(model, features, data.labels, train, val, norm, TrainSettings(epochs=2, batch_size=16, warmup_epochs=1),
            augmentations=augs, sapaugment=SapAugment())
    assert len(r.history) == 2 and all(np.isfinite(h["train_loss"]) for h in r.history)
    log = r.augmentation_log
    assert set(log) == {"mixup", "specaugment", "sapaugment"}
    n_crops = 2 * sum(len(features.patch_starts(int(i))) for i in train)
    for name in ("mixup", "specaugment"):
        assert log[name]["samples_seen"] == n_crops
        # SapAugment executes each augmentation on 10-25 % of the samples
        assert 0.05 < log[name]["samples_augmented"] / n_crops < 0.35


def test_fit_without_genes_is_unchanged_by_them(esc10_small):
    data, genome, features = esc10_small
    train, val = np.flatnonzero(~data.is_validation), np.flatnonzero(data.is_validation)
    norm = Normalisation.fit(features, train)
    runs = []
    for augs in (None, []):
        torch.manual_seed(0)
        model = build_model(genome, data.n_classes)
        runs.append(fit(model, features, data.labels, train, val, norm, TrainSettings(epochs=1, batch_size=16),
                        augmentations=augs))
    np.testing.assert_array_equal(runs[0].val_probs, runs[1].val_probs)
    assert runs[0].augmentation_log == {}
