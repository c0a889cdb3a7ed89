"""Pipeline: one search run end to end (prepare, search, ensemble, export, report) and resuming one."""

from asc_search.pipeline._prepare import (
    DataPlan,
    PreparationProgress,
    fit_options_to_data,
    plan_data,
    prepare_data,
    resolve_budget,
    space_options,
)
from asc_search.pipeline._run import resume_search, run_search

__all__ = [
    "DataPlan",
    "PreparationProgress",
    "fit_options_to_data",
    "plan_data",
    "prepare_data",
    "resolve_budget",
    "resume_search",
    "run_search",
    "space_options",
]
