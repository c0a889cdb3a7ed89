"""Live confirmation of the replay (issue 16): one real ``asc-search`` run per searcher, at equal wall time.

The replay (``bench/replay.py``) judges searchers against a measured table of learning curves with a simulated
clock. This script checks it against the product itself: each searcher runs the real CLI on the same data, with the
same seed, epochs and ``--time-budget`` (the search phase's wall-clock limit: a trial still training at the limit
is cut and does not count), and the exact normalised (accuracy, MACs, INT8 bytes) hypervolume of its completed
trials is read off its ``trials.csv`` with the time each finished, so that the HV can be compared at equal wall
time and at half of it. Each run prepares its own data and features (its own ``<out>/cache``), as a user's run
does: a shared cache would favour the searchers that run later. Nothing is exported (``--max-export 0
--no-ensemble``). One seed: this confirms the replay's direction, it does not replace its seeds.

Run: ``.venv/bin/python bench/live_confirm.py --data ../shared/data/esc10-dev --val-fold 2 --test-fold 3
--epochs 16 --time-budget-s 420 --searchers random,tpe,"tpe + mo-asha"`` (about 8 minutes a searcher here; prints a table, writes
``bench/results/live_confirm-<data>.json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, command_line, write_result  # noqa: I001 - sets sys.path

SEARCHERS = {"random": ("random", "fifo"), "tpe": ("tpe", "fifo"), "tpe + mo-asha": ("tpe", "mo-asha"),
             "random + mo-asha": ("random", "mo-asha")}


def run_one(name: str, args, out: Path) -> dict:
    """One search; its completed trials (accuracy, MACs, INT8 bytes, seconds after the search started)."""
    sampler, scheduler = SEARCHERS[name]
    cmd = [sys.executable, "-m", "asc_search.cli", "--budget", args.budget, "--data", str(args.data),
           "--trials", "1000", "--time-budget", str(args.time_budget_s), "--epochs", str(args.epochs),
           "--sampler", sampler, "--scheduler", scheduler, "--seed", str(args.seed), "--max-export", "0",
           "--no-ensemble", "--out", str(out)]
    if args.val_fold:
        cmd += ["--val-fold", args.val_fold]
    if args.test_fold:
        cmd += ["--test-fold", args.test_fold]
    t0 = time.time()
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{name}: asc-search exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    sessions = json.loads((out / "cluster.json").read_text())  # one entry a session
    started = float(sessions[-1].get("search_started_at", t0)) if sessions else t0
    rows = list(csv.DictReader(open(out / "trials.csv")))
    done = [r for r in rows if r["status"] == "completed"]
    points = sorted((float(r["finished_at"]) - started, float(r["best_val_accuracy"]), int(float(r["macs"])),
                     int(float(r["int8_bytes"]))) for r in done)
    return {"points": points, "completed": len(done), "stopped": sum(r["status"] == "stopped" for r in rows),
            "rejected": sum(r["status"] == "rejected" for r in rows), "wall_s": time.time() - t0,
            "best_accuracy": max((p[1] for p in points), default=0.0)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--val-fold", default=None)
    ap.add_argument("--test-fold", default=None)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--time-budget-s", type=float, default=480.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", default="dcase2022")
    ap.add_argument("--searchers", default=",".join(SEARCHERS))
    args = ap.parse_args()

    from asc_search._pareto import normalised_hypervolume
    from asc_search.constraints import get_budget

    budget = get_budget(args.budget)
    lim = {"max_macs": float(budget.max_macs), "max_int8_bytes": float(budget.max_int8_bytes)}

    def hv(points, t):
        pts = [(a, m, b) for (tt, a, m, b) in points if tt <= t]
        return normalised_hypervolume(pts, **lim) if pts else 0.0

    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="asc-bench-live-") as tmp:
        for name in args.searchers.split(","):
            # each run prepares its own data and features, as a user's run does (a shared cache would favour
            # the searchers that run later)
            r = run_one(name, args, Path(tmp) / name.replace(" + ", "-"))
            r["hv"], r["hv_half"] = hv(r["points"], args.time_budget_s), hv(r["points"], args.time_budget_s / 2)
            out[name] = r
            print(f"{name:17s} HV {r['hv']:.4f} (half time {r['hv_half']:.4f}); {r['completed']} completed, "
                  f"{r['stopped']} stopped, {r['rejected']} rejected; best accuracy {r['best_accuracy']:.4f}; "
                  f"{r['wall_s']:.0f} s in all", flush=True)
    base = out.get("random", {}).get("hv") or None
    for r in out.values():
        r["ratio_to_random"] = r["hv"] / base if base else None
        target = base
        r["reach_random_final_fraction"] = next(
            (t / args.time_budget_s for t, *_ in r["points"] if target and hv(r["points"], t) >= target), None)
    write_result(f"live_confirm-{args.data.name}", {"data": str(args.data), "epochs": args.epochs,
                                                     "time_budget_s": args.time_budget_s, "seed": args.seed,
                                                     "runs": out}, command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
