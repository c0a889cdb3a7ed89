"""Named reference architectures of the field, buildable by name and trainable like any candidate.

Each reference is a ``Genome`` (its published front-end and its ``ArchSpec``) plus the figures its source
publishes, so that the tests can check the counting convention against them (DESIGN.md, "Facts to build
against"). ``reference_genome(name, sample_rate_hz=...)`` moves the front-end to another sample rate (a
reference must not ask for more than the data's native rate); the patch keeps its frames, so the
complexity does not change.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from asc_search._registry import NamedRegistry
from asc_search.search_spaces._arch import ArchSpec
from asc_search.search_spaces._genome import FrontendGenes, Genome


def frames_patch(genes: FrontendGenes, frames: int) -> FrontendGenes:
    """``genes`` with the patch length that gives exactly ``frames`` frames at its sample rate.

    Published inputs come from centred STFTs (``1 + samples / hop`` frames); our front-end is not centred
    (``1 + (samples - n_fft) // hop``), so the same input shape takes a slightly longer patch. Patches of
    1 s or more count once per 1 s clip, so the complexity is that of the published input.
    """
    cfg = replace(genes, chunk_s=1.0).config()
    samples = (frames - 1) * cfg.hop_samples + cfg.frame_samples
    return replace(genes, chunk_s=samples / genes.sample_rate_hz)


# The DCASE 2022 baseline's features: 40 log-mel bands, 40 ms window, 20 ms hop, 40x51 per 1 s.
_DCASE_LOGMEL = frames_patch(FrontendGenes(kind="logmel", sample_rate_hz=44100, n_bins=40, hop_ms=20.0, chunk_s=1.0),
                             51)


@dataclass(frozen=True, kw_only=True)
class Reference:
    """A named reference architecture.

    Args:
        name: Registry name.
        genome: Front-end and architecture as published (``learning_rate`` is ours).
        source: Paper or system it comes from, and the section / table.
        published: Figures the source publishes (``int8_bytes``, ``keras_params``, ``macs``, ``nessi_macs``,
            ``float32_bytes``...), for the tests and the report.
        note: What differs from the source and why.
    """

    name: str
    genome: Genome
    source: str
    published: dict = field(default_factory=dict)
    note: str = ""


_REFERENCES: NamedRegistry[Reference] = NamedRegistry("reference architecture",
                                                      valid_label="valid reference architectures")


def register_reference(ref: Reference) -> Reference:
    """Add ``ref`` to the registry.

    Raises:
        ValueError: The name is taken.
    """
    return _REFERENCES.register(ref)


def list_references() -> list[Reference]:
    """Registered references, sorted by name."""
    return _REFERENCES.all()


def get_reference(name: str) -> Reference:
    """The reference called ``name``.

    Raises:
        UserInputError: Unknown name; the message lists the valid names.
    """
    return _REFERENCES.get(name)


def reference_genome(name: str, *, sample_rate_hz: int | None = None) -> Genome:
    """The genome of reference ``name``, optionally at another sample rate (same frames per patch).

    Raises:
        UserInputError: Unknown name; the message lists the valid names.
    """
    g = get_reference(name).genome
    if sample_rate_hz is None or sample_rate_hz == g.frontend.sample_rate_hz:
        return g
    frames = g.frontend.config().n_frames(round(g.frontend.chunk_s * g.frontend.sample_rate_hz))
    return replace(g, frontend=frames_patch(replace(g.frontend, sample_rate_hz=int(sample_rate_hz)), frames))


register_reference(Reference(
    name="dcase2022_baseline",
    genome=Genome(frontend=_DCASE_LOGMEL, arch=ArchSpec(
        stages=(("conv_c16_k7_relu", "conv_c16_k7_relu", "maxpool_k5"), ("conv_c32_k7_relu", "maxpool_k4x10")),
        head="flatten", head_width=100, head_activation="relu", dropout=0.3)),
    source="DCASE 2022 Task 1 baseline (Keras; github.com/marmoi/dcase2022_task1_baseline, task1.yaml)",
    published={"int8_bytes": 46_512, "int8_weights": 45_816, "int32_biases": 174, "keras_params": 46_246,
               "macs": 29_203_560, "nessi_macs": 29_234_920},
    note="The second pool is (4, 10) as in the baseline's task1.yaml (its README says (4, 100)); both give 2x1.",
))

register_reference(Reference(
    name="lowcomplexity_cnn",
    genome=Genome(frontend=_DCASE_LOGMEL, arch=ArchSpec(
        stages=(("conv_c16_k3_tanh", "conv_c16_k3_relu", "avgpool_k5"), ("conv_c32_k3_tanh", "avgpool_k4x10")),
        head="flatten", head_width=100, head_activation="tanh", dropout=0.3)),
    source="the pruned-ensemble seed, Table 1: C1 16@3x3 tanh, C2 16@3x3 ReLU, AvgPool 5x5, C3 32@3x3 tanh, "
           "AvgPool 4x10, Dense 100 tanh, softmax 10, on 40x51 log-mel",
    published={"keras_params": 14_886, "macs": 5_410_000},
    note="5.41 M is rounded; exact conv + dense MACs are 5,369,960 (0.7 % below) and NeSsi's count 5,401,320 "
         "(0.2 % below).",
))

# CNN-7 of the Mel/Gammatone/CQT-ensemble seed (Pham et al. 2021, Table I, input 128x128x3). Only the first
# row of Table I could be read here ("BN - Conv [3x3] @ Cout1 = 32 - ReLU - BN - ..."); the rest is rebuilt as
# three double-conv VGG stages (32, 64, 128 channels, 2x2 average pooling) and a dense classifier, which
# gives the published 1.1 MB at 32 bits per parameter. See tests/search_spaces/test_references.py for the
# layer-by-layer comparison with the channel-restricted and decomposed variants.
_CNN7_FRONTEND = frames_patch(FrontendGenes(kind="logmel", sample_rate_hz=44100, n_bins=128, hop_ms=8.0, chunk_s=1.0,
                                            deltas=2), 128)


def _cnn7_stages(block: str) -> tuple[tuple[str, ...], ...]:
    return (("conv_c32_k3_relu", f"{block}_c32_k3_relu", "avgpool_k2"),
            (f"{block}_c64_k3_relu", f"{block}_c64_k3_relu", "avgpool_k2"),
            (f"{block}_c128_k3_relu", f"{block}_c128_k3_relu", "avgpool_k2"))


_CNN7_NOTE = ("Table I could not be read in full here: the architecture is rebuilt from its first row and the "
              "published sizes; channel restriction is the width multiplier 0.5, decomposed convolution replaces "
              "every conv but the first (whose 3 input channels are not a multiple of 4).")
register_reference(Reference(
    name="cnn7", genome=Genome(frontend=_CNN7_FRONTEND, arch=ArchSpec(stages=_cnn7_stages("conv"), dropout=0.1)),
    source="Pham et al., A Low-Complexity Deep Learning Framework for Acoustic Scene Classification, 2021, Table I",
    published={"float32_bytes": 1.1 * 2**20}, note=_CNN7_NOTE,
))
register_reference(Reference(
    name="cnn7_cr", genome=Genome(frontend=_CNN7_FRONTEND, arch=ArchSpec(stages=_cnn7_stages("conv"),
                                                                            width_multiplier=0.5, dropout=0.1)),
    source="Pham et al. 2021, §II-C: CNN-7 with channel restriction",
    published={"float32_bytes": 313 * 2**10}, note=_CNN7_NOTE,
))
register_reference(Reference(
    name="cnn7_cr_dc", genome=Genome(frontend=_CNN7_FRONTEND, arch=ArchSpec(stages=_cnn7_stages("dc"),
                                                                               width_multiplier=0.5, dropout=0.1)),
    source="Pham et al. 2021, §II-C, Fig. 2: CNN-7 with channel restriction and decomposed convolution",
    published={"float32_bytes": 42.6 * 2**10}, note=_CNN7_NOTE,
))
register_reference(Reference(
    name="freqcnn_small",
    genome=Genome(frontend=FrontendGenes(kind="logmel", sample_rate_hz=16000, n_bins=40, hop_ms=20.0, chunk_s=1.0),
                  arch=ArchSpec(stages=(("conv_c16_k3_relu", "maxpool_k2"), ("freq_c24_k3_n4_relu", "maxpool_k2"),
                                        ("freqatt_c32_k3_n2_relu",)), head="gap", dropout=0.2)),
    source="a small FreqCNN: frequency-distributed blocks (global + 4 / 2 sub-band convs) with the attention "
           "variant last",
))
