"""Device budgets: registered presets with units and source, and the feasibility check."""

from __future__ import annotations

from dataclasses import dataclass

from asc_search._errors import UserInputError
from asc_search._registry import NamedRegistry
from asc_search.constraints._complexity import Complexity
from asc_search.constraints._devices import get_device


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Limits a deployable model must meet.

    Args:
        name: Registry name.
        max_int8_bytes: Parameter memory as stored in the INT8 TFLite file (bytes: INT8 weights, INT32 biases),
            or None.
        max_params: Parameters, batch-norm folded, or None.
        max_macs: MACs to classify 1 s of audio, or None.
        max_peak_ram_bytes: Peak activation memory at INT8 (bytes, the largest sum of live tensors), or None.
        max_latency_ms: Latency to classify 1 s of audio on ``device`` (ms, by its latency model), or None.
        device: Device profile of the latency limit.
        source: Where the limits come from.
    """

    name: str
    max_int8_bytes: int | None = None
    max_params: int | None = None
    max_macs: int | None = None
    max_peak_ram_bytes: int | None = None
    max_latency_ms: float | None = None
    device: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        for field_name in ("max_int8_bytes", "max_params", "max_macs", "max_peak_ram_bytes"):
            v = getattr(self, field_name)
            if v is not None and v <= 0:
                raise UserInputError(f"budget {self.name!r}: {field_name} must be > 0, got {v}")
        if self.max_latency_ms is not None:
            if self.max_latency_ms <= 0:
                raise UserInputError(f"budget {self.name!r}: max_latency_ms must be > 0, got {self.max_latency_ms}")
            if self.device is None:
                raise UserInputError(f"budget {self.name!r}: max_latency_ms needs a device profile to estimate "
                                     f"the latency on; set device (see asc-search budgets)")

    def check(self, c: Complexity) -> list[str]:
        """Reasons why ``c`` breaks this budget (empty when it fits)."""
        reasons = []
        if not c.buildable:
            reasons.append(c.reason)
        if self.max_int8_bytes is not None and c.int8_bytes > self.max_int8_bytes:
            reasons.append(f"int8_bytes {c.int8_bytes:,} > {self.max_int8_bytes:,}")
        if self.max_params is not None and c.params > self.max_params:
            reasons.append(f"params {c.params:,} > {self.max_params:,}")
        if self.max_macs is not None and c.macs > self.max_macs:
            reasons.append(f"macs {c.macs:,} > {self.max_macs:,} per 1 s")
        if self.max_peak_ram_bytes is not None and c.peak_activation_bytes > self.max_peak_ram_bytes:
            reasons.append(f"peak activation memory {c.peak_activation_bytes:,} B > {self.max_peak_ram_bytes:,} B")
        latency = self.latency_ms(c.macs)
        if latency is not None and latency > self.max_latency_ms:
            reasons.append(f"estimated latency {latency:.0f} ms > {self.max_latency_ms:g} ms per 1 s on {self.device}")
        return reasons

    def latency_ms(self, macs: int) -> float | None:
        """Estimated latency (ms) of ``macs`` MACs on the budget's device, or None without a latency limit."""
        if self.max_latency_ms is None or self.device is None:
            return None
        return get_device(self.device).estimate_latency_ms(macs)

    def violations(self, c: Complexity) -> dict[str, float]:
        """Constraint values for the sampler: > 0 means violated (relative excess)."""
        out = {"buildable": 0.0 if c.buildable else 1.0}
        if self.max_int8_bytes is not None:
            out["int8_bytes"] = c.int8_bytes / self.max_int8_bytes - 1.0
        if self.max_params is not None:
            out["params"] = c.params / self.max_params - 1.0
        if self.max_macs is not None:
            out["macs"] = c.macs / self.max_macs - 1.0
        if self.max_peak_ram_bytes is not None:
            out["peak_ram"] = c.peak_activation_bytes / self.max_peak_ram_bytes - 1.0
        latency = self.latency_ms(c.macs)
        if latency is not None:
            out["latency"] = latency / self.max_latency_ms - 1.0
        return out

    def describe(self) -> str:
        """One line: limits and source."""
        parts = []
        if self.max_int8_bytes is not None:
            parts.append(f"{self.max_int8_bytes:,} INT8 bytes")
        if self.max_params is not None:
            parts.append(f"{self.max_params:,} parameters")
        if self.max_macs is not None:
            parts.append(f"{self.max_macs / 1e6:g} M MACs per 1 s")
        if self.max_peak_ram_bytes is not None:
            parts.append(f"{self.max_peak_ram_bytes:,} B peak activation RAM")
        if self.max_latency_ms is not None:
            parts.append(f"{self.max_latency_ms:g} ms per 1 s on {self.device} (estimated)")
        return f"{self.name}: {', '.join(parts) or 'no limits'} ({self.source})"


_BUDGETS: NamedRegistry[Budget] = NamedRegistry(
    "budget", valid_label="valid budgets", hint=" (or set --max-int8-bytes / --max-macs)")


def register_budget(budget: Budget) -> Budget:
    """Add ``budget`` to the registry.

    Raises:
        ValueError: The name is taken.
    """
    return _BUDGETS.register(budget)


def unregister_budget(name: str) -> Budget:
    """Remove and return the registered budget ``name`` (a plugin's or a test's registration undone).

    Raises:
        UserInputError: Unknown name; the message lists the valid names.
    """
    return _BUDGETS.unregister(name)


def list_budgets() -> list[Budget]:
    """Registered budgets, sorted by name."""
    return _BUDGETS.all()


def get_budget(name: str) -> Budget:
    """The registered budget called ``name``.

    Raises:
        UserInputError: Unknown name; the message lists the valid names.
    """
    return _BUDGETS.get(name)


register_budget(Budget(
    name="dcase2022", max_int8_bytes=128_000, max_macs=30_000_000,
    source="DCASE 2022 Task 1: 128 K parameters at INT8 (128 KB, zeros count), 30 M MACs per 1 s of audio",
))
register_budget(Budget(
    name="dcase2024", max_int8_bytes=128_000, max_macs=30_000_000,
    source="DCASE 2024 Task 1: 128 kB of parameter memory at the precision the parameters are stored in, 30 M "
           "MACs per 1 s; our INT8 export stores int8 weights and int32 biases, so the memory is int8_bytes",
))
register_budget(Budget(
    name="cortex-m4", max_params=128_000, max_macs=30_000_000, max_peak_ram_bytes=131_072, device="cortex-m4",
    source="a Cortex-M4 microcontroller with TFLite Micro: 128 K INT8 parameters in flash, 30 M MACs per 1 s, "
           "128 KiB for the activation arena (half the SRAM of a 256 KB part such as STM32L476; the MLPerf Tiny "
           "board has 640 KB)",
))
register_budget(Budget(
    name="phone", max_latency_ms=250.0, device="phone",
    source="a mid-range phone: 250 ms per inference, the DeepSpectrumLite target (DenseNet121 pipeline: 242 ms "
           "on a Motorola moto e7 plus); latency from the device profile's MACs-throughput model",
))
register_budget(Budget(
    name="none", source="search the unconstrained space",
))
