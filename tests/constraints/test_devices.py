import pytest

from asc_search import UserInputError
from asc_search.constraints import Budget, count_complexity, get_budget, get_device, list_devices
from asc_search.search_spaces import ArchSpec, FrontendGenes, Genome


def test_profiles_reproduce_their_reference_measurements():
    assert get_device("phone").estimate_latency_ms(2_870_000_000) == pytest.approx(242.0)
    assert get_device("cortex-m4").estimate_latency_ms(2_500_000) == pytest.approx(181.9)
    assert {d.name for d in list_devices()} >= {"phone", "cortex-m4"}
    with pytest.raises(UserInputError, match="unknown device profile 'watch'; valid: cortex-m4, phone"):
        get_device("watch")


def test_latency_limit_rejects_before_training():
    g = Genome(frontend=FrontendGenes(sample_rate_hz=16000, n_bins=40, hop_ms=20, chunk_s=1.0),
               arch=ArchSpec(stages=(("conv_c16_k3_relu", "maxpool_k2"),)))
    c = count_complexity(g, n_classes=10)
    mcu = Budget(name="mcu-100ms", max_latency_ms=100.0, device="cortex-m4")
    expected = c.macs / get_device("cortex-m4").macs_per_s * 1000
    assert mcu.latency_ms(c.macs) == pytest.approx(expected)
    assert (expected > 100) == bool(mcu.check(c))
    tight = Budget(name="mcu-1ms", max_latency_ms=1.0, device="cortex-m4")
    assert any("estimated latency" in r for r in tight.check(c)) and tight.violations(c)["latency"] > 0
    assert get_budget("phone").check(c) == []  # 250 ms on a phone is about 3 G MACs
