"""Learning-curve table: real training of genomes drawn at random from the search space, with every epoch's
validation accuracy and wall time, to replay searchers against with a simulated clock (issue 16).

Two cores cannot train the thousands of candidates that tell one searcher from another over many seeds. The way
Syne Tune benchmarks multi-fidelity searchers ("blackbox repository", Salinas et al., AutoML 2022) is to measure
a table of learning curves once and replay every searcher against it: a searcher asks for a genome, the replay
looks up (or, off the table, takes the nearest) curve and advances a simulated clock by the epochs it trains.
This script builds that table; it trains exactly as a trial does (``asc_search.search.train_genome`` through the
run's own data preparation and feature cache), without early stopping, so that the replay can apply any
patience or rung to the whole curve.

Run: ``.venv/bin/python bench/learning_curves.py --data ../shared/data/esc10-dev --val-fold 2 --test-fold 3
--genomes 300 --epochs 16 --out bench/curves/esc10-dev.jsonl`` (appends; a second call skips the genomes already
in the file, so a build can be stopped and resumed; ``--time-limit-s`` stops it after that many seconds).

One JSON line a genome: ``genome_id``, ``params`` (the Optuna parameters, what a sampler sees), ``genome`` (its
dict), ``macs``, ``int8_bytes``, ``curve`` (per epoch: ``epoch``, ``val_accuracy``, ``val_log_loss``, ``seconds``:
wall time of that epoch on one core), ``setup_s`` (reading the genome's features before training; the first epoch's ``seconds`` also hold the
normalisation fit and the model build),
``draw`` (its position in the seeded random draw), and the machine it ran on. Infeasible draws (over the budget)
are counted, not trained.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from _common import machine  # noqa: I001 - sets sys.path


def _train_one(genome_dict: dict, data_by_rate, cache_dir: str, epochs: int, seed: int) -> dict:
    """Train one genome for ``epochs`` epochs (no early stopping) on one core; its curve."""
    import torch

    from asc_search.constraints import patch_layout
    from asc_search.frontends import FeatureCache
    from asc_search.search import TrialSettings, train_genome
    from asc_search.search_spaces import Genome

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    genome = Genome.from_dict(genome_dict)
    cache = FeatureCache(cache_dir)
    data = data_by_rate[genome.frontend.sample_rate_hz]
    features, _ = cache.get(data, patch_layout(genome))
    settings = TrialSettings(cache_dir=cache_dir, epochs=epochs, patience=epochs, batch_size=64, seed=seed)
    setup_s = time.perf_counter() - t0
    curve: list[dict] = []
    last = [time.perf_counter()]

    def on_epoch(row: dict, stage: str) -> None:
        now = time.perf_counter()
        curve.append({"stage": stage, "epoch": int(row["epoch"]), "val_accuracy": float(row["val_accuracy"]),
                      "val_log_loss": float(row["val_log_loss"]), "seconds": round(now - last[0], 4)})
        last[0] = now

    train_genome(genome, data_by_rate, features, cache=cache, settings=settings, on_epoch=on_epoch)
    return {"curve": curve, "setup_s": round(setup_s, 4), "total_s": round(time.perf_counter() - t0, 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a data folder or manifest, as asc-search --data")
    ap.add_argument("--val-fold", default=None)
    ap.add_argument("--test-fold", default=None)
    ap.add_argument("--genomes", type=int, default=300, help="feasible genomes to train (in all, with the file's)")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0, help="seed of the random draw and of the training")
    ap.add_argument("--budget", default="dcase2022")
    ap.add_argument("--workers", type=int, default=2, help="genomes trained at once (one core each)")
    ap.add_argument("--time-limit-s", type=float, default=None, help="stop starting genomes after this long")
    ap.add_argument("--out", type=Path, required=True, help="the JSON-lines table (appended)")
    args = ap.parse_args()

    import optuna
    import ray

    from asc_search.config import RunConfig
    from asc_search.constraints import count_complexity, get_budget
    from asc_search.pipeline import plan_data, prepare_data, space_options
    from asc_search.search_spaces import sample_genome

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t_start = time.time()
    config = RunConfig(data=args.data, val_fold=args.val_fold, test_fold=args.test_fold, seed=args.seed)
    prep_dir = Path(tempfile.mkdtemp(prefix="asc-bench-curves-"))
    try:
        plan = plan_data(config)
        data_by_rate, _ = prepare_data(plan, prep_dir)
        options = replace(space_options(config), sample_rates_hz=tuple(sorted(data_by_rate)))
        n_classes = next(iter(data_by_rate.values())).n_classes
        budget = get_budget(args.budget)
        done = set()
        if args.out.exists():
            done = {json.loads(line)["genome_id"] for line in args.out.read_text().splitlines() if line.strip()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(directions=["maximize", "minimize", "minimize"],
                                    sampler=optuna.samplers.RandomSampler(seed=args.seed))
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        remote = ray.remote(num_cpus=1)(_train_one)
        data_ref = ray.put(data_by_rate)
        cache_dir = str(prep_dir / "features")
        pending: dict = {}
        draws = infeasible = written = 0
        stop = False
        with open(args.out, "a", encoding="utf-8") as out:
            while pending or not stop:
                while not stop and len(pending) < args.workers:
                    if len(done) >= args.genomes or (args.time_limit_s and time.time() - t_start > args.time_limit_s):
                        stop = True
                        break
                    trial = study.ask()
                    draws += 1
                    genome = sample_genome(trial, options)
                    c = count_complexity(genome, n_classes=n_classes)
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    if budget.check(c):
                        infeasible += 1
                        continue
                    if genome.genome_id in done:
                        continue
                    done.add(genome.genome_id)
                    ref = remote.remote(genome.to_dict(), data_ref, cache_dir, args.epochs, args.seed)
                    pending[ref] = {"genome_id": genome.genome_id, "params": trial.params, "genome": genome.to_dict(),
                                    "macs": int(c.macs), "int8_bytes": int(c.int8_bytes), "draw": draws,
                                    "epochs": args.epochs, "seed": args.seed, "data": str(args.data),
                                    "n_classes": n_classes}
                if not pending:
                    break
                ready, _ = ray.wait(list(pending), num_returns=1)
                row = pending.pop(ready[0])
                try:
                    row.update(ray.get(ready[0]))
                except Exception as e:  # a genome that cannot train is a row too: the replay must see it fail
                    row.update({"curve": [], "error": f"{type(e).__name__}: {e}"[:300]})
                row["machine"] = machine()
                out.write(json.dumps(row) + "\n")
                out.flush()
                written += 1
                best = max((p["val_accuracy"] for p in row["curve"]), default=0.0)
                print(f"{len(done) - len(pending)} / {args.genomes}: {row['genome_id']} best {best:.3f} in "
                      f"{sum(p['seconds'] for p in row['curve']):.1f} s ({row['macs'] / 1e6:.2f} M MACs, "
                      f"{row['int8_bytes']:,} B)", flush=True)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(prep_dir, ignore_errors=True)
    print(f"{written} curve(s) written to {args.out} in {time.time() - t_start:.0f} s; {draws} draws, "
          f"{infeasible} over the {args.budget} budget (not trained)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
