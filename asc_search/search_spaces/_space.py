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
from asc_search.search_spaces._genome import ACTIVATIONS, KERNELS, POOLS, ConvStage, FrontendGenes, Genome

SAMPLE_RATES_HZ = (1000, 2000, 4000, 8000, 16000, 22050, 32000, 44100)
CQT_F_MIN_HZ = 50.0
FULL_CLIP = 0.0


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
        min_stages: Fewest conv stages.
        max_stages: Most conv stages.
        widths: Channel choices per stage.
        kernels: Kernel choices.
        activations: Activation choices.
        pools: Pooling choices.
        head_widths: Hidden head width choices (0: none).
        dropouts: Dropout choices.
        learning_rates: Adam learning-rate choices.

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
    widths: tuple[int, ...] = (16, 24, 32, 48, 64)
    kernels: tuple[int, ...] = KERNELS
    activations: tuple[str, ...] = ACTIVATIONS
    pools: tuple[str, ...] = POOLS
    head_widths: tuple[int, ...] = (0, 32, 64)
    dropouts: tuple[float, ...] = (0.1, 0.3)
    learning_rates: tuple[float, ...] = (1e-3, 3e-3)

    def __post_init__(self) -> None:
        from asc_search.frontends import list_frontends

        for name, values in asdict(self).items():
            if isinstance(values, tuple) and not values:
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

    def to_dict(self) -> dict:
        """YAML-ready dict (lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def sample_genome(trial, options: SpaceOptions) -> Genome:
    """Sample a genome from an Optuna trial (or Ray's trial captor) with ``suggest_categorical``.

    Parameter names: ``frontend``, ``sample_rate_hz``, ``n_bins``, ``hop_ms``, ``chunk_s``, ``deltas``,
    ``n_stages``, ``s{i}_width``, ``s{i}_kernel``, ``s{i}_act``, ``s{i}_pool``, ``head_width``, ``dropout``, ``lr``.
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
    for i in range(1, params["n_stages"] + 1):
        params[f"s{i}_width"] = trial.suggest_categorical(f"s{i}_width", list(options.widths))
        params[f"s{i}_kernel"] = trial.suggest_categorical(f"s{i}_kernel", list(options.kernels))
        params[f"s{i}_act"] = trial.suggest_categorical(f"s{i}_act", list(options.activations))
        params[f"s{i}_pool"] = trial.suggest_categorical(f"s{i}_pool", list(options.pools))
    params["head_width"] = trial.suggest_categorical("head_width", list(options.head_widths))
    params["dropout"] = trial.suggest_categorical("dropout", list(options.dropouts))
    params["lr"] = trial.suggest_categorical("lr", list(options.learning_rates))
    return genome_from_params(params)


def genome_from_params(params: dict) -> Genome:
    """Rebuild the genome from the flat parameter dict ``sample_genome`` produced.

    The CQT's lowest bin is fixed at ``CQT_F_MIN_HZ``; mel and gammatone bands start at 0 Hz.

    Raises:
        KeyError: A parameter is missing.
    """
    n = int(params["n_stages"])
    kind = params["frontend"]
    return Genome(
        frontend=FrontendGenes(kind=kind, sample_rate_hz=int(params["sample_rate_hz"]), n_bins=int(params["n_bins"]),
                               hop_ms=float(params["hop_ms"]), chunk_s=float(params["chunk_s"]),
                               deltas=int(params["deltas"]), f_min_hz=CQT_F_MIN_HZ if kind == "cqt" else 0.0),
        stages=tuple(
            ConvStage(width=int(params[f"s{i}_width"]), kernel=int(params[f"s{i}_kernel"]),
                      activation=params[f"s{i}_act"], pool=params[f"s{i}_pool"])
            for i in range(1, n + 1)
        ),
        head_width=int(params["head_width"]), dropout=float(params["dropout"]), learning_rate=float(params["lr"]),
    )


def smallest_genomes(options: SpaceOptions) -> Iterator[Genome]:
    """The smallest networks of the space, one per front-end / patch / hop / pooling choice.

    A run fails fast (before Ray starts) when every one of them breaks the budget.
    """
    o = options
    params = {"sample_rate_hz": min(o.sample_rates_hz), "n_bins": min(o.n_bins), "deltas": min(o.deltas),
              "n_stages": o.min_stages, "head_width": min(o.head_widths), "dropout": o.dropouts[0],
              "lr": o.learning_rates[0]}
    for kind, chunk, hop, pool in itertools.product(o.frontends, o.chunk_s, sorted({min(o.hop_ms), max(o.hop_ms)}),
                                                    sorted({"max2", "none"} & set(o.pools)) or [o.pools[0]]):
        stages = {}
        for i in range(1, o.min_stages + 1):
            stages |= {f"s{i}_width": min(o.widths), f"s{i}_kernel": min(o.kernels), f"s{i}_act": o.activations[0],
                       f"s{i}_pool": pool}
        yield genome_from_params({**params, **stages, "frontend": kind, "chunk_s": chunk, "hop_ms": hop})
