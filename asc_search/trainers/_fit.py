"""The training loop: Adam, random patch crops, batch augmentation, knowledge distillation, a warm-up/cosine
schedule, early stopping on validation accuracy."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from asc_search._errors import UserInputError
from asc_search.data import nested_ranks, subset_mask
from asc_search.frontends import ClipFeatures, add_deltas
from asc_search.trainers._augment import soft_target_loss
from asc_search.trainers._distill import TeacherLogits, kd_loss
from asc_search.trainers._metrics import classification_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Normalisation:
    """Model input from static patches: delta channels added, then per-channel standardisation.

    ``x -> (add_deltas(x, deltas) - mean_db[c]) / std_db[c]``, with the statistics fit on training patches.

    Args:
        deltas: Delta order (0, 1 or 2); channels = 1 + deltas.
        mean_db: Mean per channel (dB or dB per frame).
        std_db: Standard deviation per channel.
    """

    deltas: int
    mean_db: tuple[float, ...]
    std_db: tuple[float, ...]

    @classmethod
    def fit(cls, features: ClipFeatures, clips: np.ndarray, *, deltas: int = 0, max_patches: int = 4000,
            seed: int = 0) -> Normalisation:
        """Per-channel statistics over the evaluation patches of ``clips`` (of at most ``max_patches`` clips, and
        at most ``max_patches`` patches, drawn at random, so memory stays bounded on large datasets: only the
        drawn patches are materialised)."""
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.permutation(clips)[:max_patches])
        cum = _patch_offsets(features, chosen)
        n = int(cum[-1])
        if n == 0:
            raise UserInputError("no evaluation patches to fit the normalisation on")
        # only the drawn patches are gathered, never all the patches of the drawn clips (the same draw and the
        # same numbers as taking the patches of the clips first and then a random subset of them)
        x, _ = _gather_patches(features, chosen, cum, rng.permutation(n)[:max_patches] if n > max_patches
                               else np.arange(n))
        if n > max_patches:
            # the strides of a fancy-indexed copy, as the subset had before: torch picks the delta convolution's
            # memory format from them and the float64 reductions below follow it (the last bits of the statistics)
            x = x[np.arange(len(x))]
        x = add_deltas(x, deltas).astype(np.float64)
        mean = x.mean(axis=(0, 2, 3))
        std = np.maximum(x.std(axis=(0, 2, 3)), 1e-6)
        return cls(deltas=deltas, mean_db=tuple(float(v) for v in mean), std_db=tuple(float(v) for v in std))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Static patches ``(n, 1, F, T)`` -> model input ``(n, 1 + deltas, F, T)`` float32."""
        x = add_deltas(x, self.deltas)
        mean = np.asarray(self.mean_db, dtype=np.float32)[None, :, None, None]
        std = np.asarray(self.std_db, dtype=np.float32)[None, :, None, None]
        return ((x - mean) / std).astype(np.float32)

    def to_dict(self) -> dict:
        """JSON-ready dict (``from_dict`` inverts it)."""
        return {"deltas": self.deltas, "mean_db": list(self.mean_db), "std_db": list(self.std_db)}

    @classmethod
    def from_dict(cls, d: dict) -> Normalisation:
        """Inverse of ``to_dict``."""
        return cls(deltas=int(d["deltas"]), mean_db=tuple(d["mean_db"]), std_db=tuple(d["std_db"]))


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """Training hyper-parameters.

    Args:
        epochs: Most epochs (an epoch draws as many random crops as the training clips have patches).
        learning_rate: Adam learning rate.
        batch_size: Patches per step.
        patience: Epochs without a better validation accuracy before stopping.
        weight_decay: Adam weight decay.
        seed: Seed of initialisation, crop sampling and augmentation.
        warmup_epochs: Linear learning-rate warm-up from lr/10 (epochs), then the schedule.
        schedule: ``cosine`` (annealed to 0 over the remaining epochs) or ``constant``.
        kd_alpha: Weight of the hard-label term of the distillation loss (used with a teacher).
        kd_temperature: Distillation temperature T (used with a teacher).
        keep_last: Keep the last epoch's weights and never stop early (a refit on train + validation, whose epoch
            count was selected before: the validation figures it logs are then training figures, not a choice).
        data_schedule: The data fidelity of a multi-fidelity search: ``((last_epoch, fraction), ...)``, ascending;
            epochs up to ``last_epoch`` draw their crops from the nested class-stratified ``fraction`` of the
            training clips (``asc_search.data.nested_ranks`` with ``seed``), later epochs from all of them. Empty:
            every epoch trains on every training clip.
    """

    epochs: int = 30
    learning_rate: float = 1e-3
    batch_size: int = 64
    patience: int = 8
    weight_decay: float = 1e-4
    seed: int = 0
    warmup_epochs: int = 0
    schedule: str = "cosine"
    kd_alpha: float = 0.5
    kd_temperature: float = 2.0
    keep_last: bool = False
    data_schedule: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        last = 0
        for until, fraction in self.data_schedule:
            if until <= last or not 0 < fraction <= 1:
                raise UserInputError(f"data_schedule must be ascending (epoch, fraction in (0, 1]) pairs, got "
                                     f"{self.data_schedule}")
            last = until
        if self.epochs < 1:
            raise UserInputError(f"epochs must be >= 1, got {self.epochs}")
        if self.warmup_epochs < 0:
            raise UserInputError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.schedule not in ("cosine", "constant"):
            raise UserInputError(f"schedule must be cosine or constant, got {self.schedule!r}")
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise UserInputError(f"kd_alpha must be in [0, 1], got {self.kd_alpha}")
        if not self.kd_temperature > 0:
            raise UserInputError(f"kd_temperature must be > 0, got {self.kd_temperature}")
        if self.batch_size < 1:
            raise UserInputError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.patience < 1:
            raise UserInputError(f"patience must be >= 1, got {self.patience}")


@dataclass(kw_only=True)
class FitResult:
    """Outcome of ``fit``.

    Args:
        state_dict: Weights of the best epoch.
        best_epoch: 1-based epoch of the best validation accuracy.
        val_metrics: Clip-level validation metrics of the best epoch (accuracy, log_loss, uar).
        val_probs: Clip probabilities of the best epoch, shape ``(n_val, n_classes)``.
        history: One dict a completed epoch.
        stop_reason: ``"epochs"`` or ``"early_stopping"``.
        augmentation_log: What each augmentation did (``Augmentation.summary()``, and SapAugment's), by name.
    """

    state_dict: dict
    best_epoch: int
    val_metrics: dict[str, float]
    val_probs: np.ndarray
    history: list[dict] = field(default_factory=list)
    stop_reason: str = "epochs"
    augmentation_log: dict = field(default_factory=dict)


@contextlib.contextmanager
def deterministic_torch(threads: int = 1, *, seed: int | None = None) -> Iterator[None]:
    """Reproducible torch inside the block, the previous settings restored on exit (nothing leaks).

    Sets ``torch.use_deterministic_algorithms(True)`` (an op without a deterministic kernel raises),
    ``torch.set_num_threads(threads)`` (the order of CPU reductions depends on the thread count, so a fixed count
    gives the same floats on any machine with the same kernels), and cuDNN's deterministic, non-benchmarking
    mode. With ``seed`` it also seeds torch's and numpy's global generators (``torch.manual_seed``,
    ``np.random.seed``) and restores their previous states on exit, so that e.g. a model's initialisation
    inside the block depends on ``seed`` only, and code after the block draws as if it had not run.

    CUDA's deterministic matrix products also need ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` in the environment
    before CUDA starts; that is the caller's (the CPU path needs nothing).

    Args:
        threads: Intra-op threads of torch inside the block (>= 1).
        seed: Seed of torch's and numpy's global generators inside the block (None: left alone).

    Raises:
        UserInputError: ``threads`` < 1.
    """
    if threads < 1:
        raise UserInputError(f"threads must be >= 1, got {threads}")
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.get_num_threads(), torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    np_state = np.random.get_state() if seed is not None else None
    rng = torch.random.fork_rng(devices=[], enabled=seed is not None)
    try:
        with rng:
            torch.use_deterministic_algorithms(True)
            torch.set_num_threads(threads)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
            if seed is not None:
                torch.manual_seed(seed)
                np.random.seed(seed)
            yield
    finally:
        enabled, warn_only, n_threads, cudnn_deterministic, cudnn_benchmark = previous
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.set_num_threads(n_threads)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_deterministic, cudnn_benchmark
        if np_state is not None:
            np.random.set_state(np_state)


def lr_factor(epoch: int, settings: TrainSettings) -> float:
    """Learning-rate multiplier of 0-based ``epoch``: linear warm-up from 0.1 over ``warmup_epochs``, then cosine
    annealing over the remaining epochs (or constant)."""
    w = settings.warmup_epochs
    if epoch < w:
        return 0.1 + 0.9 * epoch / w
    if settings.schedule == "constant":
        return 1.0
    rest = max(1, settings.epochs - w)
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - w) / rest))


EVAL_GROUP_BYTES = 64 * 2**20
"""Model input (normalised patches, every channel, float32) that evaluation materialises at once: ``predict_clips``
and the validation pass of ``fit`` without its cache gather, normalise and predict the patches in groups of
about this size (rounded down to whole inference batches, at least one batch: whole batches keep the batches, and
so the numbers, of one pass over all the patches). The float32 static gather, the delta channels and the
standardisation's temporaries come on top while a group is built: about 3.5x a group at the peak (tracemalloc,
128 bins x 47 frames, deltas=2: 177 MiB for groups of 53 MiB, where one pass over 10,000 clips peaked at 1.6 GiB)."""

VAL_CACHE_BYTES = 256 * 2**20
"""``fit`` keeps the normalised validation patches in memory for the whole fit (built once: the validation pass of
every epoch reuses them, see bench/NOTES.md "Trainer") when they take at most this many bytes; larger validation
sets are gathered and normalised again every epoch, in groups of ``EVAL_GROUP_BYTES``. Both give the same
numbers."""

EVAL_BATCH_SIZE = 256
"""Patches a forward pass in ``fit``'s validation pass."""


def _patch_offsets(features: ClipFeatures, clips: np.ndarray) -> np.ndarray:
    """Where each clip's evaluation patches start in the concatenation of the patches of ``clips`` (in order),
    shape ``(len(clips) + 1,)``; the last entry is the number of patches. Per clip the count is
    ``len(features.patch_starts(i))``, computed from the offsets without a Python loop."""
    clips = np.asarray(clips, dtype=np.int64)
    last = features.offsets[clips + 1] - features.offsets[clips] - features.layout.patch_frames
    counts = np.where(last >= 0, last // features.layout.patch_hop_frames + 1, 0)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _gather_patches(features: ClipFeatures, clips: np.ndarray, cum: np.ndarray,
                    sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation patches numbered ``sel`` in the concatenation of the patches of ``clips`` (``cum`` from
    ``_patch_offsets``): the rows of ``features.patches(clips)`` at ``sel``, without building the others.

    Returns:
        ``(x, owner)``: ``x`` of shape ``(len(sel), 1, n_bins, patch_frames)`` float32 (C-contiguous) and the
        position in ``clips`` of each patch.
    """
    sel = np.asarray(sel, dtype=np.int64)
    owner = np.searchsorted(cum, sel, side="right") - 1
    starts = features.offsets[np.asarray(clips, dtype=np.int64)[owner]] + (sel - cum[owner]) * \
        features.layout.patch_hop_frames
    cols = starts[:, None] + np.arange(features.layout.patch_frames)
    x = np.ascontiguousarray(features.features[:, cols].transpose(1, 0, 2), dtype=np.float32)[:, None]
    return x, owner


def _group_patches(features: ClipFeatures, norm: Normalisation, batch_size: int,
                   group_bytes: int | None = None) -> int:
    """Patches a group of ``_eval_groups``: ``group_bytes`` (default ``EVAL_GROUP_BYTES``) of model input, in
    whole batches, at least one batch (whole batches keep the inference batches those of one pass over all the
    patches, so the numbers do not depend on the grouping)."""
    group_bytes = EVAL_GROUP_BYTES if group_bytes is None else group_bytes
    per_batch = batch_size * _patch_bytes(features, norm)
    return batch_size * max(1, group_bytes // per_batch)


def _patch_bytes(features: ClipFeatures, norm: Normalisation) -> int:
    """Bytes of one normalised patch (float32, every channel)."""
    return 4 * (1 + norm.deltas) * features.layout.frontend.n_bins * features.layout.patch_frames


def _eval_groups(features: ClipFeatures, clips: np.ndarray, norm: Normalisation,
                 group_patches: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The normalised evaluation patches of ``clips`` (in the order of ``features.patches(clips)``), in groups of
    ``group_patches``: ``(x, owner)`` per group, ``owner`` the position in ``clips`` of each patch."""
    clips = np.asarray(clips, dtype=np.int64)
    cum = _patch_offsets(features, clips)
    total = int(cum[-1])
    for a in range(0, total, group_patches):
        x, owner = _gather_patches(features, clips, cum, np.arange(a, min(a + group_patches, total)))
        yield norm.apply(x), owner


def _predict_groups(model: nn.Module, groups: Iterable[tuple[np.ndarray, np.ndarray]], n_clips: int, *,
                    batch_size: int) -> np.ndarray:
    """Clip probabilities (mean of patch softmaxes, as ``clip_probabilities``) from groups of normalised patches
    and their clip positions. Batches never span groups, so groups of whole batches give the batches of one
    pass over all the patches; the per-clip sums add the patches in the same order whatever the grouping."""
    device = next(model.parameters()).device
    model.eval()
    sums = None
    counts = np.zeros(n_clips, dtype=np.int64)
    with torch.inference_mode():
        for x, owner in groups:
            for s in range(0, len(x), batch_size):
                p = torch.softmax(model(torch.from_numpy(x[s:s + batch_size]).to(device)), dim=1).cpu().numpy()
                if sums is None:
                    sums = np.zeros((n_clips, p.shape[1]), dtype=np.float64)
                np.add.at(sums, owner[s:s + batch_size], p)
            counts += np.bincount(owner, minlength=n_clips)
    if sums is None:
        raise UserInputError("no evaluation patches to predict")
    return sums / np.maximum(counts, 1)[:, None]


def predict_clips(model: nn.Module, features: ClipFeatures, clips: np.ndarray, norm: Normalisation,
                  *, batch_size: int = 256, group_bytes: int | None = None) -> np.ndarray:
    """Clip probabilities: softmax of every patch (50 % overlap), averaged per clip.

    The patches go to the device the model's parameters are on (CPU or CUDA). Memory is bounded whatever the
    number of clips: the patches are gathered, normalised and predicted in groups of about ``group_bytes`` of
    model input (default ``EVAL_GROUP_BYTES``, whole batches); the result does not depend on the grouping.

    Returns:
        Shape ``(len(clips), n_classes)``.

    Raises:
        UserInputError: ``clips`` have no evaluation patch.
    """
    groups = _eval_groups(features, clips, norm, _group_patches(features, norm, batch_size, group_bytes))
    return _predict_groups(model, groups, len(clips), batch_size=batch_size)


def fit(model: nn.Module, features: ClipFeatures, labels: np.ndarray, train_clips: np.ndarray,
        val_clips: np.ndarray, norm: Normalisation, settings: TrainSettings,
        on_epoch: Callable[[dict], None] | None = None, device: str | torch.device = "cpu", *,
        augmentations: Sequence | None = None, sapaugment=None, teacher: TeacherLogits | None = None,
        deterministic: bool = False) -> FitResult:
    """Train ``model`` on random patch crops of the training clips; keep the best validation epoch.

    Each epoch draws, for every training clip, as many crops as it has evaluation patches, at random
    frame offsets; validation is clip-level (mean of patch probabilities). The loss is the cross-entropy on
    (soft) labels; with a mixing augmentation (mixup, CutMix) the KL divergence to the mixed labels, as the
    Mel/Gammatone/CQT-ensemble seed trains mixup; with a ``teacher`` the distillation loss ``kd_loss``.

    Args:
        model: ``(batch, channels, n_bins, frames) -> (batch, n_classes)``.
        features: Clip features.
        labels: Class index per clip, shape ``(n_clips,)``.
        train_clips: Indices of training clips.
        val_clips: Indices of validation clips.
        norm: Deltas and standardisation of the model input.
        settings: Hyper-parameters.
        on_epoch: Called after each epoch with ``{"epoch", "train_fraction", "train_loss", "val_accuracy",
            "val_log_loss", "val_uar", "best_val_accuracy", "best_epoch"}`` (``train_fraction``: the share of the
            training clips that epoch drew from, ``settings.data_schedule``).
        device: Where the model trains (``"cpu"`` or ``"cuda"``, see ``training_device``); the returned
            weights are on the CPU either way.
        augmentations: Batch augmentations (``asc_search.trainers.get_augmentation``), applied in order to the
            normalised batch; mixing ones mix the labels and the teacher's probabilities alike.
        sapaugment: A SapAugment policy: each batch's per-sample losses (one extra forward pass without
            gradients) decide which samples are augmented and how strongly (low loss: more).
        teacher: Cached teacher logits for knowledge distillation (``compute_teacher_logits``); each crop gets
            the teacher patch nearest in time.
        deterministic: Train inside ``deterministic_torch(threads=1)``: deterministic kernels on one thread, so
            the same seed, model and data give the same weights on any machine (slower on many cores); the
            previous torch settings are restored afterwards.

    Returns:
        The best epoch's weights (CPU tensors) and metrics.

    Raises:
        FloatingPointError: The training loss became NaN or infinite.
    """
    with deterministic_torch(threads=1) if deterministic else contextlib.nullcontext():
        return _fit(model, features, labels, train_clips, val_clips, norm, settings, on_epoch, device,
                    augmentations=augmentations, sapaugment=sapaugment, teacher=teacher)


def _fit(model: nn.Module, features: ClipFeatures, labels: np.ndarray, train_clips: np.ndarray,
         val_clips: np.ndarray, norm: Normalisation, settings: TrainSettings,
         on_epoch: Callable[[dict], None] | None, device: str | torch.device, *,
         augmentations: Sequence | None, sapaugment, teacher: TeacherLogits | None) -> FitResult:
    """``fit`` (see there), in the torch settings the caller chose."""
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    device = torch.device(device)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(e, settings))
    augmentations = list(augmentations or [])
    mixing = any(a.mixes_targets for a in augmentations)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    frame_s = features.layout.frontend.hop_samples / features.layout.frontend.sample_rate_hz
    t = features.layout.patch_frames
    frames = np.diff(features.offsets)
    sample_clips = np.repeat(train_clips, np.diff(_patch_offsets(features, train_clips)))
    ranks = nested_ranks(labels[train_clips], settings.seed) if settings.data_schedule else None
    y_val = labels[val_clips]
    n_val_patches = int(_patch_offsets(features, val_clips)[-1])
    if n_val_patches == 0:
        raise UserInputError("the validation clips have no evaluation patch")
    val_group = _group_patches(features, norm, EVAL_BATCH_SIZE)
    val_cache = None  # None: too large to keep, gathered and normalised again every epoch, a group at a time
    if n_val_patches * _patch_bytes(features, norm) <= VAL_CACHE_BYTES:
        # once: the validation patches do not change between epochs (kept in their groups: built a group at a
        # time, and the same batches as without the cache)
        val_cache = list(_eval_groups(features, val_clips, norm, val_group))
    n_classes = None
    if augmentations or teacher is not None:  # the one-hot targets' width: the model's outputs (eval: no BN update)
        x_first = val_cache[0][0][:1] if val_cache else next(_eval_groups(features, val_clips, norm, 1))[0]
        model.eval()
        with torch.no_grad():
            n_classes = int(model(torch.from_numpy(x_first).to(device)).shape[1])
    frame_range = np.arange(t)
    best: FitResult | None = None
    history: list[dict] = []
    stale = 0
    stop_reason = "epochs"
    for epoch in range(1, settings.epochs + 1):
        model.train()
        fraction = next((f for until, f in settings.data_schedule if epoch <= until), 1.0)
        if ranks is not None and fraction < 1:
            clips = train_clips[subset_mask(ranks, fraction)]
            order = rng.permutation(np.repeat(clips, np.diff(_patch_offsets(features, clips))))
        else:
            order = rng.permutation(sample_clips)
        starts = (rng.random(len(order)) * (frames[order] - t + 1)).astype(np.int64)
        total, count = 0.0, 0
        for s in range(0, len(order), settings.batch_size):
            idx, st = order[s:s + settings.batch_size], starts[s:s + settings.batch_size]
            # one gather for the whole batch: (F, B, t) -> (B, 1, F, t)
            cols = (features.offsets[idx] + st)[:, None] + frame_range
            x = features.features[:, cols].transpose(1, 0, 2)[:, None].astype(np.float32)
            xb = torch.from_numpy(norm.apply(x)).to(device, non_blocking=True)
            yb = torch.from_numpy(labels[idx]).to(device, non_blocking=True)
            if n_classes is not None:
                targets = [torch.nn.functional.one_hot(yb, n_classes).float()]
                if teacher is not None:
                    targets.append(teacher.probs(idx, st * frame_s, settings.kd_temperature, device=device))
                active = strength = clean = None
                if sapaugment is not None:
                    with torch.no_grad():
                        model.eval()
                        clean = torch.nn.functional.cross_entropy(model(xb), yb, reduction="none")
                        model.train()
                for aug in augmentations:
                    if clean is not None:  # independent draws per augmentation, as DeepSpectrumLite does
                        active, strength = sapaugment.plan(clean, generator=generator)
                    xb, targets = aug(xb, targets, generator=generator, active=active, strength=strength)
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            if teacher is not None:
                loss = kd_loss(logits, targets[0], targets[1], alpha=settings.kd_alpha,
                               temperature=settings.kd_temperature)
            elif mixing:
                loss = soft_target_loss(logits, targets[0])
            else:
                loss = torch.nn.functional.cross_entropy(logits, yb)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss.item()} at epoch {epoch}")
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        sched.step()
        groups = val_cache if val_cache is not None else _eval_groups(features, val_clips, norm, val_group)
        probs = _predict_groups(model, groups, len(val_clips), batch_size=EVAL_BATCH_SIZE)
        m = classification_metrics(y_val, probs)
        improved = settings.keep_last or best is None or m["accuracy"] > best.val_metrics["accuracy"] or (
            m["accuracy"] == best.val_metrics["accuracy"] and m["log_loss"] < best.val_metrics["log_loss"])
        if improved:
            best = FitResult(state_dict={k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
                             best_epoch=epoch, val_metrics=m, val_probs=probs)
            stale = 0
        else:
            stale += 1
        row = {"epoch": epoch, "train_fraction": fraction, "train_loss": total / max(count, 1), "val_accuracy": m["accuracy"],
               "val_log_loss": m["log_loss"], "val_uar": m["uar"], "best_val_accuracy": best.val_metrics["accuracy"],
               "best_epoch": best.best_epoch}
        history.append(row)
        log.debug("epoch %d %s", epoch, row)
        if on_epoch is not None:
            on_epoch(row)
        if stale >= settings.patience:
            stop_reason = "early_stopping"
            break
    best.history = history
    best.stop_reason = stop_reason
    best.augmentation_log = {a.name: a.summary() for a in augmentations}
    if sapaugment is not None:
        best.augmentation_log["sapaugment"] = sapaugment.summary()
    model.load_state_dict(best.state_dict)
    return best


def training_device(gpu_ids: list | tuple = ()) -> str:
    """``"cuda"`` when this process was given a GPU (Ray's ``get_gpu_ids()``) and torch sees CUDA, else ``"cpu"``.

    Args:
        gpu_ids: GPUs assigned to the trial (empty: none).
    """
    return "cuda" if gpu_ids and torch.cuda.is_available() else "cpu"
