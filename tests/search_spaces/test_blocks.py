"""Contract of every registered block: shapes, backward, analytic counts against the built module and
FlopCounterMode, and a full-integer INT8 export that runs in LiteRT and TFLite-Micro on real features."""

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from asc_search import UserInputError
from asc_search.constraints import count_complexity, patch_layout
from asc_search.search_spaces import (
    ArchSpec,
    FrontendGenes,
    Genome,
    InfeasibleBlock,
    build_model,
    decode_block,
    list_blocks,
)

# One example per registered kind; together they cover every activation.
EXAMPLES = {
    "conv": "conv_c16_k5x3_s2x1_relu",
    "dc": "dc_c16_k3_tanh",
    "ds": "ds_c16_k5_s2_hardswish",
    "ir": "ir_c8_k3_e3_silu",
    "freq": "freq_c12_k3_n3_sigmoid",
    "freqatt": "freqatt_c16_k3_n4_relu",
    "maxpool": "maxpool_k3x2",
    "avgpool": "avgpool_k2x4",
}
INPUT = (8, 20, 24)  # channels (a multiple of 4 for dc), frequency bins, frames


def test_every_registered_block_has_a_contract_example():
    assert set(EXAMPLES) == set(list_blocks())


def _conv_counts(module: torch.nn.Module) -> tuple[int, int]:
    # Batch-norm folded: each conv keeps its weights and has one bias per output channel.
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    return sum(m.weight.numel() for m in convs), sum(m.out_channels for m in convs)


@pytest.mark.parametrize("kind", list(EXAMPLES))
def test_block_contract(kind):
    spec = decode_block(EXAMPLES[kind])
    assert spec.kind == kind and spec.encode() == EXAMPLES[kind]
    out = spec.out_shape(INPUT)
    cost = spec.cost(INPUT)
    module = spec.build(INPUT)
    x = torch.randn(3, *INPUT, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        y = module(x)
    assert tuple(y.shape) == (3, *out)
    assert cost.macs == counter.get_total_flops() // 2 // 3
    assert (cost.weights, cost.biases) == _conv_counts(module)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in module.parameters())
    assert max(np.prod(INPUT), np.prod(out)) < cost.peak_bytes <= 8 * (np.prod(INPUT) + np.prod(out))


def test_decomposed_convolution_has_about_one_eighth_of_the_parameters():
    """Pham et al. 2021, Fig. 2: 3x3 on Cin/4, 1x1 on each Cin/2 half, 1x1 on Cin, Cout/4 outputs each."""
    s = (64, 16, 16)
    dc, conv = decode_block("dc_c64_k3_relu").cost(s), decode_block("conv_c64_k3_relu").cost(s)
    assert dc.weights == 64 * 64 * (9 / 16 + 1 / 4 + 1 / 4)
    assert conv.weights / dc.weights == pytest.approx(8.47, abs=0.01)
    m = decode_block("dc_c8_k3_relu").build((8, 5, 5))
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in m.modules() if isinstance(c, torch.nn.Conv2d)] == [
        (2, 2, (3, 3)), (4, 2, (1, 1)), (4, 2, (1, 1)), (8, 2, (1, 1))]


def test_freq_block_local_convs_only_see_their_sub_band():
    """A change in sub-band 0 moves the local part of band 0's output only (the global conv sees all)."""
    torch.manual_seed(0)
    m = decode_block("freq_c4_k1_n2_relu").build((2, 8, 6)).eval()
    x = torch.randn(1, 2, 8, 6)
    with torch.no_grad():
        base_local = torch.cat([c(x[:, :, s:s + 4]) for c, s in zip(m.local_convs, (0, 4), strict=True)], dim=2)
        x2 = x.clone()
        x2[:, :, :4] += 1.0
        moved = torch.cat([c(x2[:, :, s:s + 4]) for c, s in zip(m.local_convs, (0, 4), strict=True)], dim=2)
    assert not torch.allclose(moved[:, :, :4], base_local[:, :, :4])
    assert torch.allclose(moved[:, :, 4:], base_local[:, :, 4:])
    assert m.sizes == [4, 4]


def test_inverted_residual_adds_through_a_quantisable_functional():
    from torch.ao.nn.quantized import FloatFunctional

    m = decode_block("ir_c8_k3_e2_relu").build((8, 6, 6))
    assert m.use_skip and isinstance(m.skip_add, FloatFunctional)
    assert not decode_block("ir_c8_k3_s2_e2_relu").build((8, 6, 6)).use_skip


def test_bad_block_strings_say_what_is_valid():
    with pytest.raises(UserInputError, match="unknown block kind 'conv3'; valid: conv, dc, ds"):
        decode_block("conv3_c16")
    with pytest.raises(UserInputError, match="bad token 'z9'.*valid tokens for conv: c<width>, k<kernel>"):
        decode_block("conv_c16_z9_relu")
    with pytest.raises(UserInputError, match="kernel sizes must be odd.*\\(4, 4\\)"):
        decode_block("conv_c16_k4_relu")
    with pytest.raises(UserInputError, match="unknown activation 'gelu'"):
        decode_block("ds_c16_k3_relu").__class__(width=16, activation="gelu")
    with pytest.raises(InfeasibleBlock, match="divisible by 4"):
        decode_block("dc_c16_k3_relu").out_shape((1, 40, 50))
    with pytest.raises(InfeasibleBlock, match="below 1x1"):
        decode_block("maxpool_k4").out_shape((8, 3, 10))


# --- INT8 export of every block on real features ------------------------------------------------------------

_FRONTEND = FrontendGenes(sample_rate_hz=16000, n_bins=40, hop_ms=20.0, chunk_s=1.0)


def _genome(kind: str) -> Genome:
    """A small net around the block under test: a 16-channel stem, the block at 32 channels, a GAP head."""
    block = EXAMPLES[kind].replace("_c16_", "_c32_").replace("_c12_", "_c32_").replace("_c8_", "_c32_")
    if kind in ("maxpool", "avgpool"):
        stages = (("conv_c16_k3_relu", "maxpool_k2"), ("conv_c32_k3_relu", block))
    else:
        stages = (("conv_c16_k3_relu", "maxpool_k2"), (block, "maxpool_k2"))
    return Genome(frontend=_FRONTEND, arch=ArchSpec(stages=stages, head="gap", head_width=32, dropout=0.1))


@pytest.fixture(scope="module")
def esc10_features(esc10):
    from asc_search.data import decode_dataset, load_manifest
    from asc_search.frontends import compute_clip_features

    data = decode_dataset(load_manifest(esc10), sample_rate_hz=16000)
    layout = patch_layout(_genome("conv"))
    return data, compute_clip_features(data, layout)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(EXAMPLES))
def test_block_exports_to_int8_tflite_and_tflm(kind, esc10_features, tmp_path):
    from asc_search.deploy import (
        export_int8_tflite,
        run_int8,
        run_int8_tflm,
        tflite_complexity,
        tflm_arena_bytes,
    )
    from asc_search.deploy._deploy import softmax_rows
    from asc_search.deploy._validate import _interpreter
    from asc_search.trainers import Normalisation, TrainSettings, clip_probabilities, fit

    data, feats = esc10_features
    g = _genome(kind)
    torch.manual_seed(0)
    train, val = np.flatnonzero(~data.is_validation), np.flatnonzero(data.is_validation)
    norm = Normalisation.fit(feats, train)
    model = build_model(g, data.n_classes)
    fit(model, feats, data.labels, train, val, norm, TrainSettings(epochs=8, learning_rate=3e-3, seed=0))
    x_train = norm.apply(feats.patches(train)[0])
    x_val = norm.apply(feats.patches(val)[0])
    calibration = x_train[np.random.default_rng(0).permutation(len(x_train))[:500]]  # the representative dataset
    path = export_int8_tflite(model.eval(), calibration, tmp_path / f"{kind}.tflite")

    c = count_complexity(g, n_classes=data.n_classes)
    t = tflite_complexity(path)
    assert t.weight_bytes == c.int8_bytes and (t.int8_weights, t.int32_biases) == (c.weight_params, c.bias_params)
    assert t.macs_per_patch == pytest.approx(c.macs_per_patch, rel=0.01)
    ops = {op["op_name"] for op in _interpreter(path, xnnpack=False)._get_ops_details()}
    assert "TRANSPOSE" not in ops, ops
    # the analytic peak of live INT8 activations is a lower bound of the TFLM arena
    arena = tflm_arena_bytes(path)
    assert c.peak_activation_bytes <= arena

    with torch.inference_mode():
        ref = torch.softmax(model(torch.from_numpy(x_val)), 1).numpy()
    owner = feats.patches(val)[1]
    int8 = {"litert": softmax_rows(run_int8(path, x_val, xnnpack=True))}
    int8["tflm"] = softmax_rows(run_int8_tflm(path, x_val, arena_size=arena))
    builtin = softmax_rows(run_int8(path, x_val, xnnpack=False))
    figures = {}
    for runtime, q in int8.items():
        clip_agree = (clip_probabilities(ref, owner, len(val)).argmax(1) ==
                      clip_probabilities(q, owner, len(val)).argmax(1)).mean()
        figures[runtime] = ((q.argmax(1) == ref.argmax(1)).mean(), clip_agree)
    print(f"{kind}: INT8/float argmax agreement (patch, clip): {figures}")
    # Post-training quantisation of these small, briefly trained nets agrees with float on 80-98 % of patches
    # (measured; near-tied patches flip, e.g. the 55 identical silent patches of ESC-10 fold 3 flip together):
    # this asserts the INT8 model is the float model, not yet the >= 98 % that needs quantisation-aware
    # training (issue 5). TFLite-Micro runs the same int8 kernels as LiteRT's builtin resolver.
    for patch_agree, clip_agree in figures.values():
        assert patch_agree >= 0.80 and clip_agree >= 0.80
    assert (int8["tflm"].argmax(1) == builtin.argmax(1)).mean() >= 0.95  # measured 97.6-98.6 %
