"""The define-by-run search space: samples a genome's genes from an Optuna trial.

The space is pure and cheap: it samples, builds the genome and counts its complexity (no model is
built), and records the budget's constraint values on the trial (``trial.set_constraint``, Optuna 5)
so constrained samplers learn where the feasible region is.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from asc_search._errors import UserInputError
from asc_search.frontends import frontend_class, list_frontends
from asc_search.search_spaces._arch import ArchSpec
from asc_search.search_spaces._blocks import ACTIVATIONS, BLOCKS, block_class
from asc_search.search_spaces._genome import (
    AUGMENTATIONS,
    PRUNE_CRITERIA,
    SCHEDULES,
    TEACHERS,
    FrontendGenes,
    Genome,
    TrainingGenes,
)
from asc_search.search_spaces._pruning import prunable_stages

SAMPLE_RATES_HZ = (1000, 2000, 4000, 8000, 16000, 22050, 32000, 44100)
CQT_F_MIN_HZ = frontend_class("cqt").default_f_min_hz
FULL_CLIP = 0.0
BLOCK_TYPES = ("conv", "dc", "ds", "ir", "freq", "freqatt")
"""The default ``SpaceOptions.block_types``; any registered block with ``searchable`` set may be added."""
POOLS = ("none", "max2", "avg2")


def searchable_blocks() -> list[str]:
    """Registered block kinds the space can offer as a stage's block (``BlockSpec.searchable``), sorted."""
    return [cls.kind for cls in BLOCKS.all() if cls.searchable]


@dataclass(frozen=True, kw_only=True)
class SpaceOptions:
    """Choices of each gene.

    Args:
        frontends: Front-end kinds (``logmel``, ``gammatone``, ``cqt``).
        sample_rates_hz: Sample rates (Hz), usually from ``SAMPLE_RATES_HZ``; each at most the data's native
            rate (the low-sampling-rate self-distillation seed goes down to 1-2 kHz for privacy and power).
        n_bins: Mel / gammatone / CQT bin choices.
        hop_ms: Frame hop choices (ms).
        chunk_s: Patch length choices (s); ``FULL_CLIP`` (0) stands for the longest clip of the data and is
            replaced by that length (s, rounded up to 0.1 s) when the run starts.
        deltas: Delta-channel choices (0, 1, 2).
        min_stages: Fewest stages (the depth gene).
        max_stages: Most stages.
        block_types: Block kinds per stage (``conv``, ``dc`` decomposed, ``ds`` depthwise-separable, ``ir``
            inverted residual, ``freq`` / ``freqatt`` FreqCNN, or any registered block with ``searchable``); a
            kind without ``can_start`` (``dc``: it needs a multiple of 4 input channels) is never offered for the
            first stage, whose input has 1-3 channels. Each kind's genes (``BlockSpec.genes``) take their
            choices from the attributes below (a plugin gene from its own ``BlockGene.choices``).
        widths: Channel choices per stage (multiples of 4).
        kernels: Square kernel choices (odd).
        strides: ``(frequency, time)`` stride choices of ``conv``/``dc``/``ds``/``ir`` blocks, as ``"2x1"``.
        activations: Activation choices (``relu``, ``tanh``, ``sigmoid``, ``silu``, ``hardswish``).
        pools: Pooling after each stage (``none``, ``max2``, ``avg2``: 2×2, stride 2).
        repeats: Repeats of each stage's block.
        expansions: Inverted-residual expansion ratios.
        n_subbands: FreqCNN sub-band counts.
        width_multipliers: Global width multipliers (the seed's channel restriction).
        head_widths: Hidden head width choices (0: none).
        dropouts: Dropout choices.
        learning_rates: Adam learning-rate choices.
        augmentations: Augmentations the search may switch on, each an on/off gene ``aug_<name>``.
        sapaugment: SapAugment choices (``(False,)``: never; ``(False, True)``: a gene, when an augmentation is on).
        weight_decays: Adam weight-decay choices.
        epochs: Training-epoch choices (0: the run's ``--epochs``).
        batch_sizes: Batch-size choices (0: the run's ``--batch-size``).
        warmup_epochs: Learning-rate warm-up choices (epochs).
        schedules: ``cosine`` / ``constant`` choices.
        kd_teachers: Distillation teacher choices (``none``, ``basd``, ``cssd``, ``ensemble``).
        kd_alphas: Choices of the hard-label weight α (each in [0, 1]).
        kd_temperatures: Choices of the temperature T (each > 0).
        kd_teacher_rate_hz: Sample rate of the CSSD teacher (Hz; at least every student rate); 0: not known yet
            (a run fills in the data's native rate once it has read the data).
        prune_ratios: Pruning-ratio choices of each prunable stage (each in [0, 1); ``(0.0,)``: no pruning).
        prune_criteria: ``cosine`` / ``l1`` choices.
        qat: Quantisation-aware fine-tuning choices (``(False,)``, ``(True,)`` or both).

    Raises:
        UserInputError: An empty choice list, or a value outside its valid set.
    """

    frontends: tuple[str, ...] = ("logmel",)
    sample_rates_hz: tuple[int, ...] = (16000,)
    n_bins: tuple[int, ...] = (32, 40, 64)
    hop_ms: tuple[float, ...] = (16.0, 20.0, 32.0)
    chunk_s: tuple[float, ...] = (0.5, 1.0)
    deltas: tuple[int, ...] = (0,)
    min_stages: int = 2
    max_stages: int = 4
    block_types: tuple[str, ...] = BLOCK_TYPES
    widths: tuple[int, ...] = (16, 24, 32, 48, 64)
    kernels: tuple[int, ...] = (3, 5, 7)
    strides: tuple[str, ...] = ("1x1", "2x2")
    activations: tuple[str, ...] = ACTIVATIONS
    pools: tuple[str, ...] = POOLS
    repeats: tuple[int, ...] = (1, 2)
    expansions: tuple[int, ...] = (2, 4)
    n_subbands: tuple[int, ...] = (2, 4)
    width_multipliers: tuple[float, ...] = (0.5, 0.75, 1.0)
    head_widths: tuple[int, ...] = (0, 32, 64)
    dropouts: tuple[float, ...] = (0.1, 0.3)
    learning_rates: tuple[float, ...] = (1e-3, 3e-3)
    augmentations: tuple[str, ...] = ()
    sapaugment: tuple[bool, ...] = (False,)
    weight_decays: tuple[float, ...] = (1e-4,)
    epochs: tuple[int, ...] = (0,)
    batch_sizes: tuple[int, ...] = (0,)
    warmup_epochs: tuple[int, ...] = (0,)
    schedules: tuple[str, ...] = ("cosine",)
    kd_teachers: tuple[str, ...] = ("none",)
    kd_alphas: tuple[float, ...] = (0.5,)
    kd_temperatures: tuple[float, ...] = (2.0,)
    kd_teacher_rate_hz: int = 0
    prune_ratios: tuple[float, ...] = (0.0,)
    prune_criteria: tuple[str, ...] = ("cosine",)
    qat: tuple[bool, ...] = (False,)

    def __post_init__(self) -> None:
        for name, values in asdict(self).items():
            if isinstance(values, tuple) and not values and name != "augmentations":
                raise UserInputError(f"search space option {name} is empty; give at least one value")
        unknown = sorted(set(self.frontends) - set(list_frontends()))
        if unknown:
            raise UserInputError(f"unknown front-end(s) {unknown}; valid: {', '.join(list_frontends())}")
        if any(r <= 0 for r in self.sample_rates_hz):
            raise UserInputError(f"sample rates must be > 0 Hz, got {list(self.sample_rates_hz)}")
        if set(self.deltas) - {0, 1, 2}:
            raise UserInputError(f"deltas must be 0, 1 or 2, got {list(self.deltas)}")
        if any(c < 0 for c in self.chunk_s):
            raise UserInputError(f"chunk lengths must be > 0 s (or 0 / 'full' for the full clip), got "
                                 f"{list(self.chunk_s)}")
        if not 1 <= self.min_stages <= self.max_stages:
            raise UserInputError(f"need 1 <= min_stages <= max_stages, got {self.min_stages}, {self.max_stages}")
        valid = searchable_blocks()
        bad = sorted(set(self.block_types) - set(valid))
        if bad:
            raise UserInputError(f"unknown block type(s) {bad}; valid: {', '.join(valid)}")
        if set(self.activations) - set(ACTIVATIONS):
            raise UserInputError(f"activations must be among {ACTIVATIONS}, got {list(self.activations)}")
        if set(self.pools) - set(POOLS):
            raise UserInputError(f"pools must be among {POOLS}, got {list(self.pools)}")
        if any(k < 1 or k % 2 == 0 for k in self.kernels):
            raise UserInputError(f"kernels must be odd and >= 1, got {list(self.kernels)}")
        if any(w < 4 or w % 4 for w in self.widths):
            raise UserInputError(f"widths must be multiples of 4, got {list(self.widths)}")
        for st in self.strides:
            a, _, b = st.partition("x")
            if not (a.isdigit() and b.isdigit() and int(a) >= 1 and int(b) >= 1):
                raise UserInputError(f"strides are written FxT (e.g. 2x1), got {st!r}")
        check_training_options(self)
        if not any(block_class(b).can_start for b in self.block_types):
            raise UserInputError(f"block_types {self.block_types} alone cannot start a network (e.g. dc: its input "
                                 "needs a multiple of 4 channels); add another type")

    @property
    def trains_plainly(self) -> bool:
        """Whether no training gene has a choice but the default (no augmentation, distillation, pruning, QAT)."""
        return (not self.augmentations and self.kd_teachers == ("none",) and set(self.prune_ratios) == {0.0}
                and self.qat == (False,))

    def to_dict(self) -> dict:
        """YAML-ready dict (lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def check_training_options(o) -> None:
    """Reject bad training-gene choices at configuration time (``SpaceOptions`` and ``RunConfig`` call it).

    Raises:
        UserInputError: α outside [0, 1], T <= 0, a pruning ratio outside [0, 1) (1 removes the whole layer), an
            unknown augmentation, teacher, criterion or schedule, or a CSSD teacher below a student's sample rate;
            the message names the value and the valid range.
    """
    bad = sorted(set(o.augmentations) - set(AUGMENTATIONS))
    if bad:
        raise UserInputError(f"unknown augmentation(s) {bad}; valid: {', '.join(AUGMENTATIONS)}")
    bad = sorted(set(o.kd_teachers) - set(TEACHERS))
    if bad:
        raise UserInputError(f"unknown distillation teacher(s) {bad}; valid: {', '.join(TEACHERS)}")
    for a in o.kd_alphas:
        if not 0.0 <= a <= 1.0:
            raise UserInputError(f"distillation alpha {a} is outside [0, 1] (the weight of the hard-label loss)")
    for t in o.kd_temperatures:
        if not t > 0:
            raise UserInputError(f"distillation temperature {t} must be > 0")
    for r in o.prune_ratios:
        if not 0.0 <= r < 1.0:
            raise UserInputError(f"pruning ratio {r} is outside [0, 1): a ratio of 1 or more removes the whole layer")
    bad = sorted(set(o.prune_criteria) - set(PRUNE_CRITERIA))
    if bad:
        raise UserInputError(f"unknown pruning criterion {bad}; valid: {', '.join(PRUNE_CRITERIA)}")
    bad = sorted(set(getattr(o, "schedules", ())) - set(SCHEDULES))
    if bad:
        raise UserInputError(f"unknown schedule(s) {bad}; valid: {', '.join(SCHEDULES)}")
    for name in ("epochs", "batch_sizes"):
        if any(v < 0 for v in getattr(o, name, ())):
            raise UserInputError(f"{name} choices must be >= 1 (or 0: the run's value), got {list(getattr(o, name))}")
    if any(w < 0 for w in o.weight_decays):
        raise UserInputError(f"weight decays must be >= 0, got {list(o.weight_decays)}")
    if "cssd" in o.kd_teachers:
        rates = [r for r in getattr(o, "sample_rates_hz", ()) if r > 1]
        if o.kd_teacher_rate_hz < 0:
            raise UserInputError("the cssd teacher's sample rate (kd_teacher_rate_hz / --kd-teacher-rate-hz) must be "
                                 f"> 0 Hz, or 0 for the data's native rate; got {o.kd_teacher_rate_hz}")
        low = [r for r in rates if r > o.kd_teacher_rate_hz > 0]
        if low:
            raise UserInputError(f"the CSSD teacher's sample rate {o.kd_teacher_rate_hz} Hz is below the student "
                                 f"rate(s) {low} Hz; a teacher must run at the student's rate or higher")


def sample_genome(trial, options: SpaceOptions) -> Genome:
    """Sample a genome from an Optuna trial (or Ray's trial captor) with ``suggest_categorical``.

    The space is define-by-run: the genes of stage ``i`` exist only when ``n_stages >= i``, and a stage's block
    genes are the ones its block type declares (``BlockSpec.genes``, in that order: e.g. ``expansion`` only for
    ``ir``, ``subbands`` for ``freq``/``freqatt``, ``stride`` for ``conv``/``dc``/``ds``/``ir``). Parameter names:
    ``frontend``, ``sample_rate_hz``, ``n_bins``, ``hop_ms``, ``chunk_s``, ``deltas``, ``n_stages``,
    ``s{i}_block``, then the block's ``s{i}_<gene>`` (``width``, ``kernel``, ``stride``, ``expansion``, ``subbands``,
    ``act``, ``repeats`` for the built-in blocks), ``s{i}_pool``, then ``width_mult``, ``head_width``, ``dropout``,
    ``lr`` and the training genes.
    """
    params = {
        "frontend": trial.suggest_categorical("frontend", list(options.frontends)),
        "sample_rate_hz": trial.suggest_categorical("sample_rate_hz", list(options.sample_rates_hz)),
        "n_bins": trial.suggest_categorical("n_bins", list(options.n_bins)),
        "hop_ms": trial.suggest_categorical("hop_ms", list(options.hop_ms)),
        "chunk_s": trial.suggest_categorical("chunk_s", list(options.chunk_s)),
        "deltas": trial.suggest_categorical("deltas", list(options.deltas)),
        "n_stages": trial.suggest_int("n_stages", options.min_stages, options.max_stages),
    }
    first_types = [b for b in options.block_types if block_class(b).can_start]
    for i in range(1, params["n_stages"] + 1):
        p = f"s{i}_"
        block = trial.suggest_categorical(f"{p}block", first_types if i == 1 else list(options.block_types))
        params[f"{p}block"] = block
        for gene in block_class(block).genes:
            params[p + gene.param] = trial.suggest_categorical(p + gene.param, list(gene.choices_in(options)))
        params[f"{p}pool"] = trial.suggest_categorical(f"{p}pool", list(options.pools))
    params["width_mult"] = trial.suggest_categorical("width_mult", list(options.width_multipliers))
    params["head_width"] = trial.suggest_categorical("head_width", list(options.head_widths))
    params["dropout"] = trial.suggest_categorical("dropout", list(options.dropouts))
    params["lr"] = trial.suggest_categorical("lr", list(options.learning_rates))
    params.update(_sample_training(trial, options, params))
    return genome_from_params(params)


def _sample_training(trial, o: SpaceOptions, params: dict) -> dict:
    """The training genes. Every gene is asked of the trial, a single choice too, so the trial's parameters alone
    rebuild the genome (``genome_from_params``)."""
    def pick(name: str, choices):
        return trial.suggest_categorical(name, list(choices))

    out: dict = {}
    for a in o.augmentations:
        out[f"aug_{a}"] = trial.suggest_categorical(f"aug_{a}", [False, True])
    if any(out.get(f"aug_{a}") for a in o.augmentations):
        out["sapaugment"] = pick("sapaugment", o.sapaugment)
    out["weight_decay"] = pick("weight_decay", o.weight_decays)
    out["warmup_epochs"] = pick("warmup_epochs", o.warmup_epochs)
    out["schedule"] = pick("schedule", o.schedules)
    teacher = pick("kd_teacher", o.kd_teachers)
    out["kd_teacher"] = teacher
    if teacher != "none":
        out["kd_alpha"] = pick("kd_alpha", o.kd_alphas)
        out["kd_temperature"] = pick("kd_temperature", o.kd_temperatures)
        if teacher == "cssd":
            if o.kd_teacher_rate_hz <= 0:
                raise UserInputError("the search space offers the cssd teacher but no teacher rate; set "
                                     "SpaceOptions.kd_teacher_rate_hz (Hz)")
            out["kd_teacher_rate_hz"] = pick("kd_teacher_rate_hz", [o.kd_teacher_rate_hz])
    if set(o.prune_ratios) != {0.0}:
        genome = genome_from_params(params)
        for i, ok in enumerate(prunable_stages(genome.arch), 1):
            if ok:
                out[f"s{i}_prune"] = pick(f"s{i}_prune", o.prune_ratios)
        if any(out.get(f"s{i}_prune", 0.0) for i in range(1, params["n_stages"] + 1)):
            out["prune_criterion"] = pick("prune_criterion", o.prune_criteria)
    out["qat"] = pick("qat", o.qat)
    out["epochs"] = pick("epochs", o.epochs)
    out["batch_size"] = pick("batch_size", o.batch_sizes)
    return out


def _training_genes(params: dict) -> TrainingGenes:
    n = int(params["n_stages"])
    ratios = tuple(float(params.get(f"s{i}_prune", 0.0)) for i in range(1, n + 1))
    teacher = params.get("kd_teacher", "none")
    return TrainingGenes(
        augmentations=tuple(a for a in AUGMENTATIONS if params.get(f"aug_{a}")),
        sapaugment=bool(params.get("sapaugment", False)),
        weight_decay=float(params.get("weight_decay", 1e-4)), warmup_epochs=int(params.get("warmup_epochs", 0)),
        epochs=int(params.get("epochs", 0)), batch_size=int(params.get("batch_size", 0)),
        schedule=params.get("schedule", "cosine"), kd_teacher=teacher,
        kd_alpha=float(params.get("kd_alpha", 0.5)), kd_temperature=float(params.get("kd_temperature", 2.0)),
        kd_teacher_rate_hz=int(params.get("kd_teacher_rate_hz", 0)) if teacher == "cssd" else 0,
        prune_ratios=ratios if any(ratios) else (), prune_criterion=params.get("prune_criterion", "cosine"),
        qat=bool(params.get("qat", False)))


def _block_string(params: dict, i: int) -> str:
    return block_class(params[f"s{i}_block"]).from_genes(params, f"s{i}_").encode()


def genome_from_params(params: dict) -> Genome:
    """Rebuild the genome from the flat parameter dict ``sample_genome`` produced.

    The lowest band edge is the front-end's ``Frontend.default_f_min_hz``: ``CQT_F_MIN_HZ`` for the CQT's lowest
    bin; mel and gammatone bands start at 0 Hz.

    Raises:
        KeyError: A parameter is missing.
        UserInputError: A value is out of range, or an unknown block or front-end kind.
    """
    n = int(params["n_stages"])
    kind = params["frontend"]
    stages = []
    for i in range(1, n + 1):
        stage = [_block_string(params, i)]
        pool = params[f"s{i}_pool"]
        if pool != "none":
            stage.append(f"{pool[:3]}pool_k{pool[3:]}")
        stages.append(tuple(stage))
    return Genome(
        frontend=FrontendGenes(kind=kind, sample_rate_hz=int(params["sample_rate_hz"]), n_bins=int(params["n_bins"]),
                               hop_ms=float(params["hop_ms"]), chunk_s=float(params["chunk_s"]),
                               deltas=int(params["deltas"]), f_min_hz=frontend_class(kind).default_f_min_hz),
        arch=ArchSpec(stages=tuple(stages), width_multiplier=float(params.get("width_mult", 1.0)),
                      head_width=int(params["head_width"]), dropout=float(params["dropout"])),
        learning_rate=float(params["lr"]),
        training=_training_genes(params),
    )


def smallest_genomes(options: SpaceOptions) -> Iterator[Genome]:
    """The smallest networks of the space, one per front-end / patch / hop / pooling choice.

    A run fails fast (before Ray starts) when every one of them breaks the budget.
    """
    o = options
    params = {"sample_rate_hz": min(o.sample_rates_hz), "n_bins": min(o.n_bins), "deltas": min(o.deltas),
              "n_stages": o.min_stages, "head_width": min(o.head_widths), "dropout": o.dropouts[0],
              "lr": o.learning_rates[0], "width_mult": min(o.width_multipliers)}
    cheapest = sorted(dict.fromkeys(o.block_types), key=lambda b: block_class(b).size_rank)
    for kind, chunk, hop, pool in itertools.product(o.frontends, o.chunk_s, sorted({min(o.hop_ms), max(o.hop_ms)}),
                                                    sorted({"max2", "none"} & set(o.pools)) or [o.pools[0]]):
        stages = {}
        for i in range(1, o.min_stages + 1):
            block = next(b for b in cheapest if i > 1 or block_class(b).can_start)
            stages |= {f"s{i}_block": block, f"s{i}_pool": pool}
            stages |= {f"s{i}_{g.param}": g.smallest(g.choices_in(o)) for g in block_class(block).genes}
        yield genome_from_params({**params, **stages, "frontend": kind, "chunk_s": chunk, "hop_ms": hop})
