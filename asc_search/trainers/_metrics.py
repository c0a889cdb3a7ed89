"""Clip-level metrics (scikit-learn): accuracy, log loss, UAR, macro-F1, confusion matrix, bootstrap CIs."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss

from asc_search._errors import UserInputError


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


BOOTSTRAP_METRICS = ("accuracy", "uar", "macro_f1")
"""Metric names ``bootstrap_ci`` computes itself (the first two vectorised over resamples)."""

_BOOTSTRAP_CELLS = 2_000_000
"""Resampled clip indices held in memory at once (bounds the batch of resamples on large validation sets)."""


def _vector_accuracy(y_true: np.ndarray, y_pred: np.ndarray, axis: int = -1) -> np.ndarray:
    return (y_true == y_pred).mean(axis=axis)


def _vector_uar(labels: np.ndarray):
    """Balanced accuracy over resamples: mean recall of the classes present in each resample (as sklearn)."""

    def uar(y_true: np.ndarray, y_pred: np.ndarray, axis: int = -1) -> np.ndarray:
        recalls, present = [], []
        for k in labels:
            is_k = y_true == k
            n_k = is_k.sum(axis=axis)
            hits = (is_k & (y_pred == k)).sum(axis=axis)
            recalls.append(np.where(n_k > 0, hits / np.maximum(n_k, 1), 0.0))
            present.append(n_k > 0)
        return np.sum(recalls, axis=0) / np.maximum(np.sum(present, axis=0), 1)

    return uar


def bootstrap_ci(y_true: np.ndarray, y_pred: np.ndarray, metric="accuracy", n_resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a clip-level metric (``scipy.stats.bootstrap``).

    The clips are resampled with replacement (``y_true`` and ``y_pred`` paired), the metric is computed on
    each resample, and the interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles:
    the 95 % intervals DeepSpectrumLite (Amiriparian et al. 2022) reports for accuracy and UAR.

    Args:
        y_true: Class indices, shape ``(n,)``, ``n >= 2``.
        y_pred: Predicted class indices, shape ``(n,)``.
        metric: ``"accuracy"``, ``"uar"`` (balanced accuracy), ``"macro_f1"``, or a callable
            ``metric(y_true, y_pred) -> float``.
        n_resamples: Bootstrap resamples (default 1000).
        confidence: Confidence level in ``(0, 1)`` (default 0.95).
        seed: Seed of the resampling (the same seed gives the same interval).

    Returns:
        ``(low, high)``.

    Raises:
        UserInputError: Fewer than two clips, mismatched lengths, an unknown metric name, ``n_resamples < 1``
            or ``confidence`` outside ``(0, 1)``.
    """
    from scipy.stats import bootstrap
    from sklearn.metrics import f1_score

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise UserInputError(f"bootstrap_ci: y_true and y_pred must be 1-D of one length, got shapes "
                             f"{y_true.shape} and {y_pred.shape}")
    if len(y_true) < 2:
        raise UserInputError(f"bootstrap_ci: needs at least 2 clips to resample, got {len(y_true)}")
    if int(n_resamples) < 1:
        raise UserInputError(f"bootstrap_ci: n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise UserInputError(f"bootstrap_ci: confidence must be in (0, 1), got {confidence}")
    vectorized = True
    if metric == "accuracy":
        stat = _vector_accuracy
    elif metric == "uar":
        stat = _vector_uar(np.unique(y_true))
    elif metric == "macro_f1":
        vectorized = False

        def stat(a, b):
            return f1_score(a, b, average="macro", zero_division=0.0)
    elif callable(metric):
        vectorized, stat = False, metric
    else:
        raise UserInputError(f"bootstrap_ci: metric must be one of {BOOTSTRAP_METRICS} or a callable, got {metric!r}")
    res = bootstrap((y_true, y_pred), stat, paired=True, vectorized=vectorized, n_resamples=int(n_resamples),
                    batch=max(1, _BOOTSTRAP_CELLS // len(y_true)), confidence_level=confidence,
                    method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def full_metrics(y_true: np.ndarray, probs: np.ndarray, *, class_names: list[str] | tuple[str, ...],
                 groups: list[str] | np.ndarray | None = None, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Every clip-level figure a model is reported with, as DeepSpectrumLite (Amiriparian et al. 2022) does.

    Accuracy, log loss, UAR (unweighted average recall = balanced accuracy), macro-F1 (scikit-learn, over the
    classes present in ``y_true`` or predicted), the confusion matrix, per-class accuracy (the recall of each
    class), per-group accuracy (``groups``: the recording device of each clip) and 95 % percentile bootstrap
    confidence intervals of accuracy and UAR (``n_bootstrap`` resamples of the clips with replacement,
    ``bootstrap_ci``).

    Args:
        y_true: Class indices, shape ``(n,)``, values in ``[0, K)``.
        probs: Clip probabilities, shape ``(n, K)``.
        class_names: ``K`` names, in class-index order.
        groups: Group (device) of each clip, length ``n``; empty names are left out. None: no per-device figures.
        n_bootstrap: Bootstrap resamples; 0 leaves the intervals out (None). The intervals are None too for
            fewer than two clips.
        seed: Seed of the bootstrap.

    Returns:
        ``{"n_clips", "accuracy", "log_loss", "uar", "macro_f1", "accuracy_ci95": [low, high] | None,
        "uar_ci95": [low, high] | None, "confusion_matrix": K x K list (rows: true class, columns:
        predicted), "per_class_accuracy": {name: recall | None (no clip of the class)},
        "per_device_accuracy": {group: accuracy} | None, "bootstrap": {...how the intervals were made}}``.

    Raises:
        UserInputError: Shapes that do not match, labels outside ``[0, K)``, no clips, ``len(class_names) != K``
            or ``n_bootstrap < 0``.
    """
    from sklearn.metrics import confusion_matrix, f1_score, recall_score

    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or y_true.ndim != 1 or len(y_true) != len(probs):
        raise UserInputError(f"full_metrics: y_true (n,) and probs (n, K) must match, got shapes {y_true.shape} "
                             f"and {probs.shape}")
    n, k = probs.shape
    if n == 0:
        raise UserInputError("full_metrics: no clips to score (y_true is empty)")
    if len(class_names) != k:
        raise UserInputError(f"full_metrics: {len(class_names)} class_names for {k} probability columns")
    if y_true.min() < 0 or y_true.max() >= k:
        raise UserInputError(f"full_metrics: labels must be in [0, {k}), got [{y_true.min()}, {y_true.max()}]")
    if n_bootstrap < 0:
        raise UserInputError(f"full_metrics: n_bootstrap must be >= 0, got {n_bootstrap}")
    if groups is not None and len(groups) != n:
        raise UserInputError(f"full_metrics: {len(groups)} groups for {n} clips")
    y_pred = probs.argmax(axis=1)
    labels = np.arange(k)
    recall = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    out: dict = {"n_clips": int(n), **classification_metrics(y_true, probs),
                 "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0.0))}
    ci_ok = n_bootstrap > 0 and n >= 2
    for name in ("accuracy", "uar"):
        out[f"{name}_ci95"] = (list(bootstrap_ci(y_true, y_pred, name, n_bootstrap, 0.95, seed)) if ci_ok
                               else None)
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    out["per_class_accuracy"] = {str(c): (None if np.isnan(r) else float(r)) for c, r in zip(class_names, recall,
                                                                                             strict=True)}
    out["per_device_accuracy"] = grouped_accuracy(y_true, y_pred, groups) if groups is not None else None
    out["bootstrap"] = ({"method": "percentile", "confidence": 0.95, "n_resamples": int(n_bootstrap),
                         "resampled": "clips, with replacement", "seed": int(seed)} if ci_ok else None)
    return out


def estimate_metrics(y_true: np.ndarray, probs: np.ndarray, *, class_names: list[str] | tuple[str, ...],
                     devices: list[str] | np.ndarray | None = None, seen_devices: set[str] | None = None,
                     n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """The figures a DCASE Task 1 participant reports for a held-out split, each with its 95 % interval.

    ``full_metrics`` (accuracy, log loss, UAR = class-wise macro accuracy, macro-F1, confusion matrix, per-class
    and per-device accuracy), plus percentile bootstrap intervals (clips resampled with replacement, as
    ``bootstrap_ci``) of the log loss, of each class's accuracy and of each device's accuracy, and the devices
    seen in training apart from the unseen ones (DCASE 2022 Task 1 reports both: ``s4``-``s6`` are unseen).

    Args:
        y_true: Class indices, shape ``(n,)``.
        probs: Clip probabilities, shape ``(n, K)``.
        class_names: ``K`` names, in class-index order.
        devices: Recording device of each clip, length ``n`` ("" unknown); None: no device figures.
        seen_devices: Devices of the training clips; None: every device counts as seen.
        n_bootstrap: Bootstrap resamples (0: no intervals).
        seed: Seed of the bootstrap.

    Returns:
        ``full_metrics``'s dict plus ``"log_loss_ci95"``, ``"per_class": {name: {"n_clips", "accuracy",
        "accuracy_ci95"}}``, ``"per_device": {device: {"n_clips", "accuracy", "accuracy_ci95", "seen"}}`` and
        ``"device_groups": {"seen"|"unseen": {"devices", "n_clips", "accuracy", "accuracy_ci95"}}`` (the last
        two empty without devices). An interval is None where fewer than two clips are resampled.

    Raises:
        UserInputError: As ``full_metrics``.
    """
    from sklearn.metrics import log_loss

    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    has_devices = devices is not None and any(devices)
    out = full_metrics(y_true, probs, class_names=class_names, groups=list(devices) if has_devices else None,
                       n_bootstrap=n_bootstrap, seed=seed)
    y_pred = probs.argmax(axis=1)
    k = probs.shape[1]
    clipped = np.clip(probs, 1e-7, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)

    def interval(mask: np.ndarray, metric="accuracy") -> list[float] | None:
        if n_bootstrap <= 0 or mask.sum() < 2:
            return None
        return list(bootstrap_ci(y_true[mask], y_pred[mask] if metric == "accuracy" else np.flatnonzero(mask),
                                 metric, n_bootstrap, 0.95, seed))

    everything = np.ones(len(y_true), dtype=bool)
    out["log_loss_ci95"] = interval(everything, lambda y, idx: float(log_loss(y, clipped[idx], labels=np.arange(k))))
    out["per_class"] = {}
    for c, name in enumerate(class_names):
        mask = y_true == c
        out["per_class"][str(name)] = {"n_clips": int(mask.sum()),
                                       "accuracy": float((y_pred[mask] == c).mean()) if mask.any() else None,
                                       "accuracy_ci95": interval(mask)}
    out["per_device"], out["device_groups"] = {}, {}
    if has_devices:
        devices = np.asarray([str(d) for d in devices])
        seen = set(devices) if seen_devices is None else {str(d) for d in seen_devices}
        for d in sorted(set(devices) - {""}):
            mask = devices == d
            out["per_device"][d] = {"n_clips": int(mask.sum()), "accuracy": float((y_pred[mask] == y_true[mask]).mean()),
                                    "accuracy_ci95": interval(mask), "seen": d in seen}
        for group, members in (("seen", sorted(d for d in out["per_device"] if d in seen)),
                               ("unseen", sorted(d for d in out["per_device"] if d not in seen))):
            mask = np.isin(devices, members)
            out["device_groups"][group] = {
                "devices": members, "n_clips": int(mask.sum()),
                "accuracy": float((y_pred[mask] == y_true[mask]).mean()) if mask.any() else None,
                "accuracy_ci95": interval(mask)}
    return out
