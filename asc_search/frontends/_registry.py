"""Front-end registry: one config for every kind (log-mel, gammatone, CQT), their nnAudio modules, deltas.

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
from dataclasses import asdict, dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from nnAudio.features.cqt import CQT1992v2
from nnAudio.features.gammatone import Gammatonegram
from nnAudio.features.mel import MelSpectrogram
from torch import nn

from asc_search._errors import UserInputError

_VALID_DELTAS = (0, 1, 2)


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
        if not isinstance(self.kind, str) or self.kind not in _REGISTRY:
            raise UserInputError(f"unknown front-end kind {self.kind!r}; registered: {', '.join(list_frontends())}")
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
        _REGISTRY[self.kind].check_config(self)

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
        return _REGISTRY[self.kind].frame_samples(self)

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
            hint = " (a lower f_min_hz needs longer CQT kernels)" if self.kind == "cqt" else ""
            raise UserInputError(
                f"{n_samples} samples is shorter than one {self.kind} frame ({frame} samples, "
                f"{1000 * frame / self.sample_rate_hz:.1f} ms){hint}"
            )
        return 1 + (n_samples - frame) // self.hop_samples

    def to_dict(self) -> dict:
        """JSON-ready dict with the derived sizes included."""
        return {
            **asdict(self), "hop_samples": self.hop_samples, "win_samples": self.win_samples, "n_fft": self.n_fft,
            "frame_samples": self.frame_samples, "channels": self.channels,
        }


class Frontend(nn.Module):
    """Base class of registered front-ends: ``(batch, samples) -> (batch, n_bins, frames)`` in dB.

    Subclasses build their layers from the config in ``__init__`` and may override the class methods
    ``check_config`` (kind-specific validation) and ``frame_samples`` (samples per output frame).

    Args:
        config: Front-end parameters.
    """

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


_REGISTRY: dict[str, type[Frontend]] = {}
_F = TypeVar("_F", bound=type[Frontend])


def register_frontend(name: str) -> Callable[[_F], _F]:
    """Class decorator that registers a :class:`Frontend` subclass under ``name``.

    Args:
        name: The ``FrontendConfig.kind`` that selects the class.

    Returns:
        The decorator; it returns the class unchanged.

    Raises:
        UserInputError: ``name`` is empty or taken by another class, or the class is not a ``Frontend``.
    """
    if not isinstance(name, str) or not name:
        raise UserInputError(f"front-end name must be a non-empty string, got {name!r}")

    def decorator(cls: _F) -> _F:
        if not (isinstance(cls, type) and issubclass(cls, Frontend)):
            raise UserInputError(f"register_frontend({name!r}) needs a Frontend subclass, got {cls!r}")
        old = _REGISTRY.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise UserInputError(
                f"front-end name {name!r} is already registered to {old.__module__}.{old.__qualname__}"
            )
        _REGISTRY[name] = cls
        return cls

    return decorator


def list_frontends() -> list[str]:
    """Registered front-end names, sorted."""
    return sorted(_REGISTRY)


def build_frontend(config: FrontendConfig) -> Frontend:
    """Build the front-end module of ``config.kind`` (in eval mode, no trainable parameters).

    Args:
        config: Front-end parameters.

    Returns:
        A module mapping ``(batch, samples)`` float audio to ``(batch, n_bins, config.n_frames(samples))`` dB.

    Raises:
        UserInputError: ``config.kind`` is not registered (the message lists the registered names).
    """
    cls = _REGISTRY.get(config.kind)
    if cls is None:
        raise UserInputError(f"unknown front-end kind {config.kind!r}; registered: {', '.join(list_frontends())}")
    return cls(config).eval()


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
