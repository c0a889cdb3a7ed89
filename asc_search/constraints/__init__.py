"""Constraints: complexity counting (parameters, INT8 bytes, MACs) and device budgets."""

from asc_search.constraints._budgets import Budget, get_budget, list_budgets, register_budget
from asc_search.constraints._complexity import Complexity, count_complexity, patch_layout

__all__ = ["Budget", "Complexity", "count_complexity", "get_budget", "list_budgets", "patch_layout", "register_budget"]
