"""Search: Ray Tune + Optuna orchestration, the feasibility-filtering searcher and the Pareto front."""

from asc_search.search._pareto import hypervolume_2d, pareto_front
from asc_search.search._run import RunResult, prepare_data, resolve_budget, run_search, space_options
from asc_search.search._searcher import MODES, OBJECTIVES, DefineByRunSpace, FeasibleOptunaSearch

__all__ = [
    "MODES",
    "OBJECTIVES",
    "DefineByRunSpace",
    "FeasibleOptunaSearch",
    "RunResult",
    "hypervolume_2d",
    "pareto_front",
    "prepare_data",
    "resolve_budget",
    "run_search",
    "space_options",
]
