"""Constraints: complexity counting (parameters, INT8 bytes, MACs) and device budgets."""

from asc_search.constraints._budgets import (
    Budget,
    get_budget,
    list_budgets,
    register_budget,
    unregister_budget,
)
from asc_search.constraints._complexity import Complexity, count_arch, count_complexity
from asc_search.constraints._devices import DeviceProfile, get_device, list_devices, register_device
from asc_search.search_spaces import patch_layout  # re-exported: it lives with the genome

__all__ = [
    "Budget",
    "Complexity",
    "DeviceProfile",
    "count_arch",
    "count_complexity",
    "get_budget",
    "get_device",
    "list_budgets",
    "list_devices",
    "patch_layout",
    "register_budget",
    "register_device",
    "unregister_budget",
]
