"""The define-by-run search space: samples a genome's genes from an Optuna trial.

The space is pure and cheap: it samples, builds the genome and counts its complexity (no model is
built), and records the budget's constraint values on the trial (``trial.set_constraint``, Optuna 5)
so constrained samplers learn where the feasible region is.
"""

from __future__ import annotations

from dataclasses import dataclass

from asc_search.search_spaces._genome import ACTIVATIONS, KERNELS, POOLS, ConvStage, FrontendGenes, Genome


@dataclass(frozen=True, kw_only=True)
class SpaceOptions:
    """Choices of each gene.

    Args:
        n_mels: Mel band choices.
        hop_ms: Frame hop choices (ms).
        chunk_s: Patch length choices (s).
        min_stages: Fewest conv stages.
        max_stages: Most conv stages.
        widths: Channel choices per stage.
        kernels: Kernel choices.
        activations: Activation choices.
        pools: Pooling choices.
        head_widths: Hidden head width choices (0: none).
        dropouts: Dropout choices.
        learning_rates: Adam learning-rate choices.
    """

    n_mels: tuple[int, ...] = (32, 40, 64)
    hop_ms: tuple[float, ...] = (16.0, 20.0, 32.0)
    chunk_s: tuple[float, ...] = (0.5, 1.0)
    min_stages: int = 2
    max_stages: int = 4
    widths: tuple[int, ...] = (16, 24, 32, 48, 64)
    kernels: tuple[int, ...] = KERNELS
    activations: tuple[str, ...] = ACTIVATIONS
    pools: tuple[str, ...] = POOLS
    head_widths: tuple[int, ...] = (0, 32, 64)
    dropouts: tuple[float, ...] = (0.1, 0.3)
    learning_rates: tuple[float, ...] = (1e-3, 3e-3)


def sample_genome(trial, options: SpaceOptions) -> Genome:
    """Sample a genome from an Optuna trial (or Ray's trial captor) with ``suggest_categorical``.

    Parameter names: ``n_mels``, ``hop_ms``, ``chunk_s``, ``n_stages``, ``s{i}_width``, ``s{i}_kernel``,
    ``s{i}_act``, ``s{i}_pool``, ``head_width``, ``dropout``, ``lr``.
    """
    fe = FrontendGenes(
        n_mels=trial.suggest_categorical("n_mels", list(options.n_mels)),
        hop_ms=trial.suggest_categorical("hop_ms", list(options.hop_ms)),
        chunk_s=trial.suggest_categorical("chunk_s", list(options.chunk_s)),
    )
    n_stages = trial.suggest_int("n_stages", options.min_stages, options.max_stages)
    stages = tuple(
        ConvStage(
            width=trial.suggest_categorical(f"s{i}_width", list(options.widths)),
            kernel=trial.suggest_categorical(f"s{i}_kernel", list(options.kernels)),
            activation=trial.suggest_categorical(f"s{i}_act", list(options.activations)),
            pool=trial.suggest_categorical(f"s{i}_pool", list(options.pools)),
        )
        for i in range(1, n_stages + 1)
    )
    return Genome(
        frontend=fe, stages=stages,
        head_width=trial.suggest_categorical("head_width", list(options.head_widths)),
        dropout=trial.suggest_categorical("dropout", list(options.dropouts)),
        learning_rate=trial.suggest_categorical("lr", list(options.learning_rates)),
    )


def genome_from_params(params: dict) -> Genome:
    """Rebuild the genome from the flat parameter dict ``sample_genome`` produced.

    Raises:
        KeyError: A parameter is missing.
    """
    n = int(params["n_stages"])
    return Genome(
        frontend=FrontendGenes(n_mels=int(params["n_mels"]), hop_ms=float(params["hop_ms"]),
                               chunk_s=float(params["chunk_s"])),
        stages=tuple(
            ConvStage(width=int(params[f"s{i}_width"]), kernel=int(params[f"s{i}_kernel"]),
                      activation=params[f"s{i}_act"], pool=params[f"s{i}_pool"])
            for i in range(1, n + 1)
        ),
        head_width=int(params["head_width"]), dropout=float(params["dropout"]), learning_rate=float(params["lr"]),
    )
