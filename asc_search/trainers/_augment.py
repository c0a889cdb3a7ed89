"""Batch augmentations of normalised log-mel patches, a sample-adaptive policy (SapAugment) and the soft-target loss.

Every augmentation is a registered :class:`Augmentation`: ``aug(x, targets, generator=g) -> (x, targets)`` on a
batch ``x`` of shape ``(B, C, F, T)`` (channels, frequency bins, frames; normalised, so 0 is the mean) and a list
of ``(B, K)`` probability targets (the soft labels and, with knowledge distillation, the teacher's softened
probabilities). Mixing augmentations mix every target with the same partner and weight; the others return the
targets unchanged. Each keeps running statistics of what it did (:meth:`Augmentation.summary`, JSON-ready).

Randomness comes only from the ``generator`` argument: draws are made on the generator's device and moved to the
batch's device, so a seeded CPU generator gives the same result for CPU and CUDA batches. Inputs are never
modified in place. The hot path uses torch only.

Methods: mixup (Zhang et al. 2018), SpecAugment masks (Park et al. 2019), CutMix (Yun et al. 2019),
Freq-MixStyle (Schmid et al. 2022, CP-JKU DCASE 2022/2023 systems) and the SapAugment policy (Hu et al. 2021) as
DeepSpectrumLite (Amiriparian et al. 2022) implements it.
"""

from __future__ import annotations

import inspect
import logging
import math
import numbers
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F

from asc_search._errors import UserInputError
from asc_search._registry import NamedRegistry

log = logging.getLogger(__name__)

__all__ = [
    "Augmentation",
    "CutMix",
    "FreqMixStyle",
    "Mixup",
    "SapAugment",
    "SpecAugment",
    "get_augmentation",
    "list_augmentations",
    "register_augmentation",
    "soft_target_loss",
]


# --------------------------------------------------------------------------- parameter checks


def _check_probability(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise UserInputError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < float(value) < math.inf:
        raise UserInputError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise UserInputError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- random draws (generator's device)


def _uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) float32 of ``shape``, drawn on the generator's device, returned on ``device``."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _permutation(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A random permutation of ``range(n)`` (int64) on ``device``."""
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def _beta(alpha: float, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``n`` draws of Beta(alpha, alpha) (float32, on ``device``).

    ``torch.distributions.Beta`` takes no generator; this is the same sampler it uses (a two-component
    Dirichlet, ``torch._sample_dirichlet``), called with the generator.
    """
    conc = torch.full((n, 2), alpha, dtype=torch.float32, device=generator.device)
    lam = torch._sample_dirichlet(conc, generator=generator)[:, 0]
    return lam.nan_to_num(0.5).clamp(0.0, 1.0).to(device)


def _rows(v: torch.Tensor) -> torch.Tensor:
    """``(B,)`` -> ``(B, 1, 1, 1)``, to broadcast over a batch of patches."""
    return v.view(-1, 1, 1, 1)


def _mix_targets(targets: list[torch.Tensor], perm: torch.Tensor, weight: torch.Tensor) -> list[torch.Tensor]:
    """``(1 - w_i) t[i] + w_i t[perm[i]]`` for every target, with one partner and weight per sample."""
    out = []
    for t in targets:
        w = weight.to(t.dtype)[:, None]
        out.append(t * (1.0 - w) + t[perm] * w)
    return out


# --------------------------------------------------------------------------- base class and registry


class Augmentation:
    """Base class of registered batch augmentations; subclasses implement :meth:`_apply` and :meth:`params`.

    Args:
        p: Per-sample probability of being augmented, used when the call gives no ``active`` mask; in [0, 1].

    Attributes:
        name: Registry key (class attribute).
        magnitude: What the per-sample magnitude in the statistics measures (class attribute), e.g.
            ``"partner_weight"`` or ``"masked_fraction"``.
        mixes_targets: Whether it mixes the targets of two samples (class attribute); the training loop then uses
            the KL divergence to the mixed labels (``soft_target_loss``).

    Raises:
        UserInputError: ``p`` is outside [0, 1].
    """

    name: ClassVar[str] = ""
    magnitude: ClassVar[str] = "magnitude"
    mixes_targets: ClassVar[bool] = False

    def __init__(self, *, p: float = 1.0) -> None:
        self.p = _check_probability("p", p)
        self.reset_stats()

    # ---- public protocol

    def __call__(self, x: torch.Tensor, targets: list[torch.Tensor], *, generator: torch.Generator,
                 active: torch.Tensor | None = None, strength: torch.Tensor | None = None,
                 ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Augment a batch.

        Args:
            x: Normalised patches, shape ``(B, C, F, T)``, floating point (float32 in training).
            targets: Probability targets, each of shape ``(B, K_j)`` (rows sum to 1); may be empty.
            generator: The only source of randomness; its device may differ from ``x``'s.
            active: ``(B,)`` bool, which samples to augment; ``None``: each sample with probability ``p``.
            strength: ``(B,)`` magnitude scale in [0, 1] (values outside are clamped); ``None``: 1.

        Returns:
            ``(x_aug, targets_aug)``: new tensors of the input shapes, dtypes and devices (inputs untouched).
            Non-mixing augmentations return the target tensors themselves.

        Raises:
            UserInputError: A shape, dtype or batch size does not match.
        """
        b = self._check_batch(x, targets, active, strength)
        if active is None:
            active = _uniform((b,), generator, x.device) < self.p
        active = active.to(x.device)
        if strength is None:
            strength = torch.ones(b, dtype=torch.float32, device=x.device)
        else:
            strength = strength.to(device=x.device, dtype=torch.float32).clamp(0.0, 1.0)
        x_out, t_out, magnitude = self._apply(x, list(targets), active, strength, generator)
        self._record(b, active, magnitude)
        return x_out, t_out

    def params(self) -> dict[str, Any]:
        """The constructor parameters (JSON-ready)."""
        return {"p": self.p}

    @property
    def stats(self) -> dict[str, float | int]:
        """Running counters since construction or :meth:`reset_stats`: ``calls``, ``samples_seen``,
        ``samples_augmented`` and ``mean_magnitude`` (mean of the per-sample magnitude over augmented samples;
        0 when none was). Reading them synchronises with the device; the call itself does not."""
        augmented = int(self._augmented.item()) if self._augmented is not None else 0
        total = float(self._magnitude_sum.item()) if self._magnitude_sum is not None else 0.0
        return {"calls": self._calls, "samples_seen": self._seen, "samples_augmented": augmented,
                "mean_magnitude": total / augmented if augmented else 0.0}

    def summary(self) -> dict[str, Any]:
        """JSON-ready record of what the augmentation did (for a trial's history and logs)."""
        s = self.stats
        return {"name": self.name, "params": self.params(), "calls": s["calls"], "samples_seen": s["samples_seen"],
                "samples_augmented": s["samples_augmented"],
                "augmented_fraction": s["samples_augmented"] / s["samples_seen"] if s["samples_seen"] else 0.0,
                f"mean_{self.magnitude}": s["mean_magnitude"]}

    def reset_stats(self) -> None:
        """Zero the running counters (e.g. at the start of an epoch)."""
        self._calls = 0
        self._seen = 0
        self._augmented: torch.Tensor | None = None
        self._magnitude_sum: torch.Tensor | None = None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    # ---- for subclasses

    def _apply(self, x: torch.Tensor, targets: list[torch.Tensor], active: torch.Tensor, strength: torch.Tensor,
               generator: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Return ``(x_aug, targets_aug, magnitude)``; ``magnitude`` is ``(B,)``, 0 for inactive samples.

        ``active`` is ``(B,)`` bool and ``strength`` ``(B,)`` float32 in [0, 1], both on ``x``'s device. Make the
        same random draws whatever ``active`` is, so results depend on the generator only.
        """
        raise NotImplementedError

    # ---- internals

    @staticmethod
    def _check_batch(x: torch.Tensor, targets: list[torch.Tensor], active: torch.Tensor | None,
                     strength: torch.Tensor | None) -> int:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise UserInputError(f"x must be a floating-point tensor of shape (B, C, F, T), got {shape}")
        b = x.shape[0]
        if not isinstance(targets, list | tuple):
            raise UserInputError(f"targets must be a list of (B, K) tensors, got {type(targets).__name__}")
        for j, t in enumerate(targets):
            if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[0] != b or not t.is_floating_point():
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise UserInputError(f"targets[{j}] must be a floating-point ({b}, K) tensor, got {shape}")
        if active is not None and (active.shape != (b,) or active.dtype != torch.bool):
            raise UserInputError(f"active must be a ({b},) bool tensor, got {tuple(active.shape)} {active.dtype}")
        if strength is not None and strength.shape != (b,):
            raise UserInputError(f"strength must be a ({b},) tensor, got {tuple(strength.shape)}")
        return b

    def _record(self, b: int, active: torch.Tensor, magnitude: torch.Tensor) -> None:
        n = active.sum(dtype=torch.int64)
        m = torch.where(active, magnitude.to(torch.float64), 0.0).sum()
        self._calls += 1
        self._seen += b
        self._augmented = n if self._augmented is None else self._augmented.to(n.device) + n
        self._magnitude_sum = m if self._magnitude_sum is None else self._magnitude_sum.to(m.device) + m


_A = TypeVar("_A", bound=type[Augmentation])

_AUGMENTATIONS: NamedRegistry[type[Augmentation]] = NamedRegistry("augmentation", valid_label="registered")


def register_augmentation(cls: _A) -> _A:
    """Class decorator that registers an :class:`Augmentation` subclass under its ``name``.

    Returns:
        The class, unchanged.

    Raises:
        UserInputError: ``cls`` is not an ``Augmentation`` subclass or has an empty ``name``.
        ValueError: The name is taken.
    """
    if not (isinstance(cls, type) and issubclass(cls, Augmentation)):
        raise UserInputError(f"{cls!r} is not an Augmentation subclass")
    if not isinstance(cls.name, str) or not cls.name:
        raise UserInputError(f"{cls.__name__} needs a non-empty class attribute 'name', got {cls.name!r}")
    _AUGMENTATIONS.register(cls)
    return cls


def list_augmentations() -> list[str]:
    """Names of the registered augmentations, sorted."""
    return [c.name for c in _AUGMENTATIONS.all()]


def get_augmentation(name: str, **kwargs: Any) -> Augmentation:
    """Build the augmentation registered as ``name`` with keyword parameters ``kwargs``.

    Raises:
        UserInputError: Unknown name (the message lists the registered ones), a parameter the augmentation does
            not take (the message lists those it takes), or a parameter out of range.
    """
    cls = _AUGMENTATIONS.get(name)
    accepted = [k for k, p in inspect.signature(cls.__init__).parameters.items()
                if k != "self" and p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise UserInputError(f"augmentation {name!r} takes no parameter {', '.join(unknown)}; "
                             f"its parameters: {', '.join(accepted)}")
    return cls(**kwargs)


# --------------------------------------------------------------------------- augmentations


@register_augmentation
class Mixup(Augmentation):
    """Mixup (Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization"), one weight per sample.

    ``x'_i = (1 - w_i) x_i + w_i x_perm(i)`` and the same for every target, with ``perm`` a random permutation,
    ``lambda_i ~ Beta(alpha, alpha)`` and partner weight ``w_i = strength_i (1 - lambda_i)`` (0 when inactive):
    strength scales how far a sample moves from its clean self. Train with a KL-divergence loss on the mixed
    soft labels (:func:`soft_target_loss`), as the Mel/Gammatone/CQT ensemble of Pham et al. 2021 does.

    Args:
        alpha: Beta concentration, > 0 (small: mostly near-clean samples; 1: uniform weights).
        p: Per-sample probability of being mixed when no ``active`` mask is given, in [0, 1].

    Shapes:
        ``(B, C, F, T)`` -> ``(B, C, F, T)``; targets ``(B, K)`` -> ``(B, K)``.

    Raises:
        UserInputError: ``alpha <= 0`` or ``p`` outside [0, 1].
    """

    name = "mixup"
    magnitude = "partner_weight"
    mixes_targets = True

    def __init__(self, *, alpha: float = 0.4, p: float = 1.0) -> None:
        self.alpha = _check_positive("alpha", alpha)
        super().__init__(p=p)

    def params(self) -> dict[str, Any]:
        """The constructor parameters (JSON-ready)."""
        return {"alpha": self.alpha, "p": self.p}

    def _apply(self, x, targets, active, strength, generator):
        b = x.shape[0]
        lam = _beta(self.alpha, b, generator, x.device)
        perm = _permutation(b, generator, x.device)
        w = torch.where(active, strength * (1.0 - lam), 0.0)
        wx = _rows(w.to(x.dtype))
        return x * (1.0 - wx) + x[perm] * wx, _mix_targets(targets, perm, w), w


@register_augmentation
class CutMix(Augmentation):
    """CutMix (Yun et al. 2019, "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable
    Features") on the time-frequency plane.

    A box of area fraction about ``r_i = strength_i (1 - lambda_i)``, ``lambda_i ~ Beta(alpha, alpha)``, is
    pasted from a partner (random permutation) into every channel of sample ``i``: box height
    ``floor(F sqrt(r))`` bins, width ``floor(T sqrt(r))`` frames, centre uniform on the plane, clipped at the
    edges (as in Yun et al.'s code). Every target is mixed with the box's actual area fraction ``a_i``:
    ``t'_i = (1 - a_i) t_i + a_i t_perm(i)``.

    Args:
        alpha: Beta concentration, > 0 (1: box area uniform in [0, 1], Yun et al.'s setting).
        p: Per-sample probability of being cut-mixed when no ``active`` mask is given, in [0, 1].

    Shapes:
        ``(B, C, F, T)`` -> ``(B, C, F, T)``; targets ``(B, K)`` -> ``(B, K)``.

    Raises:
        UserInputError: ``alpha <= 0`` or ``p`` outside [0, 1].
    """

    name = "cutmix"
    magnitude = "box_fraction"
    mixes_targets = True

    def __init__(self, *, alpha: float = 1.0, p: float = 1.0) -> None:
        self.alpha = _check_positive("alpha", alpha)
        super().__init__(p=p)

    def params(self) -> dict[str, Any]:
        """The constructor parameters (JSON-ready)."""
        return {"alpha": self.alpha, "p": self.p}

    def _apply(self, x, targets, active, strength, generator):
        b, _, n_f, n_t = x.shape
        lam = _beta(self.alpha, b, generator, x.device)
        perm = _permutation(b, generator, x.device)
        centre = _uniform((2, b), generator, x.device)
        ratio = torch.where(active, strength * (1.0 - lam), 0.0).sqrt()
        f0, f1 = _box_edges(ratio, centre[0], n_f)
        t0, t1 = _box_edges(ratio, centre[1], n_t)
        in_f = _band_mask(f0, f1, n_f)  # (B, F)
        in_t = _band_mask(t0, t1, n_t)  # (B, T)
        box = (in_f[:, :, None] & in_t[:, None, :])[:, None]  # (B, 1, F, T)
        area = ((f1 - f0) * (t1 - t0)).to(torch.float32) / (n_f * n_t)
        return torch.where(box, x[perm], x), _mix_targets(targets, perm, area), area


def _box_edges(ratio: torch.Tensor, centre: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end (exclusive) of a side of length ``floor(size * ratio)`` centred at ``floor(centre * size)``,
    clipped to ``[0, size]``; int64 ``(B,)`` each."""
    length = (ratio * size).floor().long()
    mid = (centre * size).floor().long().clamp(max=size - 1)
    start = mid - length // 2
    return start.clamp(0, size), (start + length).clamp(0, size)


def _band_mask(start: torch.Tensor, end: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, size)`` bool: ``start[i] <= k < end[i]`` (``start``/``end`` may carry extra trailing dims, which
    are OR-ed: ``(B, n)`` -> union of n bands)."""
    k = torch.arange(size, device=start.device)
    inside = (k >= start[..., None]) & (k < end[..., None])
    while inside.dim() > 2:
        inside = inside.any(dim=1)
    return inside


@register_augmentation
class SpecAugment(Augmentation):
    """SpecAugment frequency and time masking (Park et al. 2019, "SpecAugment: A Simple Data Augmentation Method
    for Automatic Speech Recognition"); no time warping.

    Each active sample gets ``freq_masks`` bands of ``f ~ U{0, ..., round(strength * max_freq_width_bins)}``
    consecutive bins and ``time_masks`` bands of ``t ~ U{0, ..., round(strength * max_time_width_frames)}``
    consecutive frames at uniform positions (bands may overlap), across all channels, set to 0 (the normalised
    mean). Everything else is left bit-identical. The magnitude is the masked fraction of the ``F x T`` plane.

    Args:
        freq_masks: Frequency masks per sample, >= 0.
        max_freq_width_bins: Widest frequency mask (bins) at strength 1, >= 0 (cut to ``F``).
        time_masks: Time masks per sample, >= 0.
        max_time_width_frames: Widest time mask (frames) at strength 1, >= 0 (cut to ``T``).
        p: Per-sample probability of being masked when no ``active`` mask is given, in [0, 1].

    Shapes:
        ``(B, C, F, T)`` -> ``(B, C, F, T)``; targets unchanged.

    Raises:
        UserInputError: A count or width is negative or not an integer, or ``p`` is outside [0, 1].
    """

    name = "specaugment"
    magnitude = "masked_fraction"

    def __init__(self, *, freq_masks: int = 1, max_freq_width_bins: int = 8, time_masks: int = 1,
                 max_time_width_frames: int = 10, p: float = 1.0) -> None:
        self.freq_masks = _check_count("freq_masks", freq_masks)
        self.max_freq_width_bins = _check_count("max_freq_width_bins", max_freq_width_bins)
        self.time_masks = _check_count("time_masks", time_masks)
        self.max_time_width_frames = _check_count("max_time_width_frames", max_time_width_frames)
        super().__init__(p=p)

    def params(self) -> dict[str, Any]:
        """The constructor parameters (JSON-ready)."""
        return {"freq_masks": self.freq_masks, "max_freq_width_bins": self.max_freq_width_bins,
                "time_masks": self.time_masks, "max_time_width_frames": self.max_time_width_frames, "p": self.p}

    def _apply(self, x, targets, active, strength, generator):
        _, _, n_f, n_t = x.shape
        in_f = self._bands(self.freq_masks, self.max_freq_width_bins, n_f, active, strength, generator)
        in_t = self._bands(self.time_masks, self.max_time_width_frames, n_t, active, strength, generator)
        mask = in_f[:, :, None] | in_t[:, None, :]  # (B, F, T)
        return x.masked_fill(mask[:, None], 0.0), targets, mask.to(torch.float32).mean(dim=(1, 2))

    @staticmethod
    def _bands(count: int, max_width: int, size: int, active: torch.Tensor, strength: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
        """``(B, size)`` bool: the union of ``count`` random bands per sample."""
        b = active.shape[0]
        if count == 0:
            return torch.zeros(b, size, dtype=torch.bool, device=active.device)
        u = _uniform((2, b, count), generator, active.device)
        top = torch.round(strength * min(max_width, size)).long()[:, None]  # (B, 1)
        width = torch.minimum((u[0] * (top + 1)).floor().long(), top) * active[:, None]
        start = torch.minimum((u[1] * (size - width + 1)).floor().long(), size - width)
        return _band_mask(start, start + width, size)


@register_augmentation
class FreqMixStyle(Augmentation):
    """Freq-MixStyle (Schmid et al. 2022, CP-JKU DCASE 2022/2023 Task 1 systems; after MixStyle, Zhou et al.
    2021): mix per-frequency statistics between samples, labels unchanged.

    For each sample, per frequency bin: ``mu`` and ``sigma = sqrt(var + eps)`` over channels and time
    (unbiased variance, statistics detached as in CP-JKU's code); ``x' = (x - mu) / sigma * sigma_mix + mu_mix``
    with ``mu_mix = (1 - w) mu + w mu_perm``, the same for sigma, ``w = strength (1 - lambda)``,
    ``lambda ~ Beta(alpha, alpha)``, ``perm`` a random permutation. Samples with ``w = 0`` (inactive, strength 0)
    are returned bit-identical.
    CP-JKU apply it to a whole batch with probability ``p``; here ``p`` is per sample (the same expected
    fraction), unless the call gives ``active``.

    Args:
        alpha: Beta concentration, > 0 (CP-JKU: 0.3 in 2022, 0.4 in 2023).
        p: Per-sample probability of being restyled when no ``active`` mask is given, in [0, 1].
        eps: Variance floor, > 0.

    Shapes:
        ``(B, C, F, T)`` -> ``(B, C, F, T)`` (needs ``C * T >= 2``); targets unchanged.

    Raises:
        UserInputError: ``alpha`` or ``eps`` <= 0, or ``p`` outside [0, 1].
    """

    name = "freq_mixstyle"
    magnitude = "partner_weight"

    def __init__(self, *, alpha: float = 0.3, p: float = 0.4, eps: float = 1e-6) -> None:
        self.alpha = _check_positive("alpha", alpha)
        self.eps = _check_positive("eps", eps)
        super().__init__(p=p)

    def params(self) -> dict[str, Any]:
        """The constructor parameters (JSON-ready)."""
        return {"alpha": self.alpha, "p": self.p, "eps": self.eps}

    def _apply(self, x, targets, active, strength, generator):
        b = x.shape[0]
        lam = _beta(self.alpha, b, generator, x.device)
        perm = _permutation(b, generator, x.device)
        w = torch.where(active, strength * (1.0 - lam), 0.0)
        mu = x.mean(dim=(1, 3), keepdim=True).detach()  # (B, 1, F, 1)
        sigma = (x.var(dim=(1, 3), keepdim=True) + self.eps).sqrt().detach()
        wx = _rows(w.to(x.dtype))
        mu_mix = mu * (1.0 - wx) + mu[perm] * wx
        sigma_mix = sigma * (1.0 - wx) + sigma[perm] * wx
        mixed = (x - mu) / sigma * sigma_mix + mu_mix
        return torch.where(_rows(w > 0), mixed, x), targets, w


# --------------------------------------------------------------------------- SapAugment policy


class SapAugment:
    """Sample-adaptive augmentation policy (Hu et al. 2021, "SapAugment: Learning A Sample Adaptive Policy for
    Data Augmentation", ICASSP), in the form DeepSpectrumLite (Amiriparian et al. 2022) uses.

    Easy (low-loss) samples get more augmentation, hard (high-loss) ones less. The samples of a batch are ranked
    by loss, ascending (rank ``i = 0`` is the lowest loss; ties by position; NaN ranks as the highest); with
    ``r_i = (i + 1) / B`` the strength is

        ``strength_i = 1 - I_{r_i}(s (1 - a), s a)``

    where ``I_x(alpha, beta)`` is the regularised incomplete beta function (the Beta(alpha, beta) CDF). It falls
    from about 1 (lowest loss) to exactly 0 (highest loss); ``a`` moves the drop (it is centred near
    ``r = 1 - a``) and ``s`` sets its sharpness. This is DeepSpectrumLite's ``AugmentableModel.train_step``
    (``src/deepspectrumlite/lib/model/modules/augmentable_model.py``: ``alpha = s * (1 - a)``, ``beta = s * a``,
    ``1 - tf.math.betainc(alpha, beta, (i + 1) / batch_size)`` over the ascending loss order). Each sample is
    then augmented with probability ``p_min + (p_max - p_min) * strength_i``; DeepSpectrumLite's threshold is
    ``da_prob_min + da_prob_max * lambda``, which with ``p_min <= p_max`` reads ``p_max`` as a maximum here.

    Usage: ``active, strength = policy.plan(per_sample_losses, g)`` then ``aug(x, targets, generator=g,
    active=active, strength=strength)``; call ``plan`` once per augmentation for independent executions (as
    DeepSpectrumLite draws one per augmentation), the strengths are the same for a given batch of losses.

    Args:
        a: Where the strength drops, > 0 (0.5: the middle rank gets strength 0.5).
        s: Sharpness, > 0 (larger: closer to a step).
        p_min: Execution probability at strength 0 (the hardest sample).
        p_max: Execution probability at strength 1; ``0 <= p_min <= p_max <= 1``.

    Raises:
        UserInputError: ``a`` or ``s`` <= 0, or the probabilities are out of order or outside [0, 1].
    """

    name = "sapaugment"

    def __init__(self, *, a: float = 0.5, s: float = 10.0, p_min: float = 0.10, p_max: float = 0.25) -> None:
        self.a = _check_positive("a", a)
        self.s = _check_positive("s", s)
        self.p_min = _check_probability("p_min", p_min)
        self.p_max = _check_probability("p_max", p_max)
        if self.p_min > self.p_max:
            raise UserInputError(f"need 0 <= p_min <= p_max <= 1, got p_min={p_min!r} > p_max={p_max!r}")
        self._curves: dict[tuple[int, torch.device], torch.Tensor] = {}
        self.reset_stats()

    def policy(self, rank_fraction: torch.Tensor) -> torch.Tensor:
        """Strength ``1 - I_r(s (1 - a), s a)`` of normalised ranks ``r`` in [0, 1] (any shape, float64 CPU out).

        Uses ``scipy.special.betainc`` (torch has no incomplete beta); :meth:`plan` caches it per batch size.
        """
        from scipy.special import betainc

        r = torch.as_tensor(rank_fraction, dtype=torch.float64).cpu().clamp(0.0, 1.0)
        value = betainc(self.s * (1.0 - self.a), self.s * self.a, r.numpy())
        return 1.0 - torch.from_numpy(value)

    def strengths(self, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Strength by rank (index 0: lowest loss), ``(batch_size,)`` float32 on ``device``; cached."""
        key = (batch_size, torch.device(device))
        if key not in self._curves:
            ranks = torch.arange(1, batch_size + 1, dtype=torch.float64) / batch_size
            self._curves[key] = self.policy(ranks).to(dtype=torch.float32, device=key[1])
            log.debug("SapAugment(a=%s, s=%s) curve for batch size %d", self.a, self.s, batch_size)
        return self._curves[key]

    def plan(self, losses: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample execution mask and strength from this batch's losses.

        Args:
            losses: Per-sample training losses, shape ``(B,)`` (e.g. the un-augmented batch's cross-entropy;
                only their order matters).
            generator: Source of the execution draws.

        Returns:
            ``(active, strength)``: ``(B,)`` bool and ``(B,)`` float32 in [0, 1], on ``losses``' device.

        Raises:
            UserInputError: ``losses`` is not a non-empty 1-D tensor.
        """
        if not isinstance(losses, torch.Tensor) or losses.dim() != 1 or losses.numel() == 0:
            shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
            raise UserInputError(f"losses must be a non-empty (B,) tensor, got {shape}")
        b, device = losses.shape[0], losses.device
        order = torch.argsort(losses.detach(), stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(b, device=device)
        strength = self.strengths(b, device)[rank]
        prob = self.p_min + (self.p_max - self.p_min) * strength
        active = _uniform((b,), generator, device) < prob
        self._record(rank, active, strength)
        return active, strength

    # ---- statistics

    def reset_stats(self) -> None:
        """Zero the running counters."""
        self._calls = 0
        self._seen = 0
        self._n_quartile = 0
        self._sums: torch.Tensor | None = None  # strength, active, low/high strength, low/high active

    def _record(self, rank: torch.Tensor, active: torch.Tensor, strength: torch.Tensor) -> None:
        b = rank.shape[0]
        k = max(1, b // 4)
        low, high = rank < k, rank >= b - k
        act = active.to(torch.float64)
        st = strength.to(torch.float64)
        sums = torch.stack([st.sum(), act.sum(), st[low].sum(), st[high].sum(), act[low].sum(), act[high].sum()])
        self._sums = sums if self._sums is None else self._sums.to(sums.device) + sums
        self._calls += 1
        self._seen += b
        self._n_quartile += k

    @property
    def stats(self) -> dict[str, float | int]:
        """Running counters: ``calls``, ``samples_seen``, ``activation_rate``, ``mean_strength``, and the mean
        strength and activation rate of the lowest-loss and highest-loss quartile of each batch (at least one
        sample each)."""
        if self._sums is None:
            s = [0.0] * 6
        else:
            s = [float(v) for v in self._sums.tolist()]
        n, q = max(self._seen, 1), max(self._n_quartile, 1)
        return {"calls": self._calls, "samples_seen": self._seen, "activation_rate": s[1] / n,
                "mean_strength": s[0] / n,
                "mean_strength_lowest_loss_quartile": s[2] / q, "mean_strength_highest_loss_quartile": s[3] / q,
                "activation_rate_lowest_loss_quartile": s[4] / q,
                "activation_rate_highest_loss_quartile": s[5] / q}

    def params(self) -> dict[str, float]:
        """The constructor parameters (JSON-ready)."""
        return {"a": self.a, "s": self.s, "p_min": self.p_min, "p_max": self.p_max}

    def summary(self) -> dict[str, Any]:
        """JSON-ready record of what the policy did."""
        return {"name": self.name, "params": self.params(), **self.stats}

    def __repr__(self) -> str:
        return f"SapAugment(a={self.a!r}, s={self.s!r}, p_min={self.p_min!r}, p_max={self.p_max!r})"


# --------------------------------------------------------------------------- loss


def soft_target_loss(logits: torch.Tensor, targets: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """KL divergence ``KL(targets || softmax(logits / T))`` averaged over the batch, times ``T**2``.

    With one-hot targets and ``T = 1`` it equals ``F.cross_entropy(logits, labels)`` (a one-hot target has zero
    entropy); with soft targets (mixup, CutMix, label smoothing) it is the cross-entropy minus the targets'
    entropy, so its minimum is 0. With a teacher's probabilities softened at ``T`` it is Hinton et al.'s (2015)
    distillation term, scaled by ``T**2`` so its gradients keep their size.

    Args:
        logits: Student logits, shape ``(B, K)``.
        targets: Target probabilities, shape ``(B, K)``, rows summing to 1 (zeros allowed).
        temperature: Softmax temperature ``T`` of the logits, > 0.

    Returns:
        Scalar loss (nats).

    Raises:
        UserInputError: The shapes differ or are not 2-D, or ``temperature <= 0``.
    """
    if logits.dim() != 2 or logits.shape != targets.shape:
        raise UserInputError(f"logits and targets must both be (B, K), got {tuple(logits.shape)} and "
                             f"{tuple(targets.shape)}")
    t = _check_positive("temperature", temperature)
    log_q = F.log_softmax(logits / t, dim=1)
    return F.kl_div(log_q, targets.to(log_q.dtype), reduction="batchmean") * (t * t)
