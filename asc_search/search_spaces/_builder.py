"""Build a PyTorch model from a genome."""

from __future__ import annotations

import torch
from torch import nn

from asc_search._errors import UserInputError
from asc_search.search_spaces._arch import ArchSpec, Head, trace
from asc_search.search_spaces._blocks import InfeasibleBlock, Shape
from asc_search.search_spaces._genome import Genome, patch_layout


class CandidateCNN(nn.Module):
    """The CNN an ``ArchSpec`` describes, for a fixed input shape.

    Shapes:
        ``(batch, C, H, W) -> (batch, n_classes)`` logits, with ``(C, H, W) = input_shape``
        (``1 + deltas`` channels, frequency bins, frames).

    Args:
        arch: The architecture.
        input_shape: ``(C, H, W)`` of one patch.
        n_classes: Output classes.

    Raises:
        UserInputError: The architecture cannot be built on ``input_shape`` (the message names the block).
    """

    def __init__(self, arch: ArchSpec, input_shape: Shape, n_classes: int) -> None:
        super().__init__()
        try:
            steps = trace(arch, input_shape)
        except InfeasibleBlock as exc:
            raise UserInputError(f"cannot build {arch.summary()}: {exc}") from None
        self.input_shape = tuple(input_shape)
        self.features = nn.Sequential(*(spec.build(s_in) for spec, s_in, _ in steps))
        last = steps[-1][2] if steps else tuple(input_shape)
        self.head = Head(arch, last, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, C, H, W)`` normalised features -> ``(batch, n_classes)`` logits."""
        return self.head(self.features(x))


def build_model(genome: Genome, n_classes: int, *, before_pruning: bool = False) -> CandidateCNN:
    """Instantiate the network of ``genome`` for its front-end's patch shape, with ``n_classes`` outputs.

    Args:
        genome: The candidate.
        n_classes: Output classes.
        before_pruning: Build ``genome.arch`` (the network trained before pruning) instead of
            ``genome.deployed_arch`` (the pruned network that is fine-tuned, exported and counted); the same network
            when the genome prunes nothing.

    Raises:
        UserInputError: The genome cannot be built (invalid front-end genes, or a block that does not fit).
    """
    arch = genome.arch if before_pruning else genome.deployed_arch
    return CandidateCNN(arch, patch_layout(genome).input_shape, n_classes)
