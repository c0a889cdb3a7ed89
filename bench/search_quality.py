"""Search quality on ESC-10 dev: the multi-objective search against random search and single-objective TPE.

Run: ``.venv/bin/python bench/search_quality.py [--quick] [--trials 10] [--epochs 3] [--seeds 0,1,2]`` (prints a
table, writes ``bench/results/search_quality.json`` and a plot ``search_quality.png``).

Searchers, all with the product's feasibility filter (``FeasibleOptunaSearch``: an infeasible genome is
told to Optuna and never trained), the same space (``asc-search``'s default space for ESC-10: log-mel,
16 kHz, 0.5/1 s patches), the dcase2022 budget, the same trainer (``train_candidate``), 2 trials at a time:
- ``mo_tpe``: the product's search (Optuna multi-objective TPE over accuracy max, MACs min, INT8 bytes min);
- ``random``: Optuna's RandomSampler run by Ray Tune over the same space (``--sampler random``);
- ``so_tpe``: Optuna's single-objective TPE on validation accuracy alone (same TPE settings), a fixed budget.
Each runs ``--trials`` trained trials (rejections not counted) per seed. Figures per run:
- hypervolume (HV) of the (accuracy, MACs, INT8 bytes) front of its trained trials, normalised by the budget and
  computed exactly with the fixed reference point (accuracy 0, 30 M MACs, 128,000 B): HV = volume dominated in
  [1 - accuracy, MACs / 30 M, bytes / 128,000] in [0, 1]^3 (1.0 = a perfect classifier costing nothing);
- at equal trial count (all ``--trials``) and at equal wall time (per seed, the shortest of the three runs'
  ``Tuner.fit`` times: the trials each run finished by then);
- best feasible accuracy, and trials (in completion order) to reach 90 % of the run's final HV;
- share of the run's wall time spent outside training: 1 - sum of trial run times / (2 slots x wall time).
The feature cache is shared and filled for every front-end of the space before the runs, so no searcher pays
for a front-end another computed. The named references (DCASE 2022 baseline, the pruned-ensemble seed's CNN),
at 16 kHz with their published input shape, are trained by the same trainer with the same epochs, as points.
"""

from __future__ import annotations

import argparse
import atexit
import itertools
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from _common import DATA, REPO, RESULTS, command_line, spread, write_result  # noqa: I001 - sets sys.path

from asc_search._pareto import normalised_hypervolume

SEARCHERS = ("mo_tpe", "random", "so_tpe")
REFERENCES = ("dcase2022_baseline", "lowcomplexity_cnn")


# ---------------------------------------------------------------- searchers
def make_searcher(kind: str, seed: int, space, rejections: Path):
    import optuna

    from asc_search.search import MODES, OBJECTIVES, FeasibleOptunaSearch, make_sampler

    if kind in ("mo_tpe", "random"):
        return FeasibleOptunaSearch(space=space, rejections_path=rejections, metric=list(OBJECTIVES),
                                    mode=list(MODES), sampler=make_sampler("tpe" if kind == "mo_tpe" else "random",
                                                                            seed))

    class SingleObjectiveFeasibleSearch(FeasibleOptunaSearch):
        """``FeasibleOptunaSearch`` on accuracy alone: a rejected genome is told as accuracy 0."""

        def suggest(self, trial_id):
            from asc_search.constraints import count_complexity
            from asc_search.search_spaces import genome_from_params

            for _ in range(self._max_rejections):
                params = super(FeasibleOptunaSearch, self).suggest(trial_id)
                if not isinstance(params, dict):
                    return params
                genome = genome_from_params(params)
                c = count_complexity(genome, n_classes=self._space.n_classes)
                reasons = self._space.budget.check(c)
                if not reasons:
                    self.suggested += 1
                    return {"genome": genome.to_dict(), "params": params, "index": self.suggested}
                ot_trial = self._ot_trials.pop(trial_id)
                self._ot_study.tell(ot_trial, 0.0, state=optuna.trial.TrialState.COMPLETE)
                self.rejected += 1
                self._record_rejection(genome, c.to_dict(), reasons, ot_trial.number)
            raise RuntimeError("no feasible genome")

    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=8,
                                         constant_liar=True)
    return SingleObjectiveFeasibleSearch(space=space, rejections_path=rejections, metric="best_val_accuracy",
                                         mode="max", sampler=sampler)


def run_one(kind: str, seed: int, *, trials: int, epochs: int, time_limit_s: float, data_ref, space,
            cache_dir: Path, work: Path, budget) -> dict:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from asc_search.constraints import count_complexity
    from asc_search.search import TrialSettings, train_candidate
    from asc_search.search_spaces import Genome

    run = work / f"{kind}-s{seed}"
    run.mkdir(parents=True)
    searcher = make_searcher(kind, seed, space, run / "rejected.jsonl")
    settings = TrialSettings(cache_dir=str(cache_dir), epochs=epochs, patience=epochs, batch_size=64, seed=seed,
                             threads=1, tune_dir=str(run / "tune"))
    trainable = tune.with_resources(tune.with_parameters(train_candidate, data_by_rate=data_ref, settings=settings),
                                    {"cpu": 1})
    tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
        search_alg=ConcurrencyLimiter(searcher, max_concurrent=2), num_samples=trials, reuse_actors=True,
        time_budget_s=time_limit_s),
        run_config=tune.RunConfig(name="tune", storage_path=str(run), verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    t0 = time.time()
    grid = tuner.fit()
    wall = time.time() - t0
    points, train_s, infeasible_trained, failed = [], 0.0, 0, 0
    for r in grid:
        m = r.metrics or {}
        train_s += float(m.get("time_total_s", 0.0))
        if r.error is not None or m.get("failed") or not m.get("final"):
            failed += 1
            continue
        g = Genome.from_dict(r.config["genome"])
        infeasible_trained += bool(budget.check(count_complexity(g, n_classes=space.n_classes)))
        points.append({"acc": float(m["best_val_accuracy"]), "macs": int(m["macs"]), "int8_bytes": int(m["int8_bytes"]),
                       "t_s": float(m.get("finished_at", t0 + wall)) - t0, "summary": g.summary()})
    points.sort(key=lambda p: p["t_s"])
    shutil.rmtree(run / "tune", ignore_errors=True)  # checkpoints: not needed
    return {"searcher": kind, "seed": seed, "wall_s": wall, "trained": len(points), "failed": failed,
            "rejected": searcher.rejected, "infeasible_trained": infeasible_trained, "train_s": train_s,
            "outside_training_share": max(0.0, 1.0 - train_s / (2 * wall)), "points": points}


def score(run: dict, *, max_macs: float, max_bytes: float, until_s: float | None = None) -> dict:
    pts = [p for p in run["points"] if until_s is None or p["t_s"] <= until_s]
    objs = [(p["acc"], p["macs"], p["int8_bytes"]) for p in pts]
    hv = normalised_hypervolume(objs, max_macs=max_macs, max_int8_bytes=max_bytes)
    curve = [normalised_hypervolume(objs[:k], max_macs=max_macs, max_int8_bytes=max_bytes)
             for k in range(1, len(objs) + 1)]
    to90 = next((k + 1 for k, v in enumerate(curve) if v >= 0.9 * hv), None) if hv > 0 else None
    return {"hv": hv, "best_acc": max((p["acc"] for p in pts), default=0.0), "trials": len(pts),
            "trials_to_90pct_hv": to90, "hv_curve": curve}


# ---------------------------------------------------------------- references
def train_reference(name: str, seed: int, epochs: int, data_ref, cache_dir: str) -> dict:
    import ray
    import torch

    from asc_search.constraints import count_complexity, patch_layout
    from asc_search.frontends import FeatureCache
    from asc_search.search_spaces import build_model, reference_genome
    from asc_search.trainers import Normalisation, TrainSettings, fit

    data_by_rate = ray.get(data_ref) if isinstance(data_ref, ray.ObjectRef) else data_ref
    torch.set_num_threads(1)
    genome = reference_genome(name, sample_rate_hz=16000)
    data = data_by_rate[16000]
    c = count_complexity(genome, n_classes=data.n_classes)
    features, _ = FeatureCache(cache_dir).get(data, patch_layout(genome))
    train, val = np.flatnonzero(data.is_train), np.flatnonzero(data.is_validation)
    norm = Normalisation.fit(features, train, seed=seed)
    torch.manual_seed(seed)
    model = build_model(genome, data.n_classes)
    t0 = time.time()
    res = fit(model, features, data.labels, train, val, norm,
              TrainSettings(epochs=epochs, learning_rate=genome.learning_rate, batch_size=64, patience=epochs,
                            seed=seed))
    return {"reference": name, "seed": seed, "acc": float(res.val_metrics["accuracy"]), "macs": c.macs,
            "int8_bytes": c.int8_bytes, "train_s": time.time() - t0}


def fill_cache(data_ref, options, cache_dir: str) -> float:
    """Compute every front-end of the space into the shared cache (2 Ray tasks at a time)."""
    import ray

    from asc_search.constraints import patch_layout
    from asc_search.frontends import FeatureCache
    from asc_search.search_spaces import ArchSpec, FrontendGenes, Genome, reference_genome

    @ray.remote(num_cpus=1)
    def one(genes_list, data_by_rate):
        import torch

        torch.set_num_threads(1)
        for genes in genes_list:
            g = Genome(frontend=genes, arch=ArchSpec(stages=(("conv_c8_k3_relu",),)))
            FeatureCache(cache_dir).get(data_by_rate[genes.sample_rate_hz], patch_layout(g))
        return len(genes_list)

    genes = [FrontendGenes(kind=k, sample_rate_hz=r, n_bins=b, hop_ms=h, chunk_s=c)
             for k, r, b, h, c in itertools.product(options.frontends, options.sample_rates_hz, options.n_bins,
                                                    options.hop_ms, options.chunk_s)]
    genes.append(reference_genome(REFERENCES[0], sample_rate_hz=16000).frontend)
    t0 = time.time()
    ray.get([one.remote(genes[i::2], data_ref) for i in range(2)])
    return time.time() - t0


# ---------------------------------------------------------------- plot
def plot(runs: list[dict], refs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    colours = {"mo_tpe": "tab:blue", "random": "tab:orange", "so_tpe": "tab:green"}
    for kind in SEARCHERS:
        pts = [p for r in runs if r["searcher"] == kind for p in r["points"]]
        ax.scatter([p["macs"] / 1e6 for p in pts], [p["acc"] for p in pts], s=[8 + p["int8_bytes"] / 2000 for p in pts],
                   alpha=0.55, c=colours[kind], label=f"{kind} (all seeds; size ~ INT8 bytes)")
    for name in REFERENCES:
        rs = [r for r in refs if r["reference"] == name]
        if rs:
            ax.scatter([rs[0]["macs"] / 1e6], [statistics.median(r["acc"] for r in rs)], marker="*", s=260,
                       edgecolors="k", label=f"{name} (median of {len(rs)} seeds)")
    ax.set_xlabel("MACs per 1 s of audio (M)")
    ax.set_ylabel("validation accuracy (ESC-10 fold 3)")
    ax.axvline(30, color="grey", ls=":", lw=1)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("search quality: trained trials and references (same trainer, same epochs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, 4 trials, 1 epoch (smoke run)")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--time-limit-s", type=float, default=300.0, help="safety limit per search (s)")
    ap.add_argument("--from-raw", action="store_true", help="score the runs saved in search_quality_raw.json again")
    args = ap.parse_args()
    trials, epochs, seeds = (4, 1, [0]) if args.quick else (args.trials, args.epochs,
                                                            [int(s) for s in args.seeds.split(",")])
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import optuna
    import ray

    from asc_search.config import RunConfig
    from asc_search.constraints import get_budget
    from asc_search.pipeline import plan_data, prepare_data, space_options
    from asc_search.search import DefineByRunSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t_start = time.time()
    config = RunConfig(data=DATA, sample_rates_hz=(16000,), chunks_s=(0.5, 1.0), seed=0)
    prep_dir = tempfile.mkdtemp(prefix="asc-bench-sq-data-")  # the waveform store, removed at exit
    atexit.register(shutil.rmtree, prep_dir, True)
    data_by_rate, _ = prepare_data(plan_data(config), Path(prep_dir))
    data = data_by_rate[16000]
    options = replace(space_options(config), sample_rates_hz=(16000,))
    budget = get_budget("dcase2022")
    space = DefineByRunSpace(options=options, budget=budget, n_classes=data.n_classes)
    max_macs, max_bytes = float(budget.max_macs), float(budget.max_int8_bytes)
    runs, refs, fill_s = [], [], 0.0
    raw = RESULTS / "search_quality_raw.json"
    if args.from_raw:
        saved = json.loads(raw.read_text())
        runs, refs, fill_s = saved["runs"], saved["refs"], saved["fill_s"]
        trials, epochs, seeds = saved["trials"], saved["epochs"], saved["seeds"]
    else:
      with tempfile.TemporaryDirectory(prefix="asc-bench-sq-") as tmp:
          work, cache_dir = Path(tmp), Path(tmp) / "cache"
          cache_dir.mkdir()
          ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
          try:
              data_ref = ray.put(data_by_rate)
              fill_s = fill_cache(data_ref, options, str(cache_dir))
              print(f"feature cache filled in {fill_s:.0f} s", flush=True)
              for i, seed in enumerate(seeds):
                  order = SEARCHERS[i % 3:] + SEARCHERS[:i % 3]  # rotate who runs first
                  for kind in order:
                      r = run_one(kind, seed, trials=trials, epochs=epochs, time_limit_s=args.time_limit_s,
                                  data_ref=data_by_rate, space=space, cache_dir=cache_dir, work=work, budget=budget)
                      runs.append(r)
                      s = score(r, max_macs=max_macs, max_bytes=max_bytes)
                      print(f"seed {seed} {kind:<7} {r['trained']} trained, {r['rejected']} rejected, "
                            f"{r['wall_s']:.0f} s: HV {s['hv']:.4f}, best acc {s['best_acc']:.3f}, "
                            f"outside training {100 * r['outside_training_share']:.0f} %", flush=True)
              remote = ray.remote(num_cpus=1)(train_reference)
              refs = ray.get([remote.remote(name, seed, epochs, data_ref, str(cache_dir))
                              for name in REFERENCES for seed in seeds])
          finally:
              ray.shutdown()
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps({"runs": runs, "refs": refs, "fill_s": fill_s, "trials": trials, "epochs": epochs,
                               "seeds": seeds}))
    # scores at equal trials and at equal wall time (per seed, the shortest run)
    for r in runs:
        r["at_equal_trials"] = score(r, max_macs=max_macs, max_bytes=max_bytes)
        t_eq = min(x["wall_s"] for x in runs if x["seed"] == r["seed"])
        r["equal_wall_s"] = t_eq
        r["at_equal_wall"] = score(r, max_macs=max_macs, max_bytes=max_bytes, until_s=t_eq)
    table = {}
    for kind in SEARCHERS:
        rs = [r for r in runs if r["searcher"] == kind]
        t90 = [r["at_equal_trials"]["trials_to_90pct_hv"] for r in rs if r["at_equal_trials"]["trials_to_90pct_hv"]]
        table[kind] = {
            "hv_equal_trials": spread([r["at_equal_trials"]["hv"] for r in rs]),
            "hv_equal_wall": spread([r["at_equal_wall"]["hv"] for r in rs]),
            "best_acc": spread([r["at_equal_trials"]["best_acc"] for r in rs]),
            "best_acc_equal_wall": spread([r["at_equal_wall"]["best_acc"] for r in rs]),
            "trials_to_90pct_hv": spread(t90) if t90 else None,
            "wall_s": spread([r["wall_s"] for r in rs]), "rejected": spread([r["rejected"] for r in rs]),
            "outside_training_share": spread([r["outside_training_share"] for r in rs]),
            "infeasible_trained": sum(r["infeasible_trained"] for r in rs),
        }
    ratios = {}
    for other in ("random", "so_tpe"):
        for key in ("hv_equal_trials", "hv_equal_wall"):
            den = table[other][key]["median"]
            ratios[f"mo_tpe/{other} {key}"] = table["mo_tpe"][key]["median"] / den if den else math.inf
        per_seed = []
        for seed in seeds:
            a = next(r for r in runs if r["searcher"] == "mo_tpe" and r["seed"] == seed)["at_equal_trials"]["hv"]
            b = next(r for r in runs if r["searcher"] == other and r["seed"] == seed)["at_equal_trials"]["hv"]
            per_seed.append(a / b if b else math.inf)
        ratios[f"mo_tpe/{other} per-seed hv_equal_trials"] = per_seed
    ref_table = {}
    for name in REFERENCES:
        rs = [r for r in refs if r["reference"] == name]
        ref_table[name] = {"acc": spread([r["acc"] for r in rs]), "macs": rs[0]["macs"], "int8_bytes": rs[0]["int8_bytes"],
                           "hv_alone": normalised_hypervolume([(statistics.median(r["acc"] for r in rs), rs[0]["macs"],
                                                                rs[0]["int8_bytes"])], max_macs=max_macs,
                                                              max_int8_bytes=max_bytes)}
    print(f"\n{'searcher':<8} {'HV@trials':>18} {'HV@wall':>18} {'best acc':>18} {'to 90% HV':>10} {'wall s':>7}")
    for kind, t in table.items():
        f = lambda s: f"{s['median']:.4f} [{s['min']:.3f}-{s['max']:.3f}]"  # noqa: E731
        t90 = t["trials_to_90pct_hv"]["median"] if t["trials_to_90pct_hv"] else float("nan")
        print(f"{kind:<8} {f(t['hv_equal_trials']):>18} {f(t['hv_equal_wall']):>18} {f(t['best_acc']):>18} "
              f"{t90:>10.1f} {t['wall_s']['median']:>7.0f}")
    for k, v in ratios.items():
        print(f"{k}: {v if isinstance(v, list) else round(v, 3)}")
    for name, t in ref_table.items():
        print(f"reference {name}: acc {t['acc']['median']:.3f} [{t['acc']['min']:.3f}-{t['acc']['max']:.3f}], "
              f"{t['macs'] / 1e6:.2f} M MACs, {t['int8_bytes']:,} B, HV alone {t['hv_alone']:.4f}")
    png = (RESULTS if args.quick else REPO / "bench") / "search_quality.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(runs, refs, png)
    write_result("search_quality", {
        "quick": args.quick, "trials": trials, "epochs": epochs, "seeds": seeds, "slots": 2,
        "space": options.to_dict(), "budget": budget.name, "hv_reference_point": {"accuracy": 0.0, "macs": max_macs,
                                                                                    "int8_bytes": max_bytes},
        "table": table, "ratios": ratios, "references": ref_table, "reference_runs": refs, "runs": runs,
        "fill_cache_s": fill_s, "total_s": time.time() - t_start, "plot": str(png.relative_to(REPO)),
    }, command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
