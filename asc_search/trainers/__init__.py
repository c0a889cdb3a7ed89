"""Trainers: the training loop, augmentation, distillation, pruning, QAT, transfer learning, ensemble selection and
metrics."""

from asc_search.trainers._augment import (
    Augmentation,
    SapAugment,
    get_augmentation,
    list_augmentations,
    register_augmentation,
    soft_target_loss,
)
from asc_search.trainers._distill import TeacherLogits, compute_teacher_logits, kd_loss
from asc_search.trainers._ensemble import (
    FUSIONS,
    EnsembleCandidate,
    EnsembleSelection,
    ensemble_candidates_from_rows,
    fuse,
    select_ensemble,
)
from asc_search.trainers._fit import (
    FitResult,
    Normalisation,
    TrainSettings,
    deterministic_torch,
    fit,
    lr_factor,
    predict_clips,
    training_device,
)
from asc_search.trainers._metrics import (
    bootstrap_ci,
    classification_metrics,
    clip_probabilities,
    estimate_metrics,
    full_metrics,
    grouped_accuracy,
)
from asc_search.trainers._prune import prune_model, which_channels
from asc_search.trainers._qat import QATModel, prepare_qat, qat_finetune, qat_to_float, snap_to_int8_grid
from asc_search.trainers._transfer import load_pretrained, two_phase_transfer

__all__ = [
    "Augmentation",
    "EnsembleCandidate",
    "EnsembleSelection",
    "FUSIONS",
    "FitResult",
    "Normalisation",
    "QATModel",
    "SapAugment",
    "TeacherLogits",
    "TrainSettings",
    "bootstrap_ci",
    "classification_metrics",
    "clip_probabilities",
    "compute_teacher_logits",
    "deterministic_torch",
    "ensemble_candidates_from_rows",
    "estimate_metrics",
    "fit",
    "full_metrics",
    "fuse",
    "get_augmentation",
    "grouped_accuracy",
    "kd_loss",
    "list_augmentations",
    "load_pretrained",
    "lr_factor",
    "predict_clips",
    "prepare_qat",
    "prune_model",
    "qat_finetune",
    "qat_to_float",
    "register_augmentation",
    "select_ensemble",
    "snap_to_int8_grid",
    "soft_target_loss",
    "training_device",
    "two_phase_transfer",
    "which_channels",
]
