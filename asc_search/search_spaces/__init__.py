"""Search spaces: the genome (``ArchSpec`` of block strings), the block registry, named reference
architectures, the define-by-run space and the model builder."""

from asc_search.search_spaces._arch import HEADS, ArchSpec, Head, trace
from asc_search.search_spaces._blocks import (
    ACTIVATIONS,
    BlockCost,
    BlockSpec,
    InfeasibleBlock,
    block_class,
    decode_block,
    list_blocks,
    register_block,
    round_channels,
)
from asc_search.search_spaces._builder import CandidateCNN, build_model
from asc_search.search_spaces._genome import AUGMENTATIONS, TEACHERS, FrontendGenes, Genome, TrainingGenes
from asc_search.search_spaces._pruning import (
    check_prune_ratios,
    prunable_stages,
    pruned_arch,
    unprunable_reasons,
)
from asc_search.search_spaces._references import (
    Reference,
    get_reference,
    list_references,
    reference_genome,
    register_reference,
)
from asc_search.search_spaces._space import (
    BLOCK_TYPES,
    FULL_CLIP,
    SpaceOptions,
    genome_from_params,
    sample_genome,
    smallest_genomes,
)

__all__ = [
    "ACTIVATIONS",
    "BLOCK_TYPES",
    "FULL_CLIP",
    "HEADS",
    "ArchSpec",
    "BlockCost",
    "BlockSpec",
    "CandidateCNN",
    "AUGMENTATIONS",
    "FrontendGenes",
    "TEACHERS",
    "TrainingGenes",
    "check_prune_ratios",
    "prunable_stages",
    "pruned_arch",
    "unprunable_reasons",
    "Genome",
    "Head",
    "InfeasibleBlock",
    "Reference",
    "SpaceOptions",
    "block_class",
    "build_model",
    "decode_block",
    "genome_from_params",
    "get_reference",
    "list_blocks",
    "list_references",
    "reference_genome",
    "register_block",
    "register_reference",
    "round_channels",
    "sample_genome",
    "smallest_genomes",
    "trace",
]
