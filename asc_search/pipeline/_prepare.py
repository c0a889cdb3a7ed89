"""Before the search: the run's budget, its search space, and its data prepared (a waveform store) at every rate
the space may pick."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from asc_search._errors import UserInputError
from asc_search.config import RunConfig
from asc_search.constraints import Budget, get_budget
from asc_search.data import (
    DecodedDataset,
    Manifest,
    load_manifest,
    native_sample_rate_hz,
    prepare_waveform_store,
    train_subset,
)
from asc_search.search_spaces import FULL_CLIP, SpaceOptions

log = logging.getLogger(__name__)


def resolve_budget(config: RunConfig) -> Budget:
    """The budget preset with the CLI's overrides applied."""
    budget = get_budget(config.budget)
    if config.max_int8_bytes is not None or config.max_macs is not None:
        budget = replace(
            budget, name=f"{budget.name}+custom",
            max_int8_bytes=config.max_int8_bytes if config.max_int8_bytes is not None else budget.max_int8_bytes,
            max_macs=config.max_macs if config.max_macs is not None else budget.max_macs,
        )
    return budget


@dataclass(frozen=True, kw_only=True)
class DataPlan:
    """What ``plan_data`` read: the manifest, the student rates and every rate to prepare (Hz)."""

    manifest: Manifest
    student_rates_hz: tuple[int, ...]
    rates_hz: tuple[int, ...]


def plan_data(config: RunConfig) -> DataPlan:
    """Read the manifest and check the rates, before anything is started (a bad manifest or rate is a usage
    error at once).

    Raises:
        UserInputError: The manifest is bad, or a requested rate is above the data's native rate (upsampling
            adds no information), or the CSSD teacher's rate is out of range.
    """
    manifest = load_manifest(config.data, val_fold=config.val_fold, test_fold=config.test_fold, seed=config.seed)
    manifest = train_subset(manifest, config.train_subset_pct, seed=config.seed)
    native = native_sample_rate_hz(manifest)
    students = tuple(sorted(set(config.sample_rates_hz))) or (native,)
    too_high = [r for r in students if r > native]
    if too_high:
        raise UserInputError(
            f"--sample-rates-hz {too_high} is above the data's native rate ({native} Hz); upsampling adds no "
            f"information: use rates <= {native}"
        )
    rates = students
    if "cssd" in config.kd:
        teacher = config.kd_teacher_rate_hz or native
        if teacher > native:
            raise UserInputError(f"--kd-teacher-rate-hz {teacher} is above the data's native rate ({native} Hz); "
                                 f"use a rate <= {native}")
        if teacher < max(students):
            raise UserInputError(f"--kd-teacher-rate-hz {teacher} is below the student rate {max(students)} Hz; the "
                                 "CSSD teacher must run at the student's rate or higher")
        rates = tuple(sorted({*students, teacher}))
    return DataPlan(manifest=manifest, student_rates_hz=students, rates_hz=rates)


@dataclass(frozen=True, kw_only=True)
class PreparationProgress:
    """Live state of a store's preparation, for progress displays (the CLI's bar in a terminal).

    Args:
        sample_rate_hz: The store's rate.
        clips_done: Clips decoded (or found on disk) so far.
        clips_total: Clips of the manifest.
        clips_per_s: Throughput so far.
        eta_s: Seconds left at that throughput (None before the first shard).
    """

    sample_rate_hz: int
    clips_done: int
    clips_total: int
    clips_per_s: float
    eta_s: float | None


def prepare_data(plan: DataPlan, cache: Path, say: Callable[[str], None] | None = None,
                 on_state: Callable[[PreparationProgress], None] | None = None, pin_node: str | None = None,
                 ) -> tuple[dict[int, DecodedDataset], dict]:
    """Prepare a waveform store at each rate of ``plan`` (or reuse the one in ``cache``): decoded once, in shards,
    by a Ray Data pipeline over the cluster when Ray is running (``prepare_waveform_store``).

    The datasets returned memory-map their waveforms; they pickle as their store's path, so trials and Ray's
    object store never carry audio.

    Args:
        plan: ``plan_data``'s manifest and rates.
        cache: The prepared-data folder (``rundir.cache_dir``).
        say: Progress lines (clips done, clips/s, time left) while a store is prepared, at most every 10 s.
        on_state: Called with a ``PreparationProgress`` after every shard.
        pin_node: Decode on this Ray node only (the audio is not on every node); None: on any.

    Returns:
        The data by sample rate (Hz) and the data report (``data_report.json``): counts, split rule, layout,
        clips the layout left out, skipped files with reasons, the rates, and ``preparation`` (per store: reused,
        shards already on disk, seconds, clips/s, bytes).

    Raises:
        UserInputError: The data has no readable clip, or a split is left empty.
    """
    manifest, rates = plan.manifest, plan.rates_hz
    t0 = time.perf_counter()
    data_by_rate = {r: prepare_waveform_store(manifest, sample_rate_hz=r, cache_dir=cache,
                                              on_progress=_progress_lines(r, say, on_state), pin_node=pin_node)
                    for r in rates}
    data = data_by_rate[rates[-1]]
    log.info("data: %d clips (%d skipped), %d classes, rates %s Hz, split: %s", len(data.waveforms),
             len(data.skipped), data.n_classes, list(rates), manifest.split_rule)
    ms = manifest.summary()
    report = {**data.summary(), "sample_rates_hz": list(plan.student_rates_hz), "decoded_rates_hz": list(rates),
              "source": ms["source"],
              "layout": ms.get("layout", ""), "split_rule": manifest.split_rule,
              "left_out_clips": ms.get("left_out_clips", 0),
              "splits": split_roles(data), **({"locations": ms["locations"]} if "locations" in ms else {}),
              "preparation": {"seconds": round(time.perf_counter() - t0, 2), "cache": str(cache),
                              "stores": [d.preparation for d in data_by_rate.values()]}}
    return data_by_rate, report


SPLIT_ROLES = {
    "train": "fits the weights",
    "validation": "picks each trial's epoch; the search's objective; decides the Pareto front, the knee, the "
                  "ensemble and deploy --pick (a selection figure, optimistic as an estimate)",
    "test": "never read by the search or the selection; scored once per exported model, after the refit: the "
            "figures the report leads with",
}


def split_roles(data) -> dict:
    """``{"train"|"validation"|"test": {"clips": n, "role": text}}`` for ``data_report.json``."""
    n = {"train": int(data.is_train.sum()), "validation": int(data.is_validation.sum()),
         "test": int(data.is_test.sum())}
    return {k: {"clips": n[k], "role": SPLIT_ROLES[k] if n[k] or k != "test" else
                "no test split: the run reports validation (selection) figures only"} for k in SPLIT_ROLES}


def _progress_lines(rate_hz: int, say: Callable[[str], None] | None,
                    on_state: Callable[[PreparationProgress], None] | None = None,
                    every_s: float = 10.0) -> Callable[[int, int], None]:
    """A store's ``on_progress``: ``on_state`` after every shard, and a line at most every ``every_s`` seconds (and
    at the end) with the clips done, clips/s and the time left."""
    t0 = time.perf_counter()
    last = [t0]

    def on_progress(done: int, total: int) -> None:
        now = time.perf_counter()
        rate = done / max(now - t0, 1e-9)
        left = (total - done) / rate if rate > 0 else None
        if on_state is not None:
            on_state(PreparationProgress(sample_rate_hz=rate_hz, clips_done=done, clips_total=total,
                                         clips_per_s=rate, eta_s=left))
        if say is None or (done < total and now - last[0] < every_s):
            return
        last[0] = now
        say(f"preparing {rate_hz} Hz audio: {done:,}/{total:,} clips ({100 * done / total:.0f} %), {rate:,.0f} "
            f"clips/s, {'done' if done >= total else f'about {left or 0:,.0f} s left'}")

    return on_progress


def space_options(config: RunConfig) -> SpaceOptions:
    """The search space of a run: the defaults with the run's front-end, rate, chunk and delta choices and its
    training-gene choices (augmentation, schedule, distillation, pruning, QAT). The CSSD teacher's rate is the
    configured one (0: the native rate, which ``run_search`` fills in once the data is read)."""
    return SpaceOptions(frontends=tuple(config.frontends), sample_rates_hz=tuple(config.sample_rates_hz) or (1,),
                        chunk_s=tuple(config.chunks_s), deltas=tuple(config.deltas),
                        augmentations=tuple(config.augment), sapaugment=(False, True) if config.sapaugment else (False,),
                        weight_decays=tuple(config.weight_decays), warmup_epochs=tuple(config.warmup_epochs),
                        epochs=tuple(config.epoch_choices) or (0,), batch_sizes=tuple(config.batch_size_choices) or (0,),
                        kd_teachers=tuple(config.kd), kd_alphas=tuple(config.kd_alphas),
                        kd_temperatures=tuple(config.kd_temperatures),
                        kd_teacher_rate_hz=config.kd_teacher_rate_hz if "cssd" in config.kd else 0,
                        prune_ratios=tuple(config.prune_ratios), prune_criteria=tuple(config.prune_criteria),
                        qat=config.qat_choices)


def fit_options_to_data(options: SpaceOptions, config: RunConfig, data_by_rate: dict[int, DecodedDataset],
                        data_report: dict) -> SpaceOptions:
    """The space once the data is read: the student rates the data allows, ``FULL_CLIP`` as the longest clip
    (s, rounded up to 0.1 s), and the CSSD teacher at the highest decoded rate."""
    data = next(iter(data_by_rate.values()))
    full_s = math.ceil(int(data.clip_lengths().max()) / data.sample_rate_hz * 10) / 10
    return replace(options, sample_rates_hz=tuple(data_report["sample_rates_hz"]),
                   chunk_s=tuple(sorted({full_s if c == FULL_CLIP else c for c in options.chunk_s})),
                   kd_teacher_rate_hz=max(data_report["decoded_rates_hz"]) if "cssd" in config.kd else 0)
