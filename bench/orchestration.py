"""Orchestration: Ray Tune + Optuna overhead per trial (trials that do nothing), infeasible candidates rejected
per second, and proof that a rejected candidate never reaches a Ray trial.

Run: ``.venv/bin/python bench/orchestration.py [--quick]`` (prints a table, writes
``bench/results/orchestration.json``).

1. Overhead: a Tuner exactly as ``asc_search.search`` builds it (``FeasibleOptunaSearch`` with the
   multi-objective TPE sampler over the default space, ``ConcurrencyLimiter``, ``reuse_actors=True``, 2 slots)
   whose trainable only reports the objectives. Overhead per trial = slot-seconds of ``Tuner.fit`` / trials
   (a trial that trains nothing costs only orchestration), measured with budget ``none`` (no rejection) and
   ``dcase2022`` (rejections included). The start of Ray is timed apart.
2. Rejection rate: ``FeasibleOptunaSearch.suggest`` driven without Ray under the ``dcase2022`` budget on the
   ESC-10 space (16 kHz, 0.5/1 s patches): rejected candidates per second of suggest time, and the share of
   sampled candidates that are infeasible.
3. Infeasible candidates cost no training: in the Tuner run with ``dcase2022`` every trial the trainable
   received is counted against the budget (the number that break it must be 0) while the searcher's
   rejections are counted apart.
4. ``--run DIR`` (repeatable): the share of a real run's search wall time spent outside training, from the run
   directory alone (``run_share``). The search-quality runs (``bench/search_quality.py``) print it too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import command_line, spread, write_result  # noqa: I001 - sets sys.path

N_CLASSES = 10


def _space(budget_name: str):
    from asc_search.constraints import get_budget
    from asc_search.search import DefineByRunSpace
    from asc_search.search_spaces import SpaceOptions

    return DefineByRunSpace(options=SpaceOptions(sample_rates_hz=(16000,), chunk_s=(0.5, 1.0)),
                            budget=get_budget(budget_name), n_classes=N_CLASSES)


def _searcher(budget_name: str, rejections: Path, seed: int):
    from asc_search.search import MODES, OBJECTIVES, FeasibleOptunaSearch, make_sampler

    return FeasibleOptunaSearch(space=_space(budget_name), rejections_path=rejections, metric=list(OBJECTIVES),
                                mode=list(MODES), sampler=make_sampler("tpe", seed))


def noop_trial(config: dict) -> None:
    """A trial that trains nothing: reports the genome's objectives and whether it fits the budget."""
    from ray import tune

    from asc_search.constraints import count_complexity, get_budget
    from asc_search.search_spaces import Genome

    g = Genome.from_dict(config["genome"])
    c = count_complexity(g, n_classes=N_CLASSES)
    tune.report({"best_val_accuracy": 0.5, "macs": c.macs, "int8_bytes": c.int8_bytes, "final": True,
                 "breaks_dcase2022": bool(get_budget("dcase2022").check(c))})


def tuner_run(budget_name: str, trials: int, work: Path, seed: int) -> dict:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    run = work / f"noop-{budget_name}"
    run.mkdir(parents=True)
    searcher = _searcher(budget_name, run / "rejected.jsonl", seed)
    tuner = tune.Tuner(
        tune.with_resources(noop_trial, {"cpu": 1}),
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=2), num_samples=trials,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name="tune", storage_path=str(run), verbose=0),
    )
    t0 = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    results = [r.metrics for r in grid]
    return {"budget": budget_name, "trials": trials, "wall_s": wall, "slot_s_per_trial": 2 * wall / trials,
            "trials_per_s": trials / wall, "rejected": searcher.rejected,
            "trained_breaking_dcase2022": sum(bool(m.get("breaks_dcase2022")) for m in results),
            "errors": sum(r.error is not None for r in grid)}


def rejection_rate(feasible: int, seed: int, work: Path) -> dict:
    """Drive the searcher without Ray until ``feasible`` candidates come out; time the rejections."""
    s = _searcher("dcase2022", work / f"rej-{seed}.jsonl", seed)
    t_suggest = 0.0
    for i in range(feasible):
        t0 = time.perf_counter()
        cfg = s.suggest(f"t{i}")
        t_suggest += time.perf_counter() - t0
        s.on_trial_complete(f"t{i}", {"best_val_accuracy": 0.5, "macs": 1, "int8_bytes": 1,
                                      "training_iteration": 1})
        assert cfg and "genome" in cfg
    sampled = s.rejected + feasible
    return {"seed": seed, "feasible": feasible, "rejected": s.rejected, "sampled": sampled,
            "infeasible_share": s.rejected / sampled, "suggest_s": t_suggest,
            "rejected_per_s": s.rejected / t_suggest if t_suggest else 0.0,
            "ms_per_candidate": 1000 * t_suggest / sampled}


def run_share(run_dir: Path) -> dict:
    """The share of a finished run's search wall time spent outside training: ``1 - sum of the trials' own run
    times / (trial slots x search wall time)``, summed over the run's sessions (``cluster.json``: a resumed run
    has two). A trial's run time is its last ``time_total_s`` in ``tune/trial_*/result.json`` (Ray's wall time of
    the trainable: data mapping, training, validation, checkpointing); everything else (Ray start-up, sampling,
    rejection, scheduling, idle slots while the last trials finish) is outside training.

    The idle tail is reported apart: the slot-seconds left idle after the last trial of a session started (fewer
    trials remain than slots; no scheduler can fill them), so ``outside_training_share_before_tail`` is the
    orchestration proper.

    Raises:
        SystemExit: ``run_dir`` has no ``cluster.json`` with the search times (a run of an older version).
    """
    sessions = json.loads((run_dir / "cluster.json").read_text())
    if not all("search_wall_s" in s and "search_started_at" in s for s in sessions):
        raise SystemExit(f"{run_dir}/cluster.json has no search times: run the search again with this version")
    intervals = []  # (start, end) of every trial run, wall clock
    for path in sorted((run_dir / "tune").glob("trial_*/result.json")):
        results = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if results:
            end, total = float(results[-1]["timestamp"]), float(results[-1].get("time_total_s", 0.0))
            intervals.append((end - total, end))
    trial_s = sum(e - s for s, e in intervals)
    slot_s = tail_slot_s = tail_busy_s = 0.0
    for sess in sessions:
        t0, t1, slots = sess["search_started_at"], sess["search_started_at"] + sess["search_wall_s"], sess["trial_slots"]
        slot_s += slots * (t1 - t0)
        starts = [s for s, e in intervals if t0 <= s <= t1]
        if starts:
            last = max(starts)
            tail_slot_s += slots * (t1 - last)
            tail_busy_s += sum(max(0.0, min(e, t1) - max(s, last)) for s, e in intervals)
    outside = slot_s - trial_s
    tail_idle = max(0.0, tail_slot_s - tail_busy_s)
    return {"run": str(run_dir), "trials": len(intervals), "sessions": len(sessions),
            "search_wall_s": sum(s["search_wall_s"] for s in sessions),
            "trial_slots": [s["trial_slots"] for s in sessions], "trial_s": trial_s,
            "idle_tail_slot_s": tail_idle,
            "outside_training_share": outside / slot_s if slot_s else 0.0,
            "outside_training_share_before_tail": (outside - tail_idle) / (slot_s - tail_idle)
            if slot_s > tail_idle else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few trials (smoke run)")
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--run", type=Path, action="append", default=[],
                    help="a finished run directory: print the share of its search spent outside training "
                         "(repeatable; nothing else is measured)")
    args = ap.parse_args()
    if args.run:
        shares = [run_share(r) for r in args.run]
        for r in shares:
            print(f"{r['run']}: {r['trials']} trials, search {r['search_wall_s']:.1f} s on {r['trial_slots']} slot(s), "
                  f"trials ran {r['trial_s']:.1f} slot-s: {100 * r['outside_training_share']:.1f} % outside training; "
                  f"{r['idle_tail_slot_s']:.1f} slot-s idle after the last trial started; without that tail "
                  f"{100 * r['outside_training_share_before_tail']:.1f} %", flush=True)
        write_result("orchestration_runs", {"runs": shares}, command_line())
        return 0
    trials = 10 if args.quick else args.trials
    feasible, seeds = (10, (0,)) if args.quick else (40, (0, 1, 2))
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import optuna
    import ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="asc-bench-orch-") as tmp:
        work = Path(tmp)
        rej = [rejection_rate(feasible, seed, work) for seed in seeds]
        for r in rej:
            print(f"rejection (no Ray), seed {r['seed']}: {r['rejected']} rejected of {r['sampled']} sampled "
                  f"({100 * r['infeasible_share']:.0f} % infeasible), {r['rejected_per_s']:.0f} rejected/s, "
                  f"{r['ms_per_candidate']:.1f} ms per candidate", flush=True)
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray_start_s = time.perf_counter() - t0
        try:
            runs = [tuner_run("none", trials, work, 0), tuner_run("dcase2022", trials, work, 0)]
        finally:
            ray.shutdown()
    for r in runs:
        print(f"no-op trials, budget {r['budget']}: {r['trials']} trials in {r['wall_s']:.1f} s = "
              f"{r['slot_s_per_trial']:.3f} slot-s per trial ({r['trials_per_s']:.1f} trials/s, 2 slots); "
              f"{r['rejected']} rejected before Ray; trained trials breaking dcase2022: "
              f"{r['trained_breaking_dcase2022']}", flush=True)
    print(f"ray.init: {ray_start_s:.1f} s")
    write_result("orchestration", {
        "quick": args.quick, "ray_init_s": ray_start_s, "noop_runs": runs, "rejection": rej,
        "rejected_per_s": spread([r["rejected_per_s"] for r in rej]),
        "infeasible_share": spread([r["infeasible_share"] for r in rej]),
        "ms_per_candidate": spread([r["ms_per_candidate"] for r in rej]),
    }, command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
