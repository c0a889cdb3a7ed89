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
