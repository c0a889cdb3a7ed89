"""Trainers: the training loop, augmentation, distillation, pruning, QAT, transfer learning and metrics."""

from asc_search.trainers._augment import (
    Augmentation,
    SapAugment,
    get_augmentation,
    list_augmentations,
    register_augmentation,
    soft_target_loss,
)
from asc_search.trainers._distill import TeacherLogits, compute_teacher_logits, kd_loss
from asc_search.trainers._fit import (
    FitResult,
    Normalisation,
    TrainSettings,
    deterministic_torch,
    fit,
    predict_clips,
)
from asc_search.trainers._metrics import (
    bootstrap_ci,
    classification_metrics,
    clip_probabilities,
    full_metrics,
    grouped_accuracy,
)
from asc_search.trainers._prune import prune_model, which_channels
from asc_search.trainers._transfer import load_pretrained, two_phase_transfer

__all__ = [
    "Augmentation",
    "FitResult",
    "Normalisation",
    "SapAugment",
    "TeacherLogits",
    "TrainSettings",
    "bootstrap_ci",
    "classification_metrics",
    "clip_probabilities",
    "compute_teacher_logits",
    "deterministic_torch",
    "fit",
    "full_metrics",
    "get_augmentation",
    "grouped_accuracy",
    "kd_loss",
    "list_augmentations",
    "load_pretrained",
    "predict_clips",
    "prune_model",
    "register_augmentation",
    "soft_target_loss",
    "two_phase_transfer",
    "which_channels",
]
