"""Batch augmentations on real ESC-10 log-mel patches: what each one changes, what it leaves alone, that mixing
ones mix every target alike, determinism, the SapAugment policy and the soft-target loss."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asc_search import UserInputError
from asc_search.data import decode_dataset, load_manifest
from asc_search.frontends import FrontendConfig, PatchLayout, compute_clip_features
from asc_search.trainers import Normalisation
from asc_search.trainers._augment import (
    Augmentation,
    CutMix,
    FreqMixStyle,
    Mixup,
    SapAugment,
    SpecAugment,
    get_augmentation,
    list_augmentations,
    register_augmentation,
    soft_target_loss,
)

ALL = ["cutmix", "freq_mixstyle", "mixup", "specaugment"]


@pytest.fixture(scope="module")
def batch(esc10):
    """20 real patches (one per clip: the first train and validation clip of each ESC-10 class; static log-mel
    + delta, normalised): ``(x (20, 2, 40, 47), one-hot labels (20, 10))``. Some clips hold digital silence."""
    m = load_manifest(esc10, test_fold="none")
    first: dict = {}
    for c in m.clips:
        first.setdefault((c.label, c.is_validation), c)
    data = decode_dataset(replace(m, clips=tuple(first.values())), sample_rate_hz=16000)
    fe = FrontendConfig(kind="logmel", sample_rate_hz=16000, n_bins=40, win_ms=40, hop_ms=20)
    feats = compute_clip_features(data, PatchLayout(frontend=fe, chunk_s=1.0))
    clips = np.arange(len(data.labels))
    norm = Normalisation.fit(feats, clips, deltas=1)
    x, owner = feats.patches(clips)
    middle = [int(np.flatnonzero(owner == k)[4]) for k in clips]
    xb = torch.from_numpy(norm.apply(x[middle]))
    assert xb.shape == (20, 2, 40, 47) and not (xb == 0).any()
    return xb, F.one_hot(torch.from_numpy(data.labels), data.n_classes).float()


def _targets(labels: torch.Tensor) -> list[torch.Tensor]:
    """[identity probe (B, B): row i is one-hot at i, so a mixed row names the partner and weight;
    the class labels (B, 10); a teacher's softened probabilities (B, 10)]."""
    b = labels.shape[0]
    teacher = torch.softmax(torch.randn(b, labels.shape[1], generator=torch.Generator().manual_seed(3)) / 2, dim=1)
    return [torch.eye(b), labels, teacher]


def _partners(probe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Partner index and partner weight of each row of the mixed identity probe (self, 0 when unmixed)."""
    off = probe - torch.diag(probe.diag())
    w, j = off.max(dim=1)
    self_rows = w <= 0
    return torch.where(self_rows, torch.arange(len(j)), j), torch.where(self_rows, 0.0, w)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------- registry, parameters


def test_registry_lists_builds_and_names_the_valid_choices():
    assert list_augmentations() == ALL
    aug = get_augmentation("mixup", alpha=0.2, p=0.5)
    assert isinstance(aug, Mixup) and (aug.alpha, aug.p) == (0.2, 0.5)
    assert isinstance(get_augmentation("specaugment"), SpecAugment)
    with pytest.raises(UserInputError, match="cutmix, freq_mixstyle, mixup, specaugment"):
        get_augmentation("mixpu")
    with pytest.raises(UserInputError, match="beta.*alpha, p"):
        get_augmentation("mixup", beta=0.3)
    with pytest.raises(UserInputError, match="not an Augmentation"):
        register_augmentation(int)
    with pytest.raises(ValueError, match="already registered"):
        register_augmentation(type("Again", (Mixup,), {"name": "mixup"}))


@pytest.mark.parametrize("make, fragment", [
    (lambda: Mixup(alpha=0), "alpha must be a finite number > 0, got 0"),
    (lambda: Mixup(alpha=-0.5), "got -0.5"),
    (lambda: Mixup(p=1.5), r"p must be a probability in \[0, 1\], got 1.5"),
    (lambda: CutMix(alpha=float("nan")), "got nan"),
    (lambda: FreqMixStyle(p=-0.1), "got -0.1"),
    (lambda: FreqMixStyle(eps=0.0), "eps must be a finite number > 0, got 0.0"),
    (lambda: SpecAugment(freq_masks=-1), "freq_masks must be an integer >= 0, got -1"),
    (lambda: SpecAugment(max_time_width_frames=2.5), "got 2.5"),
    (lambda: get_augmentation("cutmix", alpha=0.0), "alpha .* got 0.0"),
    (lambda: SapAugment(a=0), "a must be a finite number > 0, got 0"),
    (lambda: SapAugment(s=-1), "s must be .* got -1"),
    (lambda: SapAugment(p_min=0.3, p_max=0.2), "p_min <= p_max .* p_min=0.3 > p_max=0.2"),
    (lambda: SapAugment(p_max=1.2), r"p_max must be a probability in \[0, 1\], got 1.2"),
])
def test_bad_parameters_name_the_value_and_the_range(make, fragment):
    with pytest.raises(UserInputError, match=fragment):
        make()


def test_bad_batches_are_refused(batch):
    x, labels = batch
    aug = Mixup()
    with pytest.raises(UserInputError, match=r"\(B, C, F, T\), got \(20, 40, 47\)"):
        aug(x[:, 0], [labels], generator=_gen())
    with pytest.raises(UserInputError, match=r"targets\[0\] must be a floating-point \(20, K\) tensor, got \(19, 10\)"):
        aug(x, [labels[:19]], generator=_gen())
    with pytest.raises(UserInputError, match="active must be a"):
        aug(x, [labels], generator=_gen(), active=torch.ones(20))


# ----------------------------------------------------------------------------------------- the common contract


@pytest.mark.parametrize("name", ALL)
def test_contract_shapes_no_in_place_change_rows_sum_to_one_and_stats(batch, name):
    x, labels = batch
    targets = _targets(labels)
    x0, t0 = x.clone(), [t.clone() for t in targets]
    aug = get_augmentation(name, p=1.0)
    for seed in range(3):
        out, tout = aug(x, targets, generator=_gen(seed))
        assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
        assert not torch.equal(out, x)
        assert len(tout) == 3 and all(a.shape == b.shape for a, b in zip(tout, targets, strict=True))
        for t in tout:
            torch.testing.assert_close(t.sum(dim=1), torch.ones(20))
    assert torch.equal(x, x0) and all(torch.equal(a, b) for a, b in zip(targets, t0, strict=True))
    s = aug.summary()
    json.dumps(s)
    assert (s["name"], s["calls"], s["samples_seen"], s["samples_augmented"]) == (name, 3, 60, 60)
    assert 0 < s[f"mean_{aug.magnitude}"] <= 1
    aug.reset_stats()
    assert aug.stats == {"calls": 0, "samples_seen": 0, "samples_augmented": 0, "mean_magnitude": 0.0}


@pytest.mark.parametrize("name", ALL)
def test_inactive_and_zero_strength_samples_are_left_bit_identical(batch, name):
    x, labels = batch
    targets = _targets(labels)
    active = torch.arange(20) % 2 == 0
    strength = torch.where(torch.arange(20) % 4 == 0, 0.0, 1.0)  # samples 0, 4, 8, ...: active but strength 0
    aug = get_augmentation(name)
    out, tout = aug(x, targets, generator=_gen(1), active=active, strength=strength)
    untouched = ~active | (strength == 0)
    assert torch.equal(out[untouched], x[untouched])
    assert not torch.equal(out[~untouched], x[~untouched])
    for t, t_in in zip(tout, targets, strict=True):
        assert torch.equal(t[untouched], t_in[untouched])
    assert aug.stats["samples_augmented"] == 10
    # Untouched rows may still be someone else's partner; the 5 full-strength samples carry all the magnitude.
    assert aug.stats["mean_magnitude"] > 0


@pytest.mark.parametrize("name", ALL)
def test_seeded_generator_makes_it_deterministic(batch, name):
    x, labels = batch
    targets = _targets(labels)
    runs = [get_augmentation(name, p=0.5)(x, targets, generator=_gen(seed)) for seed in (7, 7, 8)]
    (a, ta), (b, tb), (c, _) = runs
    assert torch.equal(a, b) and all(torch.equal(u, v) for u, v in zip(ta, tb, strict=True))
    assert not torch.equal(a, c)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ALL)
def test_cuda_batch_with_a_cpu_generator_gives_the_cpu_result(batch, name):
    x, labels = batch
    targets = _targets(labels)
    cpu, tcpu = get_augmentation(name, p=0.5)(x, targets, generator=_gen(5))
    cuda, tcuda = get_augmentation(name, p=0.5)(x.cuda(), [t.cuda() for t in targets], generator=_gen(5))
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu)
    for u, v in zip(tcuda, tcpu, strict=True):
        torch.testing.assert_close(u.cpu(), v)


# ----------------------------------------------------------------------------------------- mixing augmentations


def test_mixup_mixes_the_patch_and_every_target_with_one_partner_and_weight(batch):
    x, labels = batch
    targets = _targets(labels)
    out, tout = Mixup(alpha=0.4)(x, targets, generator=_gen(2))
    j, w = _partners(tout[0])
    assert (w > 0.01).sum() >= 10 and (w <= 1).all()
    wx = w.view(-1, 1, 1, 1)
    torch.testing.assert_close(out, x * (1 - wx) + x[j] * wx, rtol=0, atol=1e-5)
    for t, t_in in zip(tout[1:], targets[1:], strict=True):
        torch.testing.assert_close(t, t_in * (1 - w[:, None]) + t_in[j] * w[:, None], rtol=0, atol=1e-6)
    # Strength bounds how far a sample moves from its clean self.
    _, tout = Mixup(alpha=0.4)(x, targets, generator=_gen(2), strength=torch.full((20,), 0.5))
    _, w_half = _partners(tout[0])
    assert w_half.max() <= 0.5 + 1e-6
    torch.testing.assert_close(w_half, 0.5 * w, rtol=0, atol=1e-6)


def test_cutmix_pastes_one_box_and_mixes_every_target_by_its_area(batch):
    x, labels = batch
    targets = _targets(labels)
    b, c, n_f, n_t = x.shape
    out, tout = CutMix(alpha=1.0)(x, targets, generator=_gen(4))
    # The same draws on a probe batch whose sample i is the constant i + 1 reveal each box exactly.
    probe = torch.arange(1.0, b + 1).view(-1, 1, 1, 1).expand(b, c, n_f, n_t).contiguous()
    probe_out, _ = CutMix(alpha=1.0)(probe, targets, generator=_gen(4))
    j, w = _partners(tout[0])
    boxed = 0
    for i in range(b):
        from_partner = probe_out[i, 0] != i + 1  # (F, T)
        if j[i] == i:
            assert torch.equal(out[i], x[i])
            continue
        assert (probe_out[i][:, from_partner] == j[i] + 1).all()
        rows, cols = from_partner.any(dim=1), from_partner.any(dim=0)
        assert torch.equal(from_partner, rows[:, None] & cols[None, :])  # one rectangle
        assert torch.equal(out[i], torch.where(from_partner, x[j[i]], x[i]))
        assert w[i].item() == pytest.approx(from_partner.float().mean().item(), abs=1e-6)
        boxed += int(from_partner.any())
    assert boxed >= 10
    for t, t_in in zip(tout[1:], targets[1:], strict=True):
        torch.testing.assert_close(t, t_in * (1 - w[:, None]) + t_in[j] * w[:, None], rtol=0, atol=1e-6)
    _, tout = CutMix(alpha=1.0)(x, targets, generator=_gen(4), strength=torch.full((b,), 0.25))
    assert _partners(tout[0])[1].max() <= 0.25


# ----------------------------------------------------------------------------------------- SpecAugment


def _runs(mask: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D bool tensor."""
    edges = torch.diff(torch.cat([torch.zeros(1), mask.float(), torch.zeros(1)]))
    return (torch.where(edges < 0)[0] - torch.where(edges > 0)[0]).tolist()


@pytest.mark.parametrize("strength, widest", [(1.0, 8), (0.5, 4)])
def test_specaugment_frequency_masks_have_the_requested_widths_and_the_rest_is_untouched(batch, strength, widest):
    x, labels = batch
    widths = []
    aug = SpecAugment(freq_masks=1, max_freq_width_bins=8, time_masks=0)
    measured = []
    for seed in range(15):
        s = torch.full((20,), strength)
        out, tout = aug(x, [labels], generator=_gen(seed), strength=s)
        assert tout[0] is labels
        masked = out == 0  # real normalised patches hold no exact zero (checked in the fixture)
        assert torch.equal(out[~masked], x[~masked])
        for i in range(20):
            plane = masked[i, 0]
            assert torch.equal(masked[i, 1], plane)  # every channel
            rows = plane.any(dim=1)
            assert torch.equal(plane, rows[:, None].expand_as(plane))  # whole rows (all frames)
            runs = _runs(rows)
            assert len(runs) <= 1
            widths.append(runs[0] if runs else 0)
            measured.append(plane.float().mean().item())
    assert max(widths) == widest and min(widths) == 0
    assert set(widths) == set(range(widest + 1))  # uniform on 0..widest
    assert aug.summary()["mean_masked_fraction"] == pytest.approx(np.mean(measured), abs=1e-6)


def test_specaugment_time_masks_are_whole_frames_of_bounded_width(batch):
    x, labels = batch
    aug = SpecAugment(freq_masks=0, time_masks=2, max_time_width_frames=5)
    longest = 0
    for seed in range(10):
        out, _ = aug(x, [labels], generator=_gen(seed))
        masked = out == 0
        assert torch.equal(out[~masked], x[~masked])
        for i in range(20):
            cols = masked[i, 0].any(dim=0)
            assert torch.equal(masked[i], cols.expand_as(masked[i]))
            runs = _runs(cols)
            assert len(runs) <= 2 and sum(runs) <= 10
            longest = max(longest, max(runs, default=0))
    assert longest >= 5


# ----------------------------------------------------------------------------------------- Freq-MixStyle


def test_freq_mixstyle_moves_per_frequency_statistics_towards_a_partner(batch):
    x, labels = batch
    targets = _targets(labels)
    out, tout = FreqMixStyle(alpha=0.3, p=1.0)(x, targets, generator=_gen(6))
    assert out.shape == x.shape and all(a is b for a, b in zip(tout, targets, strict=True))
    x, out = x.double(), out.double()
    mu, mu_out = x.mean(dim=(1, 3)), out.mean(dim=(1, 3))  # (B, F)
    var, var_out = x.var(dim=(1, 3)), out.var(dim=(1, 3))
    sigma = (var + 1e-6).sqrt()
    moved = 0
    for i in range(20):
        shift = mu_out[i] - mu[i]
        if shift.norm() < 1e-2:  # a weight too small to identify the partner in float32 output
            continue
        # The output's mean is (1 - w) mu_i + w mu_j for one partner j and weight w in (0, 1].
        d = mu - mu[i]  # (B, F)
        w = (d @ shift) / (d * d).sum(dim=1).clamp_min(1e-12)
        residual = (shift[None] - w[:, None] * d).norm(dim=1) / shift.norm()
        residual[i] = float("inf")
        j = int(residual.argmin())
        assert residual[j] < 1e-4 and 0 < w[j] <= 1 + 1e-6
        assert (mu_out[i] - mu[j]).norm() < (mu[i] - mu[j]).norm()
        # Its standard deviation per bin mixes with the same weight (bins that are not constant).
        live = var[i] > 1e-2
        expected = (1 - w[j]) * sigma[i] + w[j] * sigma[j]
        torch.testing.assert_close(var_out[i][live].sqrt(), expected[live], rtol=2e-3, atol=1e-4)
        moved += 1
    assert moved >= 10


# ----------------------------------------------------------------------------------------- SapAugment


def test_sapaugment_policy_is_one_minus_the_regularised_incomplete_beta_of_the_loss_rank():
    ranks = torch.arange(1, 9, dtype=torch.float64) / 8
    # s = 2, a = 0.5: Beta(1, 1), whose CDF is r itself.
    torch.testing.assert_close(SapAugment(a=0.5, s=2).strengths(8).double(), 1 - ranks)
    # s = 4, a = 0.5: Beta(2, 2), CDF 3r^2 - 2r^3.
    torch.testing.assert_close(SapAugment(a=0.5, s=4).strengths(8).double(), 1 - (3 * ranks**2 - 2 * ranks**3))
    # s = 3, a = 1/3: Beta(2, 1), CDF r^2.
    torch.testing.assert_close(SapAugment(a=1 / 3, s=3).strengths(8).double(), 1 - ranks**2)
    curve = SapAugment().strengths(32)
    assert curve[0] > 0.99 and curve[-1] == 0 and (torch.diff(curve) <= 0).all()
    assert SapAugment().strengths(8)[3].item() == pytest.approx(0.5)  # middle rank, a = 0.5


def test_sapaugment_gives_more_augmentation_to_low_loss_samples(batch):
    x, labels = batch
    policy, mask = SapAugment(a=0.5, s=10, p_min=0.10, p_max=0.25), SpecAugment(freq_masks=2, time_masks=2)
    g = _gen(11)
    low_masked, high_masked = [], []
    for _ in range(200):
        losses = torch.rand(20, generator=g) * 3
        active, strength = policy.plan(losses, g)
        order = torch.argsort(losses)
        assert (torch.diff(strength[order]) <= 0).all()  # strength falls as the loss rises
        out, _ = mask(x, [labels], generator=g, active=active, strength=strength)
        frac = (out == 0).float().mean(dim=(1, 2, 3))
        low_masked.append(frac[order[:5]])
        high_masked.append(frac[order[-5:]])
    s = policy.summary()
    json.dumps(s)
    assert s["calls"] == 200 and s["samples_seen"] == 4000
    assert s["mean_strength_lowest_loss_quartile"] > 0.95 > 0.05 > s["mean_strength_highest_loss_quartile"]
    assert s["activation_rate_lowest_loss_quartile"] == pytest.approx(0.25, abs=0.04)
    assert s["activation_rate_highest_loss_quartile"] == pytest.approx(0.10, abs=0.03)
    assert s["activation_rate_lowest_loss_quartile"] > s["activation_rate_highest_loss_quartile"] + 0.08
    assert torch.cat(low_masked).mean() > 3 * torch.cat(high_masked).mean()


def test_sapaugment_plan_is_deterministic_and_checks_its_input():
    losses = torch.rand(16, generator=_gen(0))
    a = SapAugment().plan(losses, _gen(3))
    b = SapAugment().plan(losses, _gen(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(UserInputError, match=r"non-empty \(B,\) tensor, got \(4, 4\)"):
        SapAugment().plan(torch.zeros(4, 4), _gen(0))


# ----------------------------------------------------------------------------------------- loss


def test_soft_target_loss_is_cross_entropy_for_one_hot_targets_and_kl_otherwise():
    g = _gen(9)
    logits = torch.randn(12, 10, generator=g) * 3
    labels = torch.randint(0, 10, (12,), generator=g)
    one_hot = F.one_hot(labels, 10).float()
    torch.testing.assert_close(soft_target_loss(logits, one_hot), F.cross_entropy(logits, labels))
    soft = torch.softmax(torch.randn(12, 10, generator=g), dim=1)
    entropy = -(soft * soft.log()).sum(dim=1).mean()
    torch.testing.assert_close(soft_target_loss(logits, soft), F.cross_entropy(logits, soft) - entropy)
    assert soft_target_loss(logits, torch.softmax(logits, dim=1)).abs() < 1e-5
    t = 4.0
    teacher = torch.softmax(torch.randn(12, 10, generator=g) / t, dim=1)
    manual = (teacher * (teacher.log() - torch.log_softmax(logits / t, dim=1))).sum(dim=1).mean() * t * t
    torch.testing.assert_close(soft_target_loss(logits, teacher, temperature=t), manual)
    with pytest.raises(UserInputError, match=r"\(12, 10\) and \(12, 9\)"):
        soft_target_loss(logits, soft[:, :9])
    with pytest.raises(UserInputError, match="temperature .* got 0"):
        soft_target_loss(logits, soft, temperature=0)


def test_registered_subclass_is_usable_by_name():
    """A researcher's augmentation registers with one decorator and gets the base class's bookkeeping."""

    class Invert(Augmentation):
        name = "test-invert"

        def _apply(self, x, targets, active, strength, generator):
            return torch.where(active.view(-1, 1, 1, 1), -x, x), targets, active.float()

    from asc_search.trainers import _augment

    register_augmentation(Invert)
    try:
        aug = get_augmentation("test-invert", p=1.0)
        out, _ = aug(torch.ones(3, 1, 2, 2), [], generator=_gen())
        assert torch.equal(out, -torch.ones(3, 1, 2, 2))
        assert aug.summary()["samples_augmented"] == 3
    finally:
        del _augment._AUGMENTATIONS._items["test-invert"]
