"""Structured pruning: the pruned network is exactly the one ``pruned_arch`` describes (so its complexity is
known before training), the criteria remove the filters they should, and the kept channels compute what they
computed before."""

import copy
import logging
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from asc_search._errors import UserInputError
from asc_search.constraints import count_complexity, patch_layout
from asc_search.search_spaces import ArchSpec, CandidateCNN, FrontendGenes, Genome, reference_genome
from asc_search.search_spaces._blocks import (
    ConvSpec,
    DecomposedConvSpec,
    DepthwiseSeparableSpec,
    FreqSpec,
    InvertedResidualSpec,
)
from asc_search.search_spaces._pruning import (
    channel_sets,
    check_prune_ratios,
    prunable_stages,
    pruned_arch,
    unprunable_reasons,
)
from asc_search.trainers._prune import prune_model, which_channels

logger = logging.getLogger(__name__)

FRONTEND = FrontendGenes(kind="logmel", sample_rate_hz=16000, n_bins=16, hop_ms=20.0, chunk_s=0.5)  # 1x16x24
N_CLASSES = 5

# Architectures covering every prunable block kind and coupling: a dc consumer of a conv and of a dc, a freq
# block, an inverted residual with a same-stage skip (e2: its hidden channels follow its pruned input; e1: its
# depthwise does), depthwise-separable consumers, pooling between blocks, flatten and gap heads.
ARCHS = {
    "conv": (ArchSpec(stages=(("conv_c16_k3_tanh", "conv_c16_k3_relu", "avgpool_k2"), ("conv_c32_k3_tanh", "avgpool_k2")),
                      head="flatten", head_width=12, head_activation="tanh"), (0.5, 0.25)),
    "dc": (ArchSpec(stages=(("conv_c16_k3_relu",), ("dc_c16_k3_relu", "dc_c32_k3_relu", "maxpool_k2"),
                            ("dc_c16_k3_relu",)), head="gap"), (0.5, 0.5, 0.25)),
    "ds_freq_ir": (ArchSpec(stages=(("conv_c16_k3_relu", "ds_c24_k3_relu"),
                                    ("freq_c16_k3_n4_relu", "ir_c16_k3_e2_relu", "maxpool_k2"),
                                    ("ir_c24_k3_s2_e3_relu", "freqatt_c16_k3_n2_relu")),
                           head="flatten", head_width=10), (0.5, 0.5, 0.0)),
    "ir_mix": (ArchSpec(stages=(("conv_c16_k3_relu", "ir_c24_k3_e1_s2_relu", "ir_c24_k3_e1_relu"),
                                ("ds_c24_k3_silu", "ir_c32_k3_e2_s2_hardswish", "dc_c16_k3_relu"),
                                ("freq_c16_k3_n3_tanh", "ds_c8_k3_relu")), head="gap"), (0.5, 0.5, 0.5)),
    "multipliers": (ArchSpec(stages=(("conv_c16_k3_r2_relu", "maxpool_k2"), ("ds_c32_k3_r2_relu",)),
                             width_multiplier=0.75, depth_multiplier=1.5), (0.5, 0.3)),
}


def _input_shape() -> tuple[int, int, int]:
    return patch_layout(Genome(frontend=FRONTEND, arch=ARCHS["conv"][0])).input_shape


def _random_model(arch: ArchSpec, seed: int = 0) -> CandidateCNN:
    """A network with random batch-norm parameters and statistics (not the identity of a fresh model)."""
    torch.manual_seed(seed)
    model = CandidateCNN(arch, _input_shape(), N_CLASSES).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.normal_()
            m.bias.data.normal_()
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return model


def _folded_params(model: nn.Module) -> int:
    """Parameters with batch-norm folded: conv weights and one bias per conv output channel."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return sum(c.weight.numel() for c in convs) + sum(c.out_channels for c in convs)


# --- which stages can be pruned ---------------------------------------------------------------------------


@pytest.mark.parametrize("stages, expected", [
    ((("conv_c16_k3_relu", "maxpool_k2"), ("conv_c32_k3_relu",)), (True, True)),
    ((("conv_c16_k3_relu",), ("maxpool_k2",), ("conv_c8_k3_relu",)), (True, False, True)),  # pooling only
    ((("conv_c16_k3_relu", "ir_c16_k3_e2_relu"),), (True,)),  # skip inside one stage: pruned together
    ((("conv_c16_k3_relu",), ("ir_c16_k3_e2_relu",)), (False, False)),  # skip across stages couples them
    ((("conv_c16_k3_relu", "ir_c16_k3_e2_relu"), ("ir_c16_k3_e2_relu",)), (False, False)),
    ((("conv_c16_k3_relu",), ("maxpool_k2", "ir_c16_k3_e1_relu")), (False, False)),  # pooling keeps channels
    ((("conv_c16_k3_relu",), ("ir_c16_k3_s2_e2_relu",)), (True, True)),  # stride 2: no skip
    ((("conv_c16_k3_relu",), ("ir_c24_k3_e2_relu",)), (True, False)),  # 24 pruned to 16 would add a skip
    ((("conv_c24_k3_relu",), ("ir_c16_k3_e2_relu",)), (False, True)),  # 24 pruned to 16 would add a skip
    ((("conv_c16_k3_relu", "ir_c24_k3_e2_relu"),), (False,)),  # rounding could make 16 and 24 equal
    ((("ir_c16_k3_e2_relu",), ("conv_c8_k3_relu",)), (False, True)),  # skip from the network input?
    ((("conv_c16_k3_relu",), ("freqatt_c16_k3_n2_relu",), ("conv_c8_k3_relu",)), (True, False, True)),
    ((("conv_c16_k3_relu",), ("dc_c16_k3_relu",), ("freq_c8_k3_n2_relu", "ds_c8_k3_relu")), (True, True, True)),
])
def test_prunable_stages(stages, expected):
    arch = ArchSpec(stages=stages)
    assert prunable_stages(arch) == expected
    reasons = unprunable_reasons(arch)
    assert [not r for r in reasons] == list(expected)


def test_an_inverted_residual_skip_across_stages_says_why():
    arch = ArchSpec(stages=(("conv_c16_k3_relu",), ("ir_c16_k3_e2_relu",)))
    with pytest.raises(UserInputError, match=r"stage 2 is 0.5.*cannot be pruned: .*adds its input from stage 1"):
        check_prune_ratios(arch, (0.0, 0.5))


def test_channel_sets_couple_a_skip_and_split_dc_inputs_into_quarters():
    arch = ArchSpec(stages=(("conv_c16_k3_relu", "ir_c16_k3_e3_relu", "dc_c16_k3_relu"),))
    sets = channel_sets(arch, (0.5,))
    assert [(cs.layers, cs.width, cs.kept, cs.partitions, cs.hidden) for cs in sets] == [
        ((0, 1), 16, 8, 4, False),  # conv + the ir whose skip adds it; sliced by the dc into quarters
        ((1,), 48, 24, 1, True),  # the ir's expansion follows its pruned input: 16*3 -> 8*3
        ((2,), 16, 8, 4, False),  # the dc's four branches
    ]


# --- the pruned architecture -------------------------------------------------------------------------------


def test_pruned_arch_writes_out_effective_widths_and_repeats():
    arch = ARCHS["multipliers"][0]  # widths x0.75 (16 -> 12, 32 -> 24), repeats x1.5 (2 -> 3)
    assert pruned_arch(arch, (0.5, 0.3)).stages == (
        ("conv_c8_k3_relu",) * 3 + ("maxpool_k2",), ("ds_c16_k3_relu",) * 3)
    out = pruned_arch(arch, (0.5, 0.3))
    assert (out.width_multiplier, out.depth_multiplier, out.head) == (1.0, 1.0, arch.head)
    # ratio 0: the same network, written out
    same = pruned_arch(arch, (0.0, 0.0))
    a = CandidateCNN(arch, _input_shape(), N_CLASSES).state_dict()
    b = CandidateCNN(same, _input_shape(), N_CLASSES).state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


@pytest.mark.parametrize("ratios, match", [
    ((0.5,), r"1 prune ratio\(s\) \[0.5\] for 2 stage\(s\)"),
    ((0.5, 1.0), r"stage 2 is 1.0; it must be in \[0, 1\)"),
    ((-0.1, 0.0), r"stage 1 is -0.1; it must be in \[0, 1\)"),
    ((float("nan"), 0.0), r"stage 1 is nan"),
    (("0.5", 0.0), r"stage 1 is '0.5'"),
    ((0.0, 0.5), r"stage 2 is 0.5, but stage 2 \(maxpool_k2\) cannot be pruned: .*pooling only.*valid: 0"),
])
def test_bad_ratios_raise_with_the_value_and_range(ratios, match):
    arch = ArchSpec(stages=(("conv_c16_k3_relu",), ("maxpool_k2",)))
    with pytest.raises(UserInputError, match=match):
        check_prune_ratios(arch, ratios)
    with pytest.raises(UserInputError, match=match):
        pruned_arch(arch, ratios)


def test_a_ratio_that_removes_a_whole_block_is_refused():
    arch = ArchSpec(stages=(("conv_c3_k3_relu", "conv_c16_k3_relu"),))
    with pytest.raises(UserInputError, match=r"stage 1 is 0.7: it would remove every channel of its "
                                             r"3-channel block; valid for stage 1: \[0, 0.6667\]"):
        check_prune_ratios(arch, (0.7,))
    check_prune_ratios(arch, (0.6,))  # 3 * 0.4 = 1.2 channels: rounds up, keeps all 3


def test_unknown_criterion_and_wrong_model_raise():
    arch, ratios = ARCHS["conv"]
    model = _random_model(arch)
    with pytest.raises(UserInputError, match=r"unknown pruning criterion 'l2'; valid: cosine, l1"):
        prune_model(model, arch, ratios, "l2")
    other = ArchSpec(stages=(("conv_c8_k3_tanh", "conv_c16_k3_relu", "avgpool_k2"), ("conv_c32_k3_tanh", "avgpool_k2")),
                     head="flatten", head_width=12, head_activation="tanh")
    with pytest.raises(UserInputError, match=r"not the network of .*features.0.0.weight"):
        prune_model(model, other, ratios, "l1")


# --- the pruned network is exactly the one pruned_arch describes --------------------------------------------


@pytest.mark.parametrize("name, criterion", [("conv", "cosine"), ("dc", "l1"), ("ds_freq_ir", "cosine"),
                                             ("ir_mix", "l1"), ("multipliers", "cosine")])
def test_pruned_model_is_the_network_of_pruned_arch_and_counts_as_it(name, criterion):
    arch, ratios = ARCHS[name]
    assert all(ok for r, ok in zip(ratios, prunable_stages(arch), strict=True) if r > 0)
    model = _random_model(arch)
    pruned = prune_model(model, arch, ratios, criterion)
    genome = Genome(frontend=FRONTEND, arch=pruned_arch(arch, ratios))
    assert isinstance(pruned, CandidateCNN) and pruned.input_shape == model.input_shape
    expected = CandidateCNN(genome.arch, _input_shape(), N_CLASSES).state_dict()
    assert {k: v.shape for k, v in pruned.state_dict().items()} == {k: v.shape for k, v in expected.items()}
    complexity = count_complexity(genome, n_classes=N_CLASSES)
    assert _folded_params(pruned) == complexity.params < _folded_params(model)
    with FlopCounterMode(display=False) as counter:
        pruned(torch.randn(1, *_input_shape()))
    assert counter.get_total_flops() // 2 == complexity.macs_per_patch


def test_the_genome_counts_its_pruned_network():
    """A genome's pruning genes (``training.prune_ratios``) make ``count_complexity`` count the pruned net."""
    from asc_search import search_spaces

    if not hasattr(search_spaces, "TrainingGenes"):
        pytest.skip("Genome has no training genes yet")
    arch, ratios = ARCHS["dc"]
    genome = Genome(frontend=FRONTEND, arch=arch, training=search_spaces.TrainingGenes(prune_ratios=ratios))
    pruned = prune_model(_random_model(arch), arch, ratios, "cosine")
    assert count_complexity(genome, n_classes=N_CLASSES).params == _folded_params(pruned)


# --- the criteria ------------------------------------------------------------------------------------------


PLANTED = ArchSpec(stages=(("conv_c16_k3_relu",), ("conv_c8_k3_relu",)), head="gap")
PAIRS = [(2, 9), (5, 14), (11, 0), (7, 3)]  # (original, copy): the copy becomes an exact duplicate


def _planted_model() -> CandidateCNN:
    model = _random_model(PLANTED, seed=1)
    conv, bn = model.features[0][0], model.features[0][1]
    with torch.no_grad():
        for a, b in PAIRS:
            conv.weight[b] = conv.weight[a]
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                t[b] = t[a]
    return model


def test_cosine_removes_one_filter_of_each_duplicate_pair():
    model = _planted_model()
    # 16 -> 12 channels: the four duplicates are the most similar pairs; of each the later one goes
    kept = which_channels(model, PLANTED, (0.25, 0.0), "cosine")
    assert kept == {"features.0": tuple(i for i in range(16) if i not in {9, 14, 11, 7})}
    # l1 does not see duplicates: it removes other filters
    assert which_channels(model, PLANTED, (0.25, 0.0), "l1")["features.0"] != kept["features.0"]


def test_l1_removes_the_smallest_filters():
    model = _random_model(PLANTED, seed=2)
    small = [1, 4, 6, 13]
    with torch.no_grad():
        model.features[0][0].weight[small] *= 1e-3
    kept = which_channels(model, PLANTED, (0.25, 0.0), "l1")["features.0"]
    assert kept == tuple(i for i in range(16) if i not in small)


def test_pruning_duplicates_and_folding_their_weights_keeps_the_network_output():
    model = _planted_model()
    pruned = prune_model(model, PLANTED, (0.25, 0.0), "cosine").eval()
    kept = which_channels(model, PLANTED, (0.25, 0.0), "cosine")["features.0"]
    x = torch.randn(4, *_input_shape())
    with torch.no_grad():
        # the kept channels' activations are the original's
        torch.testing.assert_close(pruned.features[0](x), model.features[0](x)[:, list(kept)], rtol=0, atol=0)
        # the next conv read each removed duplicate as its twin: fold its input weights into the twin's
        nxt, orig_w = pruned.features[1][0], model.features[1][0].weight
        for a, b in PAIRS:
            gone, twin = max(a, b), min(a, b)
            nxt.weight[:, kept.index(twin)] += orig_w[:, gone]
        torch.testing.assert_close(pruned(x), model(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(prune_model(model, PLANTED, (0.25, 0.0), "cosine").eval()(x), model(x),
                                  atol=1e-3)  # without the fold, the output changes


def _zero_removed(model: CandidateCNN, arch: ArchSpec, kept: dict[str, tuple[int, ...]]) -> None:
    """Make every removed channel output exactly 0 (batch-norm scale and shift 0, then an activation with
    act(0) = 0), and the depthwise convs that read a removed channel too: removing such channels must not
    change the network's output."""
    layers = arch.layers()

    def zero(bn: nn.BatchNorm2d, idx: list[int]) -> None:
        bn.weight.data[idx] = 0
        bn.bias.data[idx] = 0

    for path, keep in kept.items():
        parts = path.split(".")
        k = int(parts[1])
        block, spec = model.features[k], layers[k]
        if len(parts) > 2:  # an inverted residual's expansion channels, then its depthwise on them
            gone = [i for i in range(block.body[0][0].out_channels) if i not in keep]
            zero(block.body[0][1], gone)
            zero(block.body[1][1], gone)
            continue
        gone = [i for i in range(spec.width) if i not in keep]
        if isinstance(spec, ConvSpec):
            zero(block[1], gone)
        elif isinstance(spec, DepthwiseSeparableSpec):
            zero(block[1][1], gone)
        elif isinstance(spec, InvertedResidualSpec):
            zero(block.body[-1][1], gone)
        elif isinstance(spec, DecomposedConvSpec):
            q = spec.width // 4
            for i, branch in enumerate((block.spatial, block.point_lo, block.point_hi, block.point_all)):
                zero(branch[1], [c - i * q for c in gone if i * q <= c < (i + 1) * q])
        elif isinstance(spec, FreqSpec):
            zero(block.global_conv[1], gone)
            for conv in block.local_convs:
                zero(conv[1], gone)
        nxt = next((j for j in range(k + 1, len(layers)) if hasattr(layers[j], "width")), None)
        if nxt is not None and isinstance(layers[nxt], DepthwiseSeparableSpec):
            zero(model.features[nxt][0][1], gone)
        if nxt is not None and isinstance(layers[nxt], InvertedResidualSpec) and layers[nxt].expansion == 1:
            zero(model.features[nxt].body[0][1], gone)


@pytest.mark.parametrize("name", ["conv", "dc", "ds_freq_ir", "ir_mix"])
@pytest.mark.parametrize("criterion", ["cosine", "l1"])
def test_the_kept_channels_compute_what_they_computed(name, criterion):
    """With the removed channels silenced beforehand, the pruned network's output equals the original's: every
    kept weight went where it belongs (next conv inputs, dc quarters, skip adds, sub-band convs, the head)."""
    arch, ratios = ARCHS[name]
    model = _random_model(arch)
    kept = which_channels(model, arch, ratios, criterion)
    assert kept  # something is pruned
    silenced = copy.deepcopy(model)
    _zero_removed(silenced, arch, kept)
    pruned = prune_model(silenced, arch, ratios, criterion).eval()
    x = torch.randn(3, *_input_shape())
    with torch.no_grad():
        out = pruned(x)
        torch.testing.assert_close(out, silenced(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(out, model(x), atol=1e-4)  # the silenced channels did matter
        # the first pruned block reads an unpruned input: its kept channels' activations are identical
        first = next(iter(kept))
        before = model.features[:int(first.split(".")[1])](x)
        torch.testing.assert_close(pruned.get_submodule(first)(before),
                                   model.get_submodule(first)(before)[:, list(kept[first])], rtol=0, atol=0)


def test_prune_model_leaves_its_input_alone_and_keeps_the_mode():
    arch, ratios = ARCHS["conv"]
    model = _random_model(arch).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = prune_model(model, arch, ratios, "cosine")
    assert pruned.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_half_of_the_lowcomplexity_cnn():
    """The pruned-ensemble seed's low-complexity CNN at 50 % cosine pruning: conv widths 16, 16, 32 -> 8, 8, 16."""
    genome = reference_genome("lowcomplexity_cnn")
    shape = patch_layout(genome).input_shape
    model = CandidateCNN(genome.arch, shape, 10)
    pruned = prune_model(model, genome.arch, (0.5, 0.5), "cosine")
    widths = [m.out_channels for m in pruned.features.modules() if isinstance(m, nn.Conv2d)]
    assert widths == [8, 8, 16]
    before = count_complexity(genome, n_classes=10)
    after = count_complexity(replace(genome, arch=pruned_arch(genome.arch, (0.5, 0.5))), n_classes=10)
    logger.info("lowcomplexity_cnn 50%% cosine: params %d -> %d, MACs %d -> %d", before.params, after.params,
                before.macs, after.macs)
    assert (before.params, after.params) == (_folded_params(model), _folded_params(pruned)) == (14_630, 6_142)
    assert (before.macs, after.macs) == (5_369_960, 1_418_280)
