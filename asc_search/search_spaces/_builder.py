"""Build a PyTorch model from a genome."""

from __future__ import annotations

import torch
from torch import nn

from asc_search.search_spaces._genome import Genome

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class CandidateCNN(nn.Module):
    """The CNN a genome describes.

    Shapes:
        ``(batch, 1 + deltas, n_bins, frames) -> (batch, n_classes)`` logits.

    Args:
        genome: Architecture genes.
        n_classes: Output classes.
    """

    def __init__(self, genome: Genome, n_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1 + genome.frontend.deltas
        for s in genome.stages:
            layers += [nn.Conv2d(c_in, s.width, s.kernel, padding=s.kernel // 2, bias=False),
                       nn.BatchNorm2d(s.width), _ACTIVATIONS[s.activation]()]
            if s.pool == "max2":
                layers.append(nn.MaxPool2d(2))
            elif s.pool == "avg2":
                layers.append(nn.AvgPool2d(2))
            c_in = s.width
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1)]
        if genome.head_width > 0:
            head += [nn.Conv2d(c_in, genome.head_width, 1), nn.ReLU()]
            c_in = genome.head_width
        head += [nn.Dropout(genome.dropout), nn.Conv2d(c_in, n_classes, 1), nn.Flatten(1)]
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, 1 + deltas, n_bins, frames)`` normalised features -> ``(batch, n_classes)`` logits."""
        return self.head(self.features(x))


def build_model(genome: Genome, n_classes: int) -> CandidateCNN:
    """Instantiate the network of ``genome`` with ``n_classes`` outputs."""
    return CandidateCNN(genome, n_classes)
