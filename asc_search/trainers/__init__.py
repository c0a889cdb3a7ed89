"""Trainers: the training loop and clip-level metrics."""

from asc_search.trainers._fit import FitResult, Normalisation, TrainSettings, fit, predict_clips
from asc_search.trainers._metrics import classification_metrics, clip_probabilities, grouped_accuracy

__all__ = [
    "FitResult",
    "Normalisation",
    "TrainSettings",
    "classification_metrics",
    "clip_probabilities",
    "fit",
    "grouped_accuracy",
    "predict_clips",
]
