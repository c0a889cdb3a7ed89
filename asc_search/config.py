"""The resolved configuration of a run (frozen, keyword-only)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from asc_search._errors import UserInputError
from asc_search.data import TRAIN_SUBSETS_PCT
from asc_search.search_spaces import check_training_options

SAMPLERS = ("tpe", "nsga2", "gp", "random", "auto")
SCHEDULERS = ("fifo", "mo-asha")
FIDELITIES = ("epochs", "epochs+data")
"""What a rung of ``mo-asha`` gives less of: ``epochs``, or ``epochs+data`` (before each rung a trial also trains on
a nested share of the training clips, DCASE 2024's subsets)."""
QAT_MODES = ("off", "on", "search")


class _TrainingChoices:
    """The training-gene choices of a ``RunConfig`` under ``SpaceOptions``' names (for one shared check)."""

    def __init__(self, c: RunConfig) -> None:
        self.augmentations, self.kd_teachers = c.augment, c.kd
        self.kd_alphas, self.kd_temperatures, self.weight_decays = c.kd_alphas, c.kd_temperatures, c.weight_decays
        self.prune_ratios, self.prune_criteria = c.prune_ratios, c.prune_criteria
        self.kd_teacher_rate_hz = c.kd_teacher_rate_hz  # 0: the native rate, checked once the data is read
        self.sample_rates_hz = c.sample_rates_hz


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything a search run needs; written to ``config.yaml`` in the run directory.

    Args:
        data: Dataset folder or CSV manifest.
        budget: Budget preset name.
        max_int8_bytes: Overrides the budget's INT8-bytes limit (bytes).
        max_macs: Overrides the budget's MACs limit (per 1 s of audio).
        out: Run directory.
        cache: Folder of the prepared data (waveform stores and feature files), reused by every run pointed at
            it; None: ``<out>/cache``. On a cluster it must be on storage every node reaches, as ``out`` is.
        trials: Ray trials to train (rejected candidates are not counted).
        time_budget_s: Wall-clock limit of the search phase (s), None for none.
        seed: Seed of the sampler and the trainers.
        sampler: ``tpe`` (multi-objective TPE), ``nsga2``, ``gp`` (Optuna's Gaussian-process sampler), ``random`` or
            ``auto`` (TPE below 250 trials, NSGA-II from 250, by OptunaHub AutoSampler's budget rule).
        scheduler: ``fifo`` (every trial trains to its end or early stop) or ``mo-asha`` (multi-objective
            asynchronous successive halving over epochs: a trial dominated at a rung stops there).
        fidelity: With ``mo-asha``: ``epochs`` (a rung is an epoch count) or ``epochs+data`` (up to each rung a trial
            also trains on a nested, class-stratified share of the training clips: 5 to 50 %, smaller for earlier
            rungs, ``asc_search.data.fidelity_fractions``; after the last rung on all of them).
        train_subset_pct: Train on this DCASE 2024 subset of the training clips (5, 10, 25, 50 or 100 %): the
            data's ``split_setup/split<pct>.csv`` where it has one, else a nested random subset stratified by class
            (``asc_search.data.train_subset``). Validation and test are unchanged.
        epochs: Most epochs per trial.
        patience: Early-stopping patience (epochs).
        batch_size: Patches per step.
        val_fold: Validation fold of a layout with a ``fold`` column (default: the highest that is not the test
            fold).
        test_fold: Test fold of a layout with a ``fold`` column (default: the highest; ``none``: no test split);
            TAU22: the evaluation-setup fold whose evaluate file is the test split (default: 1).
        frontends: Front-end kinds the search may pick (``logmel``, ``gammatone``, ``cqt``).
        sample_rates_hz: Sample rates the search may pick (Hz), each at most the data's native rate;
            empty: the data's most common native rate.
        chunks_s: Patch lengths the search may pick (s).
        deltas: Delta-channel orders the search may pick (0, 1, 2).
        address: Ray cluster address (``auto`` or ``HOST:PORT``); None starts a local instance.
        cpus_per_trial: CPUs reserved per trial (may be fractional).
        gpus_per_trial: GPUs reserved per trial (fractional shares one GPU, e.g. 0.25: four trials a GPU);
            a trial given a GPU trains on CUDA. 0: CPU only.
        max_concurrent: Trials running at once; None: as many as the CPUs allow.
        max_export: Most Pareto-front members exported to INT8 TFLite.
        augment: Augmentations the search may switch on (each an on/off gene): ``mixup``, ``specaugment``,
            ``cutmix``, ``freq_mixstyle``.
        sapaugment: Let the search also scale augmentation by SapAugment's per-sample policy (a gene).
        weight_decays: Adam weight-decay choices.
        epoch_choices: Training-epoch choices of the search (each >= 1; empty: ``epochs`` for every trial).
        batch_size_choices: Batch-size choices of the search (each >= 1; empty: ``batch_size`` for every trial).
        warmup_epochs: Learning-rate warm-up choices (epochs).
        kd: Distillation teachers the search may pick: ``none``, ``basd``, ``cssd``, ``ensemble``.
        kd_alphas: Choices of the hard-label weight α of the distillation loss (each in [0, 1]).
        kd_temperatures: Choices of the distillation temperature T (each > 0).
        kd_teacher_rate_hz: Sample rate of the CSSD teacher (Hz, at least every student rate, at most the data's
            native rate); 0: the data's native rate.
        prune_ratios: Pruning-ratio choices per prunable stage (each in [0, 1)); ``(0,)``: no pruning.
        prune_criteria: Pruning criteria the search may pick: ``cosine``, ``l1``.
        qat: Quantisation-aware fine-tuning: ``off``, ``on`` (every trial) or ``search`` (a gene).
        ensemble: After the search, select an ensemble of trained candidates under the budget (a Pareto candidate
            exported member by member).
        refit: Before export, train each exported model again on train + validation, with its trial's genes and
            its selected epochs (False: export the search's own weights).
    """

    data: Path
    budget: str = "dcase2022"
    max_int8_bytes: int | None = None
    max_macs: int | None = None
    out: Path = Path("runs/latest")
    cache: Path | None = None
    trials: int = 16
    time_budget_s: float | None = None
    seed: int = 0
    sampler: str = "tpe"
    scheduler: str = "fifo"
    fidelity: str = "epochs"
    train_subset_pct: int = 100
    epochs: int = 20
    patience: int = 6
    batch_size: int = 64
    val_fold: str | None = None
    test_fold: str | None = None
    frontends: tuple[str, ...] = ("logmel",)
    sample_rates_hz: tuple[int, ...] = ()
    chunks_s: tuple[float, ...] = (0.5, 1.0)
    deltas: tuple[int, ...] = (0,)
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    max_export: int = 8
    augment: tuple[str, ...] = ()
    sapaugment: bool = False
    weight_decays: tuple[float, ...] = (1e-4,)
    epoch_choices: tuple[int, ...] = ()
    batch_size_choices: tuple[int, ...] = ()
    warmup_epochs: tuple[int, ...] = (0,)
    kd: tuple[str, ...] = ("none",)
    kd_alphas: tuple[float, ...] = (0.5,)
    kd_temperatures: tuple[float, ...] = (2.0,)
    kd_teacher_rate_hz: int = 0
    prune_ratios: tuple[float, ...] = (0.0,)
    prune_criteria: tuple[str, ...] = ("cosine",)
    qat: str = "off"
    ensemble: bool = True
    refit: bool = True

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise UserInputError(f"--trials must be >= 1, got {self.trials}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise UserInputError(f"--time-budget must be > 0 seconds, got {self.time_budget_s}")
        if self.scheduler not in SCHEDULERS:
            raise UserInputError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.fidelity not in FIDELITIES:
            raise UserInputError(f"--fidelity must be one of {', '.join(FIDELITIES)}, got {self.fidelity!r}")
        if self.fidelity != "epochs" and self.scheduler != "mo-asha":
            raise UserInputError(f"--fidelity {self.fidelity} sets what the rungs of --scheduler mo-asha give less "
                                 f"of; add --scheduler mo-asha (got --scheduler {self.scheduler})")
        if self.train_subset_pct not in TRAIN_SUBSETS_PCT:
            raise UserInputError(f"--train-subset must be one of {', '.join(map(str, TRAIN_SUBSETS_PCT))} (percent "
                                 f"of the training clips, the DCASE 2024 subsets), got {self.train_subset_pct}")
        if self.sampler not in SAMPLERS:
            raise UserInputError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.epochs < 1:
            raise UserInputError(f"--epochs must be >= 1, got {self.epochs}")
        if self.patience < 1:
            raise UserInputError(f"--patience must be >= 1 epoch, got {self.patience}")
        if self.batch_size < 1:
            raise UserInputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise UserInputError(f"--max-concurrent must be >= 1, got {self.max_concurrent}")
        if self.cpus_per_trial <= 0:
            raise UserInputError(f"--cpus-per-trial must be > 0, got {self.cpus_per_trial}")
        if self.gpus_per_trial < 0:
            raise UserInputError(f"--gpus-per-trial must be >= 0 (0: CPU only; 0.5: half a GPU), got {self.gpus_per_trial}")
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise UserInputError(f"--gpus-per-trial above 1 must be a whole number of GPUs, got {self.gpus_per_trial}")
        if self.max_export < 0:
            raise UserInputError(f"--max-export must be >= 0, got {self.max_export}")
        if self.qat not in QAT_MODES:
            raise UserInputError(f"--qat must be one of {', '.join(QAT_MODES)}, got {self.qat!r}")
        if self.sapaugment and not self.augment:
            raise UserInputError("--sapaugment scales augmentations; name some with --augment (e.g. mixup,specaugment)")
        if any(e < 1 for e in self.epoch_choices) or any(b < 1 for b in self.batch_size_choices):
            raise UserInputError(f"--epoch-choices and --batch-size-choices must be >= 1, got "
                                 f"{list(self.epoch_choices)}, {list(self.batch_size_choices)}")
        if any(w < 0 for w in self.warmup_epochs):
            raise UserInputError(f"--warmup-epochs must be >= 0, got {list(self.warmup_epochs)}")
        if self.kd_teacher_rate_hz < 0:
            raise UserInputError(f"--kd-teacher-rate-hz must be > 0 Hz (or 0: the native rate), got "
                                 f"{self.kd_teacher_rate_hz}")
        check_training_options(_TrainingChoices(self))

    @property
    def qat_choices(self) -> tuple[bool, ...]:
        """The QAT gene's choices."""
        return {"off": (False,), "on": (True,), "search": (False, True)}[self.qat]

    def to_dict(self) -> dict:
        """YAML-ready dict (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Inverse of ``to_dict`` (the ``run`` section of ``config.yaml``); unknown keys are ignored, missing
        ones take their defaults (a run written by an older version)."""
        names = {f.name: f for f in fields(cls)}
        kw = {}
        for k, v in d.items():
            if k not in names:
                continue
            if k in ("data", "out") or (k == "cache" and v is not None):
                v = Path(v)
            elif isinstance(v, list):
                v = tuple(v)
            kw[k] = v
        return cls(**kw)
