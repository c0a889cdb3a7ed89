"""Search: the Ray Tune phase of a run (cluster, sampler, feasibility-filtering searcher, trainable, live progress)."""

from asc_search.search._cluster import (
    alive_nodes,
    check_storage_reachable,
    concurrency,
    nodes_seeing,
    record_cluster,
    start_ray,
)
from asc_search.search._progress import Listener, ProgressCallback, SearchProgress, listening
from asc_search.search._searcher import MODES, OBJECTIVES, DefineByRunSpace, FeasibleOptunaSearch
from asc_search.search._trainable import (
    FAULTS,
    TrainedGenome,
    TrialSettings,
    parse_faults,
    refit_checkpoint,
    train_candidate,
    train_genome,
)
from asc_search.search._tune import (
    NODE_FAILURE_RETRIES,
    check_space_has_feasible,
    count_finished,
    make_sampler,
    resolve_sampler,
    run_tune,
    trial_settings,
)

__all__ = [
    "alive_nodes",
    "DefineByRunSpace",
    "FAULTS",
    "FeasibleOptunaSearch",
    "Listener",
    "MODES",
    "NODE_FAILURE_RETRIES",
    "OBJECTIVES",
    "ProgressCallback",
    "SearchProgress",
    "TrainedGenome",
    "TrialSettings",
    "check_space_has_feasible",
    "check_storage_reachable",
    "concurrency",
    "nodes_seeing",
    "count_finished",
    "listening",
    "make_sampler",
    "resolve_sampler",
    "parse_faults",
    "record_cluster",
    "refit_checkpoint",
    "run_tune",
    "start_ray",
    "train_candidate",
    "train_genome",
    "trial_settings",
]
