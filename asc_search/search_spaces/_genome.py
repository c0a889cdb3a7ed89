"""The genome of a candidate: front-end genes, an ``ArchSpec`` and training genes, serialisable to JSON.

A genome is a frozen, hashable value: equal genomes give equal ``genome_id`` in any process.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from asc_search._errors import UserInputError
from asc_search.search_spaces._arch import ArchSpec


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
class Genome:
    """A candidate: front-end genes, an architecture (``ArchSpec``) and its training genes.

    Args:
        frontend: Front-end genes.
        arch: The CNN (stages of blocks and the head).
        learning_rate: Adam learning rate.

    Raises:
        UserInputError: A gene out of range.
    """

    frontend: FrontendGenes
    arch: ArchSpec
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        if self.learning_rate <= 0:
            raise UserInputError(f"learning_rate must be > 0, got {self.learning_rate}")

    def to_dict(self) -> dict:
        """JSON-ready dict (``from_dict`` inverts it)."""
        return {"frontend": asdict(self.frontend), "arch": self.arch.to_dict(), "learning_rate": self.learning_rate}

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the genome's encoding (``from_json`` decodes it)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    encode = to_json

    @classmethod
    def from_dict(cls, d: dict) -> Genome:
        """Rebuild a genome from ``to_dict`` output.

        Raises:
            UserInputError: A field is missing or out of range.
        """
        try:
            return cls(frontend=FrontendGenes(**d["frontend"]), arch=ArchSpec.from_dict(d["arch"]),
                       learning_rate=float(d.get("learning_rate", 1e-3)))
        except (KeyError, TypeError) as exc:
            raise UserInputError(f"not a genome: {exc!r}") from exc

    @classmethod
    def from_json(cls, text: str) -> Genome:
        """Inverse of ``to_json``."""
        return cls.from_dict(json.loads(text))

    decode = from_json

    @property
    def genome_id(self) -> str:
        """Stable 12-hex-digit hash of the canonical JSON (the same in every process)."""
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:12]

    @property
    def arch_id(self) -> str:
        """The architecture's id (``ArchSpec.arch_id``)."""
        return self.arch.arch_id

    def summary(self) -> str:
        """Compact one-line description, e.g. ``logmel40/16k/h20/c1 | conv_c16_k3_relu maxpool_k2 | gap``."""
        f = self.frontend
        fe = f"{f.kind}{f.n_bins}/{f.sample_rate_hz / 1000:g}k/h{f.hop_ms:g}/c{f.chunk_s:g}"
        fe += f"/d{f.deltas}" if f.deltas else ""
        return f"{fe} | {self.arch.summary()}"
