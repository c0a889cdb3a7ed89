"""The genome of a candidate: front-end genes plus a CNN architecture, serialisable to JSON.

A genome is a frozen, hashable value: equal genomes give equal ``genome_id`` in any process.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Literal

from asc_search._errors import UserInputError

ACTIVATIONS = ("relu", "tanh")
POOLS = ("none", "max2", "avg2")
KERNELS = (3, 5, 7)


@dataclass(frozen=True, kw_only=True)
class FrontendGenes:
    """Front-end genes.

    Args:
        kind: Registered front-end: ``logmel``, ``gammatone`` or ``cqt`` (the seed on Mel/Gammatone/CQT
            ensembles found each carries complementary information).
        sample_rate_hz: Rate the audio is resampled to (anti-aliased, soxr) before the front-end (Hz).
        n_bins: Mel bands, gammatone filters or CQT bins.
        hop_ms: Frame hop (ms); the window is twice the hop (50 % overlap, as the DCASE baseline).
        chunk_s: Patch length (s); a clip is cut into patches with 50 % overlap.
        deltas: 0, 1 (delta) or 2 (delta and delta-delta) extra input channels.
        f_min_hz: Lowest band edge, or the lowest CQT bin (Hz).
    """

    kind: str = "logmel"
    sample_rate_hz: int
    n_bins: int
    hop_ms: float
    chunk_s: float
    deltas: int = 0
    f_min_hz: float = 0.0

    @property
    def win_ms(self) -> float:
        """Analysis window (ms)."""
        return 2.0 * self.hop_ms

    def config(self):
        """The ``FrontendConfig`` of these genes.

        Raises:
            UserInputError: The genes make no valid front-end (e.g. CQT bins above Nyquist).
        """
        from asc_search.frontends import FrontendConfig

        return FrontendConfig(kind=self.kind, sample_rate_hz=self.sample_rate_hz, n_bins=self.n_bins,
                              win_ms=self.win_ms, hop_ms=self.hop_ms, f_min_hz=self.f_min_hz, deltas=self.deltas)


@dataclass(frozen=True, kw_only=True)
class ConvStage:
    """One convolution stage: ``Conv2d(k×k, same padding, no bias) -> BatchNorm -> activation -> pool``.

    Args:
        width: Output channels.
        kernel: Square kernel size (3, 5 or 7).
        activation: ``relu`` or ``tanh``.
        pool: ``none``, ``max2`` or ``avg2`` (2×2, stride 2, floor).
    """

    width: int
    kernel: int
    activation: Literal["relu", "tanh"]
    pool: Literal["none", "max2", "avg2"]

    def __post_init__(self) -> None:
        if self.width < 1:
            raise UserInputError(f"stage width must be >= 1, got {self.width}")
        if self.kernel not in KERNELS:
            raise UserInputError(f"kernel must be one of {KERNELS}, got {self.kernel}")
        if self.activation not in ACTIVATIONS:
            raise UserInputError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.pool not in POOLS:
            raise UserInputError(f"pool must be one of {POOLS}, got {self.pool!r}")


@dataclass(frozen=True, kw_only=True)
class Genome:
    """A candidate: front-end genes, 2-4 conv stages and a classifier head.

    The head is global average pooling, an optional hidden 1×1 layer (``head_width`` > 0, ReLU),
    dropout and a 1×1 classifier, all 4-D ops so the INT8 export needs no transpose.

    Args:
        frontend: Front-end genes.
        stages: Conv stages, input to output.
        head_width: Hidden units of the head (0: none).
        dropout: Dropout before the classifier (0 <= p < 1).
        learning_rate: Adam learning rate.
    """

    frontend: FrontendGenes
    stages: tuple[ConvStage, ...]
    head_width: int = 0
    dropout: float = 0.2
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        if not self.stages:
            raise UserInputError("a genome needs at least one conv stage")
        if self.head_width < 0:
            raise UserInputError(f"head_width must be >= 0, got {self.head_width}")
        if not 0 <= self.dropout < 1:
            raise UserInputError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.learning_rate <= 0:
            raise UserInputError(f"learning_rate must be > 0, got {self.learning_rate}")

    def to_dict(self) -> dict:
        """JSON-ready dict (``from_dict`` inverts it)."""
        return asdict(self)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> Genome:
        """Rebuild a genome from ``to_dict`` output.

        Raises:
            UserInputError: A field is missing or out of range.
        """
        try:
            return cls(
                frontend=FrontendGenes(**d["frontend"]),
                stages=tuple(ConvStage(**s) for s in d["stages"]),
                head_width=int(d.get("head_width", 0)),
                dropout=float(d.get("dropout", 0.2)),
                learning_rate=float(d.get("learning_rate", 1e-3)),
            )
        except (KeyError, TypeError) as exc:
            raise UserInputError(f"not a genome: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> Genome:
        """Inverse of ``to_json``."""
        return cls.from_dict(json.loads(text))

    @property
    def genome_id(self) -> str:
        """Stable 12-hex-digit hash of the canonical JSON."""
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:12]

    def summary(self) -> str:
        """Compact one-line description, e.g. ``logmel40/16k/h20/c1 | 16k3r-max2 32k3t-avg2 | h0``."""
        f = self.frontend
        fe = f"{f.kind}{f.n_bins}/{f.sample_rate_hz / 1000:g}k/h{f.hop_ms:g}/c{f.chunk_s:g}"
        fe += f"/d{f.deltas}" if f.deltas else ""
        st = " ".join(f"{s.width}k{s.kernel}{s.activation[0]}-{s.pool}" for s in self.stages)
        return f"{fe} | {st} | h{self.head_width}"
