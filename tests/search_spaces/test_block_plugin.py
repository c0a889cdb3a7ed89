"""A block type is one registered class: a dilated conv block defined and registered here alone is sampled by the
space, counted, built, pruned and exported to INT8 TFLite without any other file of the package knowing it."""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import optuna
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from asc_search import UserInputError
from asc_search.constraints import count_complexity
from asc_search.search_spaces import (
    STANDARD_GENES,
    ArchSpec,
    BlockCost,
    BlockGene,
    BlockSpec,
    FrontendGenes,
    Genome,
    SpaceOptions,
    TrainingGenes,
    activation,
    block_class,
    build_model,
    decode_block,
    list_blocks,
    patch_layout,
    prunable_stages,
    register_block,
    sample_genome,
    smallest_genomes,
    unprunable_reasons,
    unregister_block,
)
from asc_search.trainers import prune_model


@dataclass(frozen=True, kw_only=True)
class DilatedConvSpec(BlockSpec):
    """Dilated convolution (Yu & Koltun, "Multi-Scale Context Aggregation by Dilated Convolutions", ICLR 2016):
    ``Conv2d(k, dilation d, same padding d · (k // 2)) -> BatchNorm -> activation``, stride 1.

    Shapes: ``(C, H, W) -> (width, H, W)``.
    """

    kind: ClassVar[str] = "dil"
    TOKENS: ClassVar[dict[str, str]] = {**BlockSpec.TOKENS, "dilation": "d"}
    searchable: ClassVar[bool] = True
    prunable: ClassVar[bool] = True
    genes: ClassVar[tuple[BlockGene, ...]] = (
        STANDARD_GENES["width"], STANDARD_GENES["kernel"], BlockGene(param="dilation", field="dilation", choices=(2, 3)),
        STANDARD_GENES["act"], STANDARD_GENES["repeats"])

    width: int
    kernel: tuple[int, int] = (3, 3)
    dilation: int = 2
    activation: str = "relu"

    def out_shape(self, s):
        return (self.width, s[1], s[2])

    def cost(self, s):
        w = self.width * s[0] * self.kernel[0] * self.kernel[1]
        return BlockCost(weights=w, biases=self.width, macs=w * s[1] * s[2], bn_channels=self.width,
                         peak_bytes=s[0] * s[1] * s[2] + self.width * s[1] * s[2])

    def build(self, s):
        d = self.dilation
        return nn.Sequential(
            nn.Conv2d(s[0], self.width, self.kernel, dilation=d, padding=(d * (self.kernel[0] // 2),
                                                                          d * (self.kernel[1] // 2)), bias=False),
            nn.BatchNorm2d(self.width), activation(self.activation))

    def output_convs(self, module):
        return [(module[0], 0)]


@dataclass(frozen=True, kw_only=True)
class OpaqueDilatedSpec(DilatedConvSpec):
    """The same block without a pruning rule: the pruning code must refuse its stage and the one feeding it."""

    kind: ClassVar[str] = "odil"
    prunable: ClassVar[bool] = False


@pytest.fixture
def plugin():
    register_block(DilatedConvSpec)
    register_block(OpaqueDilatedSpec)
    try:
        yield DilatedConvSpec
    finally:
        unregister_block("dil")
        unregister_block("odil")
    assert "dil" not in list_blocks()


FRONTEND = FrontendGenes(kind="logmel", sample_rate_hz=16000, n_bins=16, hop_ms=20.0, chunk_s=0.5)  # 1x16x24
STAGES = (("conv_c8_k3_relu", "maxpool_k2"), ("dil_c16_k3_d2_r2_relu",), ("dil_c8_k5_d3_tanh",))
N_CLASSES = 5


def _arch() -> ArchSpec:  # block strings are decoded when the spec is made: after the fixture registered "dil"
    return ArchSpec(stages=STAGES, head="gap", head_width=16)


def test_the_grammar_is_the_class_and_unregistering_forgets_it(plugin):
    spec = decode_block("dil_c16_k3x5_d3_silu")
    assert spec == DilatedConvSpec(width=16, kernel=(3, 5), dilation=3, activation="silu")
    assert spec.encode() == "dil_c16_k3x5_d3_silu" and block_class("dil") is DilatedConvSpec
    with pytest.raises(UserInputError, match="kernel sizes must be odd"):
        decode_block("dil_c16_k4_relu")
    with pytest.raises(ValueError, match="already registered"):
        register_block(DilatedConvSpec)
    unregister_block("dil")
    try:
        with pytest.raises(UserInputError, match="unknown block kind 'dil'; valid: avgpool, conv"):
            decode_block("dil_c16_k3_relu")
    finally:
        register_block(DilatedConvSpec)


def test_the_space_samples_the_plugin_with_its_own_gene(plugin):
    options = SpaceOptions(block_types=("conv", "dil"), min_stages=2, max_stages=3, prune_ratios=(0.0, 0.5))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(30):
        trial = study.ask()
        genome = sample_genome(trial, options)
        study.tell(trial, 0.0)
        for i, stage in enumerate(genome.arch.stages, 1):
            if stage[0].startswith("dil_"):
                assert trial.params[f"s{i}_dilation"] in (2, 3) and f"s{i}_stride" not in trial.params
                assert decode_block(stage[0]).dilation == trial.params[f"s{i}_dilation"]
                seen.append(stage[0])
    assert seen, "the space never sampled the plugin block"
    assert any(g.arch.stages[0][0].startswith("dil_") for g in smallest_genomes(SpaceOptions(block_types=("dil",))))
    with pytest.raises(UserInputError, match="unknown block type"):
        SpaceOptions(block_types=("maxpool",))


def _folded(module: nn.Module) -> tuple[int, int]:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    dense = [m for m in module.modules() if isinstance(m, nn.Linear)]
    weights = sum(m.weight.numel() for m in convs + dense)
    return weights, sum(m.out_channels for m in convs) + sum(m.out_features for m in dense)


def test_complexity_counts_the_built_plugin(plugin):
    genome = Genome(frontend=FRONTEND, arch=_arch())
    c = count_complexity(genome, n_classes=N_CLASSES)
    model = build_model(genome, N_CLASSES).eval()
    x = torch.randn(2, *patch_layout(genome).input_shape)
    with FlopCounterMode(display=False) as counter:
        y = model(x)
    assert y.shape == (2, N_CLASSES)
    assert (c.weight_params, c.bias_params) == _folded(model)
    assert c.macs_per_patch == counter.get_total_flops() // 2 // 2
    # by hand: 1x16x24 -> conv 8 -> pool 8x8x12 -> dil 16 (twice) -> dil 8 (5x5) -> gap -> 16 -> 5
    hand = 8 * 9 + 16 * 8 * 9 + 16 * 16 * 9 + 8 * 16 * 25 + 8 * 16 + 16 * 5
    assert c.weight_params == hand


def test_pruning_prunes_the_plugin_by_its_rule_and_refuses_one_without(plugin):
    assert prunable_stages(_arch()) == (True, True, True)
    ratios = (0.0, 0.5, 0.5)
    genome = Genome(frontend=FRONTEND, arch=_arch(), training=TrainingGenes(prune_ratios=ratios))
    torch.manual_seed(0)
    model = build_model(genome, N_CLASSES, before_pruning=True)
    pruned = prune_model(model, _arch(), ratios, "l1")
    assert pruned.features[2][0].out_channels == 8 and pruned.features[4][0].out_channels == 4
    c = count_complexity(genome, n_classes=N_CLASSES)
    assert c.params == sum(_folded(pruned)) < sum(_folded(model))

    opaque = ArchSpec(stages=(("conv_c8_k3_relu",), ("odil_c16_k3_d2_relu",), ("conv_c8_k3_relu",)))
    reasons = unprunable_reasons(opaque)
    assert "without a pruning rule" in reasons[0] and "without a pruning rule" in reasons[1] and not reasons[2]
    with pytest.raises(UserInputError, match="stage 2 .* cannot be pruned"):
        Genome(frontend=FRONTEND, arch=opaque, training=TrainingGenes(prune_ratios=(0.0, 0.5, 0.0)))


@pytest.mark.slow
def test_the_plugin_exports_to_int8_tflite(plugin, tmp_path):
    """Exported and run in LiteRT: the file has the counted weights and MACs, and its INT8 logits follow the float
    model's (a random network on random inputs: no training needed to check the conversion)."""
    from asc_search.deploy import export_int8_tflite, run_int8, tflite_complexity

    genome = Genome(frontend=FRONTEND, arch=_arch())
    torch.manual_seed(0)
    model = build_model(genome, N_CLASSES).eval()
    rng = np.random.default_rng(0)
    shape = patch_layout(genome).input_shape
    calibration = rng.standard_normal((64, *shape)).astype(np.float32)
    x = rng.standard_normal((32, *shape)).astype(np.float32)
    path = export_int8_tflite(model, calibration, tmp_path / "dil.tflite", output_floor_margin=None)
    c, t = count_complexity(genome, n_classes=N_CLASSES), tflite_complexity(path)
    assert (t.int8_weights, t.int32_biases) == (c.weight_params, c.bias_params)
    assert t.macs_per_patch == pytest.approx(c.macs_per_patch, rel=0.01)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    q = run_int8(path, x)
    spread = ref.max() - ref.min()
    assert np.abs(q - ref).max() <= 0.1 * spread, (np.abs(q - ref).max(), spread)
    assert (q.argmax(1) == ref.argmax(1)).mean() >= 0.8
