"""Every pass/fail line of a device budget, in one place: single-model export, ensemble export and bundle.

A budget (``asc_search.constraints.Budget``) limits some of: INT8 weight bytes, parameters, MACs per 1 s, peak
activation RAM (checked on the TFLite-Micro arena, the RAM the deployed model needs) and the estimated latency
on its device (from the MACs, by the device profile's latency model). Every export also needs its INT8 model to
agree with the float model on at least ``MIN_INT8_AGREEMENT`` of the validation clips. ``check_limits`` turns a
budget and the measured figures into one ``LimitCheck`` per line; a figure that was not measured (``None``, or
missing) fails its line.

The measured figures are a dict with the keys of ``MEASURES``; ``measured_from_validation`` reads them from a
single model's or an ensemble's ``validation.json``, ``ensemble_measured`` sums its members' (the DCASE rule:
all members count; RAM: the largest member arena, the members run one after another).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from asc_search.constraints import Budget

MIN_INT8_AGREEMENT = 0.95
"""Least clip-level argmax agreement of the INT8 and the float model for an export to pass."""

MEASURES = ("int8_bytes", "params", "macs", "tflm_arena_bytes", "int8_float_agreement")
"""Keys of the measured figures ``check_limits`` reads (the latency is estimated from ``macs``)."""

VALIDATION_KEYS = {"int8_bytes": "int8_bytes_tflite", "params": "params_tflite", "macs": "macs_tflite",
                   "tflm_arena_bytes": "tflm_arena_bytes", "int8_float_agreement": "int8_float_agreement"}
"""The ``validation.json`` key of each measured figure (single model and ensemble alike)."""

_UNITS = {"int8_bytes": "B", "params": "", "macs": "MACs per 1 s", "estimated_latency_ms": "ms",
          "tflm_arena_bytes": "B", "int8_float_agreement": ""}


@dataclass(frozen=True)
class LimitCheck:
    """One pass/fail line: a measured figure against a budget's limit.

    Args:
        name: The figure (``int8_bytes``, ``params``, ``macs``, ``estimated_latency_ms``, ``tflm_arena_bytes``,
            ``int8_float_agreement``), the ``limit`` key in ``validation.json``.
        measured: The measured value, or None when it is unknown (then the line fails).
        limit: The limit.
        unit: Unit of ``measured`` and ``limit`` (empty: a count or a fraction).
        passed: ``measured <= limit`` (``>=`` for a ``min`` limit), False for an unknown value.
        bound: ``"max"`` (the figure must not exceed ``limit``) or ``"min"`` (must reach it).
        budget: Name of the budget the limit belongs to.
        device: Device profile of a latency limit, else None.
    """

    name: str
    measured: float | None
    limit: float
    unit: str
    passed: bool
    bound: str = "max"
    budget: str = ""
    device: str | None = None

    def to_dict(self) -> dict:
        """The line as ``validation.json`` stores it under ``limits``: ``limit``, ``value``, ``max`` or ``min``,
        ``unit``, ``pass`` (and ``device`` for the latency)."""
        value = self.measured
        if value is not None and self.name == "estimated_latency_ms":
            value = round(value, 3)
        out = {"limit": self.name, "value": value, self.bound: self.limit, "unit": self.unit}
        if self.device is not None:
            out["device"] = self.device
        out["pass"] = self.passed
        return out

    @classmethod
    def from_dict(cls, d: Mapping, *, budget: str = "") -> LimitCheck:
        """A line as ``to_dict`` (or an older ``validation.json`` without ``unit``) wrote it."""
        bound = "min" if "min" in d else "max"
        return cls(name=d["limit"], measured=d.get("value"), limit=d[bound],
                   unit=d.get("unit", _UNITS.get(d["limit"], "")), passed=bool(d["pass"]), bound=bound,
                   budget=budget, device=d.get("device"))

    def describe(self) -> str:
        """One line, e.g. ``estimated_latency_ms 3.2 > 2 ms on phone (budget phone)``."""
        if self.measured is None:
            what = f"{self.name} unknown (not measured), limit {'<=' if self.bound == 'max' else '>='} " \
                   f"{_fmt(self.limit)}"
        else:
            ok = "<=" if self.bound == "max" else ">="
            bad = ">" if self.bound == "max" else "<"
            what = f"{self.name} {_fmt(self.measured)} {ok if self.passed else bad} {_fmt(self.limit)}"
        if self.unit:
            what += f" {self.unit}"
        if self.device:
            what += f" on {self.device}"
        return f"{what} (budget {self.budget})" if self.budget else what


def _fmt(x: float) -> str:
    if isinstance(x, numbers.Integral) or (float(x).is_integer() and abs(x) >= 1000):
        return f"{int(x):,}"
    return f"{float(x):.6g}"


def check_limits(budget: Budget, measured: Mapping[str, float | None], *,
                 min_agreement: float = MIN_INT8_AGREEMENT) -> list[LimitCheck]:
    """One pass/fail line per limit of ``budget``, and one for the INT8/float agreement.

    Lines, in this order, where the budget sets the limit: ``int8_bytes``, ``params``, ``macs``,
    ``estimated_latency_ms`` (``budget.latency_ms`` of the measured MACs), ``tflm_arena_bytes`` (against
    ``max_peak_ram_bytes``); always ``int8_float_agreement`` (at least ``min_agreement``). A limit holds at its
    boundary (``measured == limit`` passes).

    Args:
        budget: The budget.
        measured: The figures, keys of ``MEASURES``; a missing key or None is unknown and fails its line.
        min_agreement: Least INT8/float agreement.

    Returns:
        The lines; the export (or bundle) passes when every line passes.
    """
    checks = []

    def at_most(name: str, value, limit, *, device: str | None = None) -> None:
        checks.append(LimitCheck(name=name, measured=value, limit=limit, unit=_UNITS[name],
                                 passed=value is not None and value <= limit, budget=budget.name, device=device))

    if budget.max_int8_bytes is not None:
        at_most("int8_bytes", measured.get("int8_bytes"), budget.max_int8_bytes)
    if budget.max_params is not None:
        at_most("params", measured.get("params"), budget.max_params)
    macs = measured.get("macs")
    if budget.max_macs is not None:
        at_most("macs", macs, budget.max_macs)
    if budget.max_latency_ms is not None:
        latency = budget.latency_ms(macs) if macs is not None else None
        at_most("estimated_latency_ms", latency, budget.max_latency_ms, device=budget.device)
    if budget.max_peak_ram_bytes is not None:
        at_most("tflm_arena_bytes", measured.get("tflm_arena_bytes"), budget.max_peak_ram_bytes)
    agreement = measured.get("int8_float_agreement")
    checks.append(LimitCheck(name="int8_float_agreement", measured=agreement, limit=min_agreement,
                             unit=_UNITS["int8_float_agreement"], bound="min", budget=budget.name,
                             passed=agreement is not None and agreement >= min_agreement))
    return checks


def passes(checks: Iterable[LimitCheck]) -> bool:
    """Every line passes."""
    return all(c.passed for c in checks)


def describe_failures(checks: Iterable[LimitCheck]) -> str:
    """The failed lines joined into one line (``"; "``), empty when every line passes."""
    return "; ".join(c.describe() for c in checks if not c.passed)


def measured_from_validation(v: Mapping) -> dict[str, float | None]:
    """The measured figures of a single model's or an ensemble's ``validation.json``."""
    return {key: v.get(vkey) for key, vkey in VALIDATION_KEYS.items()}


def ensemble_measured(members: Sequence[Mapping], agreement: float | None) -> dict[str, float | None]:
    """The ensemble's figures from its members' ``validation.json``: INT8 bytes, parameters and MACs summed (all
    members count), the TFLite-Micro arena the largest member's (they run one after another and share it), and
    the fused INT8/float ``agreement``; a figure unknown for any member is unknown."""
    per_member = [measured_from_validation(v) for v in members]

    def combine(key: str, how) -> int | None:
        values = [m[key] for m in per_member]
        return None if not values or any(x is None for x in values) else int(how(values))

    return {"int8_bytes": combine("int8_bytes", sum), "params": combine("params", sum),
            "macs": combine("macs", sum), "tflm_arena_bytes": combine("tflm_arena_bytes", max),
            "int8_float_agreement": agreement}


__all__ = ["MEASURES", "MIN_INT8_AGREEMENT", "LimitCheck", "check_limits", "describe_failures",
           "ensemble_measured", "measured_from_validation", "passes"]
