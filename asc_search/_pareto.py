"""Pareto front of (accuracy max, MACs min, INT8 bytes min), and its hypervolume."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pareto_front(points: Sequence[Sequence[float]], senses: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points.

    A point dominates another when it is at least as good in every objective and better in one.
    Duplicate points are all kept.

    Args:
        points: Shape ``(n, m)``: objective values.
        senses: ``"max"`` or ``"min"`` per objective, length ``m``.

    Returns:
        Indices into ``points`` of the front, ascending.

    Raises:
        ValueError: A sense is neither ``"max"`` nor ``"min"``, or lengths differ.
    """
    if any(s not in ("max", "min") for s in senses):
        raise ValueError(f"senses must be 'max' or 'min', got {list(senses)}")
    if len(points) == 0:
        return []
    p = np.asarray(points, dtype=np.float64)
    if p.shape[1] != len(senses):
        raise ValueError(f"points have {p.shape[1]} objectives, senses {len(senses)}")
    sign = np.array([-1.0 if s == "max" else 1.0 for s in senses])
    q = p * sign  # all minimised
    front = []
    for i in range(len(q)):
        dominated = np.any(np.all(q <= q[i], axis=1) & np.any(q < q[i], axis=1))
        if not dominated:
            front.append(i)
    return front


def hypervolume_2d(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Hypervolume of (accuracy max, cost min) points against ``reference`` = (min accuracy, max cost).

    Points worse than the reference in either objective contribute nothing.
    """
    pts = sorted((c, a) for a, c in points if a > reference[0] and c < reference[1])
    hv, best_acc = 0.0, reference[0]
    for i, (c, a) in enumerate(pts):
        best_acc = max(best_acc, a)
        next_c = pts[i + 1][0] if i + 1 < len(pts) else reference[1]
        hv += (next_c - c) * (best_acc - reference[0])
    return hv


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
