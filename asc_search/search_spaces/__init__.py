"""Search spaces: the genome, its define-by-run space and the model builder."""

from asc_search.search_spaces._builder import CandidateCNN, build_model
from asc_search.search_spaces._genome import ConvStage, FrontendGenes, Genome
from asc_search.search_spaces._space import (
    FULL_CLIP,
    SpaceOptions,
    genome_from_params,
    sample_genome,
    smallest_genomes,
)

__all__ = [
    "FULL_CLIP",
    "CandidateCNN",
    "ConvStage",
    "FrontendGenes",
    "Genome",
    "SpaceOptions",
    "build_model",
    "genome_from_params",
    "sample_genome",
    "smallest_genomes",
]
