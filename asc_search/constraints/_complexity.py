"""Complexity of a genome, computed before any training: parameters, INT8 bytes and MACs.

One counting convention for the whole tool (it matches what the DCASE 2022 organisers count on the
TFLite file, see DESIGN.md):

* parameters with batch-norm folded into the preceding convolution (each conv then has a bias);
* INT8 bytes as TFLite stores them: weights at 1 byte, biases at 4 bytes (int32);
* MACs of convolutions and dense layers only (pooling, activations, batch-norm and the global
  average pool are not multiply-accumulates of a layer), for classifying 1 s of audio: the MACs of one
  patch times the patches that cover 1 s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from asc_search._errors import UserInputError
from asc_search.frontends import PatchLayout
from asc_search.search_spaces._genome import Genome


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
        input_shape: Model input ``(channels, n_bins, frames)``.
        buildable: False when a layer's feature map would shrink below 1×1.
        reason: Why it is not buildable ("" otherwise).
    """

    params: int
    weight_params: int
    bias_params: int
    int8_bytes: int
    macs_per_patch: int
    patches_per_second: int
    macs: int
    input_shape: tuple[int, int, int]
    buildable: bool = True
    reason: str = ""

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def patch_layout(genome: Genome) -> PatchLayout:
    """The front-end and patch layout of ``genome``.

    Raises:
        UserInputError: The front-end genes are invalid, or a patch is shorter than one frame.
    """
    layout = PatchLayout(frontend=genome.frontend.config(), chunk_s=genome.frontend.chunk_s)
    layout.patch_frames  # noqa: B018 - raises when a patch is shorter than one frame
    return layout


def count_complexity(genome: Genome, *, n_classes: int) -> Complexity:
    """Count parameters, INT8 bytes and MACs of ``genome`` analytically (no model is built).

    Args:
        genome: The candidate.
        n_classes: Output classes.

    Returns:
        The complexity; ``buildable`` is False (with the reason) when the front-end genes are invalid
        (e.g. CQT bins above Nyquist, a CQT kernel longer than the patch) or pooling shrinks a feature
        map below 1×1; counts then cover what could be counted.
    """
    try:
        layout = patch_layout(genome)
    except UserInputError as exc:
        return Complexity(params=0, weight_params=0, bias_params=0, int8_bytes=0, macs_per_patch=0,
                          patches_per_second=0, macs=0, input_shape=(0, 0, 0), buildable=False,
                          reason=f"front-end: {exc}")
    c_in, h, w = layout.input_shape
    input_shape = (c_in, h, w)
    weights = biases = macs = 0
    reason = ""
    for i, s in enumerate(genome.stages):
        weights += s.width * c_in * s.kernel * s.kernel
        biases += s.width
        macs += s.width * c_in * s.kernel * s.kernel * h * w
        c_in = s.width
        if s.pool != "none":
            h, w = h // 2, w // 2
            if (h < 1 or w < 1) and not reason:
                reason = f"stage {i + 1} pooling shrinks the feature map below 1x1 (input {input_shape[1:]})"
    for c_out in ([genome.head_width] if genome.head_width > 0 else []) + [n_classes]:
        weights += c_in * c_out
        biases += c_out
        macs += c_in * c_out
        c_in = c_out
    pps = layout.patches_per_second()
    return Complexity(
        params=weights + biases, weight_params=weights, bias_params=biases, int8_bytes=weights + 4 * biases,
        macs_per_patch=macs, patches_per_second=pps, macs=macs * pps, input_shape=input_shape,
        buildable=not reason, reason=reason,
    )
