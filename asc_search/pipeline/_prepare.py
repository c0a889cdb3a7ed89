"""Before the search: the run's budget, its search space, and its data decoded at every rate the space may pick."""

from __future__ import annotations

import logging
import math
from dataclasses import replace

from asc_search._errors import UserInputError
from asc_search.config import RunConfig
from asc_search.constraints import Budget, get_budget
from asc_search.data import DecodedDataset, decode_dataset, load_manifest, native_sample_rate_hz
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


def prepare_data(config: RunConfig) -> tuple[dict[int, DecodedDataset], dict]:
    """Read the manifest and decode every clip once at each sample rate the search may pick.

    Returns:
        The decoded data by sample rate (Hz) and the data report (``data_report.json``): counts, split rule,
        layout, clips the layout left out, skipped files with reasons, the rates.

    Raises:
        UserInputError: A requested rate is above the data's native rate (upsampling adds no information).
    """
    manifest = load_manifest(config.data, val_fold=config.val_fold, seed=config.seed)
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
    data_by_rate = {r: decode_dataset(manifest, sample_rate_hz=r) for r in rates}
    data = data_by_rate[rates[-1]]
    log.info("data: %d clips (%d skipped), %d classes, rates %s Hz, split: %s", len(data.waveforms),
             len(data.skipped), data.n_classes, list(rates), manifest.split_rule)
    ms = manifest.summary()
    report = {**data.summary(), "sample_rates_hz": list(students), "decoded_rates_hz": list(rates),
              "source": ms["source"],
              "layout": ms.get("layout", ""), "split_rule": manifest.split_rule,
              "left_out_clips": ms.get("left_out_clips", 0)}
    return data_by_rate, report


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
    full_s = math.ceil(max(len(w) for w in data.waveforms) / data.sample_rate_hz * 10) / 10
    return replace(options, sample_rates_hz=tuple(data_report["sample_rates_hz"]),
                   chunk_s=tuple(sorted({full_s if c == FULL_CLIP else c for c in options.chunk_s})),
                   kd_teacher_rate_hz=max(data_report["decoded_rates_hz"]) if "cssd" in config.kd else 0)
