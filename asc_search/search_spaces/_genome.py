"""The genome of a candidate: front-end genes, an ``ArchSpec`` and training genes, serialisable to JSON.

A genome is a frozen, hashable value: equal genomes give equal ``genome_id`` in any process.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

from asc_search._errors import UserInputError
from asc_search.frontends import FrontendConfig, PatchLayout
from asc_search.search_spaces._arch import ArchSpec
from asc_search.search_spaces._pruning import check_prune_ratios, pruned_arch

AUGMENTATIONS = ("mixup", "specaugment", "cutmix", "freq_mixstyle")
TEACHERS = ("none", "basd", "cssd", "ensemble")
PRUNE_CRITERIA = ("cosine", "l1")
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True, kw_only=True)
class FrontendGenes:
    """Front-end genes.

    Args:
        kind: Registered front-end: ``logmel``, ``gammatone`` or ``cqt`` (the seed on Mel/Gammatone/CQT
            ensembles found each carries complementary information), or a plugin's (``register_frontend``).
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

    def config(self) -> FrontendConfig:
        """The ``FrontendConfig`` of these genes.

        Raises:
            UserInputError: The genes make no valid front-end (e.g. CQT bins above Nyquist).
        """
        return FrontendConfig(kind=self.kind, sample_rate_hz=self.sample_rate_hz, n_bins=self.n_bins,
                              win_ms=self.win_ms, hop_ms=self.hop_ms, f_min_hz=self.f_min_hz, deltas=self.deltas)


@dataclass(frozen=True, kw_only=True)
class TrainingGenes:
    """What the seeds do to a network besides its architecture: augmentation, optimiser and schedule, knowledge
    distillation, pruning and quantisation-aware training. The defaults are plain training (none of them).

    Args:
        augmentations: Batch augmentations, applied in this order, from ``AUGMENTATIONS``: ``mixup`` (trained with
            the KL-divergence loss on soft labels, as the Mel/Gammatone/CQT-ensemble seed, Pham et al. 2021),
            ``specaugment`` (Park et al. 2019), ``cutmix`` (Yun et al. 2019), ``freq_mixstyle`` (Schmid et al. 2022).
        sapaugment: Scale each sample's augmentation by SapAugment's policy (Hu et al. 2021, as DeepSpectrumLite
            uses it: low-loss samples are augmented more and more often); needs at least one augmentation.
        weight_decay: Adam weight decay.
        epochs: Most epochs of the main training; 0: the run's ``--epochs``.
        batch_size: Patches per step; 0: the run's ``--batch-size``.
        warmup_epochs: Linear learning-rate warm-up (epochs) before the schedule.
        schedule: ``cosine`` (annealing to 0 over the epochs) or ``constant``.
        kd_teacher: Knowledge distillation teacher (Kim et al., low-sampling-rate self-distillation, eq. 1-2):
            ``none``; ``basd`` (Born-Again: a first generation of the same network on the same input); ``cssd``
            (cross-sampling-rate: the same network trained on ``kd_teacher_rate_hz`` audio, the student on its own
            lower rate); ``ensemble`` (the mean of the run's Pareto members finished so far).
        kd_alpha: Weight of the hard-label cross-entropy, in [0, 1]; the KL term gets ``1 - kd_alpha``.
        kd_temperature: Softmax temperature T > 0 of both teacher and student in the KL term (scaled by T²).
        kd_teacher_rate_hz: Sample rate of the CSSD teacher (Hz), at least the student's; 0 for other teachers.
        prune_ratios: Fraction of each stage's output channels removed after training (one per stage, each in
            [0, 1); empty: no pruning); the network is then fine-tuned. The genome's complexity is the pruned one.
        prune_criterion: ``cosine`` (redundant filters of the most similar pairs, the pruned-ensemble seed) or
            ``l1`` (smallest L1 norm, Li et al. 2017).
        qat: Fine-tune with quantisation-aware training (PyTorch QAT, x86/fbgemm config) before the INT8 export.

    Raises:
        UserInputError: A gene outside its valid range (the message names the value and the range).
    """

    augmentations: tuple[str, ...] = ()
    sapaugment: bool = False
    weight_decay: float = 1e-4
    epochs: int = 0
    batch_size: int = 0
    warmup_epochs: int = 0
    schedule: str = "cosine"
    kd_teacher: str = "none"
    kd_alpha: float = 0.5
    kd_temperature: float = 2.0
    kd_teacher_rate_hz: int = 0
    prune_ratios: tuple[float, ...] = ()
    prune_criterion: str = "cosine"
    qat: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "augmentations", tuple(self.augmentations))
        object.__setattr__(self, "prune_ratios", tuple(float(r) for r in self.prune_ratios))
        bad = [a for a in self.augmentations if a not in AUGMENTATIONS]
        if bad or len(set(self.augmentations)) != len(self.augmentations):
            raise UserInputError(f"augmentations {list(self.augmentations)}: each at most once, from "
                                 f"{', '.join(AUGMENTATIONS)}")
        if self.sapaugment and not self.augmentations:
            raise UserInputError("sapaugment scales augmentations, but no augmentation is on; add one (e.g. mixup)")
        if self.weight_decay < 0:
            raise UserInputError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.epochs < 0 or self.batch_size < 0 or self.warmup_epochs < 0:
            raise UserInputError(f"epochs, batch_size and warmup_epochs must be >= 0 (0: the run's value), got "
                                 f"{self.epochs}, {self.batch_size}, {self.warmup_epochs}")
        if self.schedule not in SCHEDULES:
            raise UserInputError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.kd_teacher not in TEACHERS:
            raise UserInputError(f"kd_teacher must be one of {', '.join(TEACHERS)}, got {self.kd_teacher!r}")
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise UserInputError(f"kd_alpha must be in [0, 1] (the weight of the hard-label loss), got {self.kd_alpha}")
        if not self.kd_temperature > 0:
            raise UserInputError(f"kd_temperature must be > 0, got {self.kd_temperature}")
        if self.kd_teacher == "cssd" and self.kd_teacher_rate_hz <= 0:
            raise UserInputError("kd_teacher cssd needs kd_teacher_rate_hz > 0 (the teacher's sample rate in Hz), "
                                 f"got {self.kd_teacher_rate_hz}")
        if self.kd_teacher != "cssd" and self.kd_teacher_rate_hz:
            raise UserInputError(f"kd_teacher_rate_hz is for the cssd teacher only, got {self.kd_teacher_rate_hz} "
                                 f"with kd_teacher {self.kd_teacher!r}")
        for i, r in enumerate(self.prune_ratios, 1):
            if not 0.0 <= r < 1.0:
                raise UserInputError(f"prune ratio of stage {i} is {r}; it must be in [0, 1) (1 would remove the "
                                     "whole layer)")
        if self.prune_criterion not in PRUNE_CRITERIA:
            raise UserInputError(f"prune_criterion must be one of {', '.join(PRUNE_CRITERIA)}, got "
                                 f"{self.prune_criterion!r}")

    @property
    def prunes(self) -> bool:
        """Whether any stage is pruned."""
        return any(r > 0 for r in self.prune_ratios)

    def to_dict(self) -> dict:
        """JSON-ready dict of the genes that differ from the defaults (plain training is ``{}``)."""
        default = TrainingGenes()
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v != getattr(default, f.name):
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: dict) -> TrainingGenes:
        """Inverse of ``to_dict``.

        Raises:
            UserInputError: An unknown gene or a value out of range.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserInputError(f"unknown training gene(s) {unknown}; known: {', '.join(sorted(known))}")
        return cls(**d)

    def summary(self) -> str:
        """Compact text, e.g. ``mixup+specaugment sap kd:basd a0.5 T2 prune:cosine0.5 qat`` ('' when plain)."""
        parts = []
        if self.augmentations:
            parts.append("+".join(self.augmentations) + (" sap" if self.sapaugment else ""))
        if self.kd_teacher != "none":
            rate = f"@{self.kd_teacher_rate_hz / 1000:g}k" if self.kd_teacher_rate_hz else ""
            parts.append(f"kd:{self.kd_teacher}{rate} a{self.kd_alpha:g} T{self.kd_temperature:g}")
        if self.prunes:
            parts.append(f"prune:{self.prune_criterion}" + "/".join(f"{r:g}" for r in self.prune_ratios))
        if self.qat:
            parts.append("qat")
        return " ".join(parts)


@dataclass(frozen=True, kw_only=True)
class Genome:
    """A candidate: front-end genes, an architecture (``ArchSpec``) and its training genes.

    Args:
        frontend: Front-end genes.
        arch: The CNN (stages of blocks and the head).
        learning_rate: Adam learning rate.
        training: Augmentation, schedule, distillation, pruning and QAT genes (default: plain training).

    Raises:
        UserInputError: A gene out of range, e.g. pruning ratios that do not fit the stages, or a CSSD teacher at a
            lower sample rate than the student.
    """

    frontend: FrontendGenes
    arch: ArchSpec
    learning_rate: float = 1e-3
    training: TrainingGenes = TrainingGenes()

    def __post_init__(self) -> None:
        if self.learning_rate <= 0:
            raise UserInputError(f"learning_rate must be > 0, got {self.learning_rate}")
        t = self.training
        if t.kd_teacher == "cssd" and t.kd_teacher_rate_hz < self.frontend.sample_rate_hz:
            raise UserInputError(f"the CSSD teacher's sample rate {t.kd_teacher_rate_hz} Hz is below the student's "
                                 f"{self.frontend.sample_rate_hz} Hz; it must be >= the student's (cross-sampling-rate "
                                 "distillation teaches a low-rate student from high-rate audio)")
        if t.prune_ratios:
            check_prune_ratios(self.arch, t.prune_ratios)

    @property
    def deployed_arch(self) -> ArchSpec:
        """The network that is exported and counted: ``arch`` with its stages pruned by ``training.prune_ratios``
        (``arch`` itself when nothing is pruned)."""
        if not self.training.prunes:
            return self.arch
        return pruned_arch(self.arch, self.training.prune_ratios)

    def to_dict(self) -> dict:
        """JSON-ready dict (``from_dict`` inverts it); plain training genes are left out."""
        d = {"frontend": asdict(self.frontend), "arch": self.arch.to_dict(), "learning_rate": self.learning_rate}
        training = self.training.to_dict()
        if training:
            d["training"] = training
        return d

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
                       learning_rate=float(d.get("learning_rate", 1e-3)),
                       training=TrainingGenes.from_dict(d.get("training", {})))
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
        training = self.training.summary()
        return f"{fe} | {self.arch.summary()}" + (f" | {training}" if training else "")


def patch_layout(genome: Genome) -> PatchLayout:
    """The front-end and patch layout of ``genome`` (the model input is ``layout.input_shape``).

    Raises:
        UserInputError: The front-end genes are invalid, or a patch is shorter than one frame.
    """
    layout = PatchLayout(frontend=genome.frontend.config(), chunk_s=genome.frontend.chunk_s)
    layout.patch_frames  # noqa: B018 - raises when a patch is shorter than one frame
    return layout
