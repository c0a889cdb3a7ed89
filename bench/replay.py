"""Replay searchers against a learning-curve table (``bench/learning_curves.py``) with a simulated clock (issue 16).

Each searcher is the product's own code: ``FeasibleOptunaSearch`` (rejection before training, a genome trained
once, a cut trial told as PRUNED) with the sampler of ``make_sampler``, and for multi-fidelity the
``ParetoASHAScheduler`` deciding at its rungs. Only the training is simulated: a proposed genome's curve is the
table's curve of that genome, or where the table lacks it, of the nearest genome in the table (fewest differing
Optuna parameters; a 1-nearest-neighbour surrogate, as Syne Tune's blackbox repository offers for configurations
off its table); its MACs and INT8 bytes are counted exactly from the proposal. A trial takes the table's set-up
time plus the seconds of the epochs it trains; early stopping applies ``--patience`` to the curve as the trainer
does; ``--slots`` trials run at once, a freed slot asks the searcher at once (orchestration is not simulated:
``bench/orchestration.py`` measures it). Hypervolume: the exact normalised (accuracy, MACs, INT8 bytes)
hypervolume of the completed trials at each time, as everywhere in the product.

Run: ``.venv/bin/python bench/replay.py bench/curves/esc10-dev.jsonl --seeds 10`` (prints a table, writes
``bench/results/replay-<table>.json``).

Limits of the surrogate: with a table of a few hundred genomes of a large space, most proposals fall off the
table and take a neighbour's curve, so a searcher is judged on how well it finds good regions of the table, not
on the exact accuracy of what it proposes.
"""

from __future__ import annotations

import argparse
import heapq
import json
import statistics
import sys
import tempfile
from pathlib import Path

from _common import command_line, write_result  # noqa: I001 - sets sys.path

SEARCHERS = {"random": ("random", "fifo"), "tpe": ("tpe", "fifo"), "tpe + mo-asha": ("tpe", "mo-asha"),
             "random + mo-asha": ("random", "mo-asha")}
DEFAULT = "tpe"  # the product's default search (asc-search --sampler tpe --scheduler fifo)


def load_table(path: Path) -> list[dict]:
    """The table's rows that trained (a curve with at least one epoch)."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # the line a running build is writing
            continue
    return [r for r in rows if r.get("curve")]


class Surrogate:
    """Curve of a proposed genome: its own row, or the nearest row by differing Optuna parameters."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows
        self.by_id = {r["genome_id"]: r for r in rows}
        self.exact = self.nearest = 0

    def curve(self, genome_id: str, params: dict) -> dict:
        if genome_id in self.by_id:
            self.exact += 1
            return self.by_id[genome_id]
        self.nearest += 1

        def distance(r: dict) -> tuple[int, int]:
            keys = set(params) | set(r["params"])
            return sum(params.get(k) != r["params"].get(k) for k in keys), r["draw"]

        return min(self.rows, key=distance)


def early_stopped(curve: list[dict], epochs: int, patience: int) -> tuple[list[float], list[float]]:
    """Best-so-far validation accuracy and cumulative seconds per epoch, up to the epoch early stopping (with
    ``patience``) or ``epochs`` ends the training."""
    best, cum, b, t, stale = [], [], -1.0, 0.0, 0
    for p in curve[:epochs]:
        t += p["seconds"]
        if p["val_accuracy"] > b:
            b, stale = p["val_accuracy"], 0
        else:
            stale += 1
        best.append(b)
        cum.append(t)
        if stale >= patience:
            break
    return best, cum


def replay(rows: list[dict], *, sampler: str, scheduler: str, seed: int, wall_s: float, slots: int, epochs: int,
           patience: int, options, budget, n_classes: int, work: Path, grace_epochs: int | None = None,
           reduction_factor: float = 3.0, rungs: tuple[int, ...] = ()) -> dict:
    """One simulated search until ``wall_s``; its completed points with their completion times."""
    from asc_search.constraints import count_complexity
    from asc_search.search import MODES, OBJECTIVES, DefineByRunSpace, FeasibleOptunaSearch, make_sampler
    from asc_search.search._scheduler import ParetoASHAScheduler
    from asc_search.search_spaces import Genome

    run_dir = Path(tempfile.mkdtemp(dir=work))
    search = FeasibleOptunaSearch(space=DefineByRunSpace(options=options, budget=budget, n_classes=n_classes),
                                  rejections_path=run_dir / "rejected.jsonl", metric=list(OBJECTIVES),
                                  mode=list(MODES), sampler=make_sampler(sampler, seed))
    sched = (ParetoASHAScheduler(run_dir, max_epochs=epochs, grace_epochs=grace_epochs,
                                 reduction_factor=reduction_factor) if scheduler == "mo-asha" else None)
    if sched is not None and rungs:
        sched.milestones = list(rungs)
        sched._rungs = None
    surrogate = Surrogate(rows)
    events: list = []
    live: dict[str, dict] = {}
    points: list[tuple[float, float, int, int]] = []  # (time, accuracy, macs, int8 bytes)
    count = {"started": 0, "stopped": 0, "completed": 0, "epochs": 0}

    def start(now: float) -> None:
        tid = f"t{count['started']}"
        s = search.suggest(tid)
        if not isinstance(s, dict):
            return
        count["started"] += 1
        genome = Genome.from_dict(s["genome"])
        c = count_complexity(genome, n_classes=n_classes)
        row = surrogate.curve(genome.genome_id, s["params"])
        best, cum = early_stopped(row["curve"], epochs, patience)
        t0 = now + float(row.get("setup_s", 0.0))
        live[tid] = {"best": best, "macs": int(c.macs), "bytes": int(c.int8_bytes)}
        for m in (sched.milestones if sched else []):
            if m < len(best):
                heapq.heappush(events, (t0 + cum[m - 1], tid, "rung", m))
        heapq.heappush(events, (t0 + cum[-1], tid, "final", len(best)))

    for _ in range(slots):
        start(0.0)
    now = 0.0
    while events:
        now, tid, kind, epoch = heapq.heappop(events)
        if now > wall_s:
            break
        if tid not in live:
            continue  # stopped at an earlier rung
        t = live[tid]
        result = {"epoch": epoch, "best_val_accuracy": t["best"][epoch - 1], "macs": t["macs"],
                  "int8_bytes": t["bytes"]}
        if kind == "rung":
            if sched.decide(tid, result) != "STOP":
                continue
            search.on_trial_complete(tid, result)
            count["stopped"] += 1
        else:
            search.on_trial_complete(tid, {**result, "final": True})
            points.append((now, result["best_val_accuracy"], t["macs"], t["bytes"]))
            count["completed"] += 1
        count["epochs"] += epoch
        del live[tid]
        start(now)
    return {"points": points, **count, "rejected": search.rejected, "duplicates": search.duplicates,
            "exact_lookups": surrogate.exact, "nearest_lookups": surrogate.nearest}


def hv_at(points: list[tuple[float, float, int, int]], t: float, max_macs: float, max_bytes: float) -> float:
    from asc_search._pareto import normalised_hypervolume

    pts = [(a, m, b) for (tt, a, m, b) in points if tt <= t]
    return normalised_hypervolume(pts, max_macs=max_macs, max_int8_bytes=max_bytes) if pts else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("table", type=Path)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials-equivalent", type=int, default=40,
                    help="the wall time: that many full-length trials of the table's mean time, over the slots")
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--patience", type=int, default=6)
    ap.add_argument("--budget", default="dcase2022")
    ap.add_argument("--grace-epochs", type=int, default=None, help="MO-ASHA's first rung (default: the product's)")
    ap.add_argument("--rungs", default="", help="MO-ASHA's rungs (epochs, comma-separated) instead of its own")
    ap.add_argument("--reduction-factor", type=float, default=3.0, help="MO-ASHA's eta (default: the product's, 3)")
    ap.add_argument("--searchers", default=",".join(SEARCHERS), help="comma-separated, of " + ", ".join(SEARCHERS))
    ap.add_argument("--name", default=None, help="result name (default: replay-<table>)")
    ap.add_argument("--n-classes", type=int, default=10, help="classes, for a table whose rows do not say")
    args = ap.parse_args()

    from dataclasses import replace

    import optuna

    from asc_search.config import RunConfig
    from asc_search.constraints import get_budget
    from asc_search.pipeline import space_options

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = load_table(args.table)
    if not rows:
        raise SystemExit(f"{args.table}: no trained rows")
    epochs = max(r["epochs"] for r in rows)
    rates = sorted({r["genome"]["frontend"]["sample_rate_hz"] for r in rows})
    # the space the table was drawn from: the build's own (bench/learning_curves.py: space_options of a default
    # RunConfig at the data's rates)
    options = replace(space_options(RunConfig(data=Path(rows[0]["data"]))), sample_rates_hz=tuple(rates))
    n_classes = int(rows[0].get("n_classes", args.n_classes))
    budget = get_budget(args.budget)
    mean_s = statistics.mean(sum(p["seconds"] for p in r["curve"]) + r.get("setup_s", 0.0) for r in rows)
    wall_s = args.trials_equivalent * mean_s / args.slots
    max_macs, max_bytes = float(budget.max_macs), float(budget.max_int8_bytes)
    out: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="asc-bench-replay-") as tmp:
        names = args.searchers.split(",")
        if "random" not in names or any(n not in SEARCHERS for n in names):
            raise SystemExit(f"--searchers must name random and only some of {', '.join(SEARCHERS)}")
        for name, (sampler, scheduler) in ((n, SEARCHERS[n]) for n in names):
            out[name] = []
            for seed in range(args.seeds):
                r = replay(rows, sampler=sampler, scheduler=scheduler, seed=seed, wall_s=wall_s, slots=args.slots,
                           epochs=epochs, patience=args.patience, options=options, budget=budget,
                           n_classes=n_classes, work=Path(tmp), grace_epochs=args.grace_epochs,
                           reduction_factor=args.reduction_factor,
                           rungs=tuple(int(x) for x in args.rungs.split(",") if x))
                r["hv"] = hv_at(r["points"], wall_s, max_macs, max_bytes)
                r["hv_half"] = hv_at(r["points"], wall_s / 2, max_macs, max_bytes)
                out[name].append(r)
                print(f"{name:17s} seed {seed}: HV {r['hv']:.4f} (half time {r['hv_half']:.4f}); "
                      f"{r['completed']} completed, {r['stopped']} stopped, {r['rejected']} rejected; "
                      f"{r['exact_lookups']} exact / {r['nearest_lookups']} nearest lookups", flush=True)
    table = {}
    rand = [r["hv"] for r in out["random"]]
    for name, runs in out.items():
        hv = [r["hv"] for r in runs]
        reach = []  # time to reach random's final HV of the same seed, as a fraction of the wall time
        for r, target in zip(runs, rand, strict=True):
            ts = sorted(p[0] for p in r["points"])
            hit = next((t for t in ts if hv_at(r["points"], t, max_macs, max_bytes) >= target), None)
            reach.append(hit / wall_s if hit is not None else None)
        table[name] = {"hv_median": statistics.median(hv), "hv": hv,
                       "ratio_to_random": statistics.median(hv) / statistics.median(rand) if statistics.median(rand)
                       else None,
                       "seeds_above_random": sum(a > b for a, b in zip(hv, rand, strict=True)),
                       "reach_random_final_fraction": reach,
                       # over every seed, a seed that never reaches it counting as never (infinite)
                       "reach_median_all_seeds": statistics.median(x if x is not None else float("inf")
                                                                   for x in reach),
                       "completed_median": statistics.median(r["completed"] for r in runs)}
    # What any searcher can reach on this table: a replayed accuracy is a table accuracy and the cost factors of the
    # normalised hypervolume are at most 1, so the best accuracy of the table bounds every replayed HV; the HV of
    # every table genome at its best epoch is what training the whole table would give.
    best_acc = max(max(p["val_accuracy"] for p in r["curve"][:epochs]) for r in rows)
    table_hv = hv_at([(0.0, max(p["val_accuracy"] for p in r["curve"][:epochs]), r["macs"], r["int8_bytes"])
                      for r in rows], 0.0, max_macs, max_bytes)
    target = 1.2 * statistics.median(rand)
    ceiling = {"best_accuracy": best_acc, "table_hv": table_hv, "target_1_2x_random": target,
               "target_reachable": target <= best_acc}
    print(f"\ntable {args.table} ({len(rows)} curves, {epochs} epochs), wall time {wall_s:.0f} s "
          f"({args.trials_equivalent} mean full trials over {args.slots} slots), {args.seeds} seeds")
    print(f"ceiling: best accuracy of the table {best_acc:.4f} (bounds every replayed HV); HV of the whole table "
          f"{table_hv:.4f}; 1.2x random's median HV = {target:.4f}: "
          + ("reachable" if target <= best_acc else "above the ceiling, no searcher can reach it on this table"))
    for name, t in table.items():
        reached = [x for x in t["reach_random_final_fraction"] if x is not None]
        print(f"{name:17s} median HV {t['hv_median']:.4f}; x{t['ratio_to_random'] or 0:.3f} random; above random "
              f"on {t['seeds_above_random']}/{args.seeds} seeds; reaches random's final HV on {len(reached)} seeds, "
              f"median at {statistics.median(reached) if reached else float('nan'):.2f} of the time "
              f"({t['reach_median_all_seeds']:.2f} over all seeds, never = inf)")
    for name in out:
        for r in out[name]:
            r["points"] = [list(p) for p in r["points"]]
    write_result(args.name or f"replay-{args.table.stem}", {"table": str(args.table), "curves": len(rows), "wall_s": wall_s,
                                               "seeds": args.seeds, "summary": table, "ceiling": ceiling,
                                               "runs": out}, command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
