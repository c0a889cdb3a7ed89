"""Complexity of a genome, computed before any training: parameters, INT8 bytes, MACs, peak RAM.

One counting convention for the whole tool, a pure function of the architecture and the front-end (it
matches what the DCASE 2022 organisers count on the TFLite file, see DESIGN.md and RECIPES.md):

* parameters with batch-norm folded into the preceding convolution (each conv then has a bias);
* INT8 bytes as TFLite stores them: weights at 1 byte, biases at 4 bytes (int32);
* MACs of convolutions and dense layers only (pooling, activations, element-wise ops and the global
  average pool are not multiply-accumulates of a layer), for classifying 1 s of audio: the MACs of one
  patch times the patches that cover 1 s (``torch.utils.flop_counter.FlopCounterMode`` / 2 per patch);
* peak activation memory: the largest sum of live INT8 tensors at any step of the forward pass.

Each block type counts itself (``BlockSpec.cost``, from the block registry); this module adds the head and sums.
``patch_layout`` lives in ``asc_search.search_spaces`` (the model builder needs it) and is re-exported here.

Also reported, for comparison with the figures DCASE participants submit:

* ``keras_params``: the parameters Keras' ``model.summary()`` shows for the same network with conv biases
  and batch-norm layers (4 per channel: gamma, beta, moving mean and variance), the convention of the
  DCASE 2022 baseline (46,246) and of the pruned-ensemble seed (14,886);
* ``nessi_macs``: MACs as NeSsi (the DCASE complexity tool) counts them on a TFLite file: it adds every
  element read by a pooling window, and counts a fully-connected layer as ``units × input.shape[-1]``, so a
  dense layer on a flattened ``(h, w, c)`` map counts ``units × c`` (the DCASE 2022 baseline's 29,234,920).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from asc_search._errors import UserInputError
from asc_search.search_spaces import (
    ArchSpec,
    BlockCost,
    Genome,
    InfeasibleBlock,
    head_cost,
    patch_layout,
    trace,
)


@dataclass(frozen=True, kw_only=True)
class Complexity:
    """Complexity figures of one candidate.

    Args:
        params: Parameters with batch-norm folded (weights + biases).
        weight_params: Weights (stored INT8, 1 byte each).
        bias_params: Biases (stored INT32, 4 bytes each).
        int8_bytes: ``weight_params + 4 * bias_params``.
        macs_per_patch: MACs of one forward pass on one patch.
        patches_per_second: Patches needed to classify 1 s of audio.
        macs: MACs to classify 1 s of audio (``macs_per_patch * patches_per_second``).
        peak_activation_bytes: Largest sum of live INT8 activation tensors (bytes, input included).
        keras_params: Parameters as Keras counts them (conv biases and 4 batch-norm parameters per channel).
        nessi_macs: MACs for 1 s of audio by NeSsi's TFLite conventions (see the module docstring).
        input_shape: Model input ``(channels, n_bins, frames)``.
        buildable: False when a block cannot be applied (e.g. a stride or pool shrinks a map below 1×1).
        reason: Why it is not buildable ("" otherwise).
    """

    params: int
    weight_params: int
    bias_params: int
    int8_bytes: int
    macs_per_patch: int
    patches_per_second: int
    macs: int
    peak_activation_bytes: int = 0
    keras_params: int = 0
    nessi_macs: int = 0
    input_shape: tuple[int, int, int]
    buildable: bool = True
    reason: str = ""

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def count_arch(arch: ArchSpec, input_shape: tuple[int, int, int], *, n_classes: int,
               patches_per_second: int = 1) -> Complexity:
    """Count the complexity of ``arch`` on patches of ``input_shape`` analytically (no model is built).

    Args:
        arch: The architecture.
        input_shape: ``(channels, n_bins, frames)`` of one patch.
        n_classes: Output classes.
        patches_per_second: Patches that cover 1 s of audio.

    Returns:
        The complexity; ``buildable`` is False (with the reason, naming the block) when a block cannot be
        applied, and the counts then cover the blocks before it.
    """
    s = tuple(input_shape)
    costs: list[BlockCost] = []
    reason = ""
    try:
        steps = trace(arch, s)
    except InfeasibleBlock as exc:
        steps, reason = [], str(exc)
    for spec, s_in, s_out in steps:
        costs.append(spec.cost(s_in))
        s = s_out
    first_dense = 0
    if not reason:
        head, first_dense = head_cost(arch, s, n_classes)
        costs.append(head)
    weights = sum(c.weights for c in costs)
    biases = sum(c.biases for c in costs)
    macs = sum(c.macs for c in costs)
    nessi = macs + sum(c.pool_ops for c in costs)
    if first_dense:
        nessi += first_dense // (s[1] * s[2]) - first_dense  # NeSsi: units x channels of the flattened map
    return Complexity(
        params=weights + biases, weight_params=weights, bias_params=biases, int8_bytes=weights + 4 * biases,
        macs_per_patch=macs, patches_per_second=patches_per_second, macs=macs * patches_per_second,
        peak_activation_bytes=max((c.peak_bytes for c in costs), default=0),
        keras_params=weights + biases + 4 * sum(c.bn_channels for c in costs),
        nessi_macs=nessi * patches_per_second, input_shape=tuple(input_shape), buildable=not reason, reason=reason,
    )


def count_complexity(genome: Genome, *, n_classes: int) -> Complexity:
    """Count parameters, INT8 bytes, MACs and peak activation memory of ``genome`` (no model is built).

    Args:
        genome: The candidate.
        n_classes: Output classes.

    Returns:
        The complexity of ``genome.deployed_arch`` (the pruned network when the genome prunes) on the patches of ``genome.frontend``; ``buildable`` is False (with
        the reason) when the front-end genes are invalid (e.g. CQT bins above Nyquist, a CQT kernel longer
        than the patch) or a block cannot be applied.
    """
    try:
        layout = patch_layout(genome)
    except UserInputError as exc:
        return Complexity(params=0, weight_params=0, bias_params=0, int8_bytes=0, macs_per_patch=0,
                          patches_per_second=0, macs=0, input_shape=(0, 0, 0), buildable=False,
                          reason=f"front-end: {exc}")
    return count_arch(genome.deployed_arch, layout.input_shape, n_classes=n_classes,
                      patches_per_second=layout.patches_per_second())
