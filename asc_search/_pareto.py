"""Pareto front of (accuracy max, MACs min, INT8 bytes min), and its exact hypervolume (both from moocore:
López-Ibáñez et al., moocore: Core Algorithms for Multi-Objective Optimization)."""

from __future__ import annotations

from collections.abc import Sequence

import moocore
import numpy as np


def _senses(senses: Sequence[str], n_objectives: int) -> list[bool]:
    """``maximise`` flags of ``senses``; ValueError for an unknown sense or a length that does not match."""
    if any(s not in ("max", "min") for s in senses):
        raise ValueError(f"senses must be 'max' or 'min', got {list(senses)}")
    if n_objectives != len(senses):
        raise ValueError(f"points have {n_objectives} objectives, senses {len(senses)}")
    return [s == "max" for s in senses]


def pareto_front(points: Sequence[Sequence[float]], senses: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points (moocore's ``is_nondominated``).

    A point dominates another when it is at least as good in every objective and better in one.
    Duplicate points are all kept (``keep_weakly``).

    Args:
        points: Shape ``(n, m)``: objective values.
        senses: ``"max"`` or ``"min"`` per objective, length ``m``.

    Returns:
        Indices into ``points`` of the front, ascending.

    Raises:
        ValueError: A sense is neither ``"max"`` nor ``"min"``, or lengths differ.
    """
    if len(points) == 0:
        _senses(senses, len(senses))
        return []
    p = np.asarray(points, dtype=np.float64)
    keep = moocore.is_nondominated(p, maximise=_senses(senses, p.shape[1]), keep_weakly=True)
    return [int(i) for i in np.flatnonzero(keep)]


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float], senses: Sequence[str]) -> float:
    """Exact hypervolume of ``points`` against ``reference`` (moocore; any number of objectives).

    The volume of the region that some point dominates and that dominates the reference; points that do not
    dominate the reference contribute nothing.

    Args:
        points: Shape ``(n, m)``: objective values.
        reference: Shape ``(m,)``: the worst value counted in each objective.
        senses: ``"max"`` or ``"min"`` per objective.

    Returns:
        The hypervolume, in the product of the objectives' units (0.0 without points).

    Raises:
        ValueError: An unknown sense, or lengths that differ.
    """
    maximise = _senses(senses, len(reference))
    if len(points) == 0:
        return 0.0
    p = np.asarray(points, dtype=np.float64)
    if p.shape[1] != len(reference):
        raise ValueError(f"points have {p.shape[1]} objectives, the reference {len(reference)}")
    return float(moocore.hypervolume(p, ref=np.asarray(reference, dtype=np.float64), maximise=maximise))


def normalised_hypervolume(points: Sequence[tuple[float, float, float]], *, max_macs: float,
                           max_int8_bytes: float) -> float:
    """Exact 3-D hypervolume of (accuracy max, MACs min, INT8 bytes min) points as a fraction of the box
    ``[0, 1] x [0, max_macs] x [0, max_int8_bytes]`` (the budget's limits), in [0, 1].

    Reference point: accuracy 0, ``max_macs``, ``max_int8_bytes``; a point over a limit counts nothing. 1.0 would
    be a model of accuracy 1 at no cost.

    Raises:
        ValueError: A limit that is not positive.
    """
    if max_macs <= 0 or max_int8_bytes <= 0:
        raise ValueError(f"hypervolume limits must be > 0, got max_macs={max_macs}, max_int8_bytes={max_int8_bytes}")
    scaled = [(a, m / max_macs, b / max_int8_bytes) for a, m, b in points]
    return hypervolume(scaled, (0.0, 1.0, 1.0), ("max", "min", "min"))


def hypervolume_limits(points: Sequence[tuple[float, float, float]], max_macs: float | None,
                       max_int8_bytes: float | None) -> tuple[float, float]:
    """The (MACs, INT8 bytes) reference of a hypervolume: the budget's limits, or 1.1x the largest value among
    ``points`` where the budget sets none (1.0 without points)."""
    def limit(budget_limit: float | None, k: int) -> float:
        if budget_limit:
            return float(budget_limit)
        return 1.1 * max(p[k] for p in points) if points else 1.0

    return limit(max_macs, 1), limit(max_int8_bytes, 2)


def knee_point(points: Sequence[tuple[float, float]]) -> int | None:
    """Index of the knee of a front of (accuracy max, cost min) points.

    Both objectives are scaled to [0, 1] over the points; the knee is the point farthest above the line
    that joins the cheapest and the most accurate point (the point where giving up accuracy stops buying
    much cost). With fewer than three distinct points, the most accurate point.

    Args:
        points: ``(accuracy, cost)`` pairs.

    Returns:
        An index into ``points``, or None when there are none.
    """
    if not points:
        return None
    p = np.asarray(points, dtype=np.float64)
    best = int(np.lexsort((p[:, 1], -p[:, 0]))[0])
    cheap = int(np.lexsort((-p[:, 0], p[:, 1]))[0])
    span = np.ptp(p, axis=0)
    if len({tuple(x) for x in p.tolist()}) < 3 or (span == 0).any():
        return best
    q = (p - p.min(axis=0)) / span
    x, y = q[:, 1], q[:, 0]  # x: normalised cost, y: normalised accuracy
    ax, ay, bx, by = x[cheap], y[cheap], x[best], y[best]
    above = (bx - ax) * (y - ay) - (by - ay) * (x - ax)  # > 0: more accuracy for the cost than the line
    return int(np.argmax(above))


def sort_rows(rows: list[dict]) -> list[dict]:
    """Rows in the order of ``trials.csv``: trained, failed and stopped first, rejected last, each by trial id."""
    return sorted(rows, key=lambda r: (r["status"] == "rejected", str(r["trial_id"])))


def mark_front(rows: list[dict]) -> list[dict]:
    """Set ``on_front`` on the completed rows of the Pareto front; return the front, sorted."""
    done = [r for r in rows if r["status"] == "completed"]
    for r in rows:
        r["on_front"] = False
    for i in pareto_front([(r["best_val_accuracy"], r["macs"], r["int8_bytes"]) for r in done], ("max", "min", "min")):
        done[i]["on_front"] = True
    return sorted((r for r in done if r["on_front"]),
                  key=lambda r: (r["macs"], -r["best_val_accuracy"], str(r["trial_id"])))
