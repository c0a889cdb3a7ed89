"""Knowledge distillation: the loss against a hand computation, the teacher-logit cache, and a student that
follows a cached teacher on real ESC-10 features."""

import math

import numpy as np
import pytest
import torch

from asc_search import UserInputError
from asc_search.search_spaces import build_model
from asc_search.trainers import TrainSettings, fit, lr_factor
from asc_search.trainers._distill import TeacherLogits, _MemberLogits, compute_teacher_logits, kd_loss


def _softmax(z):
    e = [math.exp(v - max(z)) for v in z]
    return [v / sum(e) for v in e]


def test_kd_loss_equals_a_hand_computation():
    z_s = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.3]]
    z_t = [[1.0, 1.5, -0.5], [2.0, -1.0, 0.0]]
    y = [[1.0, 0.0, 0.0], [0.3, 0.7, 0.0]]  # the second mixed, as mixup leaves it
    alpha, t = 0.3, 4.0
    total = 0.0
    for zs, zt, yy in zip(z_s, z_t, y, strict=True):
        p = _softmax(zs)
        ce = -sum(yi * math.log(pi) for yi, pi in zip(yy, p, strict=True))
        qs = _softmax([v / t for v in zs])
        qt = _softmax([v / t for v in zt])
        kl = sum(a * math.log(a / b) for a, b in zip(qt, qs, strict=True))
        total += alpha * ce + (1 - alpha) * t * t * kl
    q_t = torch.softmax(torch.tensor(z_t) / t, dim=1)
    got = kd_loss(torch.tensor(z_s), torch.tensor(y), q_t, alpha=alpha, temperature=t)
    assert got.item() == pytest.approx(total / 2, rel=1e-5)
    # alpha = 1 is plain cross-entropy on the labels
    hard = kd_loss(torch.tensor(z_s[:1]), torch.tensor(y[:1]), q_t[:1], alpha=1.0, temperature=t)
    assert hard.item() == pytest.approx(torch.nn.functional.cross_entropy(torch.tensor(z_s[:1]),
                                                                          torch.tensor([0])).item(), rel=1e-6)


@pytest.mark.parametrize(("alpha", "t", "message"), [(1.2, 2.0, r"alpha must be in \[0, 1\], got 1.2"),
                                                     (0.5, 0.0, r"temperature must be > 0, got 0.0")])
def test_kd_loss_rejects_bad_settings(alpha, t, message):
    z = torch.zeros(1, 3)
    with pytest.raises(UserInputError, match=message):
        kd_loss(z, torch.ones(1, 3) / 3, torch.ones(1, 3) / 3, alpha=alpha, temperature=t)


def test_teacher_lookup_takes_the_patch_nearest_in_time_and_averages_members():
    # clip 0: 3 patches 0.5 s apart, clip 1: no patch (not covered), clip 2: 2 patches
    logits = np.arange(5 * 2, dtype=np.float32).reshape(5, 2)
    a = _MemberLogits(offsets=np.array([0, 3, 3, 5]), hop_s=0.5, logits=logits)
    t = TeacherLogits([a])
    got = t.logits_at(np.array([0, 0, 0, 2, 2]), np.array([0.0, 0.6, 5.0, 0.2, 0.3]))
    np.testing.assert_array_equal(got, logits[[0, 1, 2, 3, 4]])
    b = _MemberLogits(offsets=np.array([0, 1, 1, 2]), hop_s=1.0, logits=np.zeros((2, 2), np.float32))
    both = TeacherLogits.combine([t, TeacherLogits([b])])
    p = both.probs(np.array([0]), np.array([0.0]), temperature=1.0)
    expected = (torch.softmax(torch.tensor(logits[:1]), 1) + torch.tensor([[0.5, 0.5]])) / 2
    torch.testing.assert_close(p, expected)


def test_warmup_then_cosine_schedule():
    s = TrainSettings(epochs=10, warmup_epochs=2)
    assert [round(lr_factor(e, s), 3) for e in (0, 1, 2)] == [0.1, 0.55, 1.0]
    assert lr_factor(9, s) < 0.05
    assert lr_factor(5, TrainSettings(epochs=10, schedule="constant")) == 1.0


def test_a_student_follows_the_cached_teacher_on_real_features(esc10_split):
    data, genome, features, train, val, norm = esc10_split
    teacher_model = build_model(genome, data.n_classes)
    teacher = compute_teacher_logits(teacher_model, features, norm, train)
    n_train_patches = sum(len(features.patch_starts(int(i))) for i in train)
    assert teacher.members[0].logits.shape == (n_train_patches, data.n_classes)
    # a teacher that always says "class 3", and alpha 0: the student learns only from the teacher
    teacher.members[0].logits[:] = -10.0
    teacher.members[0].logits[:, 3] = 10.0
    calls = []
    teacher_model.register_forward_hook(lambda *a: calls.append(1))
    torch.manual_seed(0)
    student = build_model(genome, data.n_classes)
    settings = TrainSettings(epochs=4, learning_rate=1e-2, batch_size=16, patience=10, kd_alpha=0.0,
                             kd_temperature=2.0)
    r = fit(student, features, data.labels, train, val, norm, settings, teacher=teacher)
    assert not calls  # the teacher network is not run again: its logits are cached
    assert (r.val_probs.argmax(1) == 3).mean() > 0.9


def test_teacher_logits_in_small_groups_equal_one_pass(esc10_split, monkeypatch):
    """The teacher runs over the training patches in groups of whole batches: the logits equal one pass's, and
    no group builds more patches than its size (plus the two clips at its edges)."""
    import asc_search.trainers._distill as distill

    data, genome, features, train, val, norm = esc10_split
    torch.manual_seed(0)
    model = build_model(genome, data.n_classes)
    one_pass = compute_teacher_logits(model, features, norm, train, batch_size=8).members[0].logits
    built = []
    real_patches = type(features).patches
    monkeypatch.setattr(type(features), "patches", lambda self, idx: built.append(len(idx)) or real_patches(self, idx))
    monkeypatch.setattr(distill, "TEACHER_GROUP_PATCHES", 24)  # 3 batches of 8
    grouped = compute_teacher_logits(model, features, norm, train, batch_size=8).members[0].logits
    assert np.array_equal(grouped, one_pass)
    per_clip = max(len(features.patch_starts(int(i))) for i in train)
    assert len(built) > 3 and max(built) <= 24 // per_clip + 2
