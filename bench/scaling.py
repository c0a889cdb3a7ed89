"""Scaling: trials per hour of the same search on one Ray node and on two (separate ``ray start`` processes on
this machine, 1 CPU each), their ratio, and the per-trial overhead of the orchestration.

Run: ``.venv/bin/python bench/scaling.py [--trials 16] [--epochs 3]`` (prints a table, writes
``bench/results/scaling.json``). Data: 2 clips per class and fold of ../shared/data/esc10-dev (60 real clips),
8 kHz, 1 s patches, a tiny budget; the random sampler with a fixed seed, so both runs train the same genomes.

- trials/hour = trials / search seconds (from the driver's "search finished" line: Tuner.fit only, not the
  data decoding or the connection to the cluster).
- overhead per trial = (search seconds x trial slots - sum of the trials' own run time (Ray's
  ``time_total_s``)) / trials: the slot time no trainable used: scheduling, actor reuse, result and
  checkpoint handling, the searcher's sampling (rejections included), idle slots at the end, and the start-up
  of the trial workers (importing torch & co.) before the first trial; "steady" leaves that start-up out (from the
  first trial's start to the last trial's end).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("ASC_SHARED_DATA", REPO.parent / "shared" / "data")) / "esc10-dev"

from tests.search._cluster_util import LocalRayNodes, cli, small_esc10  # noqa: E402 - the test suite's local cluster


def run_on(nodes: int, data: Path, work: Path, trials: int, epochs: int) -> dict:
    """The search on a fresh cluster of ``nodes`` 1-CPU nodes; its figures."""
    cluster = LocalRayNodes(Path("/tmp") / f"asc-bench-{uuid.uuid4().hex[:6]}", cpus_per_node=1)
    run = work / f"run-{nodes}"
    try:
        cluster.start_head()
        for _ in range(nodes - 1):
            cluster.add_worker()
        t0 = time.perf_counter()
        p = cli(["--data", str(data), "--trials", str(trials), "--epochs", str(epochs), "--patience", str(epochs),
                 "--out", str(run), "--address", cluster.address, "--sampler", "random", "--seed", "0",
                 "--budget", "dcase2022", "--max-macs", "4000000", "--max-int8-bytes", "40000",
                 "--sample-rates-hz", "8000", "--chunks-s", "1", "--max-export", "0"], cwd=work, timeout=3600)
        command_s = time.perf_counter() - t0
    finally:
        cluster.stop()
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    if p.returncode != 0:
        raise SystemExit(f"search on {nodes} node(s) failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    search_s = float(re.search(r"search finished in ([\d.]+) s", p.stdout).group(1))
    trial_s, starts, ends = [], [], []
    node_ids = set()
    for result in (run / "tune").glob("trial_*/result.json"):
        last = json.loads(result.read_text().splitlines()[-1])
        trial_s.append(last["time_total_s"])
        ends.append(last["finished_at"])
        starts.append(last["finished_at"] - last["time_total_s"])
        node_ids.add(last["node_id"])
    n = len(trial_s)
    steady_s = max(ends) - min(starts)  # first trial's start to last trial's end: no worker start-up
    return {"nodes": nodes, "trials": n, "search_s": search_s, "command_s": round(command_s, 1),
            "trials_per_hour": 3600 * n / search_s, "mean_trial_s": sum(trial_s) / n,
            "overhead_per_trial_s": (search_s * nodes - sum(trial_s)) / n,
            "startup_s": search_s - steady_s,
            "steady_overhead_per_trial_s": (steady_s * nodes - sum(trial_s)) / n,
            "nodes_used": len(node_ids)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="asc-scaling-") as tmp:
        work = Path(tmp)
        data = small_esc10(DATA, work / "data")
        rows = [run_on(n, data, work, args.trials, args.epochs) for n in (1, 2)]
    ratio = rows[1]["trials_per_hour"] / rows[0]["trials_per_hour"]
    print(f"{'nodes':>5} {'trials':>6} {'search s':>9} {'trials/h':>9} {'mean trial s':>12} {'overhead/trial s':>16}"
          f" {'of which start-up s':>19} {'steady overhead/trial s':>23} {'nodes used':>10}")
    for r in rows:
        print(f"{r['nodes']:>5} {r['trials']:>6} {r['search_s']:>9.1f} {r['trials_per_hour']:>9.0f} "
              f"{r['mean_trial_s']:>12.2f} {r['overhead_per_trial_s']:>16.2f} {r['startup_s']:>19.1f} "
              f"{r['steady_overhead_per_trial_s']:>23.2f} {r['nodes_used']:>10}")
    print(f"speed-up 2 nodes / 1 node: {ratio:.2f}x (ideal 2.00x)")
    out = REPO / "bench" / "results" / "scaling.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps({"runs": rows, "speedup_2_over_1": ratio, "trials": args.trials,
                                   "epochs": args.epochs, "cpus": os.cpu_count()}, indent=2) + "\n")
    os.replace(tmp_out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
