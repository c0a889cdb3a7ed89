import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from asc_search import UserInputError
from asc_search.constraints import count_complexity, get_budget, list_budgets
from asc_search.search_spaces import ArchSpec, FrontendGenes, Genome, build_model

GENOMES = [
    Genome(frontend=FrontendGenes(sample_rate_hz=16000, n_bins=40, hop_ms=20, chunk_s=1.0),
           arch=ArchSpec(stages=(("conv_c16_k7_relu", "maxpool_k2"), ("conv_c32_k3_tanh", "avgpool_k2")))),
    Genome(frontend=FrontendGenes(sample_rate_hz=16000, n_bins=64, hop_ms=16, chunk_s=0.5, deltas=2),
           arch=ArchSpec(stages=(("conv_c8_k5_tanh",), ("ir_c24_k3_e2_silu", "maxpool_k2"),
                                 ("dc_c48_k3_hardswish", "maxpool_k2"), ("freqatt_c16_k7_n2_sigmoid",)), head_width=64)),
]


@pytest.mark.parametrize("genome", GENOMES, ids=lambda g: g.genome_id)
def test_analytic_counts_match_the_built_model(genome):
    c = count_complexity(genome, n_classes=10)
    model = build_model(genome, 10).eval()
    # BN folded: each conv keeps its weights and gains a bias (= BN's shift); BN's own parameters go.
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].in_channels == c.input_shape[0] == 1 + genome.frontend.deltas
    weights = sum(m.weight.numel() for m in convs)
    biases = sum(m.out_channels for m in convs)
    assert (c.weight_params, c.bias_params) == (weights, biases)
    assert c.int8_bytes == weights + 4 * biases
    x = torch.zeros(1, *c.input_shape)
    with FlopCounterMode(display=False) as fc:
        model(x)
    assert c.macs_per_patch == fc.get_total_flops() // 2
    assert c.macs == c.macs_per_patch * c.patches_per_second


def test_pooling_below_1x1_is_not_buildable():
    g = Genome(frontend=FrontendGenes(sample_rate_hz=16000, n_bins=32, hop_ms=32, chunk_s=0.5),
               arch=ArchSpec(stages=tuple(("conv_c8_k3_relu", "maxpool_k2") for _ in range(4))))
    c = count_complexity(g, n_classes=10)
    assert not c.buildable and "below 1x1" in c.reason
    assert any("below 1x1" in r for r in get_budget("dcase2022").check(c))


def test_budget_presets_and_unknown_budget_lists_names():
    b = get_budget("dcase2022")
    assert (b.max_int8_bytes, b.max_macs) == (128_000, 30_000_000)
    assert {"dcase2022", "dcase2024", "cortex-m4", "phone", "none"} <= {x.name for x in list_budgets()}
    m4 = get_budget("cortex-m4")
    assert (m4.max_params, m4.max_macs, m4.max_peak_ram_bytes) == (128_000, 30_000_000, 131_072)
    assert "128 kB" in get_budget("dcase2024").source and "131,072 B peak activation RAM" in m4.describe()
    with pytest.raises(UserInputError, match="unknown budget 'dcase2099'; valid budgets: .*dcase2022"):
        get_budget("dcase2099")


def test_budget_check_names_each_broken_limit():
    c = count_complexity(GENOMES[1], n_classes=10)
    reasons = get_budget("dcase2022").check(c)
    assert c.macs > 30_000_000 and any(r.startswith("macs") for r in reasons)
    assert get_budget("dcase2022").violations(c)["macs"] > 0


def test_invalid_front_end_genes_are_not_buildable_with_the_reason():
    # A CQT from 50 Hz needs 8192-sample frames: longer than a 0.5 s patch at 16 kHz.
    g = Genome(frontend=FrontendGenes(kind="cqt", sample_rate_hz=16000, n_bins=40, hop_ms=16, chunk_s=0.5,
                                      f_min_hz=50.0),
               arch=ArchSpec(stages=(("conv_c8_k3_relu", "maxpool_k2"),)))
    c = count_complexity(g, n_classes=10)
    assert not c.buildable and c.reason.startswith("front-end:")
    assert get_budget("dcase2022").check(c)
    ok = Genome(frontend=FrontendGenes(kind="cqt", sample_rate_hz=16000, n_bins=40, hop_ms=16, chunk_s=1.0,
                                       f_min_hz=50.0), arch=g.arch)
    assert count_complexity(ok, n_classes=10).buildable


def test_peak_ram_and_parameter_limits_reject_with_the_figure():
    g = Genome(frontend=FrontendGenes(sample_rate_hz=16000, n_bins=64, hop_ms=16, chunk_s=1.0),
               arch=ArchSpec(stages=(("conv_c64_k3_relu", "maxpool_k2"), ("conv_c64_k3_relu",))))
    c = count_complexity(g, n_classes=10)
    # the largest live set is the pool's input (64x64x61) and output (64x32x30), at one byte each
    assert c.peak_activation_bytes == 64 * 64 * 61 + 64 * 32 * 30
    reasons = get_budget("cortex-m4").check(c)
    assert any(r.startswith(f"peak activation memory {c.peak_activation_bytes:,} B > 131,072 B") for r in reasons)
    assert get_budget("cortex-m4").violations(c)["peak_ram"] > 0
    assert get_budget("dcase2022").check(c) == [f"macs {c.macs:,} > 30,000,000 per 1 s"]
