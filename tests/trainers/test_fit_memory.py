"""Evaluation in bounded memory on real ESC-10 features: ``predict_clips`` and ``fit``'s validation pass gather,
normalise and predict the patches a group at a time, with the numbers of one pass over all the patches."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from asc_search.search_spaces import build_model
from asc_search.trainers import (
    Normalisation,
    TrainSettings,
    clip_probabilities,
    deterministic_torch,
    fit,
    get_augmentation,
    predict_clips,
)
from asc_search.trainers import _fit as fit_module


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: the reference and the grouped pass sum in the same order, and small batches stay fast on
    a loaded machine."""
    with deterministic_torch(threads=1):
        yield


def _reference_probs(model, features, clips, norm, batch_size=256):
    """Clip probabilities as ``predict_clips`` computed them before the grouping: every patch of ``clips`` at once,
    normalised, batches of ``batch_size`` over the concatenation, ``clip_probabilities``."""
    x, owner = features.patches(clips)
    x = norm.apply(x)
    model.eval()
    with torch.inference_mode():
        p = np.concatenate([torch.softmax(model(torch.from_numpy(x[s:s + batch_size])), dim=1).numpy()
                            for s in range(0, len(x), batch_size)])
    return clip_probabilities(p, owner, len(clips))


class _Recording:
    """``ClipFeatures.features`` that records how many patches (rows of a fancy index) each read gathers."""

    def __init__(self, array):
        self.array, self.reads = array, []

    def __getitem__(self, key):
        out = self.array[key]
        if isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], np.ndarray) and key[1].ndim == 2:
            self.reads.append(key[1].shape[0])
        return out

    def __getattr__(self, name):
        return getattr(self.array, name)


def _no_patches(*_args, **_kwargs):
    raise AssertionError("features.patches materialises every patch of the clips it is given")


@pytest.fixture(scope="module")
def deltas_model(esc10_split):
    """A model with delta channels (3 inputs) and its normalisation (deltas=2), so that grouping also covers the
    delta convolution."""
    data, genome, features, train, val, _ = esc10_split
    g = replace(genome, frontend=replace(genome.frontend, deltas=2))
    torch.manual_seed(0)
    return build_model(g, data.n_classes), Normalisation.fit(features, train, deltas=2)


@pytest.mark.parametrize("deltas", [0, 2])
def test_predict_clips_in_tiny_groups_equals_one_pass_over_every_patch(esc10_split, deltas_model, deltas):
    data, genome, features, train, val, norm = esc10_split
    if deltas:
        model, norm = deltas_model
    else:
        torch.manual_seed(0)
        model = build_model(genome, data.n_classes)
    clips = np.concatenate([val, train[::3]])  # unsorted, several hundred patches
    patch_bytes = fit_module._patch_bytes(features, norm)
    for batch_size in (256, 8):
        expected = _reference_probs(model, features, clips, norm, batch_size=batch_size)
        # default groups (one group here), groups of one batch, groups of three batches
        for group_bytes in (None, 1, 3 * batch_size * patch_bytes):
            got = predict_clips(model, features, clips, norm, batch_size=batch_size, group_bytes=group_bytes)
            assert got.shape == (len(clips), data.n_classes)
            np.testing.assert_array_equal(got, expected)


def test_predict_clips_never_gathers_more_than_a_group(esc10_split):
    data, genome, features, train, val, norm = esc10_split
    torch.manual_seed(0)
    model = build_model(genome, data.n_classes)
    clips = np.concatenate([val, train])
    n_patches = int(fit_module._patch_offsets(features, clips)[-1])
    batch_size = 8
    expected = _reference_probs(model, features, clips, norm, batch_size=batch_size)
    recording = _Recording(features.features)
    watched = replace(features, features=recording)
    watched.patches = _no_patches
    group = fit_module._group_patches(features, norm, batch_size, group_bytes=2 * batch_size * 4)
    assert group == batch_size  # under one batch of bytes: one batch a group
    got = predict_clips(model, watched, clips, norm, batch_size=batch_size, group_bytes=2 * batch_size * 4)
    assert sum(recording.reads) == n_patches > 10 * group  # every patch once, in many groups
    assert max(recording.reads) <= group
    np.testing.assert_array_equal(got, expected)


def test_fit_without_the_validation_cache_trains_and_validates_exactly_as_with_it(esc10_split, monkeypatch):
    """The validation cache off (limit 0: regathered every epoch, in groups of 2 eval batches) against on (kept
    in memory): the same history, best epoch, validation probabilities and weights; the class-count probe (mixup)
    works in both; and the per-epoch pass equals ``predict_clips`` of the returned weights."""
    data, genome, features, train, val, norm = esc10_split
    monkeypatch.setattr(fit_module, "EVAL_BATCH_SIZE", 16)
    runs = []
    for cache_bytes, group_bytes in ((fit_module.VAL_CACHE_BYTES, fit_module.EVAL_GROUP_BYTES),
                                     (0, 2 * 16 * fit_module._patch_bytes(features, norm))):
        monkeypatch.setattr(fit_module, "VAL_CACHE_BYTES", cache_bytes)
        monkeypatch.setattr(fit_module, "EVAL_GROUP_BYTES", group_bytes)
        reads = []
        watched = features
        if cache_bytes == 0:
            watched = replace(features, features=_Recording(features.features))
            watched.patches = _no_patches
            reads = watched.features.reads
        torch.manual_seed(0)
        model = build_model(genome, data.n_classes)
        r = fit(model, watched, data.labels, train, val, norm, TrainSettings(epochs=2, batch_size=16, patience=5),
                augmentations=[get_augmentation("mixup")], deterministic=True)
        runs.append((r, {k: v.clone() for k, v in model.state_dict().items()}))
        if cache_bytes == 0:
            n_val = int(fit_module._patch_offsets(features, val)[-1])
            # groups of 32 validation patches every epoch (training batches gather 16 crops, the probe 1 patch)
            assert n_val > 2 * 32 and max(reads) <= 32 and reads.count(32) == 2 * (n_val // 32)
        # fit's kernels and thread count (the autouse fixture's): the per-epoch pass is predict_clips
        np.testing.assert_array_equal(r.val_probs, predict_clips(model, features, val, norm, batch_size=16))
    (a, wa), (b, wb) = runs
    assert a.history == b.history and a.best_epoch == b.best_epoch and a.val_metrics == b.val_metrics
    assert len(a.history) == 2
    np.testing.assert_array_equal(a.val_probs, b.val_probs)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_fit_default_validation_pass_equals_the_one_pass_reference(esc10_split):
    data, genome, features, train, val, norm = esc10_split
    torch.manual_seed(0)
    model = build_model(genome, data.n_classes)
    r = fit(model, features, data.labels, train, val, norm, TrainSettings(epochs=1, batch_size=16),
            deterministic=True)
    np.testing.assert_array_equal(r.val_probs, _reference_probs(model, features, val, norm))


def _reference_normalisation(features, clips, *, deltas=0, max_patches=4000, seed=0):
    """``Normalisation.fit`` before it gathered only the drawn patches."""
    from asc_search.frontends import add_deltas

    rng = np.random.default_rng(seed)
    x, _ = features.patches(np.sort(rng.permutation(clips)[:max_patches]))
    if len(x) > max_patches:
        x = x[rng.permutation(len(x))[:max_patches]]
    x = add_deltas(x, deltas).astype(np.float64)
    mean, std = x.mean(axis=(0, 2, 3)), np.maximum(x.std(axis=(0, 2, 3)), 1e-6)
    return Normalisation(deltas=deltas, mean_db=tuple(float(v) for v in mean), std_db=tuple(float(v) for v in std))


@pytest.mark.parametrize(("deltas", "max_patches", "seed"), [(0, 4000, 0), (2, 4000, 1), (0, 50, 0), (1, 37, 3)])
def test_normalisation_fit_gathers_only_the_drawn_patches_and_keeps_its_numbers(esc10_split, deltas, max_patches,
                                                                                  seed):
    data, genome, features, train, val, _ = esc10_split
    recording = _Recording(features.features)
    watched = replace(features, features=recording)
    watched.patches = _no_patches
    got = Normalisation.fit(watched, train, deltas=deltas, max_patches=max_patches, seed=seed)
    assert got == _reference_normalisation(features, train, deltas=deltas, max_patches=max_patches, seed=seed)
    assert recording.reads == [min(max_patches, int(fit_module._patch_offsets(features, train)[-1]))]
