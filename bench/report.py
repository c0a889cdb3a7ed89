"""Write BENCHMARKS.md from the JSON files under bench/results/ (run by ``make bench`` after the benchmarks).

Run: ``.venv/bin/python bench/report.py`` (reads ``bench/results/*.json``, writes ``BENCHMARKS.md``).
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from _common import REPO, RESULTS, machine  # noqa: I001 - sets sys.path


def _load(name: str) -> dict | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _s(sp: dict | None, fmt: str = "{:.3f}") -> str:
    if not sp:
        return "n/a"
    if sp["n"] == 1:
        return fmt.format(sp["median"])
    return f"{fmt.format(sp['median'])} ({fmt.format(sp['min'])}–{fmt.format(sp['max'])}, n={sp['n']})"


def _load_line(d: dict) -> str:
    la = d.get("machine", {}).get("loadavg")
    return f"load average at the end of the run: {la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f} (1/5/15 min)" if la else ""


def replay_lines() -> list[str]:
    """The "Search quality by replay" section from ``bench/results/replay-*.json`` (``bench/replay.py TABLE``)."""
    out: list[str] = []
    for path in sorted(RESULTS.glob("replay-*.json")):
        d = json.loads(path.read_text())
        out += [f"### Replay on `{d['table']}` ({d['curves']} learning curves)", "",
                f"Command: `{d['command']}` ({d['date']}; {_load_line(d)}). Equal simulated wall time "
                f"{d['wall_s']:.0f} s, 2 slots, {d['seeds']} seeds; HV: exact normalised (accuracy, MACs, INT8 bytes) "
                "hypervolume of the completed trials at that time.", "",
                "| searcher | median HV | × random | seeds above random | reaches random's final HV (seeds; median "
                "fraction of the time where reached; median over all seeds, never = ∞) | completed trials (median) |",
                "|---|---|---|---|---|---|"]
        for name, t in d["summary"].items():
            reached = [x for x in t["reach_random_final_fraction"] if x is not None]
            med = statistics.median(reached) if reached else None
            every = t.get("reach_median_all_seeds")
            every = "-" if every is None else "∞" if every == float("inf") else f"{every:.2f}"
            out.append(f"| {name} | {t['hv_median']:.4f} | {t['ratio_to_random'] or 0:.3f} | "
                       f"{t['seeds_above_random']}/{d['seeds']} | {len(reached)}; "
                       f"{'-' if med is None else f'{med:.2f}'}; {every} | {t['completed_median']:.0f} |")
        c = d.get("ceiling")
        if c:
            out += ["", f"Ceiling of this table: its best validation accuracy is {c['best_accuracy']:.4f}, which bounds "
                    f"every replayed HV (a replayed accuracy is a table accuracy; the cost factors are at most 1); "
                    f"the HV of every table genome is {c['table_hv']:.4f}. 1.2× random search's median HV would be "
                    f"{c['target_1_2x_random']:.4f}: " + ("reachable." if c["target_reachable"] else
                                                         "above the ceiling, so no searcher can reach it here.")]
        out.append("")
    return (["## Search quality by replay (issue 16)", "",
             "Searchers replayed against a measured table of learning curves (`bench/learning_curves.py`, "
             "`bench/replay.py`: the product's searcher and scheduler, a simulated clock, the nearest curve of the "
             "table for a genome off it).", ""] + out) if out else []


def live_confirm_lines() -> list[str]:
    """The live confirmation runs (``bench/live_confirm.py``), one table per data set; [] if none."""
    out: list[str] = []
    for path in sorted(RESULTS.glob("live_confirm-*.json")):
        d = json.loads(path.read_text())
        out += [f"### Live confirmation on `{d['data']}`", "",
                f"Command: `{d['command']}` ({d['date']}; {_load_line(d)}). One real `asc-search` run per searcher, "
                f"seed {d['seed']}, {d['epochs']} epochs, `--time-budget {d['time_budget_s']:.0f}` (the search's "
                "wall-clock limit; a trial still training at the limit does not count), nothing exported.", "",
                "| searcher | HV at the limit | × random | HV at half the limit | completed | stopped (a rung or the limit) | "
                "best validation accuracy | reaches random's final HV (fraction of the time) |",
                "|---|---|---|---|---|---|---|---|"]
        for name, r in d["runs"].items():
            reach = r.get("reach_random_final_fraction")
            out.append(f"| {name} | {r['hv']:.4f} | {r['ratio_to_random'] or 0:.3f} | {r['hv_half']:.4f} | "
                       f"{r['completed']} | {r['stopped']} | {r['best_accuracy']:.4f} | "
                       f"{'never' if reach is None else f'{reach:.2f}'} |")
        out.append("")
    return out


def scale_lines() -> list[str]:
    """The "Data at scale" section from ``bench/results/scale-*.json`` (``bench/scale.py N``), by N; [] if none."""
    runs = sorted((json.loads(p.read_text()) for p in RESULTS.glob("scale-*.json")), key=lambda d: d["n_clips"])
    if not runs:
        return []
    out = ["## Data at scale (issue 15)", "",
           "`bench/scale.py N`: a TAU22-layout set of N one-second 44.1 kHz clips cut from ESC-10, a 2-trial, "
           "1-epoch search from a fresh `--cache` (the run prepares its waveform store). Peak memory in use of the "
           "whole process tree (driver, Ray's processes and workers, object store), sampled every 0.5 s, page cache "
           "of the memory-mapped store excluded. Throughput: files -> waveform store (Ray Data) -> log-mel feature "
           "store, against the bare nnAudio log-mel front-end on the same clips already in memory.", "",
           "| clips | peak memory in use | driver | largest worker | preparation (clips/s) | pipeline / bare "
           "front-end | store on disk | wall: preparation / search / rest | bad files listed |",
           "|---|---|---|---|---|---|---|---|---|"]
    for d in runs:
        se, th, bad = d["search"], d["throughput"], d.get("bad")
        prep = ", ".join(f"{s.get('clips_per_s', 0):,.0f} at {s['sample_rate_hz']} Hz" for s in se["stores"])
        listed = f"{bad['listed']} of {bad['planted']}" if bad else "-"
        out.append(f"| {d['n_clips']:,} | {se['peak_tree_bytes'] / 1e9:.2f} GB | {se['peak_driver_bytes'] / 1e9:.2f} GB "
                   f"| {se['peak_child_bytes'] / 1e9:.2f} GB | {prep} | {th['ratio_pipeline_to_kernel']:.2f} "
                   f"({th['pipeline_clips_per_s']:,.0f} / {th['kernel_clips_per_s']:,.0f} clips/s over {th['clips']:,} "
                   f"clips) | {d['store_bytes'] / 1e9:.2f} GB | {se['preparation_s']:.0f} / {se['search_s']:.0f} / "
                   f"{se['rest_s']:.0f} s | {listed} |")
    out += [""] + [f"Command: `{d['command']}` ({d['date']}; {_load_line(d)})." for d in runs] + [""]
    out += ["Throughput on the first clips of each set, in one process after the run (clips/s; the ceiling is what this "
            "machine's CPUs allow any pipeline against the bare front-end: decode + resample + the front-end's CPU time, "
            "spread over all CPUs; the bare loop reads the same files through the same front-end in one process, "
            "without Ray, store or feature file):", "",
            "| clips | reference clips | pipeline | store alone | features alone | bare front-end (kernel) | pipeline / "
            "kernel | ceiling / kernel | decode + resample, ms CPU per clip | bare loop | pipeline / bare loop |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in runs:
        th = d["throughput"]
        if "bare_loop_clips_per_s" not in th:
            out.append(f"| {d['n_clips']:,} | {th['clips']:,} | {th['pipeline_clips_per_s']:,.0f} | "
                       f"{th['store_clips_per_s']:,.0f} | - | {th['kernel_clips_per_s']:,.0f} | "
                       f"{th['ratio_pipeline_to_kernel']:.2f} | - | - | - | - |")
            continue
        out.append(f"| {d['n_clips']:,} | {th['clips']:,} | {th['pipeline_clips_per_s']:,.0f} | "
                   f"{th['store_clips_per_s']:,.0f} | {th['features_clips_per_s']:,.0f} | "
                   f"{th['kernel_clips_per_s']:,.0f} | {th['ratio_pipeline_to_kernel']:.2f} | "
                   f"{th['ceiling_ratio_to_kernel']:.2f} | {th['decode_resample_ms_per_clip']:.2f} | "
                   f"{th['bare_loop_clips_per_s']:,.0f} | {th['ratio_pipeline_to_bare_loop']:.2f} |")
    out.append("")
    if len(runs) > 1:
        small, large = runs[0], runs[-1]
        growth = large["search"]["peak_tree_bytes"] / small["search"]["peak_tree_bytes"]
        out += [f"Peak memory in use at {large['n_clips']:,} clips is {large['search']['peak_tree_bytes'] / 1e9:.2f} GB, "
                f"{growth:.2f}x that at {small['n_clips']:,} clips (issue 15's bounds: at most 1.5x and 6 GB).", ""]
    return out


def main() -> int:
    m = machine()
    out: list[str] = []
    started = RESULTS / "started_at"
    total = ""
    if started.exists():
        total = f"; `make bench` took {(time.time() - float(started.read_text().strip())) / 60:.1f} min in all"
    out += ["# Benchmarks", "",
            f"Generated by `make bench` (`bench/report.py`) on {time.strftime('%Y-%m-%d %H:%M %Z')}{total}.", "",
            f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gib']} GiB RAM, Python {m['python']}, CPU only. "
            "Other work ran on this machine at the same time (the load averages below say how much), so absolute "
            "timings are noisy: the figures that matter are ratios measured in the same run, with alternating "
            "order, and medians of repeats; brackets give (min–max, n).", ""]
    sq, tr, orch, ex, fe = (_load(n) for n in ("search_quality", "trainer", "orchestration", "export", "frontends"))

    out += ["## Headlines", ""]
    if sq:
        r = sq["ratios"]
        out.append(f"- Search quality: multi-objective search / random search, median hypervolume at equal trials: "
                   f"**{r['mo_tpe/random hv_equal_trials']:.3f}** (at equal wall time "
                   f"{r['mo_tpe/random hv_equal_wall']:.3f}); per seed "
                   f"{', '.join(f'{x:.3f}' for x in r['mo_tpe/random per-seed hv_equal_trials'])}.")
    if tr:
        out.append(f"- Trainer / bare PyTorch loop samples/s: **{tr['ratio_over_sizes']['median']:.3f}** (median over "
                   f"three model sizes; per size in the table below).")
    if orch:
        out.append(f"- Infeasible candidates: {100 * orch['infeasible_share']['median']:.0f} % of sampled candidates "
                   f"break the dcase2022 budget and are rejected before Ray, each in "
                   f"{orch['ms_per_candidate']['median']:.0f} ms of sampling and counting (**"
                   f"{1000 / orch['ms_per_candidate']['median']:.0f} candidates per second**; "
                   f"{orch['rejected_per_s']['median']:.0f} rejections per second of suggest time, feasible draws "
                   f"included); trained trials that break the budget: "
                   f"{sum(x['trained_breaking_dcase2022'] for x in orch['noop_runs'] if x['budget'] == 'dcase2022')}"
                   + (f" (no-op runs) and {sum(t['infeasible_trained'] for t in sq['table'].values())} "
                      "(search-quality runs)." if sq else "."))
    out.append("")

    if sq:
        out += ["## Search quality (ESC-10 dev, dcase2022 budget)", "", f"Command: `{sq['command']}` ({sq['date']}; "
                f"{_load_line(sq)}; {sq['total_s'] / 60:.1f} min).", "",
                f"{len(sq['seeds'])} seeds × 3 searchers, {sq['trials']} trained trials each (rejections not counted), "
                f"{sq['epochs']} epochs per trial, 2 trials at a time, the same space, feasibility filter and trainer. "
                "HV: exact hypervolume of the (accuracy, MACs, INT8 bytes) front with the fixed reference point "
                "(accuracy 0, 30 M MACs, 128,000 B), in budget-normalised units (1.0 = a perfect classifier that "
                "costs nothing). Equal wall time = per seed, the shortest of the three runs. Medians over seeds "
                "(min–max).", "",
                "| searcher | HV, equal trials | HV, equal wall time | best feasible accuracy | trials to 90 % of final HV "
                "| wall time (s) | rejected before training |", "|---|---|---|---|---|---|---|"]
        names = {"mo_tpe": "multi-objective TPE (the search)", "random": "random (Ray Tune + RandomSampler)",
                 "so_tpe": "single-objective TPE (accuracy)"}
        for k, t in sq["table"].items():
            out.append(f"| {names[k]} | {_s(t['hv_equal_trials'], '{:.4f}')} | {_s(t['hv_equal_wall'], '{:.4f}')} | "
                       f"{_s(t['best_acc'])} | {_s(t['trials_to_90pct_hv'], '{:.0f}')} | {_s(t['wall_s'], '{:.0f}')} | "
                       f"{_s(t['rejected'], '{:.0f}')} |")
        r = sq["ratios"]
        out += ["", f"Ratios of medians: MO/random HV {r['mo_tpe/random hv_equal_trials']:.3f} at equal trials, "
                f"{r['mo_tpe/random hv_equal_wall']:.3f} at equal wall time; MO/single-objective TPE HV "
                f"{r['mo_tpe/so_tpe hv_equal_trials']:.3f} and {r['mo_tpe/so_tpe hv_equal_wall']:.3f}.", "",
                "References, trained by the same trainer with the same epochs (16 kHz, published input shape 40×51):",
                "", "| reference | accuracy | MACs per 1 s | INT8 bytes | HV of the point alone |", "|---|---|---|---|---|"]
        for name, t in sq["references"].items():
            out.append(f"| {name} | {_s(t['acc'])} | {t['macs'] / 1e6:.2f} M | {t['int8_bytes']:,} | {t['hv_alone']:.4f} |")
        out += ["", f"Plot (trials of every run, references as stars): `{sq['plot']}`.", ""]
        if r["mo_tpe/random hv_equal_trials"] < 1:
            out += ["**The multi-objective search's median HV is below random search's here.** See the notes at the "
                    "end for what was checked.", ""]

    if tr:
        out += ["## Trainer throughput", "", f"Command: `{tr['command']}` ({tr['date']}; {_load_line(tr)}).", "",
                f"`asc_search.trainers.fit` against a bare PyTorch loop doing the same work (same model and initial "
                f"weights, same crops per epoch, batch {tr['batch_size']}, Adam, a clip-level validation pass each "
                f"epoch), {tr['epochs']} epochs, {tr['threads']} torch thread, {tr['repeats']} alternating repeats; "
                f"{tr['train_clips']} training clips (1 s log-mel patches at 16 kHz).", "",
                "| model | MACs per 1 s | ours, samples/s | bare loop, samples/s | ratio ours/bare (median, min–max) |",
                "|---|---|---|---|---|"]
        for row in tr["models"]:
            out.append(f"| {row['model']} ({' / '.join('+'.join(s) for s in row['stages'])}) | {row['macs'] / 1e6:.1f} M | "
                       f"{row['ours_samples_per_s']:.0f} | {row['bare_samples_per_s']:.0f} | {_s(row['ratio'])} |")
        out += ["", f"Median ratio over the sizes: {tr['ratio_over_sizes']['median']:.3f}. One-time cost kept out of "
                f"both loops: the first `torch.optim.Adam` of a process imports `torch._dynamo` "
                f"({tr['first_adam_import_s']:.1f} s here); a trial pays it once per Ray worker (actors are reused).", ""]

    if orch:
        out += ["## Orchestration", "", f"Command: `{orch['command']}` ({orch['date']}; {_load_line(orch)}).", "",
                "| run | trials | wall (s) | slot-seconds per trial | trials/s | rejected before Ray | trained trials "
                "breaking dcase2022 |", "|---|---|---|---|---|---|---|"]
        for x in orch["noop_runs"]:
            out.append(f"| no-op trials, budget {x['budget']} | {x['trials']} | {x['wall_s']:.1f} | "
                       f"{x['slot_s_per_trial']:.3f} | {x['trials_per_s']:.2f} | {x['rejected']} | "
                       f"{x['trained_breaking_dcase2022'] if x['budget'] == 'dcase2022' else 'n/a (no budget)'} |")
        out += ["", f"Ray start (`ray.init`, 2 CPUs): {orch['ray_init_s']:.1f} s, once per search. Slot-seconds per "
                "trial include starting the two trial workers (importing torch) once.", "",
                f"Rejection without Ray (`FeasibleOptunaSearch.suggest`, multi-objective TPE, dcase2022, seeds "
                f"{', '.join(str(x['seed']) for x in orch['rejection'])}, until {orch['rejection'][0]['feasible']} "
                f"feasible): {_s(orch['rejected_per_s'], '{:.0f}')} rejected per second; "
                f"{_s(orch['ms_per_candidate'], '{:.1f}')} ms per sampled candidate; infeasible share "
                f"{_s(orch['infeasible_share'], '{:.2f}')}.", ""]
        if sq:
            out += ["Share of a real search's wall time spent outside training (the search-quality runs: 1 − Σ trial "
                    "run time / (2 slots × wall time); includes Ray start-up, worker start-up, sampling, "
                    "checkpointing and idle slots at the end):", ""]
            for k, t in sq["table"].items():
                out.append(f"- {k}: {_s(t['outside_training_share'], '{:.3f}')}")
            out.append("")
    runs = _load("orchestration_runs")
    if runs:
        out += [] if orch else ["## Orchestration", ""]
        out += [f"Share outside training of real runs (`{runs['command']}`, {runs['date']}; {_load_line(runs)}): "
                "1 − Σ trial run time / (trial slots × search wall time), from the run directory alone:", ""]
        for r in runs["runs"]:
            out.append(f"- `{r['run']}`: {r['trials']} trials, search {r['search_wall_s']:.1f} s on "
                       f"{r['trial_slots']} slot(s), trials {r['trial_s']:.1f} slot-s: "
                       f"{r['outside_training_share']:.3f} ({r['idle_tail_slot_s']:.1f} slot-s idle after the last "
                       f"trial started; without that tail {r['outside_training_share_before_tail']:.3f})")
        out.append("")

    if ex:
        out += ["## Export and INT8 latency", "", f"Command: `{ex['command']}` ({ex['date']}; {_load_line(ex)}).", "",
                "| model | MACs per patch | INT8 file (B) | export (s) | LiteRT XNNPACK (ms) | LiteRT builtin (ms) | "
                "TFLite-Micro (ms) | TFLM arena (B) |", "|---|---|---|---|---|---|---|---|"]
        for x in ex["models"]:
            out.append(f"| {x['model']} | {x['macs_per_patch'] / 1e6:.2f} M | {x['tflite_bytes']:,} | "
                       f"{_s(x['export_s'], '{:.1f}')} | {_s(x['litert_xnnpack_ms'])} | {_s(x['litert_builtin_ms'])} | "
                       f"{_s(x['tflm_ms'], '{:.2f}')} | {x['tflm_arena_bytes']:,} |")
        out += ["", f"The first export of a process also imports TensorFlow: {ex['first_export_s']:.1f} s. Latency: one "
                "1-thread inference of one patch on this host (median of 50 runs; spread over 3 repeats). "
                "TFLite-Micro on the host uses its reference kernels, so it says nothing about a Cortex-M.", ""]

    if fe:
        out += ["## Front-ends", "", "Command: `.venv/bin/python bench/frontends.py` (64 clips × 5 s, 2 threads, median "
                "of 3).", "", "| front-end | rate (Hz) | ms per s of audio | ratio to log-mel |", "|---|---|---|---|"]
        for r in fe["frontends"]:
            out.append(f"| {r['frontend']} | {r['sample_rate_hz']} | {r['ms_per_s_audio']:.2f} | "
                       f"{r['ratio_to_logmel']:.2f} |")
        c = fe["cache"]
        out += ["", f"Feature cache: first trial {c['first_trial_s']:.3f} s (computes), second "
                f"{c['second_trial_s']:.4f} s (memory-mapped load): speed-up {c['speed_up']:.0f}×.", ""]

    out += replay_lines()
    out += live_confirm_lines()
    out += scale_lines()

    for title, st in (("## Training stages (issue 5)", _load("stages")),
                      ("### Quantisation-aware training vs post-training quantisation", _load("stages_qat"))):
        if not st:
            continue
        out += [title, "",
                f"Command: `{st['command']}`; {st['architecture']}, {st['epochs']} epochs, seeds {st['seeds']}, "
                f"validation {st['validation']}; {st['wall_s'] / 60:.1f} min.", "", st["table"], ""]

    notes = REPO / "bench" / "NOTES.md"
    if notes.exists():
        out += [notes.read_text().strip(), ""]
    (REPO / "BENCHMARKS.md").write_text("\n".join(out))
    print(f"wrote {REPO / 'BENCHMARKS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
