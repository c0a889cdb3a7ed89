"""Log-mel front-end (nnAudio) with log compression and normalisation as config fields."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from nnAudio.features.mel import MelSpectrogram
from torch import nn

from asc_search._errors import UserInputError


@dataclass(frozen=True, kw_only=True)
class LogMelConfig:
    """Parameters of the log-mel front-end, with units.

    Frames are not centred (``center=False``), so the features of an audio patch that starts on a
    frame boundary are exactly a crop of the clip's features; a patch of ``chunk_samples`` has
    ``1 + (chunk_samples - n_fft) // hop_samples`` frames.

    Args:
        sample_rate_hz: Input sample rate (Hz).
        n_mels: Mel bands.
        win_ms: Analysis window (ms, Hann); the FFT size is the next power of two.
        hop_ms: Frame hop (ms).
        f_min_hz: Lowest mel band edge (Hz).
        f_max_hz: Highest mel band edge (Hz); ``None`` means Nyquist.
        log_compression: ``"db"``: ``10 log10(max(power, amin))``.
        amin: Power floor before the logarithm (power units).
    """

    sample_rate_hz: int
    n_mels: int
    win_ms: float
    hop_ms: float
    f_min_hz: float = 0.0
    f_max_hz: float | None = None
    log_compression: Literal["db"] = "db"
    amin: float = 1e-10

    def __post_init__(self) -> None:
        if self.sample_rate_hz <= 0:
            raise UserInputError(f"sample_rate_hz must be > 0, got {self.sample_rate_hz}")
        if self.n_mels < 1:
            raise UserInputError(f"n_mels must be >= 1, got {self.n_mels}")
        if self.hop_ms <= 0 or self.win_ms < self.hop_ms:
            raise UserInputError(f"need 0 < hop_ms <= win_ms, got hop_ms={self.hop_ms}, win_ms={self.win_ms}")
        nyquist = self.sample_rate_hz / 2
        if not 0 <= self.f_min_hz < (self.f_max_hz or nyquist) <= nyquist:
            raise UserInputError(
                f"need 0 <= f_min_hz < f_max_hz <= Nyquist ({nyquist} Hz), got {self.f_min_hz}, {self.f_max_hz}"
            )
        if self.log_compression != "db":
            raise UserInputError(f"log_compression must be 'db', got {self.log_compression!r}")

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
        """FFT size (next power of two of the window)."""
        return 1 << math.ceil(math.log2(self.win_samples))

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for ``n_samples`` of audio.

        Raises:
            UserInputError: The audio is shorter than one FFT frame.
        """
        if n_samples < self.n_fft:
            raise UserInputError(f"{n_samples} samples is shorter than one FFT frame ({self.n_fft})")
        return 1 + (n_samples - self.n_fft) // self.hop_samples

    def to_dict(self) -> dict:
        """JSON-ready dict with the derived sizes included."""
        return {**asdict(self), "hop_samples": self.hop_samples, "win_samples": self.win_samples, "n_fft": self.n_fft}


class LogMel(nn.Module):
    """Log-mel spectrogram: ``(batch, samples) -> (batch, n_mels, frames)`` in dB.

    nnAudio's ``MelSpectrogram`` (Slaney mel, Hann window, power 2, not centred) followed by
    ``10 log10(max(x, amin))``. Exportable to ONNX with ``dynamo=False``.

    Args:
        config: Front-end parameters.
    """

    def __init__(self, config: LogMelConfig) -> None:
        super().__init__()
        self.config = config
        self.mel = MelSpectrogram(
            sr=config.sample_rate_hz, n_fft=config.n_fft, win_length=config.win_samples, n_mels=config.n_mels,
            hop_length=config.hop_samples, window="hann", center=False, power=2.0, fmin=config.f_min_hz,
            fmax=config.f_max_hz, trainable_mel=False, trainable_STFT=False, verbose=False,
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` float audio -> ``(batch, n_mels, frames)`` log-mel in dB."""
        power = self.mel(waveform)
        return 10.0 * torch.log10(torch.clamp(power, min=self.config.amin))
