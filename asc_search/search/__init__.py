"""Search: Ray Tune + Optuna orchestration, the feasibility-filtering searcher and the Pareto front."""

from asc_search.search._ensemble import (
    EnsembleCandidate,
    EnsembleSelection,
    ensemble_candidates_from_rows,
    fuse,
    select_ensemble,
)
from asc_search.search._pareto import hypervolume_2d, knee_point, mark_front, pareto_front, sort_rows
from asc_search.search._run import (
    SearchProgress,
    prepare_data,
    resolve_budget,
    resume_search,
    run_search,
    space_options,
)
from asc_search.search._searcher import MODES, OBJECTIVES, DefineByRunSpace, FeasibleOptunaSearch

__all__ = [
    "EnsembleCandidate",
    "EnsembleSelection",
    "ensemble_candidates_from_rows",
    "fuse",
    "select_ensemble",
    "MODES",
    "OBJECTIVES",
    "SearchProgress",
    "DefineByRunSpace",
    "FeasibleOptunaSearch",
    "hypervolume_2d",
    "knee_point",
    "mark_front",
    "pareto_front",
    "prepare_data",
    "resolve_budget",
    "resume_search",
    "run_search",
    "sort_rows",
    "space_options",
]
