"""The training loop with augmentation genes on real ESC-10 features."""

import numpy as np
import pytest
import torch

from asc_search.search_spaces import build_model
from asc_search.trainers import SapAugment, TrainSettings, fit, get_augmentation


def test_fit_with_mixup_specaugment_and_sapaugment_logs_what_each_did(esc10_split):
    data, genome, features, train, val, norm = esc10_split
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


def test_distillation_with_alpha_one_trains_exactly_as_plain_cross_entropy(esc10_split):
    """With α = 1 the KD loss is the cross-entropy on the labels: the teacher path (cached teacher, one-hot targets,
    the class-count probe) must not change training, batch-norm statistics included."""
    from asc_search.trainers import compute_teacher_logits

    data, genome, features, train, val, norm = esc10_split
    teacher = compute_teacher_logits(build_model(genome, data.n_classes), features, norm, train)
    runs = []
    for t in (None, teacher):
        torch.manual_seed(0)
        model = build_model(genome, data.n_classes)
        runs.append((fit(model, features, data.labels, train, val, norm,
                         TrainSettings(epochs=1, batch_size=16, kd_alpha=1.0), teacher=t), model.state_dict()))
    np.testing.assert_allclose(runs[0][0].val_probs, runs[1][0].val_probs, atol=1e-5)
    for k, v in runs[0][1].items():
        torch.testing.assert_close(v, runs[1][1][k], atol=1e-5, rtol=1e-4)
    assert runs[0][0].augmentation_log == {}


def test_deterministic_torch_restores_every_setting_and_generator_it_touches():
    from asc_search import UserInputError
    from asc_search.trainers import deterministic_torch

    threads, enabled = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(123)
    np.random.seed(123)
    expected_torch, expected_np = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(123)
    draws = []
    for _ in range(2):
        with deterministic_torch(threads=1, seed=7):
            assert torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == 1
            assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
            draws.append((torch.rand(3), np.random.rand(3)))
    torch.testing.assert_close(draws[0][0], draws[1][0])
    np.testing.assert_array_equal(draws[0][1], draws[1][1])
    # the block consumed nothing from the outer generators and left the torch settings as they were
    torch.testing.assert_close(torch.rand(3), expected_torch)
    np.testing.assert_array_equal(np.random.rand(3), expected_np)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (threads, enabled)
    with pytest.raises(RuntimeError, match="boom"), deterministic_torch():
        raise RuntimeError("boom")
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (threads, enabled)
    with pytest.raises(UserInputError, match="threads must be >= 1"), deterministic_torch(threads=0):
        pass


def test_deterministic_fit_gives_the_same_weights_whatever_the_thread_count_outside(esc10_split):
    from asc_search.trainers import deterministic_torch

    data, genome, features, train, val, norm = esc10_split
    threads = torch.get_num_threads()
    states = []
    for outside in (1, 2):
        torch.set_num_threads(outside)
        try:
            with deterministic_torch(seed=0):
                model = build_model(genome, data.n_classes)
            fit(model, features, data.labels, train, val, norm, TrainSettings(epochs=1, batch_size=16),
                deterministic=True)
            assert torch.get_num_threads() == outside and not torch.are_deterministic_algorithms_enabled()
        finally:
            torch.set_num_threads(threads)
        states.append(model.state_dict())
    for k, v in states[0].items():
        torch.testing.assert_close(v, states[1][k], atol=0, rtol=0)


def test_keep_last_trains_every_epoch_and_returns_the_last_weights(esc10_split):
    """The refit's training: no early stopping, no choice of epoch by the (now trained-on) validation clips."""
    import dataclasses

    from asc_search.search_spaces import build_model
    from asc_search.trainers import TrainSettings, fit

    data, genome, features, train, val, norm = esc10_split
    settings = TrainSettings(epochs=4, learning_rate=3e-2, patience=1, seed=0)
    torch.manual_seed(0)
    chosen = fit(build_model(genome, data.n_classes), features, data.labels, train, val, norm, settings,
                 deterministic=True)
    torch.manual_seed(0)
    model = build_model(genome, data.n_classes)
    last = fit(model, features, data.labels, train, val, norm, dataclasses.replace(settings, keep_last=True),
               deterministic=True)
    assert len(last.history) == 4 and last.best_epoch == 4 and last.stop_reason == "epochs"
    assert last.val_metrics["accuracy"] == last.history[-1]["val_accuracy"]
    assert all(torch.equal(v, model.state_dict()[k].cpu()) for k, v in last.state_dict.items())
    # the same epochs up to where the search's training stopped or chose
    assert [h["val_accuracy"] for h in last.history[:len(chosen.history)]] == [h["val_accuracy"] for h in chosen.history]


def test_a_data_schedule_trains_on_the_nested_subset_up_to_its_epoch(esc10_split):
    """``data_schedule``: up to its epoch, fit trains exactly as on the nested subset alone (bit for bit: same
    crops, same weights), and on every clip after; each epoch's row says its share."""
    import dataclasses

    from asc_search.data import nested_ranks, subset_mask
    from asc_search.search_spaces import build_model
    from asc_search.trainers import TrainSettings, fit

    data, genome, features, train, val, norm = esc10_split
    settings = TrainSettings(epochs=2, learning_rate=3e-2, seed=0)
    subset = train[subset_mask(nested_ranks(data.labels[train], 0), 0.5)]
    assert 0 < len(subset) < len(train)

    def run(clips, st):
        torch.manual_seed(0)
        return fit(build_model(genome, data.n_classes), features, data.labels, clips, val, norm, st,
                   deterministic=True)

    on_subset = run(subset, settings)
    scheduled = run(train, dataclasses.replace(settings, data_schedule=((2, 0.5),)))
    assert [h["train_fraction"] for h in scheduled.history] == [0.5, 0.5]
    assert all(torch.equal(v, on_subset.state_dict[k]) for k, v in scheduled.state_dict.items())
    full = run(train, settings)
    assert not all(torch.equal(v, full.state_dict[k]) for k, v in scheduled.state_dict.items())
    mixed = run(train, dataclasses.replace(settings, data_schedule=((1, 0.5),)))
    assert [h["train_fraction"] for h in mixed.history] == [0.5, 1.0]
    assert {**mixed.history[0], "train_fraction": 1.0} == on_subset.history[0]
    with pytest.raises(Exception, match="data_schedule must be ascending"):
        TrainSettings(data_schedule=((2, 0.5), (1, 0.25)))
