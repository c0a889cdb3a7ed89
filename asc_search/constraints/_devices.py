"""Device profiles: a MACs-throughput latency model per target device, calibrated from a published measurement.

Assumption (written down because it is one): a device runs a CNN at the MAC throughput it reached in its
reference measurement, so ``latency = MACs / (reference MACs / reference latency)``. This ignores memory-bound
layers, operator overhead and the front-end; ``asc-search deploy --adb`` (when adb and benchmark_model are
present) measures instead of estimating. The host latency in ``validation.json`` is measured, not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass

from asc_search._registry import NamedRegistry


@dataclass(frozen=True, kw_only=True)
class DeviceProfile:
    """A target device and its latency model.

    Args:
        name: Registry name.
        reference_macs: MACs of the reference network's inference.
        reference_latency_ms: Its measured latency on the device (ms).
        source: Where the measurement comes from.
    """

    name: str
    reference_macs: int
    reference_latency_ms: float
    source: str

    @property
    def macs_per_s(self) -> float:
        """Calibrated throughput (MACs per second)."""
        return self.reference_macs / (self.reference_latency_ms / 1000.0)

    def estimate_latency_ms(self, macs: int) -> float:
        """Estimated latency (ms) of an inference of ``macs`` MACs on this device."""
        return macs / self.macs_per_s * 1000.0


_DEVICES: NamedRegistry[DeviceProfile] = NamedRegistry("device profile")


def register_device(profile: DeviceProfile) -> DeviceProfile:
    """Add ``profile`` to the registry.

    Raises:
        ValueError: The name is taken.
    """
    return _DEVICES.register(profile)


def get_device(name: str) -> DeviceProfile:
    """The registered device profile ``name``.

    Raises:
        UserInputError: Unknown name; the message lists the valid names.
    """
    return _DEVICES.get(name)


def list_devices() -> list[DeviceProfile]:
    """Registered device profiles, sorted by name."""
    return _DEVICES.all()


register_device(DeviceProfile(
    name="phone", reference_macs=2_870_000_000, reference_latency_ms=242.0,
    source="DeepSpectrumLite: DenseNet121 pipeline (about 2.87 G MACs at 224x224) in 242 ms on a Motorola moto e7 plus",
))
register_device(DeviceProfile(
    name="cortex-m4", reference_macs=2_500_000, reference_latency_ms=181.9,
    source="MLPerf Tiny reference (Nucleo-L4R5ZI, Cortex-M4F at 120 MHz, TFLite Micro): DS-CNN keyword spotting, "
           "about 2.5 M MACs, 181.9 ms per inference",
))
