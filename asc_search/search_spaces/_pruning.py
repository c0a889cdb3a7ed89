"""Structured (filter) pruning as a function of the genome: which stages can be pruned, and the exact
architecture a pruning leaves, known before anything is trained.

A pruning ratio ``r`` of a stage removes that fraction of the output channels of every block of the stage
(repeats included): a block of effective width ``c`` (after ``width_multiplier``) keeps
``min(c, round_channels(c · (1 - r), 4))`` channels. The pruned network is then exactly the network that
``pruned_arch`` describes: ``CandidateCNN(pruned_arch(arch, ratios), input_shape, n_classes)`` has the same
modules and state-dict keys and shapes as the physically pruned model (``asc_search.trainers._prune``), so the
complexity of a pruning genome is counted analytically like any other (``asc_search.constraints``).

Each block type states its own rule (class attributes of ``BlockSpec``: ``prunable``, ``prune_refusal``,
``passes_channels``, ``partitions``, ``input_partitions``, and the methods ``residual`` and ``hidden_factor``); this
module only combines them. Which stages can be pruned exactly (``prunable_stages``), for the built-in blocks:

* ``conv``, ``ds`` (its depthwise conv follows its input), ``freq`` (the global and every sub-band conv of an
  output channel are removed together: they are added), ``dc`` (the four concatenated branches lose the same
  number of channels each, so the rebuilt block's quarters are the kept ones), ``ir`` (its expansion, whose
  width is ``c_in · e``, is pruned to ``c_in' · e`` when its input is pruned).
* A block fed by a pruned stage adapts: its input channels are removed; a ``dc`` consumer's input is pruned by
  quarters (equal counts from each quarter, as its branches slice the input by quarters).
* Not prunable: pooling-only stages (no channels of their own); stages with a ``freqatt`` block (its channel
  attention bottleneck ``max(4, C / 4)`` and its channel-mean spatial gate are not pruned consistently);
  stages with a block kind that has no pruning rule here, and the stage that feeds one.
* Inverted residuals with stride 1 add their input to their output when ``c_in == width``. Such a skip couples
  the input's channels with the block's: allowed when both are in the same stage (they keep the same width
  and the same channels); a skip across stages makes both stages unprunable, and so does a skip from the
  network input (whose channel count the architecture does not fix). Where ``c_in != width``, pruning must
  not make the skip appear: the stage whose pruning could equalise the widths is unprunable (both, when they
  are the same stage, since rounding can collapse two widths to one).

Stages are numbered from 1 in messages, from 0 in indices.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace

from asc_search._errors import UserInputError
from asc_search.search_spaces._arch import ArchSpec
from asc_search.search_spaces._blocks import BlockSpec, round_channels

DIVISOR = 4
"""Pruned widths are rounded to multiples of this (``round_channels``), as the width multiplier's are."""


@dataclass(frozen=True, kw_only=True)
class ChannelSet:
    """Output channels that are pruned together, in the order of the producing block's output.

    Args:
        stage: Stage (0-based) whose ratio prunes them.
        layers: Indices into ``ArchSpec.layers()`` of the blocks whose outputs these channels are: the first
            produces them, the others are inverted residuals whose skip adds them (or, for ``hidden``, the
            inverted residual whose expansion channels they are).
        width: Channels before pruning.
        kept: Channels after pruning (``width`` when this set is not pruned).
        partitions: 1, or 4 when the channels are four equal contiguous parts that must lose the same number
            each (a ``dc`` block's branches, or the input quarters a ``dc`` consumer slices).
        hidden: True for the expansion channels of an inverted residual whose input is pruned
            (``c_in · e -> c_in' · e``).
    """

    stage: int
    layers: tuple[int, ...]
    width: int
    kept: int
    partitions: int = 1
    hidden: bool = False


def pruned_width(width: int, ratio: float) -> int:
    """Channels a block of ``width`` keeps at pruning ratio ``ratio``:
    ``min(width, round_channels(width · (1 - ratio), 4))`` (``width`` itself for ratio 0)."""
    if ratio <= 0:
        return width
    return min(width, round_channels(width * (1.0 - ratio), DIVISOR))


def stage_layers(arch: ArchSpec) -> list[list[BlockSpec]]:
    """The blocks of each stage as ``ArchSpec.layers()`` builds them (widths scaled by the width multiplier,
    repeats written out); concatenated they are ``arch.layers()``."""
    return [replace(arch, stages=(stage,)).layers() for stage in arch.stages]


def _flat(arch: ArchSpec) -> list[tuple[int, BlockSpec]]:
    return [(s, spec) for s, specs in enumerate(stage_layers(arch)) for spec in specs]


def _stage_text(arch: ArchSpec, s: int) -> str:
    return " ".join(arch.stages[s])


def unprunable_reasons(arch: ArchSpec) -> tuple[str, ...]:
    """For each stage, why it cannot be pruned exactly ("" when it can). See the module docstring.

    Args:
        arch: The architecture.

    Returns:
        One string per stage.
    """
    flat = _flat(arch)
    reasons = ["" for _ in arch.stages]

    def mark(s: int | None, why: str) -> None:
        if s is not None and not reasons[s]:
            reasons[s] = why

    for s, specs in enumerate(stage_layers(arch)):
        if not any(hasattr(spec, "width") for spec in specs):
            mark(s, "it has no channels of its own (pooling only)")
    # The producer of the current channels: (stage, width) of the last block with a width; None = the network
    # input (or an unknown block's output), whose channel count the architecture does not fix.
    prev: tuple[int, int] | None = None
    for k, (s, spec) in enumerate(flat):
        where = f"{spec.encode()} (block {k + 1})"
        if spec.passes_channels:
            continue
        if spec.prune_refusal:
            mark(s, f"{where} {spec.prune_refusal}")
        elif not spec.prunable:
            mark(s, f"{where} is a block kind without a pruning rule")
            mark(prev[0] if prev else None, f"it feeds {where}, a block kind without a pruning rule")
            prev = (s, spec.width) if hasattr(spec, "width") else None
            continue
        if spec.residual():
            if prev is None:
                mark(s, f"{where} may add the network input (whose channels the architecture does not fix) "
                        "to its output")
            else:
                ps, c_in = prev
                if c_in == spec.width and ps != s:
                    why = (f"{where} adds its input from stage {ps + 1} to its output: the skip couples the "
                           f"widths of stages {ps + 1} and {s + 1}")
                    mark(s, why)
                    mark(ps, why)
                elif c_in != spec.width and ps == s:
                    mark(s, f"{where} has no skip ({c_in} -> {spec.width} channels), but pruning this stage "
                            "could round both widths to one and make the skip appear")
                elif c_in < spec.width:
                    mark(s, f"{where} has no skip ({c_in} -> {spec.width} channels); pruning it to {c_in} "
                            "channels would make the skip appear")
                elif c_in > spec.width:
                    mark(ps, f"it feeds {where} ({c_in} -> {spec.width} channels, no skip); pruning it to "
                             f"{spec.width} channels would make the skip appear")
        prev = (s, spec.width)
    return tuple(reasons)


def prunable_stages(arch: ArchSpec) -> tuple[bool, ...]:
    """Whether each stage may get a pruning ratio > 0 such that the pruned network is exactly
    ``CandidateCNN(pruned_arch(arch, ratios), ...)`` for any ratios of the prunable stages.

    Args:
        arch: The architecture.

    Returns:
        One flag per stage (``unprunable_reasons`` says why a stage is not).
    """
    return tuple(not r for r in unprunable_reasons(arch))


def check_prune_ratios(arch: ArchSpec, ratios: tuple[float, ...] | list[float]) -> None:
    """Check pruning ratios against the architecture.

    Args:
        arch: The architecture.
        ratios: Fraction of each stage's output channels to remove, one per stage, each in ``[0, 1)``;
            0 leaves the stage untouched.

    Raises:
        UserInputError: Wrong number of ratios; a ratio outside ``[0, 1)``; a ratio that would remove every
            channel of a block (``width · (1 - r) < 1``); a ratio > 0 on a stage that cannot be pruned exactly
            (the message says why). Each message names the stage, the value and the valid range.
    """
    ratios = tuple(ratios)
    if len(ratios) != len(arch.stages):
        raise UserInputError(f"{len(ratios)} prune ratio(s) {list(ratios)} for {len(arch.stages)} stage(s); give "
                             "one ratio per stage, each in [0, 1) (0 leaves the stage untouched)")
    reasons = unprunable_reasons(arch)
    for s, (r, specs) in enumerate(zip(ratios, stage_layers(arch), strict=True)):
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or not math.isfinite(r) or not 0 <= r < 1:
            raise UserInputError(f"prune ratio of stage {s + 1} is {r!r}; it must be in [0, 1)")
        if r == 0:
            continue
        if reasons[s]:
            raise UserInputError(f"prune ratio of stage {s + 1} is {r}, but stage {s + 1} "
                                 f"({_stage_text(arch, s)}) cannot be pruned: {reasons[s]}; valid: 0")
        widths = [spec.width for spec in specs if hasattr(spec, "width")]
        narrowest = min(widths)
        if narrowest * (1 - r) < 1:
            raise UserInputError(f"prune ratio of stage {s + 1} is {r}: it would remove every channel of its "
                                 f"{narrowest}-channel block; valid for stage {s + 1}: [0, {1 - 1 / narrowest:.4g}]")


def pruned_arch(arch: ArchSpec, ratios: tuple[float, ...] | list[float]) -> ArchSpec:
    """The architecture left after pruning: each block's effective width replaced by ``pruned_width``, with
    ``width_multiplier = depth_multiplier = 1`` and the repeats written out, so that ``layers()`` gives exactly
    the pruned network (also when every ratio is 0: the same network, written out).

    Args:
        arch: The architecture before pruning.
        ratios: One per stage, each in ``[0, 1)`` (see ``check_prune_ratios``).

    Returns:
        The pruned architecture (the head is unchanged).

    Raises:
        UserInputError: Bad ratios (``check_prune_ratios``).
    """
    check_prune_ratios(arch, ratios)
    stages = tuple(
        tuple((replace(spec, width=pruned_width(spec.width, r)) if hasattr(spec, "width") else spec).encode()
              for spec in specs)
        for r, specs in zip(ratios, stage_layers(arch), strict=True))
    return replace(arch, stages=stages, width_multiplier=1.0, depth_multiplier=1.0)


def channel_sets(arch: ArchSpec, ratios: tuple[float, ...] | list[float]) -> list[ChannelSet]:
    """The sets of output channels of ``arch.layers()`` that are pruned together, with their pruned sizes.

    Every block with a width starts a set, except a block with a skip (``residual()``: an inverted residual of
    stride 1), which joins the set of its input (the add couples them). A block with an inner layer that follows
    its input (``hidden_factor()``: an inverted residual's expansion > 1) adds a ``hidden`` set when its input set
    is pruned. Sets fed into a block with ``input_partitions`` (``dc``: 4), and the set of a block with
    ``partitions`` (``dc``: 4), have that many partitions.

    Args:
        arch: The architecture.
        ratios: One per stage (see ``check_prune_ratios``).

    Returns:
        The sets, in the order of their first block.

    Raises:
        UserInputError: Bad ratios (``check_prune_ratios``).
    """
    check_prune_ratios(arch, ratios)
    built: list[dict] = []
    cur: int | None = None  # the set the current channels belong to; None: network input / unknown
    for k, (s, spec) in enumerate(_flat(arch)):
        if spec.passes_channels:
            continue
        if not hasattr(spec, "width"):  # an unknown block without a width: its channels are unknown
            cur = None
            continue
        into = built[cur] if cur is not None else None
        if into is not None and spec.input_partitions > 1:
            into["partitions"] = spec.input_partitions
        factor = spec.hidden_factor()
        if into is not None and factor and into["kept"] < into["width"]:
            built.append(dict(stage=into["stage"], layers=[k], width=into["width"] * factor,
                              kept=into["kept"] * factor, partitions=1, hidden=True))
        if into is not None and spec.residual() and into["width"] == spec.width:
            into["layers"].append(k)
            continue
        r = ratios[s]
        built.append(dict(stage=s, layers=[k], width=spec.width, kept=pruned_width(spec.width, r),
                          partitions=spec.partitions, hidden=False))
        cur = len(built) - 1
    sets = [ChannelSet(stage=b["stage"], layers=tuple(b["layers"]), width=b["width"], kept=b["kept"],
                       partitions=b["partitions"], hidden=b["hidden"]) for b in built]
    for cs in sets:
        if cs.partitions > 1 and (cs.width % cs.partitions or cs.kept % cs.partitions):
            raise AssertionError(f"channel set {cs} cannot be split into {cs.partitions} equal parts")
    return sets
