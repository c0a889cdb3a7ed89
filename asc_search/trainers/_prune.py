"""Physical structured pruning of a trained ``CandidateCNN``: output channels (filters) are removed, with the
layers that depend on them (the next conv's input, batch-norms, residual adds, concatenations, the head)
pruned consistently by torch-pruning's ``DependencyGraph`` (Fang et al., "DepGraph: Towards Any Structural
Pruning", CVPR 2023).

Which channels go is decided per stage ratio by one of two passive criteria (computed from the weights only):

* ``cosine``: the similarity-based pruning of the pruned-ensemble seed (Singh & Plumbley, "A Passive
  Similarity based CNN Filter Pruning for Efficient Acoustic Scene Classification", Interspeech 2022): similar
  filters give redundant responses, so of the pair of remaining filters with the highest cosine similarity
  (of the flattened filters) one is removed — the one with the smaller L1 norm, the later one on a tie — and
  the search repeats until the ratio is met.
* ``l1``: magnitude pruning (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017): the filters with
  the smallest L1 norm (sum of absolute weights) are removed.

A channel produced by several convs (a FreqCNN block's global and sub-band convs, an inverted residual whose
skip adds it) is scored on all its filters, concatenated. The result is rebuilt as
``CandidateCNN(pruned_arch(arch, ratios), ...)`` and the pruned weights are loaded into it, so it is an
ordinary candidate whose complexity ``asc_search.constraints`` counts from the genome alone.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from asc_search._errors import UserInputError
from asc_search.search_spaces import (
    ArchSpec,
    BlockSpec,
    CandidateCNN,
    ChannelSet,
    channel_sets,
    check_prune_ratios,
    pruned_arch,
)

logger = logging.getLogger(__name__)

CRITERIA = ("cosine", "l1")

# (conv, offset): the conv's output channel i is channel offset + i of its block's output.
_Slot = tuple[nn.Conv2d, int]


def _check_criterion(criterion: str) -> None:
    if criterion not in CRITERIA:
        raise UserInputError(f"unknown pruning criterion {criterion!r}; valid: {', '.join(CRITERIA)}")


def _n_classes(model: CandidateCNN) -> int:
    return [m for m in model.head.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def _check_model(model: CandidateCNN, arch: ArchSpec) -> None:
    """Raise when ``model`` is not the network of ``arch`` (different modules or shapes)."""
    if not isinstance(model, CandidateCNN):
        raise UserInputError(f"prune a CandidateCNN, got {type(model).__name__}")
    ref = CandidateCNN(arch, model.input_shape, _n_classes(model)).state_dict()
    got = model.state_dict()
    bad = sorted(k for k in set(ref) | set(got) if k not in ref or k not in got or ref[k].shape != got[k].shape)
    if bad:
        raise UserInputError(f"the model is not the network of {arch.summary()} on input {model.input_shape}: "
                             f"{len(bad)} parameter(s) differ, first {bad[0]!r}")


def _block_filters(block: nn.Module, spec: BlockSpec) -> list[_Slot]:
    """The convs that produce a block's output channels, with the offset of their channels in its output (the
    block type's own rule, ``BlockSpec.output_convs``)."""
    if not spec.prunable:
        raise AssertionError(f"no pruning rule for {spec.encode()}")  # excluded by prunable_stages
    return spec.output_convs(block)


def _hidden_conv(block: nn.Module, spec: BlockSpec) -> nn.Conv2d:
    """The conv of a block's inner layer whose width follows its input (``BlockSpec.hidden_path``)."""
    return block.get_submodule(spec.hidden_path)[0]


def _set_filters(model: CandidateCNN, arch: ArchSpec, cs: ChannelSet) -> list[_Slot]:
    """Every conv whose filters produce the channels of ``cs`` (a skip adds an inverted residual's)."""
    layers = arch.layers()
    if cs.hidden:
        return [(_hidden_conv(model.features[cs.layers[0]], layers[cs.layers[0]]), 0)]
    return [slot for k in cs.layers for slot in _block_filters(model.features[k], layers[k])]


def _filters(scored: list[_Slot], width: int) -> list[torch.Tensor]:
    """One flattened vector per channel: the filters of every conv producing it, concatenated."""
    parts: list[list[torch.Tensor]] = [[] for _ in range(width)]
    for conv, offset in scored:
        w = conv.weight.detach().to(torch.float64)
        for i in range(w.shape[0]):
            parts[offset + i].append(w[i].flatten())
    return [torch.cat(p) for p in parts]


def _cosine_remove(vectors: torch.Tensor, n_remove: int) -> list[int]:
    """Greedy similarity-based removal (Singh & Plumbley 2022): repeatedly take the remaining pair with the
    highest cosine similarity and remove the filter with the smaller L1 norm (the later one on a tie)."""
    n = vectors.shape[0]
    unit = F.normalize(vectors, dim=1)
    sim = unit @ unit.T
    sim = sim.masked_fill(~torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))  # pairs i < j only
    norms = vectors.abs().sum(1)
    removed = []
    for _ in range(n_remove):
        i, j = divmod(int(torch.argmax(sim)), n)
        victim = j if norms[j] <= norms[i] else i
        removed.append(victim)
        sim[victim, :] = float("-inf")
        sim[:, victim] = float("-inf")
    return removed


def _l1_remove(vectors: torch.Tensor, n_remove: int) -> list[int]:
    """Magnitude pruning (Li et al. 2017): the filters with the smallest L1 norm (the later one on a tie)."""
    norms = vectors.abs().sum(1).tolist()
    return sorted(range(len(norms)), key=lambda i: (norms[i], -i))[:n_remove]


def _removed(cs: ChannelSet, scored: list[_Slot], criterion: str) -> list[int]:
    """Channels of ``cs`` to remove: the same number from each of its equal partitions."""
    vectors = _filters(scored, cs.width)
    size = cs.width // cs.partitions
    per_part = (cs.width - cs.kept) // cs.partitions
    pick = _cosine_remove if criterion == "cosine" else _l1_remove
    out: list[int] = []
    for p in range(cs.partitions):
        part = torch.stack(vectors[p * size:(p + 1) * size])
        out += [p * size + i for i in pick(part, per_part)]
    return sorted(out)


def _plan(model: CandidateCNN, arch: ArchSpec, ratios, criterion: str):
    """The channel sets that lose channels, each with the channels it loses."""
    plan = []
    for cs in channel_sets(arch, ratios):
        if cs.kept == cs.width:
            continue
        plan.append((cs, _removed(cs, _set_filters(model, arch, cs), criterion)))
    return plan


def _dependency_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of ``model``, traced on ``example_input``.

    torch-pruning infers how many channels a concatenation outputs from the input channels of the layers
    that read it, walking through a channel slice to the conv behind it. When a ``dc`` block reads another
    ``dc`` block's output, that conv reads a quarter or a half of the concatenation only, so torch-pruning
    decides the concatenation is along another dimension and maps each branch's channels one-to-one onto the
    output: right shapes, wrong weights. Here a channel slice reports its input size as 0 ("unknown"), so the
    concatenation is sized from its inputs and its offsets are right (tests/trainers/test_prune.py,
    ``test_the_kept_channels_compute_what_they_computed`` on the ``dc`` network, fails without it).
    """
    graph = tp.DependencyGraph()
    graph.REGISTERED_PRUNERS[tp.ops.OPTYPE.SLICE].get_in_channels = lambda layer: 0  # this graph's instance
    with torch.enable_grad():  # the graph is traced through autograd
        return graph.build_dependency(model, example_inputs=example_input, verbose=False)


def _concat_op(graph: tp.DependencyGraph, conv: nn.Conv2d) -> nn.Module:
    """The graph's concatenation node that joins a branched block's outputs (``BlockSpec.partitions`` > 1: the
    ``dc`` block's four branches), found downstream of the first branch's conv (through its batch-norm)."""
    frontier, seen = [graph.module2node[conv]], set()
    for _ in range(4):
        nxt = []
        for node in frontier:
            for out in node.outputs:
                if out.type == tp.ops.OPTYPE.CONCAT:
                    return out.module
                if id(out) not in seen:
                    seen.add(id(out))
                    nxt.append(out)
        frontier = nxt
    raise AssertionError("no concatenation after the first branch of a branched block")


def _key(cs: ChannelSet, k: int, spec: BlockSpec) -> str:
    return f"features.{k}.{spec.hidden_path}" if cs.hidden else f"features.{k}"


def which_channels(model: CandidateCNN, arch: ArchSpec, ratios: tuple[float, ...] | list[float],
                   criterion: str = "cosine") -> dict[str, tuple[int, ...]]:
    """The output channels each pruned block keeps (what ``prune_model`` keeps), from the weights alone.

    Args:
        model: The trained network of ``arch``.
        arch: Its architecture.
        ratios: One pruning ratio per stage (see ``check_prune_ratios``).
        criterion: ``cosine`` (Singh & Plumbley 2022) or ``l1`` (Li et al. 2017).

    Returns:
        ``{module path: kept channel indices, ascending}`` for every block that loses channels: ``features.k``
        for block k's output channels (a ``dc`` block's in the order of its concatenated output; the blocks an
        inverted-residual skip couples share one tuple), ``features.k.body.0`` for the expansion channels of an
        inverted residual whose input is pruned.

    Raises:
        UserInputError: Unknown criterion, bad ratios, or a model that is not the network of ``arch``.
    """
    _check_criterion(criterion)
    check_prune_ratios(arch, ratios)
    _check_model(model, arch)
    out = {}
    layers = arch.layers()
    for cs, removed in _plan(model, arch, ratios, criterion):
        gone = set(removed)
        kept = tuple(i for i in range(cs.width) if i not in gone)
        for k in cs.layers:
            out[_key(cs, k, layers[k])] = kept
    return out


def prune_model(model: CandidateCNN, arch: ArchSpec, ratios: tuple[float, ...] | list[float],
                criterion: str = "cosine", example_input: torch.Tensor | None = None) -> CandidateCNN:
    """Physically remove output channels of ``model`` by stage ratios, with torch-pruning's dependency graph.

    The input model is not changed. In each pruned stage every block keeps
    ``pruned_width(width, ratio)`` channels chosen by ``criterion`` (``which_channels``); the result is a new
    ``CandidateCNN(pruned_arch(arch, ratios), model.input_shape, n_classes)`` holding the pruned weights, in
    the input model's train/eval mode. The kept channels' filters, batch-norm statistics and downstream
    weights are unchanged, so the activations of kept channels in the pruned stages' first block are
    identical to the original's; the network is then usually fine-tuned.

    Shapes:
        ``example_input``: ``(1, *model.input_shape)`` (default: zeros), only traced.

    Args:
        model: The trained network of ``arch``.
        arch: Its architecture.
        ratios: Fraction of each stage's output channels to remove, one per stage, each in ``[0, 1)``.
        criterion: ``cosine`` (Singh & Plumbley 2022; the pruned-ensemble seed) or ``l1`` (Li et al. 2017).
        example_input: An input batch to trace the network with.

    Returns:
        The pruned network.

    Raises:
        UserInputError: Unknown criterion, bad ratios (``check_prune_ratios``: wrong count, out of range,
            removing a whole block, or a stage that cannot be pruned exactly), or a model that is not the
            network of ``arch``.
    """
    _check_criterion(criterion)
    check_prune_ratios(arch, ratios)
    _check_model(model, arch)
    param = next(model.parameters())
    work = copy.deepcopy(model).eval().requires_grad_(True)  # traced through autograd; the copy is dropped
    plan = _plan(work, arch, ratios, criterion)
    if example_input is None:
        example_input = torch.zeros(1, *model.input_shape, dtype=param.dtype, device=param.device)
    if plan:
        graph = _dependency_graph(work, example_input)
        layers = arch.layers()
        for cs, removed in plan:
            block, spec = work.features[cs.layers[0]], layers[cs.layers[0]]
            if cs.hidden:
                root, fn = _hidden_conv(block, spec), tp.prune_conv_out_channels
            elif spec.partitions > 1:
                # one root for the concatenated branches, in concatenated order
                root = _concat_op(graph, _block_filters(block, spec)[0][0])
                fn = graph.get_pruner_of_module(root).prune_out_channels
            else:
                root, fn = _block_filters(block, spec)[0][0], tp.prune_conv_out_channels
            graph.get_pruning_group(root, fn, idxs=removed).prune(record_history=False)
    out = CandidateCNN(pruned_arch(arch, ratios), model.input_shape, _n_classes(model)).to(param.device, param.dtype)
    out.load_state_dict(work.state_dict())  # strict: a shape mismatch here is a bug in the pruning rules
    out.train(model.training)
    logger.info("pruned %s by %s (%s): %d -> %d parameters", arch.summary(), list(ratios), criterion,
                sum(p.numel() for p in model.parameters()), sum(p.numel() for p in out.parameters()))
    return out
