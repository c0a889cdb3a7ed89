"""Front-end registry: one config for every kind (log-mel, gammatone, CQT), their nnAudio modules, deltas.

A front-end kind is one registered :class:`Frontend` subclass (``register_frontend`` / ``unregister_frontend``)
that owns its validation (``check_config``), its frame length (``frame_samples``), the default lowest band edge
the search space gives it (``default_f_min_hz``) and the config fields it reads, which are the fields
``frontend.json`` carries (``config_fields``; ``FrontendConfig.to_json`` / ``from_json``).

Every front-end maps ``(batch, samples)`` float audio to ``(batch, n_bins, frames)`` log-power in dB
(``10 log10(max(power, amin))``), static features only. Frames are not centred (``center=False``), so
the features of an audio patch that starts on a frame boundary are exactly a crop of the whole clip's
features: a clip's features can be computed once and cut into patches. Deltas (:func:`compute_deltas`)
are applied per patch after cropping, the same way on the device.

``FrontendConfig.n_frames`` gives the exact frame count of the built module without building it (it is
used for complexity counting before any training).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import ClassVar, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from nnAudio.features.cqt import CQT1992v2
from nnAudio.features.gammatone import Gammatonegram
from nnAudio.features.mel import MelSpectrogram
from torch import nn

from asc_search._errors import UserInputError
from asc_search._registry import NamedRegistry

_VALID_DELTAS = (0, 1, 2)
CONFIG_FIELDS = ("kind", "sample_rate_hz", "n_bins", "win_ms", "hop_ms", "f_min_hz", "f_max_hz", "deltas",
                 "bins_per_octave", "amin")
"""Every ``FrontendConfig`` field, in order (the default ``Frontend.config_fields``)."""
DERIVED_FIELDS = ("hop_samples", "win_samples", "n_fft", "frame_samples", "channels")
"""Sizes ``to_dict`` / ``to_json`` add, computed from the fields."""


@dataclass(frozen=True, kw_only=True)
class FrontendConfig:
    """Parameters of a registered front-end, with units.

    Args:
        kind: A registered front-end name (see :func:`list_frontends`): ``"logmel"``, ``"gammatone"``,
            ``"cqt"``.
        sample_rate_hz: Input sample rate (Hz).
        n_bins: Output bins: mel bands, gammatone filters or CQT bins.
        win_ms: Analysis window (ms, Hann); the FFT size is the next power of two. Not used by ``"cqt"``,
            whose kernel lengths follow from its Q factor and the bin frequencies (see ``frame_samples``).
        hop_ms: Frame hop (ms); at most ``win_ms``.
        f_min_hz: Lowest band edge (mel, gammatone) or the lowest bin's centre frequency (CQT, must be > 0).
        f_max_hz: Highest band edge (Hz); ``None`` means Nyquist. For ``"cqt"`` an upper bound on the top bin.
        deltas: 0: static features only; 1: adds delta; 2: adds delta and delta-delta (see ``channels``).
            The module itself returns static features; :func:`compute_deltas` adds the others per patch.
        bins_per_octave: CQT bins per octave (``"cqt"`` only).
        amin: Power floor before ``10 log10`` (power units).

    Raises:
        UserInputError: A value is out of range (the message quotes it and the valid range).
    """

    kind: str
    sample_rate_hz: int
    n_bins: int
    win_ms: float
    hop_ms: float
    f_min_hz: float = 0.0
    f_max_hz: float | None = None
    deltas: int = 0
    bins_per_octave: int = 12
    amin: float = 1e-10

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str):
            raise UserInputError(f"front-end kind must be a string, got {self.kind!r}")
        cls = frontend_class(self.kind)
        if self.sample_rate_hz <= 0:
            raise UserInputError(f"sample_rate_hz must be > 0, got {self.sample_rate_hz}")
        if self.n_bins < 1:
            raise UserInputError(f"n_bins must be >= 1, got {self.n_bins}")
        if not 0 < self.hop_ms <= self.win_ms:
            raise UserInputError(f"need 0 < hop_ms <= win_ms, got hop_ms={self.hop_ms}, win_ms={self.win_ms}")
        nyquist = self.sample_rate_hz / 2
        f_max = nyquist if self.f_max_hz is None else self.f_max_hz
        if not 0 <= self.f_min_hz < f_max <= nyquist:
            raise UserInputError(
                f"need 0 <= f_min_hz < f_max_hz <= Nyquist ({nyquist} Hz), "
                f"got f_min_hz={self.f_min_hz}, f_max_hz={self.f_max_hz}"
            )
        if self.deltas not in _VALID_DELTAS:
            raise UserInputError(f"deltas must be one of {_VALID_DELTAS}, got {self.deltas}")
        if self.bins_per_octave < 1:
            raise UserInputError(f"bins_per_octave must be >= 1, got {self.bins_per_octave}")
        if not self.amin > 0:
            raise UserInputError(f"amin must be > 0, got {self.amin}")
        for f in fields(self):
            if f.name not in cls.config_fields and getattr(self, f.name) != f.default:
                raise UserInputError(f"{self.kind} does not use {f.name}; leave it at {f.default!r}, got "
                                     f"{getattr(self, f.name)!r}")
        cls.check_config(self)

    @property
    def hop_samples(self) -> int:
        """Frame hop in samples."""
        return max(1, int(round(self.hop_ms * self.sample_rate_hz / 1000)))

    @property
    def win_samples(self) -> int:
        """Window length in samples."""
        return max(2, int(round(self.win_ms * self.sample_rate_hz / 1000)))

    @property
    def n_fft(self) -> int:
        """FFT size: the next power of two >= ``win_samples``."""
        return 1 << math.ceil(math.log2(self.win_samples))

    @property
    def channels(self) -> int:
        """Feature channels after :func:`compute_deltas`: ``1 + deltas``."""
        return 1 + self.deltas

    @property
    def frame_samples(self) -> int:
        """Samples one output frame looks at: ``n_fft`` (log-mel, gammatone) or the CQT kernel width."""
        return frontend_class(self.kind).frame_samples(self)

    def n_frames(self, n_samples: int) -> int:
        """Frames the built module outputs for ``n_samples`` of audio: ``1 + (n_samples - frame_samples) // hop``.

        Cheap: the module is not built.

        Args:
            n_samples: Audio length (samples).

        Returns:
            The number of frames.

        Raises:
            UserInputError: The audio is shorter than one frame (``frame_samples``).
        """
        frame = self.frame_samples
        if n_samples < frame:
            hint = frontend_class(self.kind).short_audio_hint
            raise UserInputError(
                f"{n_samples} samples is shorter than one {self.kind} frame ({frame} samples, "
                f"{1000 * frame / self.sample_rate_hz:.1f} ms){hint}"
            )
        return 1 + (n_samples - frame) // self.hop_samples

    def _derived(self) -> dict:
        return {"hop_samples": self.hop_samples, "win_samples": self.win_samples, "n_fft": self.n_fft,
                "frame_samples": self.frame_samples, "channels": self.channels}

    def to_dict(self) -> dict:
        """JSON-ready dict of every field, with the derived sizes (``DERIVED_FIELDS``) included."""
        return {**asdict(self), **self._derived()}

    def to_json(self) -> dict:
        """What ``frontend.json`` carries (its ``"frontend"`` object): the fields the kind reads
        (``Frontend.config_fields``, asked of the registry) and the derived sizes. ``from_json`` inverts it. For
        the built-in kinds, which read every field, it equals ``to_dict()``."""
        cls = frontend_class(self.kind)
        return {**{k: getattr(self, k) for k in CONFIG_FIELDS if k in cls.config_fields}, **self._derived()}

    @classmethod
    def from_json(cls, d: dict) -> FrontendConfig:
        """The config a ``frontend.json`` ``"frontend"`` object describes (inverse of ``to_json``; an older file that
        carries every field reads too).

        Raises:
            UserInputError: Unknown kind (the message lists the registered ones), a field the kind needs is missing
                or out of range, or a stored derived size differs from the one the fields give.
        """
        if not isinstance(d, dict) or "kind" not in d:
            raise UserInputError(f"a front-end description needs a 'kind', got {d!r}")
        kind_cls = frontend_class(d["kind"])
        try:
            config = cls(**{k: d[k] for k in CONFIG_FIELDS if k in kind_cls.config_fields and k in d})
        except TypeError as exc:
            raise UserInputError(f"front-end {d['kind']!r}: {exc}") from exc
        derived = config._derived()
        bad = {k: (d[k], v) for k, v in derived.items() if k in d and d[k] != v}
        if bad:
            raise UserInputError(f"front-end {d['kind']!r}: stored sizes differ from the ones its fields give "
                                 f"(stored, computed): {bad}")
        return config


class Frontend(nn.Module):
    """Base class of registered front-ends: ``(batch, samples) -> (batch, n_bins, frames)`` in dB.

    Subclasses build their layers from the config in ``__init__`` and may override the class methods
    ``check_config`` (kind-specific validation) and ``frame_samples`` (samples per output frame), and the class
    attributes below.

    Class attributes:
        name: The registered kind (set by ``register_frontend``).
        config_fields: The ``FrontendConfig`` fields the kind reads (``kind`` included), the ones ``frontend.json``
            carries; the others must stay at their defaults. Default: every field (``CONFIG_FIELDS``).
        default_f_min_hz: The lowest band edge the search space gives the kind (Hz).
        short_audio_hint: Appended to the error for audio shorter than one frame.

    Args:
        config: Front-end parameters.
    """

    name: ClassVar[str] = ""
    config_fields: ClassVar[tuple[str, ...]] = CONFIG_FIELDS
    default_f_min_hz: ClassVar[float] = 0.0
    short_audio_hint: ClassVar[str] = ""

    def __init__(self, config: FrontendConfig) -> None:
        super().__init__()
        self.config = config

    @classmethod
    def check_config(cls, config: FrontendConfig) -> None:
        """Kind-specific validation, called by ``FrontendConfig.__post_init__``.

        Raises:
            UserInputError: A value is out of range for this kind.
        """

    @classmethod
    def frame_samples(cls, config: FrontendConfig) -> int:
        """Samples per output frame (the non-centred analysis kernel length); default ``config.n_fft``."""
        return config.n_fft

    def to_db(self, power: torch.Tensor) -> torch.Tensor:
        """``10 log10(max(power, amin))``."""
        return 10.0 * torch.log10(torch.clamp(power, min=self.config.amin))


FRONTENDS: NamedRegistry[type[Frontend]] = NamedRegistry("front-end kind", valid_label="registered")
"""The front-end registry: ``Frontend`` subclasses by kind."""
_F = TypeVar("_F", bound=type[Frontend])


def register_frontend(name: str) -> Callable[[_F], _F]:
    """Class decorator that registers a :class:`Frontend` subclass under ``name`` (re-registering the same class,
    as a module reload does, replaces it).

    Args:
        name: The ``FrontendConfig.kind`` that selects the class.

    Returns:
        The decorator; it returns the class with ``name`` set.

    Raises:
        UserInputError: ``name`` is empty or taken by another class, the class is not a ``Frontend``, or its
            ``config_fields`` name an unknown field or leave out a required one.
    """
    if not isinstance(name, str) or not name:
        raise UserInputError(f"front-end name must be a non-empty string, got {name!r}")

    def decorator(cls: _F) -> _F:
        if not (isinstance(cls, type) and issubclass(cls, Frontend)):
            raise UserInputError(f"register_frontend({name!r}) needs a Frontend subclass, got {cls!r}")
        required = {"kind", "sample_rate_hz", "n_bins", "win_ms", "hop_ms"}
        bad = sorted(set(cls.config_fields) - set(CONFIG_FIELDS)) + sorted(required - set(cls.config_fields))
        if bad:
            raise UserInputError(f"front-end {name!r}: config_fields {cls.config_fields} name unknown fields or leave "
                                 f"out required ones: {bad}; fields: {', '.join(CONFIG_FIELDS)}")
        if name in FRONTENDS:
            old = FRONTENDS.get(name)
            if (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
                raise UserInputError(
                    f"front-end name {name!r} is already registered to {old.__module__}.{old.__qualname__}"
                )
            FRONTENDS.unregister(name)
        cls.name = name
        FRONTENDS.register(cls)
        return cls

    return decorator


def unregister_frontend(name: str) -> type[Frontend]:
    """Remove and return the class registered as ``name`` (a plugin's or a test's registration undone).

    Raises:
        UserInputError: Unknown name; the message lists the registered ones.
    """
    return FRONTENDS.unregister(name)


def frontend_class(name: str) -> type[Frontend]:
    """The :class:`Frontend` subclass registered as ``name``.

    Raises:
        UserInputError: Unknown name; the message lists the registered ones.
    """
    return FRONTENDS.get(name)


def list_frontends() -> list[str]:
    """Registered front-end names, sorted."""
    return [cls.name for cls in FRONTENDS.all()]


def build_frontend(config: FrontendConfig) -> Frontend:
    """Build the front-end module of ``config.kind`` (in eval mode, no trainable parameters).

    Args:
        config: Front-end parameters.

    Returns:
        A module mapping ``(batch, samples)`` float audio to ``(batch, n_bins, config.n_frames(samples))`` dB.

    Raises:
        UserInputError: ``config.kind`` is not registered (the message lists the registered names).
    """
    return frontend_class(config.kind)(config).eval()


@register_frontend("logmel")
class LogMelFrontend(Frontend):
    """Log-mel: nnAudio ``MelSpectrogram`` (Slaney mel, Hann window, power 2, not centred) in dB.

    Args:
        config: Front-end parameters (``n_bins`` mel bands between ``f_min_hz`` and ``f_max_hz``).
    """

    def __init__(self, config: FrontendConfig) -> None:
        super().__init__(config)
        self.mel = MelSpectrogram(
            sr=config.sample_rate_hz, n_fft=config.n_fft, win_length=config.win_samples, n_mels=config.n_bins,
            hop_length=config.hop_samples, window="hann", center=False, power=2.0, fmin=config.f_min_hz,
            fmax=config.f_max_hz, trainable_mel=False, trainable_STFT=False, verbose=False,
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` float audio -> ``(batch, n_bins, frames)`` log-mel in dB."""
        return self.to_db(self.mel(waveform))


@register_frontend("gammatone")
class GammatoneFrontend(Frontend):
    """Log-gammatone: nnAudio ``Gammatonegram`` (Hann window, power 2, not centred) in dB.

    Args:
        config: Front-end parameters (``n_bins`` gammatone filters between ``f_min_hz`` and ``f_max_hz``).
    """

    def __init__(self, config: FrontendConfig) -> None:
        super().__init__(config)
        self.gammatone = Gammatonegram(
            sr=config.sample_rate_hz, n_fft=config.n_fft, win_length=config.win_samples, n_bins=config.n_bins,
            hop_length=config.hop_samples, window="hann", center=False, power=2.0, fmin=config.f_min_hz,
            fmax=config.f_max_hz, trainable_bins=False, trainable_STFT=False, verbose=False,
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` float audio -> ``(batch, n_bins, frames)`` log-gammatone in dB."""
        return self.to_db(self.gammatone(waveform))


def cqt_kernel_samples(*, sample_rate_hz: int, f_min_hz: float, n_bins: int, bins_per_octave: int) -> int:
    """Width of nnAudio 0.3.4's CQT kernels (``CQT1992v2.kernel_width``), computed without building them.

    Replicates ``nnAudio.utils.create_cqt_kernels`` (filter_scale 1, gamma 0): ``Q = 1 / (2**(1/b) - 1)``,
    lengths ``ceil(Q * sr / f_k)``, width = the next power of two of the longest (the lowest bin's).

    Args:
        sample_rate_hz: Sample rate (Hz).
        f_min_hz: Centre frequency of the lowest bin (Hz, > 0).
        n_bins: CQT bins.
        bins_per_octave: Bins per octave.

    Returns:
        The kernel width in samples (a power of two).
    """
    q = 1.0 / (2 ** (1 / bins_per_octave) - 1)
    freqs = f_min_hz * 2.0 ** (np.r_[0:n_bins] / np.double(bins_per_octave))
    max_len = int(max(np.ceil(q * sample_rate_hz / freqs)))
    return int(2 ** (np.ceil(np.log2(max_len))))


@register_frontend("cqt")
class CQTFrontend(Frontend):
    """Log-CQT: nnAudio ``CQT1992v2`` (Hann, L1 norm, librosa scaling, not centred), power = magnitude**2, in dB.

    Bin ``k`` is centred on ``f_min_hz * 2**(k / bins_per_octave)``. ``win_ms`` is not used: each bin's
    kernel is ``ceil(Q * sr / f_k)`` samples long, and all are zero-padded to ``frame_samples``.

    Args:
        config: Front-end parameters (``f_min_hz > 0``; the top bin must lie below Nyquist).
    """

    default_f_min_hz: ClassVar[float] = 50.0
    short_audio_hint: ClassVar[str] = " (a lower f_min_hz needs longer CQT kernels)"

    def __init__(self, config: FrontendConfig) -> None:
        super().__init__(config)
        self.cqt = CQT1992v2(
            sr=config.sample_rate_hz, hop_length=config.hop_samples, fmin=config.f_min_hz, n_bins=config.n_bins,
            bins_per_octave=config.bins_per_octave, window="hann", center=False, trainable=False,
            output_format="Magnitude", verbose=False,
        )

    @classmethod
    def check_config(cls, config: FrontendConfig) -> None:
        """CQT needs ``f_min_hz > 0`` and its top bin below Nyquist (and at most ``f_max_hz`` when given)."""
        if config.f_min_hz <= 0:
            raise UserInputError(f"cqt needs f_min_hz > 0 (the lowest bin's centre), got {config.f_min_hz}")
        top = config.f_min_hz * 2 ** ((config.n_bins - 1) / config.bins_per_octave)
        nyquist = config.sample_rate_hz / 2
        if top >= nyquist:
            raise UserInputError(
                f"cqt top bin f_min_hz * 2**((n_bins - 1) / bins_per_octave) = {config.f_min_hz} * "
                f"2**({config.n_bins - 1}/{config.bins_per_octave}) = {top:.1f} Hz must be below Nyquist "
                f"({nyquist} Hz): lower n_bins or f_min_hz"
            )
        if config.f_max_hz is not None and top > config.f_max_hz:
            raise UserInputError(
                f"cqt top bin {top:.1f} Hz (f_min_hz={config.f_min_hz}, n_bins={config.n_bins}, "
                f"bins_per_octave={config.bins_per_octave}) is above f_max_hz={config.f_max_hz}"
            )

    @classmethod
    def frame_samples(cls, config: FrontendConfig) -> int:
        """The CQT kernel width (samples), see :func:`cqt_kernel_samples`."""
        return cqt_kernel_samples(sample_rate_hz=config.sample_rate_hz, f_min_hz=config.f_min_hz,
                                  n_bins=config.n_bins, bins_per_octave=config.bins_per_octave)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` float audio -> ``(batch, n_bins, frames)`` log-CQT power in dB."""
        return self.to_db(self.cqt(waveform) ** 2)


def compute_deltas(x: torch.Tensor, order: int, win_length: int = 5) -> torch.Tensor:
    """Stack static features with their regression deltas along channels.

    ``d_t = sum_{n=1..N} n (c_{t+n} - c_{t-n}) / (2 sum_{n=1..N} n**2)`` over time with ``N =
    (win_length - 1) / 2`` and edge replication (the same numbers as ``librosa.feature.delta(x,
    width=win_length, order=1, mode="nearest")``); delta-delta is the delta of the delta by the same
    formula. Torch ops only (replicate pad + conv2d): it exports to ONNX inside a model.

    Args:
        x: Static features, shape ``(N, 1, F, T)``.
        order: 0 (static only, returned as is), 1 (+ delta) or 2 (+ delta and delta-delta).
        win_length: Regression window (frames, odd, >= 3).

    Returns:
        Shape ``(N, 1 + order, F, T)``: static, delta, delta-delta.

    Raises:
        UserInputError: ``order`` or ``win_length`` is out of range, or ``x`` is not ``(N, 1, F, T)``.
    """
    if order not in _VALID_DELTAS:
        raise UserInputError(f"delta order must be one of {_VALID_DELTAS}, got {order}")
    if win_length < 3 or win_length % 2 != 1:
        raise UserInputError(f"delta win_length must be odd and >= 3, got {win_length}")
    if x.dim() != 4 or (not torch.jit.is_tracing() and x.shape[1] != 1):
        raise UserInputError(f"compute_deltas needs shape (N, 1, F, T), got {tuple(x.shape)}")
    if order == 0:
        return x
    half = (win_length - 1) // 2
    n = torch.arange(-half, half + 1, dtype=x.dtype, device=x.device)
    weight = (n / (2 * float(sum(k * k for k in range(1, half + 1))))).view(1, 1, 1, win_length)
    out = [x]
    for _ in range(order):
        out.append(F.conv2d(F.pad(out[-1], (half, half, 0, 0), mode="replicate"), weight))
    return torch.cat(out, dim=1)


class Deltas(nn.Module):
    """:func:`compute_deltas` as a module: ``(N, 1, F, T) -> (N, 1 + order, F, T)`` (exportable to ONNX).

    Args:
        order: 0, 1 or 2.
        win_length: Regression window (frames, odd, >= 3).

    Raises:
        UserInputError: ``order`` or ``win_length`` is out of range.
    """

    def __init__(self, *, order: int, win_length: int = 5) -> None:
        super().__init__()
        compute_deltas(torch.zeros(1, 1, 1, 1), order, win_length)  # validates the arguments
        self.order = order
        self.win_length = win_length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, F, T)`` -> ``(N, 1 + order, F, T)``."""
        return compute_deltas(x, self.order, self.win_length)
