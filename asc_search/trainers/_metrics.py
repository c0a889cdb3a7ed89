"""Clip-level metrics (scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss


def clip_probabilities(patch_probs: np.ndarray, owner: np.ndarray, n_clips: int) -> np.ndarray:
    """Mean of patch probabilities per clip (the clip-level fusion of the seed paper's eq. 1).

    Args:
        patch_probs: Shape ``(n_patches, n_classes)``.
        owner: Clip position of each patch, shape ``(n_patches,)``, values in ``[0, n_clips)``.
        n_clips: Number of clips.

    Returns:
        Shape ``(n_clips, n_classes)``.
    """
    sums = np.zeros((n_clips, patch_probs.shape[1]), dtype=np.float64)
    np.add.at(sums, owner, patch_probs)
    counts = np.bincount(owner, minlength=n_clips)[:, None]
    return sums / np.maximum(counts, 1)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy, log loss and UAR (balanced accuracy) of clip probabilities.

    Args:
        y_true: Class indices, shape ``(n,)``.
        probs: Probabilities, shape ``(n, n_classes)``.
    """
    y_pred = probs.argmax(axis=1)
    p = np.clip(probs, 1e-7, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "log_loss": float(log_loss(y_true, p, labels=np.arange(probs.shape[1]))),
        "uar": float(balanced_accuracy_score(y_true, y_pred)),
    }


def grouped_accuracy(y_true: np.ndarray, y_pred: np.ndarray, groups: list[str] | np.ndarray) -> dict[str, float]:
    """Accuracy within each group (a device, a class name ...), sorted by group name.

    Args:
        y_true: Class indices, shape ``(n,)``.
        y_pred: Predicted class indices, shape ``(n,)``.
        groups: Group label per item, length ``n``; empty labels are left out.

    Returns:
        ``{group: accuracy}``.
    """
    g = np.asarray(groups, dtype=object)
    out = {}
    for name in sorted({str(x) for x in g if str(x)}):
        m = g == name
        out[name] = float(accuracy_score(y_true[m], y_pred[m]))
    return out
