"""``ArchSpec``: a CNN as stages of compact block strings (timm's ``arch_def``) plus global genes.

An ``ArchSpec`` is a frozen, hashable value. Its block strings are canonicalised when it is made
(``decode_block(b).encode()``), so two specs of the same network are equal and share one ``arch_id``
in any process.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from asc_search._errors import UserInputError
from asc_search.search_spaces._blocks import (
    ACTIVATIONS,
    BlockCost,
    BlockSpec,
    InfeasibleBlock,
    Shape,
    activation,
    decode_block,
)

HEADS = ("gap", "flatten")


@dataclass(frozen=True, kw_only=True)
class ArchSpec:
    """A CNN: stages of blocks, then a classifier head.

    Args:
        stages: Stages, input to output, each a tuple of block strings (``conv_c16_k7_relu``; see
            ``asc_search.search_spaces._blocks``). Canonicalised on construction.
        width_multiplier: Scales every block's width, rounded to a multiple of 4 (the "channel
            restriction" of the Mel/Gammatone/CQT-ensemble seed; timm's ``channel_multiplier``).
        depth_multiplier: Scales every block's repeats, rounded up (timm's ``depth_multiplier``).
        head: ``gap`` (global average pooling) or ``flatten`` (a dense layer over the whole last map,
            built as a conv whose kernel is that map, so the export stays 4-D: the DCASE baseline's head).
        head_width: Hidden units of the head (0: none).
        head_activation: Activation of the hidden head layer.
        dropout: Dropout before the classifier (0 <= p < 1).

    Raises:
        UserInputError: A bad block string, an empty stage, or a global gene out of range.
    """

    stages: tuple[tuple[str, ...], ...]
    width_multiplier: float = 1.0
    depth_multiplier: float = 1.0
    head: str = "gap"
    head_width: int = 0
    head_activation: str = "relu"
    dropout: float = 0.2

    def __post_init__(self) -> None:
        if not self.stages or any(not s for s in self.stages):
            raise UserInputError(f"an architecture needs at least one stage and no empty stage, got {self.stages!r}")
        canonical = tuple(tuple(decode_block(b).encode() for b in stage) for stage in self.stages)
        object.__setattr__(self, "stages", canonical)
        if not 0 < self.width_multiplier <= 4:
            raise UserInputError(f"width_multiplier must be in (0, 4], got {self.width_multiplier}")
        if not 0 < self.depth_multiplier <= 4:
            raise UserInputError(f"depth_multiplier must be in (0, 4], got {self.depth_multiplier}")
        if self.head not in HEADS:
            raise UserInputError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.head_width < 0:
            raise UserInputError(f"head_width must be >= 0, got {self.head_width}")
        if self.head_activation not in ACTIVATIONS:
            raise UserInputError(f"head_activation must be one of {ACTIVATIONS}, got {self.head_activation!r}")
        if not 0 <= self.dropout < 1:
            raise UserInputError(f"dropout must be in [0, 1), got {self.dropout}")

    def layers(self) -> list[BlockSpec]:
        """The blocks as built: widths scaled by ``width_multiplier``, each block repeated
        ``ceil(repeats · depth_multiplier)`` times (the first repeat carries the stride; pooling blocks keep their
        own repeats)."""
        out: list[BlockSpec] = []
        for stage in self.stages:
            for text in stage:
                spec = decode_block(text).scaled(self.width_multiplier)
                n = spec.repeats
                if hasattr(spec, "width"):  # pooling is not a layer the depth multiplier repeats
                    n = max(1, math.ceil(spec.repeats * self.depth_multiplier - 1e-9))
                spec = replace(spec, repeats=1)
                out.append(spec)
                for _ in range(n - 1):
                    out.append(replace(spec, stride=(1, 1)) if hasattr(spec, "stride") else spec)
        return out

    @property
    def depth(self) -> int:
        """Blocks as built (pooling blocks included)."""
        return len(self.layers())

    def to_dict(self) -> dict:
        """JSON-ready dict (``from_dict`` inverts it)."""
        d = asdict(self)
        d["stages"] = [list(s) for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ArchSpec:
        """Rebuild from ``to_dict`` output.

        Raises:
            UserInputError: A field is missing or out of range.
        """
        try:
            kwargs = dict(d)
            kwargs["stages"] = tuple(tuple(s) for s in d["stages"])
            return cls(**kwargs)
        except (KeyError, TypeError) as exc:
            raise UserInputError(f"not an architecture: {exc}") from exc

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def arch_id(self) -> str:
        """Stable 12-hex-digit hash of the canonical JSON (the same in every process)."""
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:12]

    def summary(self) -> str:
        """One line: ``conv_c16_k7_relu conv_c16_k7_relu maxpool_k5 | ... | flatten h100``."""
        stages = " | ".join(" ".join(s) for s in self.stages)
        glob = f"{self.head}"
        glob += f" h{self.head_width}{self.head_activation[0]}" if self.head_width else ""
        glob += f" w{self.width_multiplier:g}" if self.width_multiplier != 1 else ""
        glob += f" d{self.depth_multiplier:g}" if self.depth_multiplier != 1 else ""
        return f"{stages} | {glob}"


def trace(arch: ArchSpec, input_shape: Shape) -> list[tuple[BlockSpec, Shape, Shape]]:
    """Each built block with its input and output shape ``(C, H, W)``.

    Raises:
        InfeasibleBlock: A block cannot be applied (the message names the block, its index and the shape).
    """
    out, s = [], tuple(input_shape)
    for i, spec in enumerate(arch.layers()):
        try:
            o = spec.out_shape(s)
        except InfeasibleBlock as exc:
            raise InfeasibleBlock(f"block {i + 1} ({spec.encode()}) on input {s[0]}x{s[1]}x{s[2]}: {exc}") from None
        out.append((spec, s, o))
        s = o
    return out


def head_cost(arch: ArchSpec, s: Shape, n_classes: int) -> tuple[BlockCost, int]:
    """Cost of the head on the last map ``s``, and the MACs of its first dense layer when it is a flatten head
    (NeSsi counts that layer differently, see ``asc_search.constraints``)."""
    c, h, w = s
    units = ([arch.head_width] if arch.head_width else []) + [n_classes]
    weights = biases = macs = 0
    first_macs = 0
    fan_in = c * h * w if arch.head == "flatten" else c
    peak = c * h * w + (c if arch.head == "gap" else units[0])
    for i, u in enumerate(units):
        weights += fan_in * u
        biases += u
        macs += fan_in * u
        if i == 0 and arch.head == "flatten":
            first_macs = fan_in * u
        peak = max(peak, fan_in + u) if i else peak
        fan_in = u
    return BlockCost(weights=weights, biases=biases, macs=macs, peak_bytes=peak), first_macs


class Head(nn.Module):
    """Classifier head from 4-D ops: GAP or a full-map conv (flatten + dense), optional hidden layer with its
    activation, dropout, then a 1×1 conv classifier.

    Shapes:
        ``(N, C, H, W) -> (N, n_classes)`` logits.

    Args:
        arch: The head genes (``head``, ``head_width``, ``head_activation``, ``dropout``).
        s: Input ``(C, H, W)``.
        n_classes: Output classes.
    """

    def __init__(self, arch: ArchSpec, s: Shape, n_classes: int) -> None:
        super().__init__()
        c, h, w = s
        first_kernel = (h, w) if arch.head == "flatten" else (1, 1)
        layers: list[nn.Module] = [] if arch.head == "flatten" else [nn.AdaptiveAvgPool2d(1)]
        if arch.head_width:
            layers += [nn.Conv2d(c, arch.head_width, first_kernel), activation(arch.head_activation)]
            c, first_kernel = arch.head_width, (1, 1)
        layers += [nn.Dropout(arch.dropout), nn.Conv2d(c, n_classes, first_kernel), nn.Flatten(1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, n_classes)``."""
        return self.layers(x)
