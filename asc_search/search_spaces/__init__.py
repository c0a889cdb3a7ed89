"""Search spaces: the genome (``ArchSpec`` of block strings), the block registry, named reference
architectures, the define-by-run space and the model builder.

A block type is one registered ``BlockSpec`` subclass that owns its string grammar, its genes, its cost, its
module and its pruning rule (``register_block`` / ``unregister_block``); the space, the complexity count, the
pruning code and the exporter ask the registry."""

from asc_search.search_spaces._arch import HEADS, ArchSpec, Head, head_cost, trace
from asc_search.search_spaces._blocks import (
    ACTIVATIONS,
    BLOCKS,
    STANDARD_GENES,
    BlockCost,
    BlockGene,
    BlockSpec,
    ConvBNAct,
    InfeasibleBlock,
    activation,
    block_class,
    decode_block,
    list_blocks,
    register_block,
    round_channels,
    unregister_block,
)
from asc_search.search_spaces._builder import CandidateCNN, build_model
from asc_search.search_spaces._genome import (
    AUGMENTATIONS,
    TEACHERS,
    FrontendGenes,
    Genome,
    TrainingGenes,
    patch_layout,
)
from asc_search.search_spaces._pruning import (
    ChannelSet,
    channel_sets,
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
    check_training_options,
    genome_from_params,
    sample_genome,
    searchable_blocks,
    smallest_genomes,
)

__all__ = [
    "ACTIVATIONS",
    "AUGMENTATIONS",
    "BLOCKS",
    "BLOCK_TYPES",
    "FULL_CLIP",
    "HEADS",
    "STANDARD_GENES",
    "TEACHERS",
    "ArchSpec",
    "BlockCost",
    "BlockGene",
    "BlockSpec",
    "CandidateCNN",
    "ChannelSet",
    "ConvBNAct",
    "FrontendGenes",
    "Genome",
    "Head",
    "InfeasibleBlock",
    "Reference",
    "SpaceOptions",
    "TrainingGenes",
    "activation",
    "block_class",
    "build_model",
    "channel_sets",
    "check_prune_ratios",
    "check_training_options",
    "decode_block",
    "genome_from_params",
    "get_reference",
    "head_cost",
    "list_blocks",
    "list_references",
    "patch_layout",
    "prunable_stages",
    "pruned_arch",
    "reference_genome",
    "register_block",
    "register_reference",
    "round_channels",
    "sample_genome",
    "searchable_blocks",
    "smallest_genomes",
    "trace",
    "unprunable_reasons",
    "unregister_block",
]
