"""The ``asc-search`` command line.

Commands: ``search`` (the default: ``asc-search --budget dcase2022 --data DIR``), ``resume RUN``, ``report RUN``,
``trials RUN``, ``show RUN TRIAL``, ``data check DIR`` and ``budgets``.
Exit codes: 0 success, 1 run failure, 2 usage error (one line naming the bad value and the fix).

Each command imports what it needs inside its own function, so ``asc-search budgets`` or ``--help`` answers
without loading torch, Ray and TensorFlow (seconds of start-up). These imports follow the layers like any other
(the cli is the top layer, ``lint-imports`` checks it); none of them avoids an import cycle.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path

from asc_search._errors import AscSearchError, UserInputError

COMMANDS = ("search", "resume", "report", "trials", "show", "deploy", "validate", "data", "budgets", "references")

EXAMPLES = """examples:
  asc-search --budget dcase2022 --data ../shared/data/esc10-dev --trials 16 --out runs/esc10
  asc-search --budget dcase2022 --data ../shared/data/fsdd --trials 16 --out runs/fsdd
  asc-search --budget dcase2022 --max-int8-bytes 20000 --data my_manifest.csv
  asc-search --data /data/esc10-dev --address auto --cpus-per-trial 1 --gpus-per-trial 0.25   # on a Ray cluster
  asc-search resume runs/esc10      # continue an interrupted run
  asc-search budgets
  asc-search references      # named reference architectures and their complexity
  asc-search data check ../shared/data/esc10-dev
  asc-search report runs/esc10 ; asc-search trials runs/esc10 --sort macs ; asc-search show runs/esc10 TRIAL
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        raise UserInputError(f"{message} (see asc-search --help)")


def _search_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="asc-search", description="Search small acoustic-scene classifiers that fit a device budget, "
                "and export the Pareto front to INT8 TFLite.", epilog=EXAMPLES,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset folder (metadata.csv, or a folder per class) or CSV manifest")
    p.add_argument("--budget", default="dcase2022", help="budget preset (asc-search budgets lists them)")
    p.add_argument("--max-int8-bytes", type=int, default=None, help="override the budget's INT8 parameter bytes")
    p.add_argument("--max-macs", type=int, default=None, help="override the budget's MACs per 1 s of audio")
    p.add_argument("--out", default=None, help="run directory (default: runs/<data name>-<budget>)")
    p.add_argument("--cache", default=None, help="folder of the prepared data (decoded waveforms, features): a "
                   "later run on the same data and front-ends reuses it (default: <out>/cache)")
    p.add_argument("--trials", type=int, default=16, help="trials to train (rejected candidates not counted)")
    p.add_argument("--time-budget", type=float, default=None, help="wall-clock limit of the search (s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scheduler", default="fifo", help="fifo (every trial trains in full) or mo-asha (multi-"
                   "objective successive halving over epochs: a trial dominated at a rung is stopped there)")
    p.add_argument("--fidelity", default="epochs", help="with --scheduler mo-asha, what a rung gives less of: epochs, "
                   "or epochs+data (before each rung a trial also trains on a nested 5-50 %% of the training clips)")
    p.add_argument("--train-subset", type=int, default=100, help="train on this DCASE 2024 subset of the training "
                   "clips: 5, 10, 25, 50 or 100 (percent; split_setup/split<N>.csv where the data has it, else a "
                   "nested random subset stratified by class); validation and test unchanged")
    p.add_argument("--sampler", default="tpe", help="tpe (multi-objective TPE), nsga2, gp (Gaussian process, for small trial budgets), random, "
                   "or auto (by the trial budget, as OptunaHub's AutoSampler: tpe below 250 trials, nsga2 from 250)")
    p.add_argument("--epochs", type=int, default=20, help="most epochs per trial")
    p.add_argument("--patience", type=int, default=6, help="early-stopping patience (epochs)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--val-fold", default=None, help="validation fold of a layout with a fold column (default: the "
                   "highest that is not the test fold)")
    p.add_argument("--test-fold", default=None, help="test fold of a layout with a fold column, never seen by the "
                   "search (default: the highest; 'none': no test split); TAU22: the evaluation-setup fold (default 1)")
    p.add_argument("--frontends", default="logmel", help="front-end kinds to search, comma-separated: "
                   "logmel,gammatone,cqt (default: logmel)")
    p.add_argument("--sample-rates-hz", default="", help="sample rates to search (Hz, comma-separated, each <= the "
                   "data's native rate; e.g. 8000,16000); default: the native rate")
    p.add_argument("--chunks-s", default="0.5,1", help="patch lengths to search (s, comma-separated; 'full' = the "
                   "longest clip; default 0.5,1)")
    p.add_argument("--deltas", default="0", help="delta-channel orders to search: 0, 1, 2 (comma-separated)")
    p.add_argument("--address", default=None, help="join a Ray cluster: auto or HOST:PORT (default: local Ray)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs reserved per trial (default 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per trial, fractional shares a GPU "
                   "(0.25: four trials a GPU); a trial with a GPU trains on CUDA (default 0: CPU)")
    p.add_argument("--max-concurrent", type=int, default=None)
    p.add_argument("--max-export", type=int, default=8, help="most Pareto members exported to INT8 TFLite")
    g = p.add_argument_group("training genes (each list is the choices the search picks from)")
    g.add_argument("--augment", default="", help="augmentations the search may switch on, comma-separated: "
                   "mixup,specaugment,cutmix,freq_mixstyle (default: none)")
    g.add_argument("--sapaugment", action="store_true", help="also search SapAugment's per-sample augmentation "
                   "policy (low-loss samples augmented more)")
    g.add_argument("--weight-decay", default="1e-4", help="Adam weight-decay choices (default 1e-4)")
    g.add_argument("--warmup-epochs", default="0", help="learning-rate warm-up choices in epochs (default 0)")
    g.add_argument("--epoch-choices", default="", help="training-epoch choices, e.g. 10,20 (default: --epochs)")
    g.add_argument("--batch-size-choices", default="", help="batch-size choices, e.g. 32,64 (default: --batch-size)")
    g.add_argument("--kd", default="none", help="distillation teachers: none,basd,cssd,ensemble (default none)")
    g.add_argument("--kd-alpha", default="0.5", help="choices of the hard-label weight alpha, each in [0, 1]")
    g.add_argument("--kd-temperature", default="2", help="choices of the distillation temperature T, each > 0")
    g.add_argument("--kd-teacher-rate-hz", type=int, default=0, help="CSSD teacher sample rate (Hz, >= the "
                   "student rates; default: the data's native rate)")
    g.add_argument("--prune", default="0", help="pruning-ratio choices per prunable stage, each in [0, 1) "
                   "(e.g. 0,0.25,0.5; default 0: no pruning)")
    g.add_argument("--prune-criterion", default="cosine", help="pruning criteria: cosine,l1 (default cosine)")
    g.add_argument("--qat", default="off", help="quantisation-aware fine-tuning: off, on or search (default off)")
    g.add_argument("--no-ensemble", action="store_true", help="skip the post-search ensemble selection")
    g.add_argument("--no-refit", action="store_true", help="export the search's own weights instead of training "
                   "each exported model again on train + validation for its selected epochs")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _setup_logging(verbose: bool) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("ray", "tensorflow", "absl", "onnx2tf", "h5py", "matplotlib", "optuna"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def _cmd_data(argv: list[str]) -> int:
    p = _Parser(prog="asc-search data", description="Inspect a dataset without training.",
                epilog="examples:\n  asc-search data check ../shared/data/esc10-dev\n"
                       "  asc-search data check TAU-urban-acoustic-scenes-2022-mobile-development/",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["check"], help="check: print clips, classes, splits, devices, durations, "
                   "sample rates and unreadable files")
    p.add_argument("data", help="dataset folder or CSV manifest")
    p.add_argument("--val-fold", default=None)
    p.add_argument("--test-fold", default=None)
    p.add_argument("--seed", type=int, default=0, help="seed of the validation carve")
    args = p.parse_args(argv)
    _setup_logging(False)
    from asc_search.data import check_dataset, format_check

    print(format_check(check_dataset(args.data, val_fold=args.val_fold, test_fold=args.test_fold, seed=args.seed)))
    return 0


def _cmd_report(argv: list[str]) -> int:
    p = _Parser(prog="asc-search report", description="Rebuild pareto.json, pareto.png, pareto.html and report.md "
                "of a run (also of an interrupted run) from its run directory.",
                epilog="examples:\n  asc-search report runs/demo-esc10", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run directory (the --out of a search)")
    args = p.parse_args(argv)
    _setup_logging(False)
    from asc_search.report import report_run

    run = report_run(args.run)
    done = sum(r["status"] == "completed" for r in run.trials)
    rejected = sum(r["status"] == "rejected" for r in run.trials)
    if not run.front:
        print(f"asc-search: {run.run_dir} has no trained feasible candidate ({rejected} rejected before training, "
              f"{len(run.trials) - rejected - done} failed or stopped); pareto.png plots the rejected ones")
        return 0
    note = " (interrupted run: rows read from tune/)" if run.interrupted else ""
    print(f"asc-search: {run.run_dir}: {len(run.trials)} candidates, {done} trained, front of {len(run.front)}{note}; "
          "wrote pareto.json, pareto.png, pareto.html, report.md")
    return 0


def _cmd_trials(argv: list[str]) -> int:
    p = _Parser(prog="asc-search trials", description="Print the trials of a run as a table.",
                epilog="examples:\n  asc-search trials runs/demo-esc10 --sort macs\n"
                       "  asc-search trials runs/demo-esc10 --status rejected",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--sort", default="best_val_accuracy", help="column to sort by (default best_val_accuracy)")
    p.add_argument("--ascending", action="store_true")
    p.add_argument("--status", default=None, help="only completed | rejected | failed | stopped")
    args = p.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    from asc_search.rundir import load_run

    run = load_run(args.run)
    rows = [r for r in run.trials if args.status is None or r["status"] == args.status]
    if rows and args.sort not in rows[0]:
        raise UserInputError(f"--sort {args.sort!r} is not a column; columns: {', '.join(rows[0])}")
    numeric = [r for r in rows if isinstance(r.get(args.sort), int | float)]
    other = [r for r in rows if not isinstance(r.get(args.sort), int | float)]
    rows = sorted(numeric, key=lambda r: r[args.sort], reverse=not args.ascending) + other
    table = Table(title=f"{run.run_dir.name}: {len(rows)} trials, sorted by {args.sort}")
    for col in ("trial", "status", "genome", "val acc", "M MACs", "INT8 bytes", "front", "reasons / error"):
        table.add_column(col, overflow="fold")
    for r in rows:
        acc = r.get("best_val_accuracy")
        table.add_row(str(r["trial_id"]), r["status"], r.get("summary", ""),
                      f"{acc:.3f}" if isinstance(acc, float) else "-", f"{r['macs'] / 1e6:.2f}", f"{r['int8_bytes']:,}",
                      "yes" if r.get("on_front") else "", r.get("reasons") or r.get("error") or "")
    Console(width=200).print(table)
    return 0


def _cmd_show(argv: list[str]) -> int:
    p = _Parser(prog="asc-search show", description="Print one trial's genome and metrics.",
                epilog="examples:\n  asc-search show runs/demo-esc10 0e771be1", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("trial", help="trial id (see asc-search trials RUN)")
    args = p.parse_args(argv)
    import json

    from asc_search.rundir import VALIDATION_FILE, load_run, model_dir

    run = load_run(args.run)
    match = [r for r in run.trials if str(r["trial_id"]) == args.trial]
    if not match:
        raise UserInputError(f"no trial {args.trial!r} in {run.run_dir}; list the ids with: asc-search trials {args.run}")
    row = dict(match[0])
    genome = json.loads(row.pop("genome")) if row.get("genome") else {}
    print(f"trial {args.trial} ({row['status']}): {row.get('summary', '')}")
    print("genome:")
    print(json.dumps(genome, indent=2))
    print("metrics:")
    for k, v in row.items():
        if v not in ("", None) and k not in ("summary",):
            print(f"  {k}: {v}")
    validation = model_dir(run.run_dir, args.trial) / VALIDATION_FILE
    if validation.exists():
        print(f"exported model: {validation.parent / 'model_int8.tflite'}")
        print(validation.read_text().rstrip())
    return 0


def _cmd_deploy(argv: list[str]) -> int:
    p = _Parser(prog="asc-search deploy", description="Write the deployable bundle of a searched model: INT8 model, "
                "float front-end as TFLite, labels, C array, validation and README.",
                epilog="examples:\n  asc-search deploy runs/demo-esc10 --pick knee\n"
                       "  asc-search deploy runs/demo-esc10 --pick best --target dcase2022 --out bundle/",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--pick", default="knee", help="trial id, knee, best or ensemble (default knee)")
    p.add_argument("--target", default=None, help="budget to re-check against (default: the run's); a model "
                   "that breaks it is bundled anyway, with target_pass false, and the exit code is 2")
    p.add_argument("--out", default=None, help="bundle folder (default RUN/bundles/<trial>)")
    p.add_argument("--adb", action="store_true", help="also time the models on an attached Android device with "
                   "TFLite's benchmark_model (needs adb and benchmark_model in /data/local/tmp/asc_search)")
    args = p.parse_args(argv)
    _setup_logging(False)
    if args.adb and shutil.which("adb") is None:
        raise UserInputError("--adb needs the 'adb' program on PATH (Android platform-tools); install it or drop --adb")
    from asc_search.deploy import make_bundle

    v = make_bundle(args.run, args.pick, out=args.out, target=args.target, adb=args.adb)  # breaks target: exit 2
    if "member_bundles" in v:  # an ensemble: one bundle per member
        agreement = "lowest member bundle/float agreement " + _f(min(
            (b["bundle_float_agreement"] for b in v["member_bundles"].values() if "bundle_float_agreement" in b),
            default=None))
    else:
        agreement = f"bundle/float agreement {_f(v.get('bundle_float_agreement'))}"
    print(f"asc-search: bundle {v['bundle']}: INT8 accuracy {v['int8']['accuracy']:.3f}, {agreement}, "
          f"{v['int8_bytes_tflite']:,} INT8 bytes, {v['macs_tflite'] / 1e6:.2f} M MACs, end-to-end "
          f"{v['latency_ms_end_to_end']:.2f} ms per chunk on this host; target {v['target']} passed")
    return 0 if v.get("bundle_agreement_pass", True) and v.get("frontend_within_tolerance", True) else 1


def _cmd_validate(argv: list[str]) -> int:
    p = _Parser(prog="asc-search validate", description="Run a bundle (or a models/<trial>/ folder) on labelled "
                "audio: accuracy, log loss, UAR and the confusion matrix.",
                epilog="examples:\n  asc-search validate runs/demo-esc10/bundles/TRIAL --data NEW_RECORDINGS_DIR\n"
                "  asc-search validate runs/demo-esc10/bundles/TRIAL --data ../shared/data/esc10-dev --split validation",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="bundle folder, models/<trial>/ folder, or its model_int8.tflite")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="all", choices=["all", "test", "validation"],
                   help="all: every labelled clip of --data (default); test / validation: that part of the split "
                   "of the run the model comes from (its seed and folds)")
    p.add_argument("--val-fold", default=None, help="with --split test|validation: this fold instead of the run's")
    p.add_argument("--test-fold", default=None, help="with --split test|validation: this fold instead of the run's")
    p.add_argument("--seed", type=int, default=None, help="with --split test|validation: this split seed instead "
                   "of the run's")
    args = p.parse_args(argv)
    _setup_logging(False)
    from asc_search.deploy import evaluate_model_dir

    model = Path(args.model)
    if model.is_file():
        model = model.parent
    if not model.exists():
        raise UserInputError(f"{args.model} does not exist; pass a bundle or a models/<trial>/ folder")
    m = evaluate_model_dir(model, args.data, split=args.split, val_fold=args.val_fold, test_fold=args.test_fold,
                           seed=args.seed)
    print(f"asc-search: {m['clips']} clips ({m['split']}: {m['split_rule']}), front-end: {m['frontend']}")
    print(f"accuracy {m['accuracy']:.4f}  log loss {m['log_loss']:.4f}  UAR {m['uar']:.4f}")
    width = max(len(c) for c in m["classes"])
    print("confusion matrix (rows: true, columns: predicted)")
    for c, row in zip(m["classes"], m["confusion_matrix"], strict=True):
        print(f"  {c:>{width}} " + " ".join(f"{n:3d}" for n in row))
    return 0


def _cmd_budgets() -> int:
    from asc_search.constraints import list_budgets

    for b in list_budgets():
        print(b.describe())
    return 0


def _cmd_references(n_classes: int) -> int:
    from asc_search.constraints import count_complexity
    from asc_search.search_spaces import list_references

    print(f"{'name':<20} {'input':<12} {'params':>8} {'int8 B':>8} {'keras':>8} {'MACs/1s':>13} {'NeSsi MACs':>13} "
          f"{'peak RAM B':>11}  architecture")
    for r in list_references():
        c = count_complexity(r.genome, n_classes=n_classes)
        shape = "x".join(str(v) for v in c.input_shape)
        print(f"{r.name:<20} {shape:<12} {c.params:>8,} {c.int8_bytes:>8,} {c.keras_params:>8,} {c.macs:>13,} "
              f"{c.nessi_macs:>13,} {c.peak_activation_bytes:>11,}  {r.genome.arch.summary()}")
    print(f"({n_classes} classes; the front-end is the published one. Sources and notes: asc_search.search_spaces)")
    return 0


def _cmd_search(argv: list[str]) -> int:
    args = _search_parser().parse_args(argv)
    _setup_logging(args.verbose)
    from asc_search.config import RunConfig
    from asc_search.pipeline import resolve_budget, run_search, space_options

    data = Path(args.data).expanduser()
    if not data.exists():
        raise UserInputError(f"--data {args.data!r} does not exist; pass a dataset folder or a CSV manifest")
    out = Path(args.out) if args.out else Path("runs") / f"{data.resolve().name}-{args.budget}"
    config = RunConfig(
        data=data.resolve(), budget=args.budget, max_int8_bytes=args.max_int8_bytes, max_macs=args.max_macs, out=out,
        cache=Path(args.cache).expanduser().resolve() if args.cache else None,
        trials=args.trials, time_budget_s=args.time_budget, seed=args.seed, sampler=args.sampler, scheduler=args.scheduler,
        fidelity=args.fidelity, train_subset_pct=args.train_subset, epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, val_fold=args.val_fold,
        test_fold=args.test_fold, refit=not args.no_refit,
        frontends=_csv(args.frontends, str, "--frontends"), sample_rates_hz=_csv(args.sample_rates_hz, int,
                                                                                   "--sample-rates-hz"),
        chunks_s=_csv(args.chunks_s.replace("full", "0"), float, "--chunks-s"), deltas=_csv(args.deltas, int, "--deltas"),
        address=args.address, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent, max_export=args.max_export,
        augment=_csv(args.augment, str, "--augment") if args.augment else (), sapaugment=args.sapaugment,
        weight_decays=_csv(args.weight_decay, float, "--weight-decay"),
        warmup_epochs=_csv(args.warmup_epochs, int, "--warmup-epochs"), kd=_csv(args.kd, str, "--kd"),
        epoch_choices=_csv(args.epoch_choices, int, "--epoch-choices"),
        batch_size_choices=_csv(args.batch_size_choices, int, "--batch-size-choices"),
        kd_alphas=_csv(args.kd_alpha, float, "--kd-alpha"), kd_temperatures=_csv(args.kd_temperature, float,
                                                                                  "--kd-temperature"),
        kd_teacher_rate_hz=args.kd_teacher_rate_hz, prune_ratios=_csv(args.prune, float, "--prune"),
        prune_criteria=_csv(args.prune_criterion, str, "--prune-criterion"), qat=args.qat,
        ensemble=not args.no_ensemble,
    )
    resolve_budget(config)  # unknown budget: usage error before anything starts
    space_options(config)  # bad space choices: usage error before anything starts
    _print_front(_with_display(lambda **kw: run_search(config, **kw)))
    return 0


def _with_display(run):
    """Call ``run(on_progress=..., on_state=...)`` with the live panel in a terminal, plain lines otherwise."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.live import Live

        panel = _LivePanel()
        with Live(panel, console=Console(), refresh_per_second=2, transient=False) as live:
            return run(on_progress=lambda msg: live.console.print(f"asc-search: {msg}"), on_state=panel.update)
    return run(on_progress=lambda msg: print(f"asc-search: {msg}", flush=True))  # CI, pipes, files


def _cmd_resume(argv: list[str]) -> int:
    p = _Parser(prog="asc-search resume", description="Continue an interrupted search (driver killed, machine "
                "or cluster head restarted): finished trials are kept, unfinished ones run again, the sampler goes "
                "on from its history, and the run finishes its trial count, front, export and report.",
                epilog="examples:\n  asc-search resume runs/esc10\n  asc-search resume runs/esc10 --address auto",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run directory (the --out of the interrupted search)")
    p.add_argument("--address", default=None, help="Ray cluster to resume on: auto or HOST:PORT (default: the "
                   "run's own)")
    p.add_argument("--cpus-per-trial", type=float, default=None, help="default: the run's own")
    p.add_argument("--gpus-per-trial", type=float, default=None, help="default: the run's own")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    _setup_logging(args.verbose)
    if not Path(args.run).is_dir():
        raise UserInputError(f"{args.run} does not exist; pass the --out folder of the interrupted search")
    if args.cpus_per_trial is not None and args.cpus_per_trial <= 0:
        raise UserInputError(f"--cpus-per-trial must be > 0, got {args.cpus_per_trial}")
    if args.gpus_per_trial is not None and args.gpus_per_trial < 0:
        raise UserInputError(f"--gpus-per-trial must be >= 0, got {args.gpus_per_trial}")
    from asc_search.pipeline import resume_search

    _print_front(_with_display(lambda **kw: resume_search(args.run, address=args.address,
                                                          cpus_per_trial=args.cpus_per_trial,
                                                          gpus_per_trial=args.gpus_per_trial, **kw)))
    return 0


class _LivePanel:
    """Rich renderable of the search's live state (re-read at every refresh, so the clock moves)."""

    def __init__(self) -> None:
        self.state = None

    def update(self, state) -> None:
        self.state = state

    def __rich__(self):
        from rich.panel import Panel
        from rich.table import Table

        s = self.state
        grid = Table.grid(padding=(0, 2))
        if s is None:
            grid.add_row("preparing data and starting Ray ...")
            return Panel(grid, title="asc-search")
        if hasattr(s, "clips_total"):  # a PreparationProgress: the data is being decoded into its store
            from rich.progress_bar import ProgressBar

            eta = "-" if s.eta_s is None else f"{s.eta_s:,.0f} s"
            grid.add_row(ProgressBar(total=max(1, s.clips_total), completed=s.clips_done, width=40),
                         f"{s.clips_done:,}/{s.clips_total:,} clips", f"{s.clips_per_s:,.0f} clips/s", f"ETA {eta}")
            return Panel(grid, title=f"asc-search: preparing the {s.sample_rate_hz} Hz audio")
        remaining = "-" if s.remaining_s is None else f"{s.remaining_s:.0f} s"
        grid.add_row("trials done", f"{s.done + s.stopped + s.failed}/{s.total}", "running", str(s.running),
                     "rejected", str(s.rejected), "failed", str(s.failed))
        if s.stopped:
            grid.add_row("completed", str(s.done), "stopped at a rung", str(s.stopped), "", "", "", "")
        grid.add_row("best feasible accuracy", f"{s.best_accuracy:.3f}", "front size", str(s.front_size),
                     "hypervolume", f"{s.hypervolume:.3f}", "", "")
        grid.add_row("elapsed", f"{s.elapsed_s:.0f} s", "remaining time budget", remaining, "", "", "", "")
        return Panel(grid, title="asc-search: search in progress")


def _csv(text: str, kind, flag: str) -> tuple:
    try:
        return tuple(kind(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserInputError(f"{flag} {text!r} is not a comma-separated list of {kind.__name__} values") from None


def _print_front(result) -> None:
    from rich.console import Console
    from rich.table import Table

    counts = {s: sum(r["status"] == s for r in result.trials) for s in ("completed", "rejected", "failed", "stopped")}
    by_id = {v.get("trial_id"): v for v in result.exported}
    table = Table(title=f"Pareto front ({len(result.front)} of {counts['completed']} trained; "
                        f"{counts['rejected']} rejected before training, {counts['failed']} failed)")
    for col in ("trial", "genome", "val acc", "M MACs", "INT8 bytes", "INT8 acc", "agreement", "deployable"):
        table.add_column(col, justify="left" if col in ("trial", "genome") else "right")
    for r in result.front:
        v = by_id.get(r["trial_id"], {})
        table.add_row(r["trial_id"], r["summary"], f"{r['best_val_accuracy']:.3f}", f"{r['macs'] / 1e6:.2f}",
                      f"{r['int8_bytes']:,}", _f(v.get("int8", {}).get("accuracy")),
                      _f(v.get("int8_float_agreement")), str(v.get("deployable", "-")))
    Console(width=160).print(table)
    print(f"asc-search: run directory {result.run_dir} (report.md, pareto.png, trials.csv, models/)")


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``asc-search``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "budgets":
            _Parser(prog="asc-search budgets", description="List the registered device budgets with their limits "
                    "and source.", epilog="examples:\n  asc-search budgets",
                    formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv[1:])
            return _cmd_budgets()
        if argv and argv[0] == "references":
            p = _Parser(prog="asc-search references", description="List the named reference architectures with "
                        "their complexity by the tool's counting convention (and Keras / NeSsi figures).",
                        epilog="examples:\n  asc-search references\n  asc-search references --n-classes 3",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
            p.add_argument("--n-classes", type=int, default=10, help="output classes (default 10)")
            return _cmd_references(p.parse_args(argv[1:]).n_classes)
        if argv and argv[0] == "data":
            return _cmd_data(argv[1:])
        if argv and argv[0] == "resume":
            return _cmd_resume(argv[1:])
        if argv and argv[0] in ("report", "trials", "show", "deploy", "validate"):
            return {"report": _cmd_report, "trials": _cmd_trials, "show": _cmd_show, "deploy": _cmd_deploy,
                    "validate": _cmd_validate}[argv[0]](argv[1:])
        if argv and argv[0] == "search":
            argv = argv[1:]
        return _cmd_search(argv)
    except UserInputError as exc:
        print(f"asc-search: error: {exc}", file=sys.stderr)
        return 2
    except AscSearchError as exc:
        print(f"asc-search: run failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("asc-search: interrupted; finished trials are kept in the run directory", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
